"""Run every VectorEngine benchmark scenario and write ``bench/out/results.json``.

    python bench/run.py            # full run (about 4 minutes)
    python bench/run.py --quick    # smoke run (about 1 minute)
    python bench/run.py --soak     # full run, then 1,000,000 requests while sampling RSS

The gateway runs pinned to CPU 0; the fake upstreams (``bench/upstream.py``), ``wrk`` and the
Python load generator (``bench/loadgen.py``) share CPU 1. See ``bench/README.md`` for what
each figure means and how it is taken. Every process started here is stopped by PID at the
end, also on Ctrl-C or an exception.

This file is the command line; the harness itself is the ``bench/harness/`` package.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from harness.config import LOAD_CPU, OUT, SCENARIOS
from harness.report import summary, write_results
from harness.session import Bench


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so the ``finally`` that stops every process
    runs (SIGINT explicitly too: a shell starts background jobs with SIGINT ignored)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="VectorEngine benchmark harness")
    ap.add_argument("--quick", action="store_true", help="short durations (smoke run)")
    ap.add_argument("--soak", action="store_true", help="also push 1M requests and sample RSS")
    ap.add_argument(
        "--soak-requests", type=int, default=0, help="soak size (default 1,000,000; quick 50,000)"
    )
    ap.add_argument("--soak-max-minutes", type=float, default=40.0, help="hard time limit for the soak")
    ap.add_argument(
        "--only",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=[],
        help="comma-separated subset of: throughput, latency, ttft, streamcpu (default: all; "
        "streamcpu's net figure needs throughput)",
    )
    ap.add_argument(
        "--max-noise",
        type=float,
        default=0.10,
        help="share of a core that other processes (or steal) may take during a measured run "
        "before it is repeated (default 0.10)",
    )
    ap.add_argument("--retries", type=int, default=2, help="repeats of a disturbed measured run (default 2)")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each measured run, wait up to this many seconds for other processes to go idle",
    )
    ap.add_argument(
        "--config-extra",
        default="",
        help="YAML appended to the generated gateway config (e.g. 'usage: {flush_interval_ms: 1000}')",
    )
    ap.add_argument(
        "--gateway-cmd",
        help="gateway command instead of `vectorengine serve --config {config}` "
        "({config} is replaced by the generated config path; taskset -c 0 is prepended)",
    )
    args = ap.parse_args()
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        ap.error(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}")
    return args


def main() -> int:
    args = parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("error: wrk is not installed. Install it with:  apt-get install -y wrk", file=sys.stderr)
        return 2
    if shutil.which("taskset") is None:
        print("error: taskset is missing (Debian package util-linux)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; gateway and load will share a core", file=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # keep this script off the gateway's core
    bench = Bench(args, wrk)
    failed: BaseException | None = None
    try:
        with _signals_as_interrupt():
            bench.run()
    except BaseException as exc:
        failed = exc
        bench.results["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        bench.procs.stop_all()
        results_path = write_results(bench.results, soak=args.soak, quick=args.quick)
    try:
        print(summary(bench.results))
    except (KeyError, TypeError, IndexError) as exc:  # a run that stopped early has partial results
        print(f"(summary incomplete: {type(exc).__name__}: {exc})")
    print(f"results: {results_path}")
    if failed is not None:
        if isinstance(failed, KeyboardInterrupt):
            print("interrupted; every started process was stopped", file=sys.stderr)
            return 130
        print(f"error: {bench.results['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
