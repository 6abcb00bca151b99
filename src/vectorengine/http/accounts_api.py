"""The admin API's accounting routes (users, groups, prices, ledger) and ``GET /api/me``.

A balance changes only through a ledger entry written to the database first; the live meter
is then told, so the next request sees the new balance at once.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import msgspec

from vectorengine.billing.accountant import Periods, quota_key, spend_keys
from vectorengine.billing.prices import Price
from vectorengine.errors import GatewayError, Kind
from vectorengine.http import admin_schema as s
from vectorengine.http.admin_base import (
    AdminRequest,
    Reply,
    Route,
    decode_body,
    int_param,
    page_limit,
    set_fields,
)
from vectorengine.keys import hash_key, key_hint
from vectorengine.store.records import LedgerEntry, Token, User

if TYPE_CHECKING:
    from vectorengine.http.admin_api import AdminAPI


def token_out(tok: Token) -> s.TokenOut:
    return s.TokenOut(
        id=tok.id,
        name=tok.name,
        key_hint=tok.key_hint,
        models=list(tok.models) if tok.models is not None else None,
        enabled=tok.enabled,
        expires_at=tok.expires_at // 1000 if tok.expires_at is not None else None,
        managed_by=tok.managed_by,
        created_at=tok.created_at,
        updated_at=tok.updated_at,
        group=tok.group,
        user_id=tok.user_id,
        quota_micro_usd=tok.quota_micro_usd,
        limits=tok.limits,
    )


async def _user_out(api: AdminAPI, user: User) -> s.UserOut:
    return s.UserOut(
        id=user.id,
        name=user.name,
        group=user.group,
        enabled=user.enabled,
        limits=user.limits,
        balance_micro_usd=await api.store.accounts.balance(user.id),
        available_micro_usd=await api.meter.balance(user.id),
        managed_by=user.managed_by,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


async def _get_user(api: AdminAPI, req: AdminRequest) -> User:
    user = await api.store.accounts.get_user(int_param(req, "id"))
    if user is None:
        raise GatewayError(Kind.NOT_FOUND, "No such user.")
    return user


def _check_group(api: AdminAPI, name: str) -> None:
    if name != "default" and name not in api.snapshots.current.groups:
        raise GatewayError(Kind.INVALID_REQUEST, f"No group named {name!r}.", param="group")


# -- users -----------------------------------------------------------------------------------


async def list_users(api: AdminAPI, req: AdminRequest) -> Reply:
    return Reply(200, [await _user_out(api, u) for u in await api.store.accounts.list_users()])


async def create_user(api: AdminAPI, req: AdminRequest) -> Reply:
    body = decode_body(req.body, s.UserCreate)
    _check_group(api, body.group)
    try:
        user = await api.store.accounts.create_user(body.name, body.group, body.limits, body.enabled)
    except KeyError:
        raise GatewayError(Kind.CONFLICT, f"A user named {body.name!r} exists.", param="name") from None
    await api.meter.credit(user.id, 0)
    await api.snapshots.load()
    return Reply(201, await _user_out(api, user))


async def get_user(api: AdminAPI, req: AdminRequest) -> Reply:
    return Reply(200, await _user_out(api, await _get_user(api, req)))


async def patch_user(api: AdminAPI, req: AdminRequest) -> Reply:
    user = await _get_user(api, req)
    changes = set_fields(decode_body(req.body, s.UserPatch))
    if "group" in changes:
        _check_group(api, changes["group"])
    target = changes.pop("balance_micro_usd", None)
    if changes:
        try:
            updated = await api.store.accounts.update_user(user.id, changes)
        except KeyError:
            raise GatewayError(Kind.CONFLICT, "A user with that name exists.", param="name") from None
        user = updated or user
    if target is not None:
        delta = target - await api.store.accounts.balance(user.id)
        if delta:
            await _book(api, user.id, "adjustment", delta, "balance set by an administrator")
    await api.snapshots.load()
    return Reply(200, await _user_out(api, user))


async def top_up(api: AdminAPI, req: AdminRequest) -> Reply:
    user = await _get_user(api, req)
    body = decode_body(req.body, s.TopUp)
    entry = await _book(api, user.id, "topup", body.amount_micro_usd, body.note)
    return Reply(201, _entry_out(entry))


async def _book(api: AdminAPI, user_id: int, kind: str, amount: int, note: str | None) -> LedgerEntry:
    entry = await api.store.accounts.append(user_id, kind, amount, note)
    assert entry is not None
    await api.meter.credit(user_id, amount)
    return entry


async def refund(api: AdminAPI, req: AdminRequest) -> Reply:
    body = decode_body(req.body, s.Refund)
    try:
        entry = await api.store.accounts.refund(req.path_params["request_id"], body.note)
    except LookupError as exc:
        if exc.args[0] == "unknown":
            raise GatewayError(
                Kind.NOT_FOUND, "No charge for that request id (yet: charges are written in batches)."
            ) from None
        raise GatewayError(Kind.CONFLICT, "That request has already been refunded.") from None
    await api.meter.credit(entry.user_id, entry.amount_micro_usd)
    return Reply(201, _entry_out(entry))


def _entry_out(e: LedgerEntry) -> s.LedgerEntryOut:
    return msgspec.convert(msgspec.structs.asdict(e), s.LedgerEntryOut)


async def user_ledger(api: AdminAPI, req: AdminRequest) -> Reply:
    user = await _get_user(api, req)
    limit = page_limit(req)
    after = int_param(req, "after", req.query["after"]) if "after" in req.query else None
    rows = await api.store.accounts.ledger(user.id, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    page = s.LedgerPage(
        data=[_entry_out(e) for e in rows], has_more=more, next_after=rows[-1].id if more else None
    )
    return Reply(200, page)


# -- groups and prices -----------------------------------------------------------------------


def _group_out(name: str, multiplier_ppm: int, channel_groups: tuple[str, ...] | None, by: str) -> s.GroupOut:
    cg = list(channel_groups) if channel_groups is not None else None
    return s.GroupOut(name=name, multiplier_ppm=multiplier_ppm, channel_groups=cg, managed_by=by)


async def list_groups(api: AdminAPI, req: AdminRequest) -> Reply:
    groups = await api.store.accounts.list_groups()
    return Reply(200, [_group_out(g.name, g.multiplier_ppm, g.channel_groups, g.managed_by) for g in groups])


async def put_group(api: AdminAPI, req: AdminRequest) -> Reply:
    name = req.path_params["name"]
    body = decode_body(req.body, s.GroupIn)
    g = await api.store.accounts.upsert_group(name, body.multiplier_ppm, body.channel_groups, "api")
    await api.snapshots.load()
    return Reply(200, _group_out(g.name, g.multiplier_ppm, g.channel_groups, g.managed_by))


async def list_prices(api: AdminAPI, req: AdminRequest) -> Reply:
    sources = await api.store.accounts.price_sources()
    book = api.snapshots.current.prices
    out = [s.PriceOut(model=m, price=p, source=sources.get(m, "default")) for m, p in book.items()]
    return Reply(200, out)


async def put_price(api: AdminAPI, req: AdminRequest) -> Reply:
    model = req.path_params["model"]
    price = decode_body(req.body, Price)
    await api.store.accounts.set_price(model, price, "api")
    await api.snapshots.load()
    return Reply(200, s.PriceOut(model=model, price=price, source="api"))


async def delete_price(api: AdminAPI, req: AdminRequest) -> Reply:
    if not await api.store.accounts.delete_price(req.path_params["model"]):
        raise GatewayError(Kind.NOT_FOUND, "No price set for that model (shipped defaults stay).")
    await api.snapshots.load()
    return Reply(204)


# -- redemption codes ----------------------------------------------------------------------------

CODE_PREFIX = "ve-redeem-"


async def create_codes(api: AdminAPI, req: AdminRequest) -> Reply:
    body = decode_body(req.body, s.CodesCreate)
    codes = [CODE_PREFIX + secrets.token_urlsafe(18) for _ in range(body.count)]
    expires = body.expires_at * 1000 if body.expires_at is not None else None
    hashed = [(hash_key(c), key_hint(c)) for c in codes]
    await api.store.accounts.create_codes(body.batch, body.value_micro_usd, expires, hashed)
    out = s.CodesCreated(
        batch=body.batch, value_micro_usd=body.value_micro_usd, expires_at=body.expires_at, codes=codes
    )
    return Reply(201, out)


async def list_codes(api: AdminAPI, req: AdminRequest) -> Reply:
    rows = await api.store.accounts.list_codes(req.query.get("batch"))
    for r in rows:
        r.pop("code_hash")
        if r["expires_at"] is not None:
            r["expires_at"] //= 1000
    return Reply(200, [msgspec.convert(r, s.CodeOut) for r in rows])


async def redeem(api: AdminAPI, token: Token, body: bytes) -> s.LedgerEntryOut:
    """``POST /api/redeem`` with a user's own key: the code's value goes to the user's balance."""
    if token.user_id is None:
        raise GatewayError(
            Kind.INVALID_REQUEST, "This key belongs to no user, so it has no balance to credit."
        )
    code = decode_body(body, s.Redeem).code
    try:
        entry = await api.store.accounts.redeem(hash_key(code.strip()), token.user_id)
    except LookupError as exc:
        reason = str(exc.args[0])
        if reason == "unknown":
            raise GatewayError(Kind.NOT_FOUND, "No such redemption code.", param="code") from None
        message = "This code has already been redeemed." if reason == "used" else "This code has expired."
        raise GatewayError(Kind.CONFLICT, message, param="code") from None
    await api.meter.credit(token.user_id, entry.amount_micro_usd)
    return _entry_out(entry)


# -- the caller's own account ------------------------------------------------------------------


async def me(api: AdminAPI, token: Token) -> s.MeOut:
    snap = api.snapshots.current
    accounts = api.store.accounts
    user = snap.users.get(token.user_id) if token.user_id is not None else None
    now = time.time()
    periods = Periods(api.timezone).at(now)
    t_day, t_month = spend_keys("t", token.id, periods.day, periods.month)
    spend = {
        "token_daily": s.SpendOut(
            cap_micro_usd=token.limits.daily_cap_micro_usd, spent_micro_usd=await api.meter.spent(t_day)
        ),
        "token_monthly": s.SpendOut(
            cap_micro_usd=token.limits.monthly_cap_micro_usd, spent_micro_usd=await api.meter.spent(t_month)
        ),
        "token_total": s.SpendOut(
            cap_micro_usd=token.quota_micro_usd, spent_micro_usd=await api.meter.spent(quota_key(token.id))
        ),
    }
    tokens = [token]
    if user is not None:
        u_day, u_month = spend_keys("u", user.id, periods.day, periods.month)
        ul = user.limits
        spend["user_daily"] = s.SpendOut(
            cap_micro_usd=ul.daily_cap_micro_usd, spent_micro_usd=await api.meter.spent(u_day)
        )
        spend["user_monthly"] = s.SpendOut(
            cap_micro_usd=ul.monthly_cap_micro_usd, spent_micro_usd=await api.meter.spent(u_month)
        )
        tokens = sorted((t for t in snap.tokens_by_hash.values() if t.user_id == user.id), key=lambda t: t.id)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=31)).strftime("%Y%m%d")
    rows = await accounts.daily(
        since, "99991231", user_id=user.id if user else None, token_id=None if user else token.id
    )
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in rows:
        acc = days[r["day"]]
        for i, name in enumerate(
            ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micro_usd")
        ):
            acc[i] += int(r[name])
    usage = [
        s.DayOut(
            day=d, requests=v[0], errors=v[1], prompt_tokens=v[2], completion_tokens=v[3], cost_micro_usd=v[4]
        )
        for d, v in sorted(days.items())
    ]
    return s.MeOut(
        user=await _user_out(api, user) if user is not None else None,
        token=token_out(token),
        tokens=[token_out(t) for t in tokens],
        spend=spend,
        usage=usage,
    )


ACCOUNT_ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/users", list_users, "List users with their balances", response=list[s.UserOut]),
    Route("POST", "/api/users", create_user, "Create a user (balance 0)", s.UserCreate, s.UserOut, 201),
    Route("GET", "/api/users/{id}", get_user, "Get a user", response=s.UserOut),
    Route(
        "PATCH",
        "/api/users/{id}",
        patch_user,
        "Change a user; `balance_micro_usd` appends an adjustment entry of the difference",
        s.UserPatch,
        s.UserOut,
    ),
    Route(
        "POST",
        "/api/users/{id}/topup",
        top_up,
        "Add to a user's balance (a ledger entry)",
        s.TopUp,
        s.LedgerEntryOut,
        201,
    ),
    Route(
        "GET",
        "/api/users/{id}/ledger",
        user_ledger,
        "A user's ledger entries, newest first",
        response=s.LedgerPage,
        query=(
            ("limit", "integer", "page size, 1-1000 (default 100)"),
            ("after", "integer", "the `next_after` of the previous page"),
        ),
    ),
    Route(
        "POST",
        "/api/usage/{request_id}/refund",
        refund,
        "Give a request's charge back to its user (once), as a refund ledger entry",
        s.Refund,
        s.LedgerEntryOut,
        201,
    ),
    Route("GET", "/api/groups", list_groups, "List user groups", response=list[s.GroupOut]),
    Route("PUT", "/api/groups/{name}", put_group, "Create or change a group", s.GroupIn, s.GroupOut),
    Route("GET", "/api/prices", list_prices, "Every model's price (micro-USD)", response=list[s.PriceOut]),
    Route("PUT", "/api/prices/{model}", put_price, "Set a model's price", Price, s.PriceOut),
    Route(
        "DELETE", "/api/prices/{model}", delete_price, "Drop a set price (the default applies)", status=204
    ),
    Route(
        "POST",
        "/api/redemption-codes",
        create_codes,
        "Create a batch of one-time codes worth a value each; the codes are shown once",
        s.CodesCreate,
        s.CodesCreated,
        201,
    ),
    Route(
        "GET",
        "/api/redemption-codes",
        list_codes,
        "Codes (hints only) and who redeemed them",
        response=list[s.CodeOut],
        query=(("batch", "string", "only this batch"),),
    ),
)
