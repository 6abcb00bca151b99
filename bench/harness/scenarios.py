"""The measured scenarios: throughput (wrk), open-loop latency, TTFT, stream CPU, soak.

Each takes the running ``Bench`` and stores its figures in ``bench.results``; every measured
run goes through ``Bench.measured`` (median of repeats, retried when the machine is noisy).
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

from harness.config import (
    BILLED_TOKEN,
    HEALTHY3_MODEL,
    RESILIENT_MODEL,
    UPSTREAMS,
    WRK_CONNECTIONS,
    UpstreamSpec,
)
from harness.load import run_wrk
from harness.procs import (
    children_cpu_seconds,
    core_ticks,
    cpu_seconds,
    memory,
    noise_report,
    thread_cpu,
    thread_cpu_delta,
)

if TYPE_CHECKING:
    from harness.session import Bench


def throughput(b: Bench) -> None:
    """CPU per request through the gateway (an unbilled token; a billed one with every limit on,
    measured in turn with it) and of the upstream called directly."""
    p = b.p
    out: dict[str, Any] = {}
    billed_env = {**b.wrk_env, "BENCH_TOKEN": BILLED_TOKEN}
    gateway = {"gateway": b.wrk_env, "gateway_billed": billed_env}
    fns: dict[str, Any] = {}
    idle: dict[str, float] = {}
    warm: dict[str, int] = {}
    for label, url, root, other, env in (
        *((label, b.gw_url, b.gw_pid, b.up_pid(), env) for label, env in gateway.items()),
        ("direct", UPSTREAMS[0].url, b.up_pid(), None, b.wrk_env),
    ):
        b.log(f"throughput ({label}): wrk warm-up {p.wrk_warm_s}s, then {p.wrk_s}s")
        warmed = run_wrk(b.wrk, url, p.wrk_warm_s, env)
        warm[label] = warmed["requests"]
        if label in gateway:
            b.sent_to_gateway += warmed["requests"]
            b.wrk_runs_on_gateway += 1
        time.sleep(1.0)  # let the usage writer flush the warm-up's records
        idle0, t_idle = cpu_seconds(root), time.perf_counter()
        time.sleep(1.0)
        idle[label] = (cpu_seconds(root) - idle0) * 1e6 / (time.perf_counter() - t_idle)

        def one(
            url: str = url, root: int = root, other: int | None = other, label: str = label, env: Any = env
        ) -> Any:
            c0, w0, th0 = cpu_seconds(root), children_cpu_seconds(), thread_cpu(root)
            u0 = cpu_seconds(other) if other is not None else 0.0
            res = run_wrk(b.wrk, url, p.wrk_s, env)
            time.sleep(1.0)  # include the background batch write of this run's usage records
            c1, w1, th1 = cpu_seconds(root), children_cpu_seconds(), thread_cpu(root)
            u1 = cpu_seconds(other) if other is not None else 0.0
            cpu = c1 - c0
            res["cpu_s"] = round(cpu, 3)
            res["cpu_us_per_request"] = round(cpu * 1e6 / res["requests"], 1)
            res["cpu_utilisation"] = round(cpu / res["duration_s"], 3)
            res["cpu_s_by_thread"] = thread_cpu_delta(th0, th1)
            res["wrk_cpu_s"] = round(w1 - w0, 3)
            if other is not None:
                res["upstream_cpu_s"] = round(u1 - u0, 3)
            if label in gateway:
                b.sent_to_gateway += res["requests"]
                b.wrk_runs_on_gateway += 1
            if res["non_2xx"] or any(res["socket_errors"].values()):
                b.log(f"WARNING: {label}: non-2xx={res['non_2xx']} socket errors={res['socket_errors']}")
            return res

        fns[label] = one
    key = "cpu_us_per_request"
    measured = b.measured_together({label: fns[label] for label in gateway}, key, p.wrk_repeats)
    measured["direct"] = b.measured("throughput-direct", fns["direct"], key=key, repeats=p.wrk_repeats)
    for label, res in measured.items():
        res["warmup_requests"] = warm[label]
        res["idle_cpu_us_per_s"] = round(idle[label], 1)
        out[label] = res
    b.results["throughput"] = out


def latency(b: Bench) -> None:
    p = b.p
    runs: dict[str, Any] = {}
    for label, url in (("direct", UPSTREAMS[0].url), ("gateway", b.gw_url)):
        b.log(f"open-loop latency ({label}): {p.open_rate:.0f} req/s for {p.open_s:.0f}s")

        def one(url: str = url, label: str = label) -> Any:
            c0, th0 = cpu_seconds(b.gw_pid), thread_cpu(b.gw_pid)
            u0 = cpu_seconds(b.up_pid())
            r = b.loadgen(
                f"open-{label}",
                ["open", "--url", url, "--rate", str(p.open_rate), "--duration", str(p.open_s)],
            )
            time.sleep(1.0)
            n = r["scheduled"] + 1
            r["upstream_cpu_us_per_request"] = round((cpu_seconds(b.up_pid()) - u0) * 1e6 / n, 1)
            if label == "gateway":
                r["gateway_cpu_us_per_request"] = round((cpu_seconds(b.gw_pid) - c0) * 1e6 / n, 1)
                r["gateway_cpu_s_by_thread"] = thread_cpu_delta(th0, thread_cpu(b.gw_pid))
                b.sent_to_gateway += n
            if r["errors"] or r["ok"] != r["scheduled"]:
                b.log(f"WARNING: open-loop {label}: ok={r['ok']}/{r['scheduled']} errors={r['errors']}")
            return r

        runs[label] = b.measured(f"latency-{label}", one)
    d, g = runs["direct"]["latency_ms"], runs["gateway"]["latency_ms"]
    runs["added_ms"] = {k: round(g[k] - d[k], 3) for k in ("p50", "p90", "p99", "p999", "mean")}
    b.results["latency"] = runs


def ttft(b: Bench) -> None:
    p = b.p
    up = UPSTREAMS[0]
    ttft: dict[str, Any] = {}
    for label, url in (("direct", up.url), ("gateway", b.gw_url)):
        b.log(f"TTFT ({label}): {p.ttft_count} sequential streams of {up.chunks} chunks")

        def one_ttft(url: str = url, label: str = label) -> Any:
            r = b.loadgen(
                f"ttft-{label}",
                ["streams", "--url", url, "--model", up.model, "--count", str(p.ttft_count),
                 "--concurrency", "1", "--expect-chunks", str(up.chunks)],
            )  # fmt: skip
            if label == "gateway":
                b.sent_to_gateway += p.ttft_count + 1
            if r["bad_streams"] or r["errors"]:
                b.log(f"WARNING: TTFT {label}: bad={r['bad_streams']} errors={r['errors']} {r['problems']}")
            return r

        ttft[label] = b.measured(f"ttft-{label}", one_ttft)
    ttft["added_ttft_ms"] = {
        k: round(ttft["gateway"]["ttft_ms"][k] - ttft["direct"]["ttft_ms"][k], 3)
        for k in ("p50", "p90", "p99", "mean")
    }
    ttft["added_total_ms"] = {
        k: round(ttft["gateway"]["total_ms"][k] - ttft["direct"]["total_ms"][k], 3)
        for k in ("p50", "p90", "p99", "mean")
    }
    b.results["ttft"] = ttft


def stream_cpu(b: Bench) -> None:
    p = b.p
    per_req: float | None = b.results.get("throughput", {}).get("gateway", {}).get("cpu_us_per_request")
    cpu_runs: dict[str, Any] = {}
    burst, paced = UPSTREAMS[1], UPSTREAMS[2]
    plan = (
        ("direct_burst", burst, burst.url, b.up_pid(burst.name), p.burst_concurrency),
        ("gateway_burst", burst, b.gw_url, b.gw_pid, p.burst_concurrency),
        ("gateway_paced", paced, b.gw_url, b.gw_pid, p.paced_concurrency),
    )
    for label, spec, url, root, conc in plan:
        b.log(
            f"stream CPU ({label}): {conc} concurrent streams of {spec.chunks} chunks "
            f"({spec.delay_ms:g} ms apart) for {p.loop_s:.0f}s"
        )

        def one_stream_loop(
            label: str = label,
            spec: UpstreamSpec = spec,
            url: str = url,
            root: int = root,
            conc: int = conc,
        ) -> Any:
            c0, th0 = cpu_seconds(root), thread_cpu(root)
            r = b.loadgen(
                f"streamcpu-{label}",
                ["stream-loop", "--url", url, "--model", spec.model, "--concurrency", str(conc),
                 "--duration", str(p.loop_s), "--expect-chunks", str(spec.chunks)],
            )  # fmt: skip
            time.sleep(1.0)
            cpu = cpu_seconds(root) - c0
            r["cpu_s_by_thread"] = thread_cpu_delta(th0, thread_cpu(root))
            streams, chunks = r["streams_started"], r["content_chunks"]
            r["cpu_s"] = round(cpu, 3)
            r["cpu_utilisation"] = round(cpu / r["wall_s"], 3)
            r["cpu_us_per_chunk_raw"] = round(cpu * 1e6 / chunks, 2) if chunks else None
            r["cpu_us_per_stream"] = round(cpu * 1e6 / streams, 1) if streams else None
            if label.startswith("gateway"):
                b.sent_to_gateway += streams
            if label.startswith("gateway") and per_req is not None:  # None: throughput not run
                r["per_request_cost_subtracted_us"] = per_req
                net = cpu * 1e6 - streams * per_req
                r["cpu_us_per_chunk_net"] = round(net / chunks, 2) if chunks else None
            if r["bad_streams"] or r["errors"]:
                b.log(f"WARNING: {label}: bad={r['bad_streams']} errors={r['errors']} {r['problems']}")
            return r

        cpu_runs[label] = b.measured(
            f"streamcpu-{label}", one_stream_loop, key="cpu_us_per_chunk_raw", repeats=p.loop_repeats
        )
    b.results["stream_cpu"] = cpu_runs


def resilience(b: Bench) -> None:
    """Failover under faults: a channel whose three keys are healthy, failing 50 % with 500, and
    rate limited in bursts, against a channel of three healthy keys on the same upstream."""
    p = b.p
    out: dict[str, Any] = {}
    for label, model in (("healthy", HEALTHY3_MODEL), ("faulty", RESILIENT_MODEL)):
        b.log(f"resilience ({label}, model {model}): {p.open_rate:.0f} req/s for {p.open_s:.0f}s")

        def one(model: str = model, label: str = label) -> Any:
            c0 = cpu_seconds(b.gw_pid)
            r = b.loadgen(
                f"resilience-{label}",
                ["open", "--url", b.gw_url, "--model", model, "--rate", str(p.open_rate),
                 "--duration", str(p.open_s)],
            )  # fmt: skip
            time.sleep(1.0)
            n = r["scheduled"] + 1
            r["gateway_cpu_us_per_request"] = round((cpu_seconds(b.gw_pid) - c0) * 1e6 / n, 1)
            r["success_rate"] = round(r["ok"] / r["scheduled"], 5) if r["scheduled"] else None
            b.sent_to_gateway += n
            if r["errors"] or r["ok"] != r["scheduled"]:
                b.log(f"WARNING: resilience {label}: ok={r['ok']}/{r['scheduled']} {r['statuses']}")
            return r

        out[label] = b.measured(f"resilience-{label}", one)
    h, f = out["healthy"]["latency_ms"], out["faulty"]["latency_ms"]
    out["added_ms"] = {k: round(f[k] - h[k], 3) for k in ("p50", "p90", "p99", "mean")}

    b.log(f"resilience (faulty, saturated): wrk -c{WRK_CONNECTIONS} for {p.wrk_s}s")
    env = {**b.wrk_env, "BENCH_MODEL": RESILIENT_MODEL}

    def saturated() -> Any:
        c0 = cpu_seconds(b.gw_pid)
        res = run_wrk(b.wrk, b.gw_url, p.wrk_s, env)
        time.sleep(1.0)
        cpu = cpu_seconds(b.gw_pid) - c0
        res["cpu_us_per_request"] = round(cpu * 1e6 / res["requests"], 1)
        res["cpu_utilisation"] = round(cpu / res["duration_s"], 3)
        b.sent_to_gateway += res["requests"]
        b.wrk_runs_on_gateway += 1
        return res

    out["saturated"] = b.measured("resilience-saturated", saturated, key="cpu_us_per_request")
    b.results["resilience"] = out


def soak(b: Bench) -> None:
    p = b.p
    target = b.args.soak_requests or p.soak_requests
    max_s = b.args.soak_max_minutes * 60
    b.log(f"soak: {target:,} non-streaming requests with wrk -c{WRK_CONNECTIONS}, sampling RSS every 10s")
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    t_start = time.perf_counter()

    def sample() -> None:
        m = memory(b.gw_pid)
        samples.append(
            {
                "t_s": round(time.perf_counter() - t_start, 1),
                "tree_rss_mb": m["tree_rss_mb"],
                "workers_rss_mb": m["workers_rss_mb"],
                "tree_pss_mb": m["tree_pss_mb"],
            }
        )

    def sampler() -> None:
        while not stop.wait(10.0):
            sample()

    start_mem = memory(b.gw_pid)
    sample()
    th = threading.Thread(target=sampler, name="rss-sampler", daemon=True)
    th.start()
    segments: list[dict[str, Any]] = []
    done = 0
    rate = b.results.get("throughput", {}).get("gateway", {}).get("rps") or 1000.0
    c0 = cpu_seconds(b.gw_pid)
    k0, cores0 = b.known_cpu(), core_ticks()
    try:
        while done < target and time.perf_counter() - t_start < max_s:
            seg = max(2, min(p.soak_segment_s, math.ceil((target - done) / rate) + 1))
            r = run_wrk(b.wrk, b.gw_url, seg, b.wrk_env)
            done += r["requests"]
            rate = r["requests"] / r["duration_s"]
            b.sent_to_gateway += r["requests"]
            b.wrk_runs_on_gateway += 1
            m = memory(b.gw_pid)
            segments.append(
                {
                    "requests_done": done,
                    "rps": round(rate, 1),
                    "non_2xx": r["non_2xx"],
                    "socket_errors": r["socket_errors"],
                    "p99_ms": r["latency_ms"].get("p99"),
                    "tree_rss_mb": m["tree_rss_mb"],
                    "workers_rss_mb": m["workers_rss_mb"],
                }
            )
            b.log(f"soak: {done:,}/{target:,} requests, {rate:.0f} req/s, tree RSS {m['tree_rss_mb']} MB")
    finally:
        stop.set()
        th.join(timeout=15)
    time.sleep(2.0)
    end_mem = memory(b.gw_pid)
    sample()
    wall = time.perf_counter() - t_start
    cpu = cpu_seconds(b.gw_pid) - c0
    noise = noise_report(wall, cores0, core_ticks(), k0, b.known_cpu())
    # samples in time order (start, every 10 s, end) plus the reading after each wrk segment
    series = [s["tree_rss_mb"] for s in samples] + [g["tree_rss_mb"] for g in segments]
    worker_series = [s["workers_rss_mb"] for s in samples] + [g["workers_rss_mb"] for g in segments]
    # growth after the first segment (pools and caches fill first): the leak signal
    first = segments[0] if segments else samples[0]
    b.results["soak"] = {
        "target_requests": target,
        "noise": noise,
        "requests": done,
        "wall_s": round(wall, 1),
        "rps": round(done / wall, 1),
        "cpu_us_per_request": round(cpu * 1e6 / done, 1) if done else None,
        "non_2xx": sum(s["non_2xx"] for s in segments),
        "socket_errors": {
            k: sum(s["socket_errors"].get(k, 0) for s in segments)
            for k in ("connect", "read", "write", "timeout")
        },
        "start": start_mem,
        "end": end_mem,
        "tree_rss_mb": {
            "start": samples[0]["tree_rss_mb"],
            "end": samples[-1]["tree_rss_mb"],
            "max": max(series),
            "min": min(series),
        },
        "workers_rss_mb": {
            "start": samples[0]["workers_rss_mb"],
            "end": samples[-1]["workers_rss_mb"],
            "max": max(worker_series),
            "min": min(worker_series),
        },
        "after_first_segment": {k: first[k] for k in ("tree_rss_mb", "workers_rss_mb")},
        "growth_after_first_segment_mb": round(samples[-1]["tree_rss_mb"] - first["tree_rss_mb"], 1),
        "worker_growth_after_first_segment_mb": round(
            samples[-1]["workers_rss_mb"] - first["workers_rss_mb"], 1
        ),
        "samples": samples,
        "segments": segments,
    }
