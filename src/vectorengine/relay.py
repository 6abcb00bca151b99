"""The relay pipeline: one request's path, top to bottom.

    authenticate → decode → authorize → pick channel and key → call upstream
    → deliver (pass bytes through, observe usage) → record

Each step lives in a module with one job; this module only sequences them and owns the
usage record of the request, which is queued exactly once whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from vectorengine import auth
from vectorengine.errors import GatewayError, Kind
from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage
from vectorengine.routing.selection import Selector
from vectorengine.store.records import UsageRecord
from vectorengine.store.snapshot import SnapshotHolder
from vectorengine.upstreams import openai as openai_upstream
from vectorengine.upstreams.transport import Transport, UpstreamResponse

ResponseHeaders = list[tuple[str, str]]

# Upstream statuses that describe the channel's own credentials or billing, not the caller's
# request: passing them on would tell the caller their (valid) key is wrong.
_CHANNEL_FAULT_STATUSES = frozenset({401, 402, 403})
_FORWARDED_ERROR_HEADERS = ("retry-after", "retry-after-ms")


class ClientGone(Exception):
    """The client closed the connection while we were writing to it."""


class StreamSink(Protocol):
    """The client side of a streamed response.

    ``send`` is the server's own write, called once per chunk with no wrapper around it; it
    raises one of ``gone`` once the client has left.
    """

    send: Callable[[bytes], Awaitable[None]]
    gone: tuple[type[BaseException], ...]


class Responder(Protocol):
    def send(self, status: int, headers: ResponseHeaders, body: bytes) -> None: ...

    def start_stream(self, status: int, headers: ResponseHeaders) -> StreamSink: ...


class UsageSink(Protocol):
    def put(self, record: UsageRecord) -> None: ...


@dataclass(slots=True)
class Inbound:
    """An inbound relay request as the HTTP layer hands it over."""

    endpoint: wire.Endpoint
    body: bytes
    authorization: str | None
    request_id: str
    client_ip: str | None
    received_ms: int
    t0: float  # perf_counter at arrival


class Relay:
    def __init__(
        self,
        snapshots: SnapshotHolder,
        transport: Transport,
        usage: UsageSink,
        selector: Selector | None = None,
    ) -> None:
        self._snapshots = snapshots
        self._transport = transport
        self._usage = usage
        self._selector = selector or Selector()

    async def handle(self, req: Inbound, out: Responder) -> None:
        rec = UsageRecord(
            request_id=req.request_id,
            created_at=req.received_ms,
            endpoint=req.endpoint.path,
            client_ip=req.client_ip,
        )
        started = False  # whether the client has been sent a status line
        try:
            snapshot = self._snapshots.current
            token = auth.authenticate(snapshot, auth.bearer(req.authorization), req.received_ms)
            rec.token_id = token.id
            call = _decode(req)
            rec.model, rec.stream = call.model, call.stream
            auth.authorize_model(token, call.model)
            table = snapshot.routes.get(call.model)
            if table is None:
                raise GatewayError(
                    Kind.MODEL_NOT_FOUND,
                    f"The model `{call.model}` does not exist or you do not have access to it.",
                    param="model",
                )
            cand, key_index = self._selector.pick(table)
            rec.channel_id, rec.key_index, rec.upstream_model = (
                cand.channel.id,
                key_index,
                cand.upstream_model,
            )
            url, headers = openai_upstream.target(cand.channel, key_index, call.endpoint, call.stream)
            body = wire.encode_upstream(call, cand.upstream_model)
            if call.stream:
                async with self._transport.open("POST", url, headers, body) as resp:
                    rec.ttfb_ms = _ms_since(req.t0)
                    if resp.status >= 400:
                        await _upstream_error(resp)
                    started = True
                    await self._deliver_stream(req, call, resp, out, rec)
            else:
                resp = await self._transport.send("POST", url, headers, body)
                rec.ttfb_ms = _ms_since(req.t0)
                if resp.status >= 400:
                    await _upstream_error(resp)
                await self._deliver_json(req, resp, out, rec)
        except GatewayError as err:
            rec.error_kind = err.kind.value
            if not started:  # else the client already has its status; the error went in-band
                rec.status = err.status
                headers = [*_base_headers(req), *err.headers, ("content-type", "application/json")]
                out.send(err.status, headers, err.openai_body())
        except ClientGone:
            rec.status, rec.error_kind = 499, Kind.CLIENT_ABORTED.value
        except Exception:
            rec.status, rec.error_kind = 500, Kind.INTERNAL.value
            raise  # the app logs it and answers with the internal-error envelope
        finally:
            rec.latency_ms = _ms_since(req.t0)
            self._usage.put(rec)

    async def _deliver_json(
        self, req: Inbound, resp: UpstreamResponse, out: Responder, rec: UsageRecord
    ) -> None:
        raw = await resp.read()
        obj, usage = wire.usage_from_body(raw)
        if obj is None:
            raise GatewayError(
                Kind.UPSTREAM_BAD_RESPONSE, "The upstream returned a response that is not valid JSON."
            )
        _apply_usage(rec, usage)
        rec.status = resp.status
        ctype = resp.header("content-type") or "application/json"
        out.send(resp.status, [*_base_headers(req), ("content-type", ctype)], bytes(raw))

    async def _deliver_stream(
        self, req: Inbound, call: wire.Call, resp: UpstreamResponse, out: Responder, rec: UsageRecord
    ) -> None:
        observer = wire.StreamObserver(strip_usage=not call.include_usage)
        headers = [
            *_base_headers(req),
            ("content-type", resp.header("content-type") or "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
        ]
        sink = out.start_stream(resp.status, headers)
        rec.status = resp.status
        read, feed, send = resp.next_chunk, observer.feed, sink.send
        try:
            try:
                while (chunk := await read()) is not None:
                    data = feed(chunk)
                    if rec.ttft_ms is None and observer.content_seen:
                        rec.ttft_ms = _ms_since(req.t0)
                    if data:
                        await send(data)
            except resp.broken as exc:
                raise GatewayError(
                    Kind.UPSTREAM_STREAM_BROKEN, f"upstream stream broken: {type(exc).__name__}"
                ) from exc
            tail = observer.tail()
            if tail:
                await send(tail)
            if observer.error is not None:
                rec.error_kind = Kind.UPSTREAM_STATUS.value
            elif not observer.done:
                rec.error_kind = Kind.UPSTREAM_STREAM_BROKEN.value
                await send(
                    _error_event(Kind.UPSTREAM_STREAM_BROKEN, "The upstream stream ended unexpectedly.")
                )
        except GatewayError as err:
            # The status line is out: end the stream with an in-band error event, as OpenAI does.
            with suppress(*sink.gone):  # the client left too; the record keeps the upstream's fault
                await send(b"data: " + err.openai_body() + b"\n\n")
            raise
        except sink.gone as exc:
            raise ClientGone() from exc
        finally:
            _apply_usage(rec, observer.usage)


def _decode(req: Inbound) -> wire.Call:
    try:
        return wire.decode(req.endpoint, req.body)
    except wire.DecodeError as exc:
        kind = Kind.INVALID_JSON if exc.bad_json else Kind.INVALID_REQUEST
        raise GatewayError(kind, str(exc), param=exc.param) from None


async def _upstream_error(resp: UpstreamResponse) -> None:
    """Turn an upstream error status into a GatewayError, passing on what is meaningful."""
    raw = await resp.read()
    obj, _ = wire.usage_from_body(raw)
    headers = tuple((h, v) for h in _FORWARDED_ERROR_HEADERS if (v := resp.header(h)) is not None)
    if resp.status in _CHANNEL_FAULT_STATUSES:
        raise GatewayError(
            Kind.UPSTREAM_STATUS,
            f"The upstream provider refused the channel's credentials (HTTP {resp.status}).",
            status=502,
        )
    message = f"The upstream provider returned HTTP {resp.status}."
    passthrough = None
    if wire.error_envelope(obj):
        passthrough = bytes(raw)
        upstream_message = obj["error"].get("message")
        if isinstance(upstream_message, str) and upstream_message:
            message = upstream_message
    raise GatewayError(
        Kind.UPSTREAM_STATUS, message, status=resp.status, headers=headers, passthrough=passthrough
    )


def _apply_usage(rec: UsageRecord, usage: Usage | None) -> None:
    if usage is not None:
        rec.prompt_tokens = usage.prompt_tokens
        rec.completion_tokens = usage.completion_tokens
        rec.cached_tokens = usage.cached_tokens
        rec.reasoning_tokens = usage.reasoning_tokens


def _base_headers(req: Inbound) -> ResponseHeaders:
    return [("x-request-id", req.request_id)]


def _error_event(kind: Kind, message: str) -> bytes:
    return b"data: " + GatewayError(kind, message).openai_body() + b"\n\n"


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
