"""The store's accounting tables: users, groups, prices, the ledger and the daily rollup.

A balance changes only by appending a ledger entry, and the entry and the balance column move
in the same transaction, so ``users.balance_micro_usd`` is always the sum of the user's entries.
Charges are booked with the usage records they belong to (:mod:`~vectorengine.store.usage_log`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vectorengine.billing.prices import Price
from vectorengine.store import schema
from vectorengine.store.records import NO_LIMITS, Group, LedgerEntry, Limits, User
from vectorengine.store.usage_log import balance_sql

_USER_FIELDS = frozenset({"name", "group", "enabled", "limits"})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _user(row: Any) -> User:
    m = row._mapping
    return User(
        id=m["id"],
        name=m["name"],
        group=m["group"],
        enabled=bool(m["enabled"]),
        limits=msgspec.convert(m["limits"] or {}, Limits),
        managed_by=m["managed_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _group(row: Any) -> Group:
    m = row._mapping
    cg = m["channel_groups"]
    return Group(
        name=m["name"],
        multiplier_ppm=int(m["multiplier_ppm"]),
        channel_groups=tuple(cg) if cg is not None else None,
        managed_by=m["managed_by"],
    )


def _entry(row: Any) -> LedgerEntry:
    return msgspec.convert({str(k): v for k, v in row._mapping.items()}, LedgerEntry)


class Accounts:
    def __init__(self, engine: AsyncEngine, bump: Callable[[AsyncConnection], Awaitable[None]]) -> None:
        self.engine = engine
        self._bump = bump  # the snapshot's revision counter: users and groups are in it

    # -- groups ------------------------------------------------------------------------------

    async def list_groups(self) -> list[Group]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(schema.groups).order_by(schema.groups.c.name))
            return [_group(r) for r in rows]

    async def upsert_group(
        self, name: str, multiplier_ppm: int, channel_groups: Sequence[str] | None, managed_by: str
    ) -> Group:
        ts = _now_ms()
        g = schema.groups
        cg = list(channel_groups) if channel_groups is not None else None
        async with self.engine.begin() as conn:
            found = (await conn.execute(sa.select(g).where(g.c.name == name))).first()
            if found is None:
                await conn.execute(
                    sa.insert(g).values(
                        name=name,
                        multiplier_ppm=multiplier_ppm,
                        channel_groups=cg,
                        managed_by=managed_by,
                        created_at=ts,
                        updated_at=ts,
                    )
                )
            else:
                await conn.execute(
                    sa.update(g)
                    .where(g.c.name == name)
                    .values(multiplier_ppm=multiplier_ppm, channel_groups=cg, updated_at=ts)
                )
            await self._bump(conn)
            row = (await conn.execute(sa.select(g).where(g.c.name == name))).one()
        return _group(row)

    # -- users -------------------------------------------------------------------------------

    async def list_users(self) -> list[User]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(schema.users).order_by(schema.users.c.id))
            return [_user(r) for r in rows]

    async def get_user(self, user_id: int) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(schema.users).where(schema.users.c.id == user_id))).first()
        return _user(row) if row else None

    async def find_user(self, name: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(schema.users).where(schema.users.c.name == name))).first()
        return _user(row) if row else None

    async def create_user(
        self,
        name: str,
        group: str = "default",
        limits: Limits = NO_LIMITS,
        enabled: bool = True,
        managed_by: str = "api",
    ) -> User:
        """Insert a user with a zero balance; :class:`KeyError` if the name is taken."""
        ts = _now_ms()
        try:
            async with self.engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.insert(schema.users)
                        .values(
                            name=name,
                            group=group,
                            enabled=enabled,
                            limits=msgspec.to_builtins(limits),
                            balance_micro_usd=0,
                            managed_by=managed_by,
                            created_at=ts,
                            updated_at=ts,
                        )
                        .returning(*schema.users.c)
                    )
                ).one()
                await self._bump(conn)
        except IntegrityError:
            raise KeyError(name) from None
        return _user(row)

    async def update_user(self, user_id: int, changes: Mapping[str, Any]) -> User | None:
        values = {k: v for k, v in changes.items() if k in _USER_FIELDS}
        if isinstance(values.get("limits"), Limits):
            values["limits"] = msgspec.to_builtins(values["limits"])
        try:
            async with self.engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.update(schema.users)
                        .where(schema.users.c.id == user_id)
                        .values(**values, updated_at=_now_ms())
                        .returning(*schema.users.c)
                    )
                ).first()
                if row is not None:
                    await self._bump(conn)
        except IntegrityError:
            raise KeyError(str(changes.get("name"))) from None
        return _user(row) if row else None

    async def balances(self) -> dict[int, int]:
        u = schema.users
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(u.c.id, u.c.balance_micro_usd))
            return {int(r[0]): int(r[1]) for r in rows}

    async def balance(self, user_id: int) -> int:
        u = schema.users
        async with self.engine.connect() as conn:
            value = await conn.scalar(sa.select(u.c.balance_micro_usd).where(u.c.id == user_id))
        return int(value or 0)

    # -- ledger ------------------------------------------------------------------------------

    async def append(
        self, user_id: int, kind: str, amount: int, note: str | None = None, *, once: bool = False
    ) -> LedgerEntry | None:
        """Append one entry and move the balance with it. With ``once``, do nothing (None) if
        the user already has an entry of this kind (the initial balance of a configured user)."""
        led = schema.ledger
        async with self.engine.begin() as conn:
            if once:
                found = await conn.scalar(
                    sa.select(led.c.id).where(led.c.user_id == user_id, led.c.kind == kind).limit(1)
                )
                if found is not None:
                    return None
            row = (
                await conn.execute(
                    sa.insert(led)
                    .values(
                        user_id=user_id, kind=kind, amount_micro_usd=amount, created_at=_now_ms(), note=note
                    )
                    .returning(*led.c)
                )
            ).one()
            await _move_balance(conn, user_id, amount)
        return _entry(row)

    async def refund(self, request_id: str, note: str | None) -> LedgerEntry:
        """Give a request's charge back, once, as a ``refund`` entry. Raises :class:`LookupError`
        with ``unknown`` (no charge for that request) or ``refunded``."""
        led = schema.ledger
        async with self.engine.begin() as conn:
            charge = (
                await conn.execute(
                    sa.select(led).where(led.c.request_id == request_id, led.c.kind == "charge")
                )
            ).first()
            if charge is None:
                raise LookupError("unknown")
            done = await conn.scalar(
                sa.select(led.c.id).where(led.c.request_id == request_id, led.c.kind == "refund").limit(1)
            )
            if done is not None:
                raise LookupError("refunded")
            user_id, amount = int(charge.user_id), -int(charge.amount_micro_usd)
            row = (
                await conn.execute(
                    sa.insert(led)
                    .values(
                        user_id=user_id,
                        kind="refund",
                        amount_micro_usd=amount,
                        created_at=_now_ms(),
                        request_id=request_id,
                        note=note,
                    )
                    .returning(*led.c)
                )
            ).one()
            await _move_balance(conn, user_id, amount)
        return _entry(row)

    async def ledger(self, user_id: int, *, limit: int, after: int | None = None) -> list[LedgerEntry]:
        """Newest first; ``after`` is the id of the last entry of the previous page."""
        led = schema.ledger
        q = sa.select(led).where(led.c.user_id == user_id).order_by(led.c.id.desc()).limit(limit)
        if after is not None:
            q = q.where(led.c.id < after)
        async with self.engine.connect() as conn:
            return [_entry(r) for r in await conn.execute(q)]

    async def ledger_sum(self, user_id: int) -> int:
        led = schema.ledger
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(led.c.amount_micro_usd), 0)).where(
                    led.c.user_id == user_id
                )
            )
        return int(value or 0)

    # -- redemption codes ----------------------------------------------------------------------

    async def create_codes(
        self, batch: str, value: int, expires_at: int | None, codes: Sequence[tuple[str, str]]
    ) -> None:
        """Store codes as (hash, hint) pairs: the codes themselves are shown once, never stored."""
        ts = _now_ms()
        rows = [
            {
                "code_hash": h,
                "code_hint": hint,
                "batch": batch,
                "value_micro_usd": value,
                "expires_at": expires_at,
                "created_at": ts,
            }
            for h, hint in codes
        ]
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(schema.redemption_codes), rows)

    async def list_codes(self, batch: str | None = None) -> list[dict[str, Any]]:
        c = schema.redemption_codes
        q = sa.select(c).order_by(c.c.id)
        if batch is not None:
            q = q.where(c.c.batch == batch)
        async with self.engine.connect() as conn:
            return [{str(k): v for k, v in r._mapping.items()} for r in await conn.execute(q)]

    async def redeem(self, code_hash: str, user_id: int) -> LedgerEntry:
        """Mark the code used by ``user_id`` and credit its value, in one transaction; a code is
        redeemed once. Raises :class:`LookupError` with ``unknown``, ``used`` or ``expired``."""
        c = schema.redemption_codes
        now = _now_ms()
        async with self.engine.begin() as conn:
            claimed = (
                await conn.execute(
                    sa.update(c)
                    .where(
                        c.c.code_hash == code_hash,
                        c.c.redeemed_by.is_(None),
                        sa.or_(c.c.expires_at.is_(None), c.c.expires_at > now),
                    )
                    .values(redeemed_by=user_id, redeemed_at=now)
                    .returning(c.c.id, c.c.value_micro_usd, c.c.batch, c.c.code_hint)
                )
            ).first()
            if claimed is None:
                row = (await conn.execute(sa.select(c).where(c.c.code_hash == code_hash))).first()
                if row is None:
                    raise LookupError("unknown")
                raise LookupError("used" if row._mapping["redeemed_by"] is not None else "expired")
            entry = (
                await conn.execute(
                    sa.insert(schema.ledger)
                    .values(
                        user_id=user_id,
                        kind="redemption",
                        amount_micro_usd=claimed.value_micro_usd,
                        created_at=now,
                        note=f"code {claimed.code_hint} (batch {claimed.batch})",
                    )
                    .returning(*schema.ledger.c)
                )
            ).one()
            await _move_balance(conn, user_id, int(claimed.value_micro_usd))
        return _entry(entry)

    # -- prices ------------------------------------------------------------------------------

    async def prices(self) -> dict[str, Price]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(schema.prices.c.model, schema.prices.c.price))
            return {str(r[0]): msgspec.convert(r[1], Price) for r in rows}

    async def price_sources(self) -> dict[str, str]:
        """Who set each stored price: ``config`` or ``api``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(schema.prices.c.model, schema.prices.c.managed_by))
            return {str(r[0]): str(r[1]) for r in rows}

    async def set_price(self, model: str, price: Price, managed_by: str = "api") -> None:
        p = schema.prices
        values = {"price": msgspec.to_builtins(price), "managed_by": managed_by, "updated_at": _now_ms()}
        async with self.engine.begin() as conn:
            done = await conn.execute(sa.update(p).where(p.c.model == model).values(**values))
            if not done.rowcount:
                await conn.execute(sa.insert(p).values(model=model, **values))
            await self._bump(conn)

    async def delete_price(self, model: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(sa.delete(schema.prices).where(schema.prices.c.model == model))
            if done.rowcount:
                await self._bump(conn)
        return bool(done.rowcount)

    # -- spend -------------------------------------------------------------------------------

    async def spend(self, day: str, month: str) -> dict[str, int]:
        """Spend counters for the meter: each token's and user's spend today and this month,
        and each token's spend ever (its quota), from the daily rollup."""
        d = schema.usage_daily
        out: dict[str, int] = defaultdict(int)
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(d.c.day, d.c.user_id, d.c.token_id, sa.func.sum(d.c.cost_micro_usd))
                .where(d.c.cost_micro_usd != 0)
                .group_by(d.c.day, d.c.user_id, d.c.token_id)
            )
            for day_, user_id, token_id, total in rows:
                total = int(total)
                if token_id:
                    out[f"spend:t:{token_id}:total"] += total
                for period in (day, month):
                    if str(day_).startswith(period):
                        if token_id:
                            out[f"spend:t:{token_id}:p{period}"] += total
                        if user_id:
                            out[f"spend:u:{user_id}:p{period}"] += total
        return dict(out)

    async def daily(
        self, since_day: str, until_day: str, *, user_id: int | None = None, token_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Rollup rows (day, user, token, model, channel) between two days, inclusive."""
        d = schema.usage_daily
        q = sa.select(d).where(d.c.day >= since_day, d.c.day <= until_day).order_by(d.c.day, d.c.model)
        if user_id is not None:
            q = q.where(d.c.user_id == user_id)
        if token_id is not None:
            q = q.where(d.c.token_id == token_id)
        async with self.engine.connect() as conn:
            return [{str(k): v for k, v in r._mapping.items()} for r in await conn.execute(q)]


async def _move_balance(conn: AsyncConnection, user_id: int, amount: int) -> None:
    await conn.exec_driver_sql(balance_sql(conn.dialect.paramstyle), [(amount, user_id)])
