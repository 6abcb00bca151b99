"""The admin API (``/api/...``): channels, tokens and usage records.

Off the relay's hot path: handlers talk to the store directly, then reload the snapshot so
the change applies at once. The route table below is also the source of the OpenAPI document.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from vectorengine import auth
from vectorengine.billing.meter import Meter
from vectorengine.errors import GatewayError, Kind
from vectorengine.http import admin_schema as s
from vectorengine.http.accounts_api import ACCOUNT_ROUTES, me, redeem, token_out
from vectorengine.http.admin_base import (
    AdminRequest,
    Reply,
    Route,
    decode_body,
    int_param,
    page_limit,
    send_reply,
    set_fields,
    time_param,
)
from vectorengine.http.reports_api import REPORT_ROUTES
from vectorengine.http.rsgi import read_body, send_error
from vectorengine.keys import generate_key, hash_key, key_hint
from vectorengine.routing.balance import BalancePoller, KeyBalance, polled
from vectorengine.routing.health import HealthBoard
from vectorengine.routing.pacing import Pacer
from vectorengine.store.records import Channel, StoredUsage, UsageFilter
from vectorengine.store.repository import Store, now_ms
from vectorengine.store.snapshot import SnapshotHolder
from vectorengine.upstreams.registry import UPSTREAM_TYPES

_SELF_SERVICE = {"/api/me": "GET", "/api/redeem": "POST"}


class AdminAPI:
    def __init__(
        self,
        store: Store,
        snapshots: SnapshotHolder,
        admin_key_hash: str | None,
        max_body: int,
        health: HealthBoard,
        pacer: Pacer,
        meter: Meter,
        timezone: str = "UTC",
        balances: BalancePoller | None = None,
    ) -> None:
        self.balances = balances  # provider balances of upstream keys (None: not polled here)
        self.meter = meter
        self.timezone = timezone
        self.store = store
        self.health = health
        self.pacer = pacer
        self.snapshots = snapshots
        self.admin_key_hash = admin_key_hash
        self.max_body = max_body
        self._compiled = [(r, r.pattern) for r in ROUTES]

    async def __call__(self, scope: Any, protocol: Any, request_id: str) -> None:
        rid = [("x-request-id", request_id)]
        try:
            if scope.path == "/api/openapi.json":
                from vectorengine.http.openapi import document

                send_reply(protocol, Reply(200, document()), rid)
                return
            if scope.path in _SELF_SERVICE:  # a user's own key, not the admin key
                method = _SELF_SERVICE[scope.path]
                if scope.method != method:
                    raise GatewayError(Kind.METHOD_NOT_ALLOWED, f"Use {method} for {scope.path}.")
                token = auth.authenticate(
                    self.snapshots.current, auth.bearer(scope.headers.get("authorization")), now_ms()
                )
                if scope.path == "/api/me":
                    reply = Reply(200, await me(self, token))
                else:
                    body = await read_body(scope, protocol, self.max_body)
                    reply = Reply(201, await redeem(self, token, body))
                send_reply(protocol, reply, rid)
                return
            self._authorize(scope.headers.get("authorization"))
            route, params = self._match(scope.method, scope.path)
            writes = scope.method in ("POST", "PATCH", "PUT")
            body = await read_body(scope, protocol, self.max_body) if writes else b""
            query = dict(parse_qsl(scope.query_string, keep_blank_values=False))
            reply = await route.handler(self, AdminRequest(scope.method, params, query, body))
            send_reply(protocol, reply, rid)
        except GatewayError as err:
            send_error(protocol, err, rid)

    def _authorize(self, authorization: str | None) -> None:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise GatewayError(Kind.MISSING_API_KEY, "The admin API needs Authorization: Bearer <admin key>.")
        if self.admin_key_hash is None or not hmac.compare_digest(hash_key(key.strip()), self.admin_key_hash):
            raise GatewayError(Kind.INVALID_API_KEY, "Incorrect admin key.")

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        path_matched = False
        for route, pattern in self._compiled:
            m = pattern.match(path)
            if m is None:
                continue
            path_matched = True
            if route.method == method:
                return route, m.groupdict()
        if path_matched:
            raise GatewayError(Kind.METHOD_NOT_ALLOWED, f"Method {method} is not allowed on {path}.")
        raise GatewayError(Kind.ROUTE_NOT_FOUND, f"Unknown admin URL: {method} {path}")


# -- channels --------------------------------------------------------------------------------


def _channel_out(ch: Channel) -> s.ChannelOut:
    return s.ChannelOut(
        id=ch.id,
        name=ch.name,
        type=ch.type,
        base_url=ch.base_url,
        keys=[key_hint(k) for k in ch.keys],
        key_count=len(ch.keys),
        models=list(ch.models),
        model_map=ch.model_map,
        priority=ch.priority,
        weight=ch.weight,
        enabled=ch.enabled,
        managed_by=ch.managed_by,
        created_at=ch.created_at,
        updated_at=ch.updated_at,
        groups=list(ch.groups),
        rpm=ch.rpm,
        tpm=ch.tpm,
        timeouts=ch.timeouts,
        hedge=ch.hedge,
        api_version=ch.api_version,
        balance_alert_below_micro=ch.balance_alert_below_micro,
    )


def _check_channel(fields: dict[str, Any], models: list[str] | tuple[str, ...]) -> None:
    if "type" in fields and fields["type"] not in UPSTREAM_TYPES:
        raise GatewayError(Kind.INVALID_REQUEST, f"Unknown upstream type {fields['type']!r}.", param="type")
    if fields.get("balance_alert_below_micro") is not None and UPSTREAM_TYPES[fields["type"]].balance is None:
        raise GatewayError(
            Kind.INVALID_REQUEST,
            f"Upstream type {fields['type']!r} reports no balance: balance_alert_below_micro cannot apply.",
            param="balance_alert_below_micro",
        )
    for model in fields.get("model_map", {}):
        if model not in models:
            raise GatewayError(
                Kind.INVALID_REQUEST,
                f"model_map key {model!r} is not one of the channel's models.",
                param="model_map",
            )


async def list_channels(api: AdminAPI, req: AdminRequest) -> Reply:
    return Reply(200, [_channel_out(c) for c in await api.store.list_channels()])


async def create_channel(api: AdminAPI, req: AdminRequest) -> Reply:
    body = decode_body(req.body, s.ChannelCreate)
    fields = msgspec.structs.asdict(body)
    _check_channel(fields, body.models)
    try:
        ch = await api.store.create_channel(fields)
    except KeyError:
        raise GatewayError(
            Kind.CONFLICT, f"A channel named {body.name!r} already exists.", param="name"
        ) from None
    await api.snapshots.load()
    return Reply(201, _channel_out(ch))


async def get_channel(api: AdminAPI, req: AdminRequest) -> Reply:
    ch = await api.store.get_channel(int_param(req, "id"))
    if ch is None:
        raise GatewayError(Kind.NOT_FOUND, "No such channel.")
    return Reply(200, _channel_out(ch))


async def patch_channel(api: AdminAPI, req: AdminRequest) -> Reply:
    channel_id = int_param(req, "id")
    changes = set_fields(decode_body(req.body, s.ChannelPatch))
    current = await api.store.get_channel(channel_id)
    if current is None:
        raise GatewayError(Kind.NOT_FOUND, "No such channel.")
    models = changes.get("models", current.models)
    effective = {
        "model_map": current.model_map,
        "type": current.type,
        "balance_alert_below_micro": current.balance_alert_below_micro,
    }
    _check_channel({**effective, **changes}, models)
    try:
        ch = await api.store.update_channel(channel_id, changes)
    except KeyError:
        raise GatewayError(Kind.CONFLICT, "A channel with that name already exists.", param="name") from None
    if ch is None:
        raise GatewayError(Kind.NOT_FOUND, "No such channel.")
    await api.snapshots.load()
    return Reply(200, _channel_out(ch))


async def delete_channel(api: AdminAPI, req: AdminRequest) -> Reply:
    if not await api.store.delete_channel(int_param(req, "id")):
        raise GatewayError(Kind.NOT_FOUND, "No such channel.")
    await api.snapshots.load()
    return Reply(204)


def _live_channel(api: AdminAPI, req: AdminRequest) -> Channel:
    """The channel as the relay sees it now (health is kept per worker, in memory)."""
    ch = api.snapshots.current.channels.get(int_param(req, "id"))
    if ch is None:
        raise GatewayError(Kind.NOT_FOUND, "No such channel.")
    return ch


def _channel_health(api: AdminAPI, ch: Channel) -> s.ChannelHealth:
    keys = [
        msgspec.convert(
            {**row, "key": key_hint(ch.keys[row["key_index"]]), **api.pacer.view(ch, row["key_index"])},
            s.KeyHealthOut,
        )
        for row in api.health.view(ch.id, len(ch.keys))
    ]
    return s.ChannelHealth(channel_id=ch.id, name=ch.name, ttfb_p95_ms=api.health.ttfb_p95(ch.id), keys=keys)


async def channel_health(api: AdminAPI, req: AdminRequest) -> Reply:
    return Reply(200, _channel_health(api, _live_channel(api, req)))


async def channel_balance(api: AdminAPI, req: AdminRequest) -> Reply:
    ch = _live_channel(api, req)
    poller = api.balances
    views = (
        poller.view(ch) if poller is not None else [KeyBalance(i, None, False) for i in range(len(ch.keys))]
    )
    return Reply(
        200,
        s.ChannelBalance(
            channel_id=ch.id,
            name=ch.name,
            type=ch.type,
            polled=poller is not None and polled(ch),
            balance_alert_below_micro=ch.balance_alert_below_micro,
            poll_interval_s=poller.interval_s if poller is not None else 0.0,
            keys=[_key_balance_out(ch, kb) for kb in views],
        ),
    )


def _key_balance_out(ch: Channel, kb: KeyBalance) -> s.KeyBalanceOut:
    r = kb.reading
    return s.KeyBalanceOut(
        key_index=kb.key_index,
        key=key_hint(ch.keys[kb.key_index]),
        balance=format(r.amount, "f") if r is not None and r.amount is not None else None,
        balance_micro=r.micro if r is not None else None,
        currency=r.currency if r is not None else None,
        checked_at=r.checked_at if r is not None else None,
        error=r.error if r is not None else None,
        low=kb.low,
    )


async def reset_key(api: AdminAPI, req: AdminRequest) -> Reply:
    ch = _live_channel(api, req)
    index = int_param(req, "index")
    if not 0 <= index < len(ch.keys):
        raise GatewayError(Kind.NOT_FOUND, "No such key index on this channel.", param="index")
    api.health.reset(ch.id, index)
    return Reply(200, _channel_health(api, ch))


# -- tokens ----------------------------------------------------------------------------------


def _known_user(api: AdminAPI, user_id: int | None) -> int | None:
    if user_id is not None and user_id not in api.snapshots.current.users:
        raise GatewayError(Kind.INVALID_REQUEST, f"No user with id {user_id}.", param="user_id")
    return user_id


async def list_tokens(api: AdminAPI, req: AdminRequest) -> Reply:
    return Reply(200, [token_out(t) for t in await api.store.list_tokens()])


async def create_token(api: AdminAPI, req: AdminRequest) -> Reply:
    body = decode_body(req.body, s.TokenCreate)
    key = body.key or generate_key()
    try:
        tok = await api.store.create_token(
            name=body.name,
            key_hash=hash_key(key),
            key_hint=key_hint(key),
            models=body.models,
            enabled=body.enabled,
            expires_at=body.expires_at * 1000 if body.expires_at is not None else None,
            group=body.group,
            user_id=_known_user(api, body.user_id),
            quota_micro_usd=body.quota_micro_usd,
            limits=body.limits,
        )
    except KeyError:
        raise GatewayError(Kind.CONFLICT, "That key is already in use.", param="key") from None
    await api.snapshots.load()
    out = token_out(tok)
    return Reply(201, s.TokenCreated(**msgspec.structs.asdict(out), key=key))


async def patch_token(api: AdminAPI, req: AdminRequest) -> Reply:
    changes = set_fields(decode_body(req.body, s.TokenPatch))
    if changes.get("expires_at") is not None:
        changes["expires_at"] *= 1000
    if changes.get("user_id") is not None:
        _known_user(api, changes["user_id"])
    tok = await api.store.update_token(int_param(req, "id"), changes)
    if tok is None:
        raise GatewayError(Kind.NOT_FOUND, "No such token.")
    await api.snapshots.load()
    return Reply(200, token_out(tok))


async def delete_token(api: AdminAPI, req: AdminRequest) -> Reply:
    if not await api.store.delete_token(int_param(req, "id")):
        raise GatewayError(Kind.NOT_FOUND, "No such token.")
    await api.snapshots.load()
    return Reply(204)


# -- usage -----------------------------------------------------------------------------------


def _usage_out(u: StoredUsage) -> s.UsageOut:
    return msgspec.convert(msgspec.structs.asdict(u), s.UsageOut)


async def list_usage(api: AdminAPI, req: AdminRequest) -> Reply:
    q = req.query
    unknown = set(q) - {"token", "model", "channel", "status", "since", "until", "limit", "after"}
    if unknown:
        name = sorted(unknown)[0]
        raise GatewayError(Kind.INVALID_REQUEST, f"Unknown query parameter `{name}`.", param=name)
    limit = page_limit(req)
    flt = UsageFilter(
        token_id=int_param(req, "token", q["token"]) if "token" in q else None,
        model=q.get("model"),
        channel_id=int_param(req, "channel", q["channel"]) if "channel" in q else None,
        status=int_param(req, "status", q["status"]) if "status" in q else None,
        since_ms=time_param("since", q.get("since")),
        until_ms=time_param("until", q.get("until")),
    )
    after = int_param(req, "after", q["after"]) if "after" in q else None
    rows = await api.store.query_usage(flt, limit=limit + 1, after=after)
    has_more = len(rows) > limit
    rows = rows[:limit]
    page = s.UsagePage(
        data=[_usage_out(r) for r in rows], has_more=has_more, next_after=rows[-1].id if has_more else None
    )
    return Reply(200, page)


async def get_usage(api: AdminAPI, req: AdminRequest) -> Reply:
    row = await api.store.get_usage(req.path_params["request_id"])
    if row is None:
        raise GatewayError(Kind.NOT_FOUND, "No usage record with that request id.")
    return Reply(200, _usage_out(row))


_USAGE_QUERY = (
    ("token", "integer", "token id"),
    ("model", "string", "model name as the client asked for it"),
    ("channel", "integer", "channel id"),
    ("status", "integer", "HTTP status returned to the client"),
    ("since", "string", "inclusive lower bound: unix seconds or ISO 8601"),
    ("until", "string", "exclusive upper bound: unix seconds or ISO 8601"),
    ("limit", "integer", "page size, 1-1000 (default 100)"),
    ("after", "integer", "the `next_after` of the previous page"),
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/channels", list_channels, "List channels", response=list[s.ChannelOut]),
    Route("POST", "/api/channels", create_channel, "Create a channel", s.ChannelCreate, s.ChannelOut, 201),
    Route("GET", "/api/channels/{id}", get_channel, "Get a channel", response=s.ChannelOut),
    Route("PATCH", "/api/channels/{id}", patch_channel, "Change a channel", s.ChannelPatch, s.ChannelOut),
    Route("DELETE", "/api/channels/{id}", delete_channel, "Delete a channel", status=204),
    Route(
        "GET",
        "/api/channels/{id}/health",
        channel_health,
        "Per-key health: breaker state, reason, error rate, latency, pacing (this worker's view)",
        response=s.ChannelHealth,
    ),
    Route(
        "GET",
        "/api/channels/{id}/balance",
        channel_balance,
        "Per key: the provider's balance as last polled, or why it could not be read (this worker's view)",
        response=s.ChannelBalance,
    ),
    Route(
        "POST",
        "/api/channels/{id}/keys/{index}/reset",
        reset_key,
        "Put a key back in service (e.g. after fixing its billing)",
        response=s.ChannelHealth,
    ),
    Route("GET", "/api/tokens", list_tokens, "List tokens (keys are never shown)", response=list[s.TokenOut]),
    Route(
        "POST",
        "/api/tokens",
        create_token,
        "Create a token; its key is shown once",
        s.TokenCreate,
        s.TokenCreated,
        201,
    ),
    Route(
        "PATCH", "/api/tokens/{id}", patch_token, "Change a token (e.g. disable it)", s.TokenPatch, s.TokenOut
    ),
    Route("DELETE", "/api/tokens/{id}", delete_token, "Delete a token", status=204),
    Route(
        "GET",
        "/api/usage",
        list_usage,
        "Usage records, newest first",
        response=s.UsagePage,
        query=_USAGE_QUERY,
    ),
    Route("GET", "/api/usage/{request_id}", get_usage, "One request's usage record", response=s.UsageOut),
    *ACCOUNT_ROUTES,
    *REPORT_ROUTES,
)
