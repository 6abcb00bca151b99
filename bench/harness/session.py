"""One benchmark run: start the upstreams and the gateway, check them, run the scenarios with
noise control around every measured run, check the usage records, stop the gateway."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import scenarios
from harness.config import (
    ADMIN_KEY,
    CHAT_PATH,
    CLK_TCK,
    CONFIG,
    DB,
    FULL,
    GATEWAY_CPU,
    GATEWAY_PORT,
    HOST,
    LOAD_CPU,
    QUICK,
    TOKEN,
    UPSTREAM_SCRIPT,
    UPSTREAMS,
    WRK_CONNECTIONS,
    UpstreamSpec,
    write_config,
)
from harness.load import http, run_loadgen
from harness.procs import (
    Managed,
    Processes,
    children_cpu_seconds,
    core_ticks,
    cpu_seconds,
    memory,
    noise_report,
    port_free,
    tree,
    wait_healthy,
)


class Bench:
    def __init__(self, args: argparse.Namespace, wrk: str) -> None:
        self.args = args
        self.p = QUICK if args.quick else FULL
        self.wrk = wrk
        self.procs = Processes()
        self.python = sys.executable
        self.results: dict[str, Any] = {}
        self.gateway: Managed | None = None
        self.upstreams: dict[str, Managed] = {}
        self.gw_url = f"http://{HOST}:{GATEWAY_PORT}{CHAT_PATH}"
        self.sent_to_gateway = 0  # requests whose completion we counted
        self.wrk_runs_on_gateway = 0  # each may leave up to WRK_CONNECTIONS uncounted in flight
        self.noisy: list[str] = []  # measured runs still disturbed after every retry
        self.wrk_env = {**os.environ, "BENCH_TOKEN": TOKEN, "BENCH_MODEL": "gpt-4o-mini"}

    # -- lifecycle ---------------------------------------------------------------------------------

    def gateway_argv(self) -> list[str]:
        if self.args.gateway_cmd:
            return shlex.split(self.args.gateway_cmd.replace("{config}", str(CONFIG)))
        exe = Path(self.python).parent / "vectorengine"
        cmd = str(exe) if exe.exists() else (shutil.which("vectorengine") or "vectorengine")
        return [cmd, "serve", "--config", str(CONFIG)]

    def start(self) -> None:
        for port in (GATEWAY_PORT, *(u.port for u in UPSTREAMS)):
            if not port_free(port):
                raise RuntimeError(f"port {HOST}:{port} is in use; stop whatever holds it first")
        for u in UPSTREAMS:
            argv = [
                self.python, str(UPSTREAM_SCRIPT), "--port", str(u.port),
                "--chunks", str(u.chunks), "--chunk-delay-ms", str(u.delay_ms),
            ]  # fmt: skip
            self.upstreams[u.name] = self.procs.start(u.name, argv, LOAD_CPU)
        for u in UPSTREAMS:
            wait_healthy(f"http://{HOST}:{u.port}/health", self.upstreams[u.name])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DB}{suffix}").unlink(missing_ok=True)
        write_config(CONFIG, self.args.config_extra)
        argv = self.gateway_argv()
        t0 = time.perf_counter()
        self.gateway = self.procs.start("gateway", argv, GATEWAY_CPU)
        wait_healthy(f"http://{HOST}:{GATEWAY_PORT}/health", self.gateway)
        self.results["gateway"] = {
            "command": shlex.join(["taskset", "-c", GATEWAY_CPU, *argv]),
            "startup_s": round(time.perf_counter() - t0, 2),
            "processes": len(tree(self.gateway.pid)),
        }
        self.gateway.remember_tree()
        self.results["upstreams"] = {
            u.name: {
                "command": shlex.join(["taskset", "-c", LOAD_CPU, *self.procs_argv(u)]),
                "model": u.model,
                "chunks": u.chunks,
                "chunk_delay_ms": u.delay_ms,
            }
            for u in UPSTREAMS
        }

    def procs_argv(self, u: UpstreamSpec) -> list[str]:
        return [
            "python", "bench/upstream.py", "--port", str(u.port),
            "--chunks", str(u.chunks), "--chunk-delay-ms", str(u.delay_ms),
        ]  # fmt: skip

    @property
    def gw_pid(self) -> int:
        assert self.gateway is not None
        return self.gateway.pid

    def up_pid(self, name: str = "upstream") -> int:
        return self.upstreams[name].pid

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def loadgen(self, name: str, argv: list[str]) -> dict[str, Any]:
        return run_loadgen(self.python, name, argv)

    # -- checks ------------------------------------------------------------------------------------

    def sanity(self) -> None:
        """One request of each kind through the gateway, checked against what the upstream sent."""
        self.log("sanity checks")
        hdr = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
        body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
        checks: dict[str, Any] = {}
        st, h, gw_body = http("POST", self.gw_url, body, hdr)
        _, _, direct_body = http("POST", UPSTREAMS[0].url, body, hdr)
        checks["json"] = {
            "status": st,
            "x_request_id": h.get("x-request-id") or h.get("X-Request-Id"),
            "body_identical_to_upstream": gw_body == direct_body,
            "has_usage": b'"usage":{' in gw_body,
        }
        for include in (False, True):
            sbody = json.dumps(
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                    **({"stream_options": {"include_usage": True}} if include else {}),
                }
            ).encode()
            st, h, text = http("POST", self.gw_url, sbody, hdr)
            events = [e for e in text.split(b"\n\n") if e.strip()]
            checks[f"stream_include_usage_{str(include).lower()}"] = {
                "status": st,
                "content_type": h.get("content-type") or h.get("Content-Type"),
                "events": len(events),
                "content_chunks": text.count(b'"delta":{"content":"'),
                "usage_chunks": text.count(b'"usage":{'),
                "usage_null_members": text.count(b'"usage":null'),
                "ends_with_done": events[-1:] == [b"data: [DONE]"],
            }
        self.sent_to_gateway += 3
        ok = (
            checks["json"]["status"] == 200
            and checks["json"]["body_identical_to_upstream"]
            and all(
                c["status"] == 200 and c["ends_with_done"] and c["content_chunks"] == UPSTREAMS[0].chunks
                for k, c in checks.items()
                if k.startswith("stream")
            )
            and checks["stream_include_usage_false"]["usage_chunks"] == 0
            and checks["stream_include_usage_false"]["usage_null_members"] == 0
            and checks["stream_include_usage_true"]["usage_chunks"] == 1
        )
        checks["ok"] = ok
        self.results["sanity"] = checks
        if not ok:
            self.log(f"WARNING: sanity checks failed: {json.dumps(checks)}")

    # -- noise control -----------------------------------------------------------------------------

    def known_cpu(self) -> tuple[float, float]:
        """CPU seconds so far of what this benchmark runs on core 0 (gateway) and core 1 (the rest)."""
        core0 = cpu_seconds(self.gw_pid)
        core1 = sum(cpu_seconds(m.pid) for m in self.upstreams.values())
        me = resource.getrusage(resource.RUSAGE_SELF)
        core1 += children_cpu_seconds() + me.ru_utime + me.ru_stime
        return core0, core1

    def measured(
        self, label: str, fn: Callable[[], dict[str, Any]], key: str | None = None, repeats: int = 1
    ) -> dict[str, Any]:
        """Run ``fn`` (one measured run) ``repeats`` times and return the run with the median
        ``key`` (the spread is kept in ``repeats``). Around each run, note how much CPU *other*
        processes of the machine took on our two cores; if that exceeds ``--max-noise`` on
        either core, run it again (at most ``--retries`` more times) and keep the quietest."""
        kept: list[dict[str, Any]] = []
        for rep in range(repeats):
            name = f"{label} (run {rep + 1}/{repeats})" if repeats > 1 else label
            kept.append(self._quietest(name, fn))
        return self.pick(label, kept, key)

    def measured_together(
        self, fns: dict[str, Callable[[], dict[str, Any]]], key: str, repeats: int
    ) -> dict[str, dict[str, Any]]:
        """Like :meth:`measured` for several variants, run in turn (A, B, A, B, ...) so that a
        drift of the machine or of the gateway's state (its growing database) weighs on each alike."""
        kept: dict[str, list[dict[str, Any]]] = {label: [] for label in fns}
        for rep in range(repeats):
            for label, fn in fns.items():
                kept[label].append(self._quietest(f"{label} (run {rep + 1}/{repeats})", fn))
        return {label: self.pick(label, runs, key) for label, runs in kept.items()}

    def pick(self, label: str, kept: list[dict[str, Any]], key: str | None) -> dict[str, Any]:
        """The run with the median ``key``, with the spread of the others."""
        if key is None or len(kept) == 1:
            chosen = kept[0]
        else:
            chosen = sorted(kept, key=lambda r: float(r[key]))[len(kept) // 2]
            chosen["repeats"] = {
                "key": key,
                "values": [r[key] for r in kept],
                "min": min(float(r[key]) for r in kept),
                "max": max(float(r[key]) for r in kept),
                "others": [{k: v for k, v in r.items() if k != "command"} for r in kept if r is not chosen],
            }
        if chosen["noise"]["worst_foreign"] > self.args.max_noise:
            self.noisy.append(label)
        return chosen

    def _quietest(self, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        attempts: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        for i in range(1 + self.args.retries):
            self.wait_quiet(label)
            t0, k0, c0 = time.perf_counter(), self.known_cpu(), core_ticks()
            res = fn()
            wall = time.perf_counter() - t0
            k1, c1 = self.known_cpu(), core_ticks()
            noise = noise_report(wall, c0, c1, k0, k1)
            res["noise"] = noise
            attempts.append(noise)
            if best is None or noise["worst_foreign"] < best["noise"]["worst_foreign"]:
                best = res
            if noise["worst_foreign"] <= self.args.max_noise:
                break
            self.log(
                f"  {label}: other processes used {noise['core0']['foreign_share']:.0%} of core 0 and "
                f"{noise['core1']['foreign_share']:.0%} of core 1 (steal {noise['core0']['steal_share']:.0%}/"
                f"{noise['core1']['steal_share']:.0%}); "
                + ("retrying" if i < self.args.retries else "keeping the quietest attempt")
            )
            time.sleep(3.0)
        assert best is not None
        best["attempts_noise"] = attempts
        return best

    def wait_quiet(self, label: str) -> None:
        """Wait (at most ``--quiet-wait`` s) until other processes leave both cores nearly idle."""
        deadline = time.monotonic() + self.args.quiet_wait
        waited = False
        while True:
            k0, c0 = self.known_cpu(), core_ticks()
            time.sleep(1.0)
            noise = noise_report(1.0, c0, core_ticks(), k0, self.known_cpu())
            if noise["worst_foreign"] <= self.args.max_noise / 2 or time.monotonic() > deadline:
                if waited:
                    self.log(f"  {label}: machine quiet again (foreign {noise['worst_foreign']:.0%})")
                return
            if not waited:
                self.log(f"  {label}: other processes busy ({noise['worst_foreign']:.0%} of a core); waiting")
                waited = True

    # -- usage records and shutdown ----------------------------------------------------------------

    def usage_check(self) -> None:
        st, _, body = http(
            "GET",
            f"http://{HOST}:{GATEWAY_PORT}/api/usage?limit=1",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        page: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            page = json.loads(body)
        first = (page.get("data") or [None])[0]
        self.results["usage_api"] = {
            "status": st,
            "records_in_first_page": len(page.get("data") or []),
            "has_more": page.get("has_more"),
            "first_record": first,
        }
        self.log(
            f"GET /api/usage?limit=1 → HTTP {st}, {len(page.get('data') or [])} record(s), "
            f"has_more={page.get('has_more')}"
        )

    def finish(self) -> None:
        """Stop the gateway gracefully, then count the usage rows it wrote."""
        assert self.gateway is not None
        self.results["memory_end"] = memory(self.gw_pid)
        self.log("stopping the gateway (SIGTERM) and counting usage records")
        self.results["gateway"]["stop"] = self.procs.stop(self.gateway, timeout_s=60)
        log_text = self.gateway.log.read_text(errors="replace")
        bad = [
            ln
            for ln in log_text.splitlines()
            if re.search(r"Traceback|ERROR|CRITICAL|Exception|exception", ln)
        ]
        self.results["gateway"]["log_problem_lines"] = len(bad)
        self.results["gateway"]["log_problem_sample"] = bad[:20]
        if not DB.exists():  # a calibration gateway (--gateway-cmd) keeps no usage records
            self.log("no usage database: nothing to count")
            return
        rows: dict[str, Any] = {}
        with contextlib.closing(sqlite3.connect(f"file:{DB}?mode=ro", uri=True)) as conn:
            total, ok, with_tokens = conn.execute(
                "SELECT count(*), sum(status = 200), sum(prompt_tokens > 0) FROM usage_records"
            ).fetchone()
            by_status = dict(conn.execute("SELECT status, count(*) FROM usage_records GROUP BY status"))
            rows = {
                "rows": total,
                "status_200": ok,
                "with_prompt_tokens": with_tokens,
                "by_status": {str(k): v for k, v in by_status.items()},
            }
        rows["requests_counted_by_clients"] = self.sent_to_gateway
        rows["max_uncounted_in_flight"] = self.wrk_runs_on_gateway * WRK_CONNECTIONS
        rows["all_recorded"] = (
            self.sent_to_gateway <= total <= self.sent_to_gateway + rows["max_uncounted_in_flight"]
        )
        self.results["usage_db"] = rows

    # -- the whole run -----------------------------------------------------------------------------

    def run(self) -> None:
        self.results["meta"] = machine_info(self.args)
        self.start()
        self.results["memory_start"] = memory(self.gw_pid)
        self.sanity()
        phases: dict[str, Callable[[Bench], None]] = {
            "throughput": scenarios.throughput,
            "latency": scenarios.latency,
            "ttft": scenarios.ttft,
            "streamcpu": scenarios.stream_cpu,
            "resilience": scenarios.resilience,
        }
        for name, phase in phases.items():
            if not self.args.only or name in self.args.only:
                phase(self)
        self.results["memory_after_scenarios"] = memory(self.gw_pid)
        if self.args.soak:
            scenarios.soak(self)
        self.usage_check()
        self.finish()
        self.results["noisy_runs"] = self.noisy


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "argv": sys.argv,
        "mode": "quick" if args.quick else "full",
        "soak": bool(args.soak),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "clk_tck": CLK_TCK,
    }
