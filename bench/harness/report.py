"""The results of a run: the markdown summary printed on stdout, and the JSON files
``bench/out/results.json`` plus a timestamped copy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.config import OUT, TARGETS, WRK_CONNECTIONS


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def _paired_extra(base: dict[str, Any], other: dict[str, Any]) -> float:
    """The median of the per-round differences (the two were run in turn, round by round)."""
    a = (base.get("repeats") or {}).get("values") or [base["cpu_us_per_request"]]
    b = (other.get("repeats") or {}).get("values") or [other["cpu_us_per_request"]]
    diffs = sorted(float(y) - float(x) for x, y in zip(a, b, strict=False))
    return round(diffs[len(diffs) // 2], 1)


def _spread(run: dict[str, Any], sep: str = " (", end: str = ")") -> str:
    rep = run.get("repeats")
    return f"{sep}median of {len(rep['values'])} runs, {rep['min']}–{rep['max']}{end}" if rep else ""


def summary(r: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = r.get("meta", {})
    lines.append(f"# VectorEngine benchmark ({meta.get('mode')}, {meta.get('date')})\n")
    lines.append(f"{meta.get('nproc')} CPUs, {meta.get('cpu_model')}; gateway on CPU 0, load on CPU 1.\n")
    lines.append("| figure | value | target | verdict |")
    lines.append("|---|---|---|---|")
    thr = r.get("throughput", {})
    gw, direct = thr.get("gateway", {}), thr.get("direct", {})
    if gw:
        v = gw["cpu_us_per_request"]
        lines.append(
            f"| CPU per non-streaming request (wrk -c{WRK_CONNECTIONS}) | {v} µs{_spread(gw)} | "
            f"≤ {TARGETS['cpu_us_per_request']:g} µs | {_verdict(v <= TARGETS['cpu_us_per_request'])} |"
        )
    billed = thr.get("gateway_billed", {})
    if gw and billed:
        v, extra = billed["cpu_us_per_request"], _paired_extra(gw, billed)
        lines.append(
            f"| accounting on the hot path: billed user, every limit on (CPU per request; extra over "
            f"an unbilled token, median of the round-by-round differences) | {v} µs{_spread(billed)}; "
            f"extra {extra} µs | "
            f"≤ {TARGETS['accounting_us']:g} µs extra | {_verdict(extra <= TARGETS['accounting_us'])} |"
        )
    sc = r.get("stream_cpu", {})
    if "gateway_burst" in sc and sc["gateway_burst"].get("cpu_us_per_chunk_net") is not None:
        s = sc["gateway_burst"]
        lines.append(
            f"| CPU per streamed chunk (back-to-back; net, raw) | {s['cpu_us_per_chunk_net']} µs "
            f"({s['cpu_us_per_chunk_raw']} raw{_spread(s, '; ', '')}) | "
            f"≤ {TARGETS['cpu_us_per_chunk']:g} µs | "
            f"{_verdict(s['cpu_us_per_chunk_net'] <= TARGETS['cpu_us_per_chunk'])} |"
        )
    lat = r.get("latency", {})
    if "added_ms" in lat:
        a, rate = lat["added_ms"], lat["gateway"]["rate"]
        lines.append(
            f"| added latency at {rate:.0f} req/s (p50 / p99) | {a['p50']} / {a['p99']} ms | "
            f"p99 ≤ {TARGETS['added_p99_ms']:g} ms | {_verdict(a['p99'] <= TARGETS['added_p99_ms'])} |"
        )
    mem = r.get("memory_after_scenarios") or r.get("memory_end")
    if mem:
        lim = TARGETS["rss_mb"]
        lines.append(
            f"| peak RSS (VmHWM): worker(s) / main+worker sum (PSS sum) | {mem['workers_hwm_mb']} / "
            f"{mem['tree_hwm_mb']} ({mem['tree_pss_mb']}) MB | ≤ {lim:g} MB | "
            f"{_verdict(mem['workers_hwm_mb'] <= lim)} worker, {_verdict(mem['tree_hwm_mb'] <= lim)} sum |"
        )
    soak = r.get("soak")
    if soak:
        t, w, lim = soak["tree_rss_mb"], soak["workers_rss_mb"], TARGETS["rss_mb"]
        grow = soak["growth_after_first_segment_mb"]
        lines.append(
            f"| RSS over {soak['requests']:,} requests: worker(s) start / end / max; main+worker sum "
            f"start / end / max | {w['start']} / {w['end']} / {w['max']} MB; {t['start']} / {t['end']} / "
            f"{t['max']} MB; sum {grow:+} MB after the 1st segment | ≤ {lim:g} MB, no growth | "
            f"{_verdict(w['max'] <= lim)} worker, {_verdict(t['max'] <= lim)} sum; "
            f"growth {_verdict(grow <= 5.0)} |"
        )
    lines.append("")
    lines.append("| reference | value |")
    lines.append("|---|---|")
    if gw:
        lines.append(
            f"| gateway req/s (wrk -t1 -c{WRK_CONNECTIONS}, non-streaming) | {gw['rps']:.0f} "
            f"(p50 {gw['latency_ms'].get('p50')} ms, p99 {gw['latency_ms'].get('p99')} ms; "
            f"gateway CPU {gw['cpu_utilisation'] * 100:.0f}%) |"
        )
    if direct:
        lines.append(
            f"| direct upstream req/s (same wrk) | {direct['rps']:.0f} "
            f"(upstream CPU {direct['cpu_us_per_request']} µs/request) |"
        )
    if lat:
        for k in ("direct", "gateway"):
            x = lat[k]["latency_ms"]
            lines.append(
                f"| {k} latency at {lat[k]['rate']:.0f} req/s p50 / p99 / max | "
                f"{x['p50']} / {x['p99']} / {x['max']} ms |"
            )
        lines.append(
            f"| CPU per request at {lat['gateway']['rate']:.0f} req/s: gateway / upstream (direct run) | "
            f"{lat['gateway'].get('gateway_cpu_us_per_request')} / "
            f"{lat['direct'].get('upstream_cpu_us_per_request')} µs |"
        )
    tt = r.get("ttft")
    if tt:
        for k in ("direct", "gateway"):
            x = tt[k]["ttft_ms"]
            lines.append(
                f"| TTFT {k} p50 / p99 (sequential, {tt[k]['count']} streams) | {x['p50']} / {x['p99']} ms |"
            )
        a = tt["added_ttft_ms"]
        lines.append(f"| added TTFT p50 / p99 | {a['p50']} / {a['p99']} ms |")
    if "direct_burst" in sc:
        s = sc["direct_burst"]
        lines.append(f"| upstream CPU per chunk (direct, back-to-back) | {s['cpu_us_per_chunk_raw']} µs |")
    paced = sc.get("gateway_paced", {})
    if paced.get("cpu_us_per_chunk_net") is not None:
        lines.append(
            f"| CPU per streamed chunk, chunks 1 ms apart (each its own read and write, core ~40 % busy; "
            f"net, raw) — no target: wake-ups dominate, see RESULTS.md | {paced['cpu_us_per_chunk_net']} µs "
            f"({paced['cpu_us_per_chunk_raw']} raw{_spread(paced, '; ', '')}) |"
        )
    for key in ("gateway_burst", "gateway_paced"):
        if key in sc:
            s = sc[key]
            lines.append(
                f"| {key}: chunks/s relayed, streams, gateway CPU | {s['chunks_per_s']:.0f}, "
                f"{s['streams_ok']}, {s['cpu_utilisation'] * 100:.0f}% |"
            )
    res = r.get("resilience")
    if res:
        h, f, sat = res["healthy"], res["faulty"], res["saturated"]
        lines.append(
            f"| resilience at {f['rate']:.0f} req/s (1 healthy key, 1 failing 50 % with 500, 1 with 429 "
            f"bursts): success rate / p50 / p99 | {f['success_rate'] * 100:.2f} % / "
            f"{f['latency_ms']['p50']} / {f['latency_ms']['p99']} ms (statuses {f['statuses']}) |"
        )
        lines.append(
            f"| same, three healthy keys: success rate / p50 / p99 | {h['success_rate'] * 100:.2f} % / "
            f"{h['latency_ms']['p50']} / {h['latency_ms']['p99']} ms |"
        )
        a = res["added_ms"]
        lines.append(f"| resilience: added by the faults p50 / p99 | {a['p50']} / {a['p99']} ms |")
        lines.append(
            f"| resilience, saturated (wrk -c{WRK_CONNECTIONS}): req/s, non-2xx, CPU µs/request | "
            f"{sat['rps']:.0f}, {sat['non_2xx']}, {sat['cpu_us_per_request']} |"
        )
    ua = r.get("usage_api")
    if ua:
        lines.append(
            f"| GET /api/usage?limit=1 | HTTP {ua['status']}, {ua['records_in_first_page']} record, "
            f"has_more={ua['has_more']} |"
        )
    ud = r.get("usage_db")
    if ud:
        lines.append(
            f"| usage rows in DB after shutdown / requests counted by clients | {ud['rows']:,} / "
            f"{ud['requests_counted_by_clients']:,} (≤ {ud['max_uncounted_in_flight']} uncounted in flight "
            f"allowed; all recorded: {ud['all_recorded']}) |"
        )
    g = r.get("gateway", {})
    if "stop" in g:
        lines.append(
            f"| gateway stop (SIGTERM) | exit {g['stop']['exit_code']} in {g['stop']['stop_s']} s; "
            f"{g.get('log_problem_lines')} error lines in its log |"
        )
    if "sanity" in r:
        lines.append(
            f"| sanity checks (JSON identical, usage stripped/kept in streams) | {r['sanity']['ok']} |"
        )
    if r.get("noisy_runs"):
        lines.append(
            f"\nWARNING: other processes took more than the allowed share of a core during: "
            f"{', '.join(r['noisy_runs'])} (see each run's `noise` in results.json)."
        )
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], soak: bool, quick: bool) -> Path:
    """Write ``out/results.json`` and a timestamped copy; return the former's path."""
    data = json.dumps(results, indent=2, default=str)
    path = OUT / "results.json"
    path.write_text(data)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / f"results-{stamp}{'-soak' if soak else ''}{'-quick' if quick else ''}.json").write_text(data)
    return path
