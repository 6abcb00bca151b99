"""The relay pipeline: one request's path, top to bottom.

    authenticate → decode → authorize → route → admit (limits, caps, hold the most the
    request can cost) → open an upstream answer (failover: attempts on channels and keys
    until one answers) → deliver (pass bytes through, observe usage) → settle (charge what
    was used, release the rest) → record (the usage log; the alert watch sees it too)

Each step lives in a module with one job; this module only sequences them and owns the
usage record of the request, which is queued exactly once whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Protocol

import msgspec

from vectorengine import auth
from vectorengine.billing.accountant import Accountant, Hold
from vectorengine.errors import GatewayError, Kind
from vectorengine.failover import Failover, Opened
from vectorengine.ingress import OPENAI, Ingress
from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage
from vectorengine.store.records import UsageRecord
from vectorengine.store.snapshot import SnapshotHolder
from vectorengine.upstreams.wires import dialect_for, wire_of

log = logging.getLogger(__name__)

ResponseHeaders = list[tuple[str, str]]


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

    def watch_disconnect(self, on_gone: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_gone`` if the client disconnects; returns a function that stops watching."""
        ...


class UsageSink(Protocol):
    def put(self, record: UsageRecord) -> None: ...

    @property
    def backlogged(self) -> bool: ...


class Inbound(msgspec.Struct):
    """An inbound relay request as the HTTP layer hands it over."""

    endpoint: wire.Endpoint
    body: bytes
    api_key: str | None
    request_id: str
    client_ip: str | None
    received_ms: int
    t0: float  # perf_counter at arrival
    ingress: Ingress = OPENAI  # the client's protocol
    content_type: str | None = None  # the request's, read for multipart forms


_OVERLOADED = GatewayError(
    Kind.OVERLOADED,
    "The gateway is refusing requests until its usage log catches up with the database; retry shortly.",
    headers=(("retry-after", "1"),),
)


class Relay:
    def __init__(
        self,
        snapshots: SnapshotHolder,
        failover: Failover,
        usage: UsageSink,
        idle_timeout_s: float,
        accountant: Accountant,
        watch: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        self._watch = watch  # sees every record after it is queued (alerts)
        self._snapshots = snapshots
        self._failover = failover
        self._accountant = accountant
        self._usage = usage
        self._idle_s = idle_timeout_s

    async def handle(self, req: Inbound, out: Responder) -> None:
        if self._usage.backlogged:  # refused before anything happens: nothing to record
            status, body = req.ingress.error(_OVERLOADED)
            headers = [*_base_headers(req), *_OVERLOADED.headers, ("content-type", "application/json")]
            out.send(status, headers, body)
            return
        rec = UsageRecord(
            request_id=req.request_id,
            created_at=req.received_ms,
            endpoint=req.endpoint.path,
            client_ip=req.client_ip,
        )
        started = False  # whether the client has been sent a status line
        opened: Opened | None = None
        hold: Hold | None = None
        gone: _Gone | None = None
        try:
            snapshot = self._snapshots.current
            token = auth.authenticate(snapshot, req.api_key, req.received_ms)
            rec.token_id = token.id
            call = _decode(req)
            rec.model, rec.stream = call.model, call.stream
            auth.authorize_model(token, call.model)
            routes = snapshot.routes_for(token)
            if call.model not in routes:
                raise GatewayError(
                    Kind.MODEL_NOT_FOUND,
                    f"The model `{call.model}` does not exist or you do not have access to it.",
                    param="model",
                )
            user = snapshot.users.get(token.user_id) if token.user_id is not None else None
            price = snapshot.prices.get(call.model)
            hold = await self._accountant.admit(
                token, user, price, snapshot.multiplier_ppm(token), call, req.client_ip
            )
            if call.stream:  # a client that leaves cancels the upstream call at once
                gone = _Gone(out)
            rec.attempts = []
            opened = await self._failover.open(call, token, routes, rec.attempts, req.t0)
            rec.ttfb_ms = _ms_since(req.t0)
            pick = opened.pick
            rec.channel_id, rec.key_index = pick.candidate.channel.id, pick.key_index
            rec.upstream_model = pick.candidate.upstream_model
            if call.stream:
                started = True
                await self._deliver_stream(req, call, opened, out, rec)
            else:
                self._deliver_json(req, call, opened, out, rec)
            self._failover.settle(opened, opened.usage)
        except GatewayError as err:
            rec.error_kind = err.kind.value
            if not started:  # else the client already has its status; the error went in-band
                status, body = req.ingress.error(err)
                rec.status = status
                headers = [*_base_headers(req), *err.headers, ("content-type", "application/json")]
                out.send(status, headers, body)
        except ClientGone:
            rec.status, rec.error_kind = 499, Kind.CLIENT_ABORTED.value
        except asyncio.CancelledError:
            if gone is None or not gone.happened:
                raise
            gone.absorb()
            rec.status, rec.error_kind = 499, Kind.CLIENT_ABORTED.value
        except Exception:
            rec.status, rec.error_kind = 500, Kind.INTERNAL.value
            raise  # the app logs it and answers with the internal-error envelope
        finally:
            if gone is not None:
                gone.stop()
            if hold is not None:
                try:
                    if opened is None:
                        self._accountant.settle(hold, rec, None, False, 0)
                    else:
                        self._accountant.settle(hold, rec, opened.usage, True, opened.delivered, opened.body)
                except Exception:  # the record must still be queued, whatever went wrong here
                    log.exception("settling %s failed; its hold is not released", req.request_id)
            if opened is not None and opened.exchange is not None:  # a stream's connection
                await opened.close()
            if not rec.attempts or (len(rec.attempts) == 1 and rec.attempts[0].outcome == "won"):
                # Answered by its first attempt: the record itself describes that attempt
                # (channel, key, upstream model, status, time to first byte); no chain stored.
                rec.attempts = None
            rec.latency_ms = _ms_since(req.t0)
            self._usage.put(rec)
            if self._watch is not None:
                self._watch(rec)

    def _deliver_json(
        self, req: Inbound, call: wire.Call, opened: Opened, out: Responder, rec: UsageRecord
    ) -> None:
        resp = opened.resp
        _apply_usage(rec, opened.usage)
        rec.status = resp.status
        assert opened.body is not None
        body = req.ingress.answer(call, wire_of(opened.pick.candidate.channel, call.protocol), opened.body)
        ctype = (resp.header("content-type") if body is opened.body else None) or "application/json"
        out.send(resp.status, [*_base_headers(req), ("content-type", ctype)], bytes(body))

    async def _deliver_stream(
        self, req: Inbound, call: wire.Call, opened: Opened, out: Responder, rec: UsageRecord
    ) -> None:
        resp = opened.resp
        channel = opened.pick.candidate.channel
        upstream_wire = wire_of(channel, call.protocol)
        observer = req.ingress.stream(call, upstream_wire, dialect_for(channel).observer(call, channel))
        headers = [
            *_base_headers(req),
            ("content-type", resp.header("content-type") or "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
        ]
        sink = out.start_stream(resp.status, headers)
        rec.status = resp.status
        read, feed, send = resp.next_chunk, observer.feed, sink.send
        idle = opened.pick.candidate.channel.timeouts.idle_s or self._idle_s
        now = asyncio.get_running_loop().time
        sent = 0  # content chunks the client has been sent
        try:
            try:
                # The idle timer is pushed back at most every tenth of its length, so a stream
                # is cut after 0.9–1.0 × idle_s of silence; one clock read per chunk.
                async with asyncio.timeout(idle) as timer:
                    step, pushed = idle * 0.1, now()
                    chunk = opened.first
                    while chunk is not None and not observer.content_seen:  # until the first token
                        data = feed(chunk)
                        if observer.content_seen:
                            rec.ttft_ms = _ms_since(req.t0)
                        if data:
                            await send(data)
                            sent = int(observer.content_seen)
                        chunk = await read()
                        t = now()
                        if t - pushed > step:
                            timer.reschedule(t + idle)
                            pushed = t
                    while chunk is not None:
                        data = feed(chunk)
                        if data:
                            await send(data)
                            sent += 1
                        chunk = await read()
                        t = now()
                        if t - pushed > step:
                            timer.reschedule(t + idle)
                            pushed = t
            except resp.broken as exc:
                raise GatewayError(
                    Kind.UPSTREAM_STREAM_BROKEN, f"upstream stream broken: {type(exc).__name__}"
                ) from exc
            except TimeoutError:
                raise GatewayError(
                    Kind.UPSTREAM_TIMEOUT, f"The upstream stream was silent for {idle:g} s."
                ) from None
            tail = observer.tail()
            if tail:
                await send(tail)
            if observer.error is not None:
                rec.error_kind = Kind.UPSTREAM_STATUS.value
            elif not observer.done:
                rec.error_kind = Kind.UPSTREAM_STREAM_BROKEN.value
                broken = GatewayError(Kind.UPSTREAM_STREAM_BROKEN, "The upstream stream ended unexpectedly.")
                await send(req.ingress.stream_error(broken))
        except GatewayError as err:
            # The status line is out: end the stream with an in-band error event, as OpenAI does.
            with suppress(*sink.gone):  # the client left too; the record keeps the upstream's fault
                await send(req.ingress.stream_error(err))
            raise
        except sink.gone as exc:
            raise ClientGone() from exc
        finally:
            opened.usage = observer.usage
            opened.delivered = sent
            _apply_usage(rec, observer.usage)


class _Gone:
    """Cancels the request's task when its client disconnects (streams)."""

    __slots__ = ("_stop", "_task", "happened")

    def __init__(self, out: Responder) -> None:
        self._task = asyncio.current_task()
        self.happened = False
        self._stop = out.watch_disconnect(self._fire)

    def _fire(self) -> None:
        self.happened = True
        if self._task is not None:
            self._task.cancel()

    def absorb(self) -> None:
        """The cancellation was ours and is handled: the task goes on to record the request."""
        if self._task is not None:
            self._task.uncancel()

    def stop(self) -> None:
        self._stop()
        self._task = None  # a late notice must not cancel whatever the task does next


def _decode(req: Inbound) -> wire.Call:
    try:
        return req.ingress.decode(req.endpoint, req.body, req.content_type)
    except wire.DecodeError as exc:
        kind = Kind.INVALID_JSON if exc.bad_json else Kind.INVALID_REQUEST
        raise GatewayError(kind, str(exc), param=exc.param) from None


def _apply_usage(rec: UsageRecord, usage: Usage | None) -> None:
    if usage is not None:
        rec.prompt_tokens = usage.prompt_tokens
        rec.completion_tokens = usage.completion_tokens
        rec.cached_tokens = usage.cached_tokens
        rec.reasoning_tokens = usage.reasoning_tokens
        rec.cache_write_tokens = usage.cache_write_tokens


def _base_headers(req: Inbound) -> ResponseHeaders:
    return [("x-request-id", req.request_id)]


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
