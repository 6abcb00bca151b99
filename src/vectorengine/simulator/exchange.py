"""One request to the simulator being answered: its key, fault, timing, and the response
helpers every dialect uses (headers, error envelopes, JSON, SSE with stream faults)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from vectorengine.simulator import dialects
from vectorengine.simulator.config import FaultSpec
from vectorengine.simulator.dialects import Dialect
from vectorengine.simulator.faults import abort_connection
from vectorengine.simulator.ratelimit import KeyRateLimit
from vectorengine.simulator.stats import NO_KEY
from vectorengine.simulator.wire import (
    DONE,
    JSON_TYPE,
    OPENAI_VERSION,
    SSE_TYPE,
    ApiError,
    Headers,
    RSGIProtocol,
    RSGIScope,
    request_id,
)

if TYPE_CHECKING:
    from vectorengine.simulator.openai import OpenAISimulator

log = logging.getLogger(__name__)

_SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
_DROP_GRACE_S = 0.05


class ClientGone(Exception):
    """The client disconnected while the simulator was waiting to answer it."""


def server_error() -> ApiError:
    return ApiError(500, _SERVER_ERROR_MESSAGE, type="server_error")


class Exchange:
    """One request being answered: its key, timing and response helpers."""

    def __init__(self, app: OpenAISimulator, scope: RSGIScope, protocol: RSGIProtocol) -> None:
        self.app = app
        self.scope = scope
        self.protocol = protocol
        self.key = NO_KEY
        self.fault: FaultSpec | None = None
        self.limiter: KeyRateLimit | None = None  # the buckets of a ``ratelimit`` key
        self.chunk_delay_ms = app.config.chunk_delay_ms
        self.request_id = request_id()
        self.started = time.perf_counter()
        self.arrived = time.monotonic()
        self.counted = False  # a /v1 call in the stats: statuses and aborts are recorded too
        self.responded = False  # the status line is on its way; errors can no longer be sent
        self.dialect: Dialect = "openai"  # whose headers, error envelopes and stream framing to use
        self._gone: asyncio.Future[None] | None = None  # resolves when the client disconnects

    async def pause(self, seconds: float | None) -> None:
        """Wait ``seconds`` (``None``: until the client leaves); :class:`ClientGone` as soon as
        the client disconnects."""
        if self._gone is None:
            self._gone = asyncio.ensure_future(self.protocol.client_disconnect())
        await asyncio.wait((self._gone,), timeout=seconds)
        if self._gone.done():
            raise ClientGone

    def close(self) -> None:
        if self._gone is not None and not self._gone.done():
            self._gone.cancel()

    def _status(self, status: int) -> None:
        self.responded = True
        if self.counted:
            self.app.stats.record_status(self.key, status)

    def use_tokens(self, tokens: int) -> None:
        """Count the prompt and completion tokens of the answer (stats and rate limit)."""
        self.app.stats.add_tokens(self.key, tokens)
        if self.limiter is not None:
            self.limiter.charge(tokens)

    def headers(
        self, content_type: str, extra: Sequence[tuple[str, str]] = (), exhausted: bool = False
    ) -> Headers:
        """The dialect's response headers; ``extra`` ones replace those of the same name."""
        elapsed = round((time.perf_counter() - self.started) * 1000)
        limits = (
            self.limiter.headers()
            if self.limiter is not None
            else self.app.stats.rate_limit_headers(self.key, exhausted)
        )
        if self.dialect in ("openai", "azure"):
            base = [
                ("content-type", content_type),
                ("x-request-id", self.request_id),
                ("openai-organization", self.app.config.organization),
                ("openai-processing-ms", str(elapsed)),
                ("openai-version", OPENAI_VERSION),
                *limits,
            ]
            if self.dialect == "azure":
                base += [("apim-request-id", self.request_id[4:]), ("x-ms-region", "Sweden Central")]
        else:
            base = dialects.headers(self.dialect, content_type, self.request_id, elapsed, limits)
        replaced = {name for name, _ in extra}
        return [*(h for h in base if h[0] not in replaced), *extra]

    def send_error(self, error: ApiError) -> None:
        exhausted = error.code == "rate_limit_exceeded"
        status, body, extra = dialects.error(self.dialect, error, self.request_id)
        self._status(status)
        self.protocol.response_bytes(status, self.headers(JSON_TYPE, extra, exhausted), body)

    async def send_json(self, obj: Any) -> None:
        body = orjson.dumps(dialects.azure_json(obj) if self.dialect == "azure" else obj)
        mode = self.fault.mode if self.fault else None
        if mode == "malformed-json":
            self._status(200)
            self.protocol.response_bytes(200, self.headers(JSON_TYPE), body[: max(len(body) // 2, 1)])
        elif mode == "drop-mid-stream":
            self._status(200)
            headers = self.headers(JSON_TYPE, [("content-length", str(len(body)))])
            transport = self.protocol.response_stream(200, headers)
            await transport.send_bytes(body[: len(body) // 2])
            await self._drop()
        elif mode == "mid-stream-error":
            self.send_error(server_error())
        else:
            self._status(200)
            self.protocol.response_bytes(200, self.headers(JSON_TYPE), body)

    def send_body(self, content_type: str, body: bytes) -> None:
        """A non-JSON answer (audio, a plain-text transcript)."""
        self._status(200)
        self.protocol.response_bytes(200, self.headers(content_type), body)

    async def send_events(self, events: list[bytes], *, done: bool = True) -> None:
        """Stream SSE ``events`` then the dialect's end (OpenAI's ``[DONE]``), applying a stream
        fault if one strikes."""
        self._status(200)
        transport = self.protocol.response_stream(
            200, self.headers(SSE_TYPE, [("cache-control", "no-cache")])
        )
        strike_at = min(self.fault.after_chunks, len(events)) if self.fault else -1
        delay = self.chunk_delay_ms / 1000
        end = [DONE] if done and self.dialect in ("openai", "azure") else []
        if self.dialect == "azure" and events and b'"chat.completion.chunk"' in events[0]:
            events = [dialects.AZURE_FIRST_CHUNK, *events]
        for i, event in enumerate([*events, *end]):
            if i and delay:
                await self.pause(delay)
            if i == strike_at and self.fault is not None:
                if self.fault.mode == "drop-mid-stream":
                    await self._drop()
                    return
                if self.fault.mode == "mid-stream-error":
                    await transport.send_bytes(dialects.stream_error(self.dialect, server_error()))
                    return
                if self.fault.mode == "malformed-json":
                    await transport.send_bytes(event[: len(event) // 2].rstrip(b"\n") + b"\n\n")
                    continue
            await transport.send_bytes(event)

    async def _drop(self) -> None:
        await asyncio.sleep(_DROP_GRACE_S)  # let Granian flush what was sent
        if not abort_connection(self.scope.client):
            log.warning(
                "drop-mid-stream: no socket found for peer %s; the response ends early instead",
                self.scope.client,
            )
