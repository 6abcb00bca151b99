"""Attempts: try a request on one channel and key after another until one of them answers.

An attempt *succeeds* when the upstream's first byte has arrived and is not an error: a
complete, valid JSON body, or the first chunk of a stream that is not an error event. Only
then does the client get a status line, so everything that goes wrong before it can still
fail over invisibly. A failure is classified (:mod:`~vectorengine.routing.policy`) and the
policy table decides: give the answer to the caller as it is, or try elsewhere with the key
or channel excluded. Health and pacing learn from every attempt. Optionally a late first
byte starts a second, *hedged* attempt on another channel; the first to answer wins.

Every attempt is recorded on the request's usage record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec

from vectorengine.errors import GatewayError, Kind
from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage
from vectorengine.routing.health import CallShape, HealthBoard
from vectorengine.routing.pacing import Pacer
from vectorengine.routing.policy import (
    POLICY,
    ErrorClass,
    Exclude,
    Retry,
    classify_event,
    classify_status,
    classify_transport,
)
from vectorengine.routing.ratelimit_headers import retry_after_s
from vectorengine.routing.selection import Avoid, Pick, RouteTable, Selector
from vectorengine.settings import RoutingConfig, UpstreamConfig
from vectorengine.store.records import AttemptRecord, Channel, Hedge, Token
from vectorengine.upstreams.dialect import Dialect
from vectorengine.upstreams.transport import Transport, UpstreamResponse
from vectorengine.upstreams.wires import dialect_for

# Upstream statuses that describe the channel's own credentials or billing, not the caller's
# request: passing them on would tell the caller their (valid) key is wrong.
_CHANNEL_FAULT_STATUSES = frozenset({401, 402, 403})
_FORWARDED_ERROR_HEADERS = ("retry-after", "retry-after-ms")


class Opened(msgspec.Struct):
    """The attempt that won: its response, ready to be delivered."""

    pick: Pick
    resp: UpstreamResponse
    attempt: AttemptRecord
    exchange: AbstractAsyncContextManager[UpstreamResponse] | None = None  # streams: close when done
    first: bytes | memoryview | None = None  # streams: the first chunk, already read
    body: bytes | memoryview | None = None  # JSON: the whole body, already checked
    usage: Usage | None = None
    delivered: int = 0  # streams: content chunks sent to the client (prices a cut stream)

    async def close(self) -> None:
        if self.exchange is not None:
            exchange, self.exchange = self.exchange, None
            await exchange.__aexit__(None, None, None)


class AttemptFailed(Exception):
    def __init__(
        self, cls: ErrorClass, error: GatewayError, channel_id: int, retry_after_s: float | None = None
    ) -> None:
        super().__init__(error.message)
        self.cls = cls
        self.error = error
        self.channel_id = channel_id
        self.retry_after_s = retry_after_s


class Failover:
    def __init__(
        self,
        transport: Transport,
        selector: Selector,
        routing: RoutingConfig,
        upstream: UpstreamConfig,
    ) -> None:
        self.transport = transport
        self.selector = selector
        self.health: HealthBoard = selector.health
        self.pacer: Pacer = selector.pacer
        self.routing = routing
        self.upstream = upstream
        self._shapes: dict[tuple[wire.Endpoint, bool, str], CallShape] = {}

    async def open(
        self,
        call: wire.Call,
        token: Token,
        routes: dict[str, RouteTable],
        attempts: list[AttemptRecord],
        t0: float,
    ) -> Opened:
        """The first attempt that answers; raises the last failure's error when none does."""
        cfg = self.routing
        models = self._models(call.model, cfg.fallbacks.get(call.model, ()), token, routes)
        affinity = _affinity_key(call.body) if cfg.affinity_ttl_s is not None else None
        deadline = t0 + cfg.deadline_s
        avoid = Avoid()
        prefer: int | None = None
        # The last failure's error. It is raised after the loop, outside the ``except`` (else its
        # __context__ would be the AttemptFailed that holds it), and popped from a list (else this
        # frame, which its traceback holds, would hold it): either is a reference cycle only the
        # cyclic GC frees, and the worker runs that rarely (measured: +15-25 MB under failover).
        last: list[GatewayError] = []
        waited, mi = 0.0, 0
        while len(attempts) < cfg.max_attempts and mi < len(models) and time.perf_counter() < deadline:
            table = routes[models[mi]]
            choice = self.selector.pick(table, avoid, prefer_channel=prefer, affinity=affinity)
            avoid.rested = False
            if choice is None:
                mi, prefer = mi + 1, None
                continue
            if not isinstance(choice, Pick):  # every key left is paced or cooling: wait, bounded
                if waited + choice > cfg.capacity_wait_ms / 1000 or time.perf_counter() + choice >= deadline:
                    mi, prefer = mi + 1, None
                    continue
                await asyncio.sleep(choice + 0.001)
                waited += choice
                avoid.rested = True
                continue
            hedge = self.routing.hedge.get(call.model) or choice.candidate.channel.hedge
            try:
                if hedge is None or len(attempts) + 2 > cfg.max_attempts:
                    opened = await self._attempt(choice, call, avoid, attempts, t0, deadline)
                else:
                    opened = await self._hedged(hedge, choice, call, table, avoid, attempts, t0, deadline)
            except AttemptFailed as failed:
                last[:] = (failed.error,)
                rule = POLICY[failed.cls]
                if rule.retry is Retry.NEVER:
                    break
                if rule.retry is Retry.CONTEXT_FALLBACK:
                    larger = self._models(None, cfg.context_fallbacks.get(call.model, ()), token, routes)
                    if not larger or models == larger:
                        break
                    models, mi, avoid, prefer = larger, 0, Avoid(), None
                    continue
                prefer = failed.channel_id if rule.exclude is Exclude.KEY else None
                continue
            self.selector.remember(table.model, affinity, opened.pick.candidate.channel.id)
            return opened
        if last:
            raise last.pop()
        raise GatewayError(
            Kind.NO_CAPACITY,
            f"Every upstream for `{call.model}` is out of service or at its rate limit; try again shortly.",
            headers=(("retry-after", "1"),),
        )

    def settle(self, opened: Opened, usage: Usage | None) -> None:
        """After delivery: charge the tokens the request used to the key's pacing."""
        if usage is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens
            if tokens:
                self.pacer.charge(opened.pick.candidate.channel, opened.pick.key_index, tokens)

    # -- one attempt ------------------------------------------------------------------------------

    async def _attempt(
        self,
        pick: Pick,
        call: wire.Call,
        avoid: Avoid,
        attempts: list[AttemptRecord],
        t0: float,
        deadline: float,
        hedge: bool = False,
    ) -> Opened:
        ch, k, model = pick.candidate.channel, pick.key_index, pick.candidate.upstream_model
        started = time.perf_counter()
        att = AttemptRecord(
            n=len(attempts) + 1,
            channel_id=ch.id,
            key_index=k,
            upstream_model=model,
            start_ms=round((started - t0) * 1000.0, 3),
            hedge=hedge,
        )
        attempts.append(att)
        shape = self._shape(call.endpoint, call.stream, model)
        to, dflt = ch.timeouts, self.upstream
        first_byte_s = min(to.first_byte_s or dflt.first_byte_timeout_s, max(0.001, deadline - started))
        dialect = dialect_for(ch)
        try:
            if not dialect.supports(call.endpoint):
                raise wire.DecodeError(f"Channel {ch.name!r} ({ch.type}) does not serve {call.endpoint.path}")
            up = dialect.request(ch, k, call, model)
        except wire.DecodeError as exc:  # this upstream cannot express the request; another may
            att.latency_ms = 0.0
            avoid.channels.add(ch.id)
            raise self._failed(
                pick, att, ErrorClass.NOT_FOUND, GatewayError(Kind.INVALID_REQUEST, str(exc), param=exc.param)
            ) from None
        url, headers, body = up.url, up.headers, up.body
        self.pacer.take(ch, k)
        opened: Opened | None = None
        total_s = to.total_s or dflt.timeout_s
        try:
            if call.stream:
                async with asyncio.timeout(first_byte_s):
                    opened = await self._open_stream(
                        dialect, pick, att, url, headers, body, to.connect_s, total_s
                    )
            else:
                # A JSON answer's first byte comes with the whole of it: the client's own
                # request timeout bounds the wait (no event-loop timer per request).
                opened = await self._send_json(
                    dialect, call, pick, att, url, headers, body, to.connect_s, min(first_byte_s, total_s)
                )
        except TimeoutError:
            failed = self._failed(pick, att, ErrorClass.TIMEOUT, _late(first_byte_s))
        except AttemptFailed as exc:
            failed = exc
        except GatewayError as err:
            cls = classify_transport(err.kind)
            failed = self._failed(pick, att, cls, _late(first_byte_s) if cls is ErrorClass.TIMEOUT else err)
        except asyncio.CancelledError:
            att.outcome = "cancelled"
            att.latency_ms = _ms_since(started)
            if opened is not None:
                await opened.close()
            raise
        else:
            assert opened is not None
            att.outcome = "won"
            att.ttfb_ms = att.latency_ms = _ms_since(started)
            self.health.success(ch.id, k, att.ttfb_ms, shape)
            self.pacer.observe(ch, k, opened.resp.header)
            return opened
        att.latency_ms = _ms_since(started)
        rule = POLICY[failed.cls]
        if rule.exclude is Exclude.CHANNEL:
            avoid.channels.add(ch.id)
        else:
            avoid.keys.add((ch.id, k))
        reason = f"{failed.cls.value}: {failed.error.message}"
        self.health.failure(ch.id, k, rule.effect, reason, failed.retry_after_s, shape)
        try:
            raise failed
        finally:
            del failed  # see ``open``: the traceback holds this frame, so the frame must not hold it

    async def _send_json(
        self,
        dialect: Dialect,
        call: wire.Call,
        pick: Pick,
        att: AttemptRecord,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        connect_s: float | None,
        total_s: float,
    ) -> Opened:
        """Send and read the whole answer, which must be valid JSON."""
        resp = await self.transport.send("POST", url, headers, body, connect_s=connect_s, total_s=total_s)
        att.status = resp.status
        if resp.status >= 400:
            raise await self._status_failure(dialect, pick, att, resp)
        answered = dialect.answer(call, await resp.read())
        if answered is None:
            raise self._failed(
                pick,
                att,
                ErrorClass.BAD_RESPONSE,
                GatewayError(
                    Kind.UPSTREAM_BAD_RESPONSE, "The upstream returned a response that is not valid JSON."
                ),
            )
        return Opened(pick, resp, att, body=answered[0], usage=answered[1])

    async def _open_stream(
        self,
        dialect: Dialect,
        pick: Pick,
        att: AttemptRecord,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        connect_s: float | None,
        total_s: float,
    ) -> Opened:
        """Send, and wait for the stream's first chunk, which must not be an error event."""
        exchange = self.transport.open("POST", url, headers, body, connect_s=connect_s, total_s=total_s)
        resp = await exchange.__aenter__()
        opened = Opened(pick, resp, att, exchange=exchange)
        try:
            att.status = resp.status
            if resp.status >= 400:
                raise await self._status_failure(dialect, pick, att, resp)
            try:
                first = await resp.next_chunk()
            except resp.broken as exc:
                raise GatewayError(
                    Kind.UPSTREAM_STREAM_BROKEN,
                    f"The upstream stream broke before its first chunk: {type(exc).__name__}",
                ) from exc
            if not first:
                raise self._failed(
                    pick,
                    att,
                    ErrorClass.BAD_RESPONSE,
                    GatewayError(
                        Kind.UPSTREAM_BAD_RESPONSE, "The upstream stream ended before its first event."
                    ),
                )
            error = dialect.leading_error(first)
            if error is not None:
                raise self._failed(
                    pick,
                    att,
                    classify_event(error),
                    GatewayError(
                        Kind.UPSTREAM_STATUS, str(error.get("message") or "The upstream stream failed.")
                    ),
                )
            opened.first = first
            return opened
        except BaseException:
            await opened.close()
            raise

    async def _status_failure(
        self, dialect: Dialect, pick: Pick, att: AttemptRecord, resp: UpstreamResponse
    ) -> AttemptFailed:
        """An upstream error status: classify it and keep what is meaningful to pass on."""
        try:
            raw: bytes | memoryview = await resp.read()
        except GatewayError:
            raw = b""
        info = dialect.error(resp.status, raw)
        error_obj = info.error
        cls = classify_status(info.status, error_obj)  # the status as the dialect reads it
        ch = pick.candidate.channel
        self.pacer.observe(ch, pick.key_index, resp.header)
        headers = tuple((h, v) for h in _FORWARDED_ERROR_HEADERS if (v := resp.header(h)) is not None)
        wait = info.retry_after_s if info.retry_after_s is not None else retry_after_s(resp.header)
        if wait is not None and not headers:
            headers = (("retry-after", f"{wait:g}"),)
        if info.status in _CHANNEL_FAULT_STATUSES:
            err = GatewayError(
                Kind.UPSTREAM_STATUS,
                f"The upstream provider refused the channel's credentials (HTTP {resp.status}).",
                status=502,
            )
        else:
            message = f"The upstream provider returned HTTP {resp.status}."
            upstream_message = error_obj.get("message") if error_obj else None
            if isinstance(upstream_message, str) and upstream_message:
                message = upstream_message
            err = GatewayError(
                Kind.UPSTREAM_STATUS, message, status=info.status, headers=headers, passthrough=info.envelope
            )
        return self._failed(pick, att, cls, err, wait)

    def _failed(
        self,
        pick: Pick,
        att: AttemptRecord,
        cls: ErrorClass,
        err: GatewayError,
        retry_after_s: float | None = None,
    ) -> AttemptFailed:
        att.error_class = cls.value
        return AttemptFailed(cls, err, pick.candidate.channel.id, retry_after_s)

    # -- hedging ------------------------------------------------------------------------------------

    async def _hedged(
        self,
        policy: Hedge,
        pick: Pick,
        call: wire.Call,
        table: RouteTable,
        avoid: Avoid,
        attempts: list[AttemptRecord],
        t0: float,
        deadline: float,
    ) -> Opened:
        """The attempt on ``pick``, and a second one elsewhere if its first byte is late."""
        delay = self._hedge_delay_s(policy, pick.candidate.channel)
        first = asyncio.ensure_future(self._attempt(pick, call, avoid, attempts, t0, deadline))
        tasks = [first]
        try:
            done, _ = await asyncio.wait(tasks, timeout=delay)
            if done:
                return first.result()
            alt = self.selector.pick(
                table, Avoid(keys=set(avoid.keys), channels=avoid.channels | {pick.candidate.channel.id})
            )
            if isinstance(alt, Pick):
                tasks.append(
                    asyncio.ensure_future(self._attempt(alt, call, avoid, attempts, t0, deadline, True))
                )
            return await _first_success(tasks)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _hedge_delay_s(self, policy: Hedge, channel: Channel) -> float:
        delay = policy.after_ms
        if policy.p95:
            p95 = self.health.ttfb_p95(channel.id)
            if p95 is not None:
                delay = max(delay, p95)
        return delay / 1000.0

    # -- helpers ------------------------------------------------------------------------------------

    def _models(
        self, first: str | None, more: Sequence[str], token: Token, routes: dict[str, RouteTable]
    ) -> list[str]:
        """The models a request may use in order: its own, then configured fallbacks it may use."""
        out = [first] if first is not None and first in routes else []
        for m in more:
            if m in routes and m not in out and (token.models is None or m in token.models):
                out.append(m)
        return out

    def _shape(self, endpoint: wire.Endpoint, stream: bool, model: str) -> CallShape:
        key = (endpoint, stream, model)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = CallShape(endpoint, stream, model)
        return shape


async def _first_success(tasks: Sequence[asyncio.Future[Opened]]) -> Opened:
    """The first task to succeed; the last failure if none does. Losers are closed."""
    pending: set[asyncio.Future[Opened]] = set(tasks)
    failure: BaseException | None = None
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        winners = [t for t in done if not t.cancelled() and t.exception() is None]
        for t in done:
            if t.cancelled():
                continue
            if t.exception() is not None:
                failure = t.exception()
        if winners:
            for extra in winners[1:]:  # both answered in the same instant: keep one
                extra.result().attempt.outcome = "cancelled"
                await extra.result().close()
            return winners[0].result()
    assert failure is not None
    raise failure


def _late(first_byte_s: float) -> GatewayError:
    return GatewayError(Kind.UPSTREAM_TIMEOUT, f"The upstream sent nothing within {first_byte_s:g} s.")


def _affinity_key(body: dict[str, Any]) -> str | None:
    for name in ("prompt_cache_key", "user"):
        value = body.get(name)
        if isinstance(value, str) and value:
            return f"{name}:{value}"
    return None


def _ms_since(t: float) -> float:
    return round((time.perf_counter() - t) * 1000.0, 3)
