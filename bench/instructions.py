"""Instructions per request, counted by valgrind: a yardstick that does not drift.

CPU time on a shared virtual machine drifts by a third within minutes (see RESULTS.md), more
than most changes to the hot path are worth, so timing runs cannot tell such a change apart
from the drift. An instruction count does not drift: this runs the gateway in-process, with
its real pipeline, accounting, SQLite usage writer and shutdown flush, but an upstream
transport that answers at once with the bench upstream's canned ``chat.completion``, and no
HTTP server (Granian's and pyreqwest's own work is left out). It counts every instruction of
the process (all threads) under ``valgrind --tool=cachegrind`` twice, once for a warm-up
alone and once for the warm-up plus ``--requests`` requests, and reports the difference per
request, for the unbilled bench token and the billed one (every limit on).

    apt-get install -y valgrind        # once
    .venv/bin/python bench/instructions.py                 # both tokens, ~2 minutes
    .venv/bin/python bench/instructions.py --requests 5000 --tokens billed

Repeated runs agree within about 1 %. An instruction is not a fixed amount of time, so the
figure ranks changes; the µs targets are still judged by ``run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from harness.config import BILLED_TOKEN, TOKEN, write_config
from loadgen import CHAT_BODY
from upstream import chat_completion_body

BODY = orjson.dumps(CHAT_BODY)  # the same bytes as chat.lua's
TOKENS = {"unbilled": TOKEN, "billed": BILLED_TOKEN}
_JSON = chat_completion_body("gpt-4o-mini")
WARM_UP = 300
CONCURRENCY = 50  # requests in flight at once, as wrk -c50


class _Answer:
    """An upstream answer already read in full (what the pyreqwest transport hands over)."""

    __slots__ = ("next_chunk", "status")
    broken: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self) -> None:
        self.status = 200
        self.next_chunk = _no_chunks

    def header(self, name: str) -> str | None:
        return "application/json" if name == "content-type" else None

    async def read(self) -> memoryview:
        return memoryview(_JSON)


async def _no_chunks() -> None:
    return None


class _CannedTransport:
    async def send(self, method: str, url: str, headers: Any, body: bytes, **_: Any) -> _Answer:
        await asyncio.sleep(0)  # an answer arrives later, as from a socket
        return _Answer()

    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("streams are not measured here")

    async def close(self) -> None:
        return None


class _Scope:
    proto = "http"
    method = "POST"
    path = "/v1/chat/completions"
    client = "127.0.0.1:40000"
    query_string = ""

    def __init__(self, token: str) -> None:
        self.headers = {
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "content-length": str(len(BODY)),
        }


class _Protocol:
    """The RSGI protocol object of one request: its body, and the response it was sent."""

    status = 0

    async def __call__(self) -> bytes:
        return BODY

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status


async def _serve(config: Path, token: str, requests: int) -> None:
    from vectorengine.app import Gateway
    from vectorengine.bootstrap import bootstrap
    from vectorengine.settings import load_settings
    from vectorengine.store.engine import migrate_async

    settings = load_settings(config)
    await migrate_async(settings.database)
    await bootstrap(settings)
    gateway = Gateway(settings, _CannedTransport())
    await gateway.startup()
    scope = _Scope(token)

    async def one() -> None:
        protocol = _Protocol()
        await gateway.__rsgi__(scope, protocol)
        if protocol.status != 200:
            raise SystemExit(f"a request got status {protocol.status}")

    async def batch(n: int) -> None:
        for start in range(0, n, CONCURRENCY):
            await asyncio.gather(*(one() for _ in range(min(CONCURRENCY, n - start))))

    await batch(WARM_UP)
    await batch(requests)
    await gateway.shutdown()  # writes every queued usage record: part of a request's cost


def _child(token: str, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ve-instr-") as tmp:
        config = Path(tmp) / "bench.yaml"
        # Batches of 500 records, as under load (a full batch is written at once), whatever
        # the time: with the default 0.25 s interval, how many partial batches a run writes
        # would depend on how fast valgrind runs it.
        write_config(config, "usage: {flush_interval_ms: 60000}\n", db=Path(tmp) / "bench.db")
        asyncio.run(_serve(config, token, requests))


def _count(token: str, requests: int) -> int:
    """Instructions of one child process, all threads, counted by cachegrind."""
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, __file__, "--child", token, str(requests),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the measured process failed:\n{done.stderr[-3000:]}")
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-3000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests measured (after a warm-up of 300)"
    )
    parser.add_argument("--tokens", default="unbilled,billed", help="comma-separated: unbilled, billed")
    parser.add_argument("--child", nargs=2, metavar=("TOKEN", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is missing: apt-get install -y valgrind")
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in both runs
    for name in args.tokens.split(","):
        token = TOKENS[name.strip()]
        base = _count(token, 0)
        total = _count(token, args.requests)
        per = (total - base) / args.requests
        print(
            f"{name.strip():>8}: {per:,.0f} instructions per request ({args.requests} requests, in-process)"
        )


if __name__ == "__main__":
    main()
