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

from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage
from vectorengine.store.records import Channel
from vectorengine.upstreams.registry import UpstreamType

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
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

    usage: Usage | None
    done: bool
    error: dict[str, Any] | None
    content_seen: bool

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

    def observer(self, call: wire.Call) -> StreamObserver: ...

    def leading_error(self, first: bytes | memoryview) -> dict[str, Any] | None:
        """The error object when a stream's first event is an error."""
        ...

    def error(self, status: int, raw: bytes | memoryview) -> UpstreamError: ...


def base_url(channel: Channel, utype: UpstreamType) -> str:
    return (channel.base_url or utype.default_base_url or "").rstrip("/")


def auth_headers(utype: UpstreamType, key: str) -> Headers:
    if utype.auth == "bearer":
        return [("authorization", "Bearer " + key), *utype.headers]
    return [(utype.auth, key), *utype.headers]
