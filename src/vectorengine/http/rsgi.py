"""Thin helpers over Granian's RSGI protocol: reading bodies with a limit, writing responses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from granian._granian import RSGIProtocolClosed, RSGIProtocolError

from vectorengine.errors import GatewayError, Kind
from vectorengine.relay import ResponseHeaders

JSON = "application/json"


async def read_body(scope: Any, protocol: Any, limit: int) -> bytes:
    """The whole request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    length = scope.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise GatewayError(Kind.INVALID_REQUEST, "Invalid Content-Length header.") from None
        if declared > limit:
            raise _too_large(limit)
        body: bytes = await protocol()
        return body
    parts: list[bytes] = []
    size = 0
    async for part in protocol:
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(Kind.BODY_TOO_LARGE, f"The request body exceeds the limit of {limit} bytes.")


def client_ip(scope: Any) -> str | None:
    client = scope.client
    if not client:
        return None
    host, sep, port = str(client).rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else str(client)


class _Sink:
    """Granian's stream writer, called directly once per chunk."""

    __slots__ = ("send",)
    gone: tuple[type[BaseException], ...] = (RSGIProtocolClosed, RSGIProtocolError)

    def __init__(self, transport: Any) -> None:
        self.send = transport.send_bytes


class RSGIResponder:
    """The relay's view of an RSGI response."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def send(self, status: int, headers: ResponseHeaders, body: bytes) -> None:
        self._protocol.response_bytes(status, headers, body)

    def start_stream(self, status: int, headers: ResponseHeaders) -> _Sink:
        return _Sink(self._protocol.response_stream(status, headers))

    def watch_disconnect(self, on_gone: Callable[[], None]) -> Callable[[], None]:
        watcher = asyncio.ensure_future(self._protocol.client_disconnect())
        watcher.add_done_callback(lambda f: None if f.cancelled() else on_gone())

        def stop() -> None:
            watcher.cancel()

        return stop


def send_json(protocol: Any, status: int, obj: Any, headers: ResponseHeaders) -> None:
    protocol.response_bytes(status, [*headers, ("content-type", JSON)], orjson.dumps(obj))


def send_error(protocol: Any, err: GatewayError, headers: ResponseHeaders) -> None:
    protocol.response_bytes(err.status, [*headers, *err.headers, ("content-type", JSON)], err.openai_body())
