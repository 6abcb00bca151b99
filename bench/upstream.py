"""A fast fake OpenAI upstream for the benchmark (a bare Granian RSGI app, no framework).

``POST /v1/chat/completions`` answers with a realistic ~600-byte ``chat.completion`` (usage
included), or, with ``"stream": true``, an SSE stream: a role chunk, N content chunks, a
finish chunk, a usage chunk (``"choices": []``) when ``stream_options.include_usage`` is set,
then ``data: [DONE]``. Like OpenAI, every chunk carries ``"usage":null`` when usage was asked
for. ``GET /health`` answers ``{"status":"ok"}``.

Two API keys fail on purpose, for the resilience scenario: ``key-fail50`` gets OpenAI's 500
envelope on every other call, ``key-burst429`` gets 429 ``rate_limit_exceeded`` (with
``retry-after: 1``) for the first 300 ms of every second. Every other key always succeeds.

Run it (the flags are handed to the app through the environment, then Granian is exec'd, so
the PID you started is Granian's main process)::

    taskset -c 1 python bench/upstream.py --port 18001 --chunks 20 --chunk-delay-ms 0

which is ``granian --interface rsgi upstream:app`` with ``bench/`` on the path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ENV_CHUNKS = "BENCH_UPSTREAM_CHUNKS"
ENV_DELAY_MS = "BENCH_UPSTREAM_CHUNK_DELAY_MS"
DEFAULT_CHUNKS = 20
DEFAULT_DELAY_MS = 0.0

_JSON_HEADERS = [("content-type", "application/json")]
_SSE_HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
_ERROR_500 = (
    b'{"error":{"message":"The server had an error while processing your request. Sorry about that!",'
    b'"type":"server_error","param":null,"code":null}}'
)
_ERROR_429 = (
    b'{"error":{"message":"Rate limit reached for requests. Please try again in 1s.",'
    b'"type":"requests","param":null,"code":"rate_limit_exceeded"}}'
)
_HEADERS_429 = [*_JSON_HEADERS, ("retry-after", "1"), ("x-ratelimit-remaining-requests", "0")]
_CONTENT = "Hello! This is a canned answer from the VectorEngine benchmark upstream."
_FINGERPRINT = "fp_b1e2c3d4e5"
_PROMPT_TOKENS = 19
_COMPLETION_TOKENS = 38
_WORDS = (
    "Hello",
    "!",
    " This",
    " is",
    " a",
    " streamed",
    " token",
    " from",
    " the",
    " bench",
    " upstream",
    ".",
)


def _usage_obj(completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": _PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": _PROMPT_TOKENS + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion_body(model: str) -> bytes:
    """The non-streaming answer, as this upstream sends it for ``model``."""
    return _Model(model, DEFAULT_CHUNKS, False).json_body


class _Model:
    """Pre-encoded response pieces for one model name (cached: the bench uses a handful)."""

    __slots__ = ("content_events", "done_event", "finish_event", "json_body", "role_event", "usage_event")

    def __init__(self, model: str, chunks: int, with_usage_null: bool) -> None:
        created = int(time.time())
        self.json_body = orjson.dumps(
            {
                "id": "chatcmpl-BENCH",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": _CONTENT,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage_obj(_COMPLETION_TOKENS),
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            }
        )
        chunk_head = {
            "id": "chatcmpl-BENCH",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        tail: dict[str, Any] = {"usage": None} if with_usage_null else {}

        def event(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps({**chunk_head, "choices": [choice], **tail}) + b"\n\n"

        self.role_event = event({"role": "assistant", "content": "", "refusal": None}, None)
        self.content_events = [event({"content": _WORDS[i % len(_WORDS)]}, None) for i in range(chunks)]
        self.finish_event = event({}, "stop")
        self.usage_event = (
            b"data: " + orjson.dumps({**chunk_head, "choices": [], "usage": _usage_obj(chunks)}) + b"\n\n"
        )
        self.done_event = b"data: [DONE]\n\n"


class Upstream:
    """The RSGI application."""

    def __init__(self, chunks: int = DEFAULT_CHUNKS, chunk_delay_ms: float = DEFAULT_DELAY_MS) -> None:
        self.chunks = chunks
        self.delay_s = chunk_delay_ms / 1000.0
        self._models: dict[tuple[str, bool], _Model] = {}
        self._fail50_calls = 0

    def _model(self, name: str, usage_null: bool) -> _Model:
        key = (name, usage_null)
        m = self._models.get(key)
        if m is None:
            if len(self._models) > 64:  # a bench tool, but never let a client grow it unbounded
                self._models.clear()
            m = self._models[key] = _Model(name, self.chunks, usage_null)
        return m

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        path: str = scope.path
        if path == "/v1/chat/completions" and scope.method == "POST":
            if not self._fault(scope.headers.get("authorization"), protocol):
                await self._chat(protocol)
        elif path == "/health":
            protocol.response_bytes(200, _JSON_HEADERS, b'{"status":"ok"}')
        else:
            protocol.response_bytes(
                404, _JSON_HEADERS, b'{"error":{"message":"not found","type":"invalid_request_error"}}'
            )

    def _fault(self, authorization: str | None, protocol: Any) -> bool:
        """Answer with the key's failure if it fails now (see the module docstring)."""
        if authorization == "Bearer key-fail50":
            self._fail50_calls += 1
            if self._fail50_calls % 2:
                protocol.response_bytes(500, _JSON_HEADERS, _ERROR_500)
                return True
        elif authorization == "Bearer key-burst429" and time.monotonic() % 1.0 < 0.3:
            protocol.response_bytes(429, _HEADERS_429, _ERROR_429)
            return True
        return False

    async def _chat(self, protocol: Any) -> None:
        raw: bytes = await protocol()
        try:
            req = orjson.loads(raw)
            model = req["model"]
            if not isinstance(model, str):
                raise TypeError("model")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            protocol.response_bytes(
                400, _JSON_HEADERS, b'{"error":{"message":"bad request","type":"invalid_request_error"}}'
            )
            return
        if req.get("stream") is not True:
            protocol.response_bytes(200, _JSON_HEADERS, self._model(model, False).json_body)
            return
        opts = req.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        m = self._model(model, include_usage)
        transport = protocol.response_stream(200, _SSE_HEADERS)
        delay = self.delay_s
        await transport.send_bytes(m.role_event)
        for ev in m.content_events:
            if delay:
                await asyncio.sleep(delay)
            await transport.send_bytes(ev)
        await transport.send_bytes(m.finish_event)
        if include_usage:
            await transport.send_bytes(m.usage_event)
        await transport.send_bytes(m.done_event)


def _from_env() -> Upstream:
    return Upstream(
        chunks=int(os.environ.get(ENV_CHUNKS, DEFAULT_CHUNKS)),
        chunk_delay_ms=float(os.environ.get(ENV_DELAY_MS, DEFAULT_DELAY_MS)),
    )


app = _from_env()


def main() -> None:
    p = argparse.ArgumentParser(description="Fast fake OpenAI upstream (Granian RSGI).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18001)
    p.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, help="content chunks per stream")
    p.add_argument("--chunk-delay-ms", type=float, default=DEFAULT_DELAY_MS, help="delay between chunks")
    args = p.parse_args()
    here = Path(__file__).resolve().parent
    env = dict(os.environ)
    env[ENV_CHUNKS] = str(args.chunks)
    env[ENV_DELAY_MS] = str(args.chunk_delay_ms)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), env.get("PYTHONPATH")]))
    granian = shutil.which("granian", path=str(Path(sys.executable).parent)) or "granian"
    argv = [
        granian,
        "--interface",
        "rsgi",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "2048",
        "upstream:app",
    ]
    os.execve(granian, argv, env)


if __name__ == "__main__":
    main()
