"""Load generators for the benchmark (asyncio + pyreqwest), each bounded in count and time.

Subcommands (each writes one JSON object to ``--out``, or stdout):

``open``
    Open-loop, fixed-rate non-streaming load: request *i* is started at ``t0 + i / rate``
    whatever happened to the earlier ones (no coordinated omission), for ``--duration`` s.
    Latency is taken per request from the moment it is started to the last body byte; the
    lag between the timetable and the actual start is recorded separately.
``streams``
    ``--count`` streaming requests, ``--concurrency`` at a time: time to first content
    chunk (TTFT) and time to ``[DONE]`` per stream, plus a check of what was received.
``stream-loop``
    A closed loop of streams (``--concurrency`` workers, for ``--duration`` s): counts
    streams and content chunks received, for the CPU-per-chunk figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from pyreqwest.client import Client, ClientBuilder

TOKEN = "sk-bench-0123456789abcdef"
CHAT_BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello to the benchmark."},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
}
_CONTENT_MARK = b'"delta":{"content":"'
_USAGE_MARK = b'"usage":{'
_DONE = b"data: [DONE]"


def _client(timeout_s: float) -> Client:
    return (
        ClientBuilder()
        .timeout(timedelta(seconds=timeout_s))
        .connect_timeout(timedelta(seconds=5))
        .tcp_nodelay(True)
        .no_proxy()
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .build()
    )


def _headers(token: str) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), ("authorization", f"Bearer {token}")]


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50/p90/p99/p99.9 (nearest-rank), mean and max of ``values``."""
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "p999": None, "mean": None, "max": None}
    s = sorted(values)

    def rank(q: float) -> float:
        i = max(0, min(len(s) - 1, int(q * len(s) + 0.999999) - 1))
        return round(s[i], 4)

    return {
        "n": len(s),
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "mean": round(sum(s) / len(s), 4),
        "max": round(s[-1], 4),
    }


def _slowest(timeline: list[tuple[float, float]], n: int = 12) -> list[dict[str, float]]:
    """The ``n`` slowest samples with when they started (s into the run): spikes that recur
    at a fixed period point at a timer in the server (a batch flush, a poll)."""
    worst = sorted(timeline, key=lambda x: -x[1])[:n]
    return [{"at_s": round(at, 4), "ms": round(ms, 3)} for at, ms in sorted(worst)]


# -- open loop -----------------------------------------------------------------------------------


@dataclass
class _OpenResult:
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (start offset s, latency ms)
    from_schedule_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    max_inflight: int = 0


async def open_loop(
    url: str, token: str, body: bytes, rate: float, duration_s: float, timeout_s: float
) -> Any:
    client = _client(timeout_s)
    headers = _headers(token)
    res = _OpenResult()
    inflight = 0
    total = int(rate * duration_s)
    t0 = time.perf_counter()  # reset just before the timetable starts

    async def one(scheduled: float) -> None:
        nonlocal inflight
        started = time.perf_counter()
        res.lag_ms.append((started - scheduled) * 1000)
        inflight += 1
        res.max_inflight = max(res.max_inflight, inflight)
        try:
            resp = await client.post(url).headers(headers).body_bytes(body).build().send()
            await resp.bytes()
            end = time.perf_counter()
            res.statuses[resp.status] = res.statuses.get(resp.status, 0) + 1
            if resp.status == 200:
                res.latencies_ms.append((end - started) * 1000)
                res.timeline.append((started - t0, (end - started) * 1000))
                res.from_schedule_ms.append((end - scheduled) * 1000)
        except Exception as exc:
            name = type(exc).__name__
            res.errors[name] = res.errors.get(name, 0) + 1
        finally:
            inflight -= 1

    async with client:
        # One request first to open a connection, so the first timed request is not a connect.
        warm = await client.post(url).headers(headers).body_bytes(body).build().send()
        await warm.bytes()
        tasks: list[asyncio.Task[None]] = []
        # perf_counter, not loop.time(): uvloop's clock has a resolution of 1 ms.
        t0 = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        wall = time.perf_counter() - t0
        await asyncio.wait(tasks, timeout=timeout_s + 5)
    return {
        "kind": "open",
        "url": url,
        "rate": rate,
        "duration_s": duration_s,
        "scheduled": total,
        "schedule_wall_s": round(wall, 3),
        "ok": len(res.latencies_ms),
        "statuses": {str(k): v for k, v in sorted(res.statuses.items())},
        "errors": res.errors,
        "max_inflight": res.max_inflight,
        "latency_ms": percentiles(res.latencies_ms),
        "latency_from_schedule_ms": percentiles(res.from_schedule_ms),
        "start_lag_ms": percentiles(res.lag_ms),
        "slowest": _slowest(res.timeline),
    }


# -- streams -----------------------------------------------------------------------------------------


@dataclass
class _StreamStats:
    ttft_ms: list[float] = field(default_factory=list)
    ttft_timeline: list[tuple[float, float]] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    streams_ok: int = 0
    content_chunks: int = 0
    bad_streams: int = 0
    usage_chunks: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def _one_stream(
    client: Client, url: str, headers: list[tuple[str, str]], body: bytes, stats: _StreamStats, expect: int
) -> None:
    t0 = time.perf_counter()
    ttft: float | None = None
    content = usage = 0
    done = False
    buf = b""
    try:
        req = (
            client.post(url).headers(headers).body_bytes(body).streamed_read_buffer_limit(0).build_streamed()
        )
        async with req as resp:
            stats.statuses[resp.status] = stats.statuses.get(resp.status, 0) + 1
            reader = resp.body_reader
            while (chunk := await reader.read_chunk()) is not None:
                buf += bytes(chunk)
                end = buf.rfind(b"\n\n")
                if end < 0:
                    continue
                complete, buf = buf[: end + 2], buf[end + 2 :]
                n = complete.count(_CONTENT_MARK)
                if n and ttft is None:
                    ttft = time.perf_counter() - t0
                content += n
                usage += complete.count(_USAGE_MARK)
                if _DONE in complete:
                    done = True
            status = resp.status
    except Exception as exc:
        name = type(exc).__name__
        stats.errors[name] = stats.errors.get(name, 0) + 1
        return
    total = time.perf_counter() - t0
    stats.content_chunks += content
    stats.usage_chunks += usage
    if status != 200 or not done or (expect and content != expect):
        stats.bad_streams += 1
        if len(stats.problems) < 5:
            stats.problems.append(f"status={status} done={done} content_chunks={content} tail={buf[-200:]!r}")
        return
    stats.streams_ok += 1
    if ttft is not None:
        stats.ttft_ms.append(ttft * 1000)
        stats.ttft_timeline.append((t0, ttft * 1000))
    stats.total_ms.append(total * 1000)


def _stream_body(model: str, include_usage: bool) -> bytes:
    body: dict[str, Any] = {**CHAT_BODY, "model": model, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


async def streams(
    url: str, token: str, model: str, count: int, concurrency: int, expect: int, include_usage: bool
) -> Any:
    client = _client(60)
    headers = _headers(token)
    body = _stream_body(model, include_usage)
    stats = _StreamStats()
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            await _one_stream(client, url, headers, body, stats, expect)

    async with client:
        await _one_stream(client, url, headers, body, _StreamStats(), expect)  # open a connection
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "kind": "streams",
        "url": url,
        "model": model,
        "count": count,
        "concurrency": concurrency,
        "include_usage": include_usage,
        "wall_s": round(wall, 3),
        "streams_ok": stats.streams_ok,
        "bad_streams": stats.bad_streams,
        "content_chunks": stats.content_chunks,
        "usage_chunks": stats.usage_chunks,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": stats.errors,
        "problems": stats.problems,
        "ttft_ms": percentiles(stats.ttft_ms),
        "total_ms": percentiles(stats.total_ms),
        "slowest_ttft": _slowest([(at - t0, ms) for at, ms in stats.ttft_timeline]),
    }


async def stream_loop(
    url: str, token: str, model: str, concurrency: int, duration_s: float, expect: int, max_streams: int
) -> Any:
    client = _client(60)
    headers = _headers(token)
    body = _stream_body(model, False)
    stats = _StreamStats()
    started = 0

    async with client:
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal started
            while time.perf_counter() < deadline and started < max_streams:
                started += 1
                await _one_stream(client, url, headers, body, stats, expect)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "kind": "stream-loop",
        "url": url,
        "model": model,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "wall_s": round(wall, 3),
        "streams_started": started,
        "streams_ok": stats.streams_ok,
        "bad_streams": stats.bad_streams,
        "content_chunks": stats.content_chunks,
        "usage_chunks": stats.usage_chunks,
        "chunks_per_s": round(stats.content_chunks / wall, 1) if wall else None,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": stats.errors,
        "problems": stats.problems,
        "ttft_ms": percentiles(stats.ttft_ms),
        "total_ms": percentiles(stats.total_ms),
    }


# -- CLI -------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="VectorEngine benchmark load generators")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", required=True, help="full chat completions URL")
        sp.add_argument("--token", default=TOKEN)
        sp.add_argument("--model", default="gpt-4o-mini")
        sp.add_argument("--out", help="write the JSON result here (default: stdout)")

    o = sub.add_parser("open", help="open-loop fixed-rate non-streaming load")
    common(o)
    o.add_argument("--rate", type=float, default=200.0, help="requests per second")
    o.add_argument("--duration", type=float, default=20.0, help="seconds of schedule")
    o.add_argument("--timeout", type=float, default=10.0)

    s = sub.add_parser("streams", help="N streams, K at a time: TTFT")
    common(s)
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--concurrency", type=int, default=1)
    s.add_argument("--expect-chunks", type=int, default=0, help="content chunks per stream (0: any)")
    s.add_argument("--include-usage", action="store_true")

    lp = sub.add_parser("stream-loop", help="closed loop of streams for a duration")
    common(lp)
    lp.add_argument("--concurrency", type=int, default=10)
    lp.add_argument("--duration", type=float, default=15.0)
    lp.add_argument("--expect-chunks", type=int, default=0)
    lp.add_argument("--max-streams", type=int, default=1_000_000)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a gateway dependency
        runner = asyncio.run
    if args.cmd == "open":
        body = orjson.dumps({**CHAT_BODY, "model": args.model})
        result = runner(open_loop(args.url, args.token, body, args.rate, args.duration, args.timeout))
    elif args.cmd == "streams":
        result = runner(
            streams(
                args.url,
                args.token,
                args.model,
                args.count,
                args.concurrency,
                args.expect_chunks,
                args.include_usage,
            )
        )
    else:
        result = runner(
            stream_loop(
                args.url,
                args.token,
                args.model,
                args.concurrency,
                args.duration,
                args.expect_chunks,
                args.max_streams,
            )
        )
    data = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data + b"\n")


if __name__ == "__main__":
    main()
