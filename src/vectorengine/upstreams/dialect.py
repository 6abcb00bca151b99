"""How the gateway speaks to one kind of upstream: the interface every wire format implements.

The relay and the failover loop work in the gateway's hub format (OpenAI chat completions,
completions, embeddings). A dialect turns a hub call into the upstream's request, and the
upstream's answers (JSON bodies, SSE streams, error envelopes) back into the hub format. For
OpenAI-compatible upstreams that is pass-through; for Anthropic and Gemini it is translation.
Dialects are pure: no I/O, the failover loop does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage
from vectorengine.store.records import Channel
from vectorengine.upstreams.registry import UpstreamType

Headers = list[tuple[str, str]]


class UpstreamRequest(msgspec.Struct, frozen=True, gc=False):
    url: str
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """An upstream's error answer as an OpenAI client should see it."""

    status: int
    error: dict[str, Any] | None  # the error object (message, type, code …), for classification
    envelope: bytes | None  # the OpenAI envelope to pass on; None: the gateway writes its own
    retry_after_s: float | None = None  # a wait the body asks for (Gemini's RetryInfo)


class StreamObserver(Protocol):
    """Reads an upstream SSE stream and yields the hub's (OpenAI chat) SSE bytes."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def done(self) -> bool: ...

    @property
    def error(self) -> dict[str, Any] | None: ...

    @property
    def content_seen(self) -> bool: ...

    def feed(self, chunk: bytes | memoryview) -> bytes: ...

    def tail(self) -> bytes: ...


class Dialect(Protocol):
    def supports(self, endpoint: wire.Endpoint) -> bool: ...

    def request(
        self, channel: Channel, key_index: int, call: wire.Call, upstream_model: str
    ) -> UpstreamRequest:
        """The upstream request for ``call``; raises :class:`wire.DecodeError` when the call
        cannot be expressed in the upstream's format."""
        ...

    def answer(
        self, call: wire.Call, raw: bytes | memoryview
    ) -> tuple[bytes | memoryview, Usage | None] | None:
        """A JSON answer with its usage, in the hub format (in the client's own format when the
        call passed through natively); None when it is not a valid answer."""
        ...

    def observer(self, call: wire.Call, channel: Channel) -> StreamObserver: ...

    def leading_error(self, first: bytes | memoryview) -> dict[str, Any] | None:
        """The error object when a stream's first event is an error."""
        ...

    def error(self, status: int, raw: bytes | memoryview) -> UpstreamError: ...


def base_url(channel: Channel, utype: UpstreamType) -> str:
    return (channel.base_url or utype.default_base_url or "").rstrip("/")


def request_headers(utype: UpstreamType, key: str, stream: bool) -> Headers:
    """JSON in, the key where the upstream type wants it, and SSE accepted when streaming."""
    headers = [("content-type", "application/json"), *auth_headers(utype, key)]
    if stream:
        headers.append(("accept", "text/event-stream"))
    return headers


def auth_headers(utype: UpstreamType, key: str) -> Headers:
    if utype.auth == "bearer":
        return [("authorization", "Bearer " + key), *utype.headers]
    return [(utype.auth, key), *utype.headers]


class Watching:
    """Passes a stream on as it is while a translator watches it (usage, errors, its end).

    For calls passed through in the client's own protocol: the bytes are the client's, the
    translator's output is thrown away.
    """

    __slots__ = ("_t",)

    def __init__(self, translator: StreamObserver) -> None:
        self._t = translator

    @property
    def usage(self) -> Usage | None:
        return self._t.usage

    @property
    def done(self) -> bool:
        return self._t.done

    @property
    def error(self) -> dict[str, Any] | None:
        return self._t.error

    @property
    def content_seen(self) -> bool:
        return self._t.content_seen

    def feed(self, chunk: bytes | memoryview) -> bytes:
        raw = bytes(chunk)
        self._t.feed(raw)
        return raw

    def tail(self) -> bytes:
        self._t.tail()
        return b""
