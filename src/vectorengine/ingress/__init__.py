"""Client protocols: how a request arrives, and how its answer and its errors must look.

The relay works on hub calls (OpenAI chat completions and friends). An OpenAI client's
request *is* a hub call, and its answers and errors are the hub's. A client protocol that is
not OpenAI's turns its requests into hub calls on the way in and the answers (JSON, or the
stream through its own observer) back on the way out; ``upstream_wire`` lets it pass answers
through untouched when the upstream speaks the client's protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from vectorengine.errors import GatewayError
from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage
from vectorengine.upstreams.dialect import StreamObserver


class Ingress(Protocol):
    name: str

    def decode(self, endpoint: wire.Endpoint, raw: bytes, content_type: str | None = None) -> wire.Call:
        """The hub call for a request body (``content_type`` matters for multipart forms)."""
        ...

    def error(self, err: GatewayError) -> tuple[int, bytes]: ...

    def stream_error(self, err: GatewayError) -> bytes:
        """An error after the stream has started, as an event of the client's protocol."""
        ...

    def answer(self, call: wire.Call, upstream_wire: str, body: bytes | memoryview) -> bytes | memoryview: ...

    def stream(self, call: wire.Call, upstream_wire: str, upstream: StreamObserver) -> StreamObserver: ...


class OpenAIIngress:
    name = "openai"

    def decode(self, endpoint: wire.Endpoint, raw: bytes, content_type: str | None = None) -> wire.Call:
        form = content_type if endpoint.multipart else None
        return wire.decode(endpoint, raw, form)

    def error(self, err: GatewayError) -> tuple[int, bytes]:
        return err.status, err.openai_body()

    def stream_error(self, err: GatewayError) -> bytes:
        return b"data: " + err.openai_body() + b"\n\n"

    def answer(self, call: wire.Call, upstream_wire: str, body: bytes | memoryview) -> bytes | memoryview:
        return body

    def stream(self, call: wire.Call, upstream_wire: str, upstream: StreamObserver) -> StreamObserver:
        return upstream


class Chained:
    """The upstream's observer (its format → hub) followed by the client's (hub → its format).

    Usage, errors and the end of the stream are what the upstream side saw; the client side
    only rewrites the bytes.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, inner: StreamObserver, outer: StreamObserver) -> None:
        self._inner = inner
        self._outer = outer

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @property
    def done(self) -> bool:
        return self._inner.done

    @property
    def error(self) -> dict[str, Any] | None:
        return self._inner.error

    @property
    def content_seen(self) -> bool:
        return self._inner.content_seen

    def feed(self, chunk: bytes | memoryview) -> bytes:
        hub = self._inner.feed(chunk)
        return self._outer.feed(hub) if hub else b""

    def tail(self) -> bytes:
        hub = self._inner.tail()
        out = self._outer.feed(hub) if hub else b""
        return out + self._outer.tail()


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise wire.DecodeError(f"The request body is not valid JSON: {exc}", bad_json=True) from None
    if not isinstance(body, dict):
        raise wire.DecodeError("The request body must be a JSON object.", bad_json=True)
    return body


OPENAI = OpenAIIngress()
