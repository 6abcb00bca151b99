"""The store: every SQL statement the gateway runs lives in this module."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vectorengine.store import schema
from vectorengine.store.accounts import Accounts
from vectorengine.store.alert_log import AlertLog
from vectorengine.store.engine import create_engine, sqlite_path
from vectorengine.store.records import (
    NO_LIMITS,
    Channel,
    Hedge,
    Limits,
    StoredUsage,
    Timeouts,
    Token,
    UsageFilter,
    UsageRecord,
)
from vectorengine.store.usage_log import SQLiteWriter, UsageSQL, batch_statements

log = logging.getLogger(__name__)

_CHANNEL_FIELDS = frozenset(
    {"name", "type", "base_url", "keys", "models", "model_map", "priority", "weight", "enabled"}
    | {"groups", "rpm", "tpm", "timeouts", "hedge", "api_version", "balance_alert_below_micro"}
)
_TOKEN_FIELDS = frozenset(
    {"name", "models", "enabled", "expires_at", "group", "user_id", "quota_micro_usd", "limits"}
)


_REVISION_SQL = "SELECT n FROM revision WHERE id = 1"


def _revision_reader(dialect: str, driver: Any) -> Callable[[], Awaitable[int]]:
    """The revision query as one call of the driver (aiosqlite or asyncpg), outside any
    transaction, so each read sees the latest commit."""
    if dialect == "sqlite":

        async def read() -> int:
            async with driver.execute(_REVISION_SQL) as cur:
                row = await cur.fetchone()
            return int(row[0]) if row else 0

        return read

    async def fetch() -> int:
        return int(await driver.fetchval(_REVISION_SQL) or 0)

    return fetch


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _channel(row: Any) -> Channel:
    m = row._mapping
    return Channel(
        id=m["id"],
        name=m["name"],
        type=m["type"],
        base_url=m["base_url"],
        keys=tuple(m["keys"]),
        models=tuple(m["models"]),
        model_map=dict(m["model_map"]),
        priority=m["priority"],
        weight=m["weight"],
        enabled=bool(m["enabled"]),
        managed_by=m["managed_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        groups=tuple(m["groups"]),
        rpm=m["rpm"],
        tpm=m["tpm"],
        timeouts=msgspec.convert(m["timeouts"], Timeouts),
        hedge=msgspec.convert(m["hedge"], Hedge) if m["hedge"] is not None else None,
        api_version=m["api_version"],
        balance_alert_below_micro=m["balance_alert_below_micro"],
    )


def _token(row: Any) -> Token:
    m = row._mapping
    models = m["models"]
    return Token(
        id=m["id"],
        name=m["name"],
        key_hash=m["key_hash"],
        key_hint=m["key_hint"],
        models=tuple(models) if models is not None else None,
        enabled=bool(m["enabled"]),
        expires_at=m["expires_at"],
        managed_by=m["managed_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        group=m["group"],
        user_id=m["user_id"],
        quota_micro_usd=m["quota_micro_usd"],
        limits=msgspec.convert(m["limits"] or {}, Limits),
    )


def _usage(row: Any) -> StoredUsage:
    # Column keys are SQLAlchemy ``quoted_name`` (a str subclass msgspec rejects as a key).
    return msgspec.convert({str(k): v for k, v in row._mapping.items()}, StoredUsage, strict=False)


class Store:
    """Channels, tokens, usage records and the revision counter, on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine, billing_tz: str = "UTC") -> None:
        self.engine = engine
        self.billing_tz = ZoneInfo(billing_tz)
        self.accounts = Accounts(engine, self._bump)
        self.alerts = AlertLog(engine)
        self._revision_conn: AsyncConnection | None = None
        self._read_revision: Callable[[], Awaitable[int]] | None = None
        self._usage_sql = UsageSQL(engine.dialect.paramstyle)
        path = sqlite_path(engine.url)
        self._sqlite = SQLiteWriter(path) if path is not None else None

    @classmethod
    def from_url(cls, url: str, billing_tz: str = "UTC") -> Store:
        return cls(create_engine(url), billing_tz)

    async def close(self) -> None:
        await self._drop_revision_conn(broken=False)
        if self._sqlite is not None:
            await self._sqlite.close()
        await self.engine.dispose()

    # -- revision ---------------------------------------------------------------------------

    async def revision(self) -> int:
        """The revision counter, polled every second by each worker's snapshot.

        It is read with the driver's own call on a connection kept for it: a pooled checkout
        (with PostgreSQL's pre-ping) and a compiled statement cost the event loop 0.5-0.9 ms
        each time, the driver call 0.06-0.15 ms, and a request arriving meanwhile waits.
        """
        try:
            if self._read_revision is None:
                conn = self._revision_conn = await self.engine.connect()
                driver = (await conn.get_raw_connection()).driver_connection
                self._read_revision = _revision_reader(self.engine.dialect.name, driver)
            return await self._read_revision()
        except Exception:
            await self._drop_revision_conn()  # the next poll starts on a new connection
            raise

    async def _drop_revision_conn(self, broken: bool = True) -> None:
        conn, self._revision_conn, self._read_revision = self._revision_conn, None, None
        if conn is not None:
            try:
                await (conn.invalidate() if broken else conn.close())
            except Exception as exc:  # already broken: nothing more to release
                log.debug("dropping the revision connection: %s", exc)

    @staticmethod
    async def _bump(conn: AsyncConnection) -> None:
        await conn.execute(
            sa.update(schema.revision).where(schema.revision.c.id == 1).values(n=schema.revision.c.n + 1)
        )

    # -- meta -------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self.engine.connect() as conn:
            value = await conn.scalar(sa.select(schema.meta.c.value).where(schema.meta.c.key == key))
        return None if value is None else str(value)

    async def set_meta_if_absent(self, key: str, value: str) -> bool:
        """Store ``value`` unless the key exists; True if this call stored it."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(schema.meta).values(key=key, value=value))
        except IntegrityError:
            return False
        return True

    # -- channels ---------------------------------------------------------------------------

    async def list_channels(self) -> list[Channel]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(schema.channels).order_by(schema.channels.c.id))
            return [_channel(r) for r in rows]

    async def get_channel(self, channel_id: int) -> Channel | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(schema.channels).where(schema.channels.c.id == channel_id))
            ).first()
        return _channel(row) if row else None

    async def create_channel(self, fields: Mapping[str, Any], managed_by: str = "api") -> Channel:
        """Insert a channel; raises :class:`KeyError` if the name is taken."""
        values = _only(fields, _CHANNEL_FIELDS)
        ts = now_ms()
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    sa.insert(schema.channels)
                    .values(**values, managed_by=managed_by, created_at=ts, updated_at=ts)
                    .returning(*schema.channels.c)
                )
                row = result.one()
                await self._bump(conn)
        except IntegrityError:
            raise KeyError(values.get("name")) from None
        return _channel(row)

    async def update_channel(self, channel_id: int, changes: Mapping[str, Any]) -> Channel | None:
        values = _only(changes, _CHANNEL_FIELDS)
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    sa.update(schema.channels)
                    .where(schema.channels.c.id == channel_id)
                    .values(**values, updated_at=now_ms())
                    .returning(*schema.channels.c)
                )
                row = result.first()
                if row is not None:
                    await self._bump(conn)
        except IntegrityError:
            raise KeyError(values.get("name")) from None
        return _channel(row) if row else None

    async def delete_channel(self, channel_id: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(schema.channels).where(schema.channels.c.id == channel_id))
            if result.rowcount:
                await self._bump(conn)
        return bool(result.rowcount)

    async def upsert_channel(self, fields: Mapping[str, Any], managed_by: str = "config") -> Channel:
        """Create the channel named ``fields["name"]`` or overwrite it with ``fields``."""
        values = _only(fields, _CHANNEL_FIELDS)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(sa.select(schema.channels).where(schema.channels.c.name == values["name"]))
            ).first()
            ts = now_ms()
            if row is None:
                stmt: Any = sa.insert(schema.channels).values(
                    **values, managed_by=managed_by, created_at=ts, updated_at=ts
                )
            else:
                current = _channel(row)
                if all(_same(getattr(current, k), v) for k, v in values.items()):
                    return current
                stmt = (
                    sa.update(schema.channels)
                    .where(schema.channels.c.id == current.id)
                    .values(**values, managed_by=managed_by, updated_at=ts)
                )
            out = (await conn.execute(stmt.returning(*schema.channels.c))).one()
            await self._bump(conn)
        return _channel(out)

    # -- tokens -----------------------------------------------------------------------------

    async def list_tokens(self) -> list[Token]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(schema.tokens).order_by(schema.tokens.c.id))
            return [_token(r) for r in rows]

    async def get_token(self, token_id: int) -> Token | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(schema.tokens).where(schema.tokens.c.id == token_id))).first()
        return _token(row) if row else None

    async def find_token(self, *, name: str | None = None, key_hash: str | None = None) -> Token | None:
        cond = schema.tokens.c.name == name if name is not None else schema.tokens.c.key_hash == key_hash
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(schema.tokens).where(cond).order_by(schema.tokens.c.id))
            ).first()
        return _token(row) if row else None

    async def create_token(
        self,
        *,
        name: str,
        key_hash: str,
        key_hint: str,
        models: Sequence[str] | None = None,
        enabled: bool = True,
        expires_at: int | None = None,
        group: str = "default",
        managed_by: str = "api",
        user_id: int | None = None,
        quota_micro_usd: int | None = None,
        limits: Limits = NO_LIMITS,
    ) -> Token:
        """Insert a token; raises :class:`KeyError` if the key hash is already present."""
        ts = now_ms()
        try:
            async with self.engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.insert(schema.tokens)
                        .values(
                            name=name,
                            key_hash=key_hash,
                            key_hint=key_hint,
                            models=list(models) if models is not None else None,
                            enabled=enabled,
                            expires_at=expires_at,
                            group=group,
                            managed_by=managed_by,
                            user_id=user_id,
                            quota_micro_usd=quota_micro_usd,
                            limits=msgspec.to_builtins(limits),
                            created_at=ts,
                            updated_at=ts,
                        )
                        .returning(*schema.tokens.c)
                    )
                ).one()
                await self._bump(conn)
        except IntegrityError:
            raise KeyError("key") from None
        return _token(row)

    async def update_token(self, token_id: int, changes: Mapping[str, Any]) -> Token | None:
        values = _only(changes, _TOKEN_FIELDS | {"key_hash", "key_hint"})
        if isinstance(values.get("limits"), Limits):
            values["limits"] = msgspec.to_builtins(values["limits"])
        if "models" in values and values["models"] is not None:
            values["models"] = list(values["models"])
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.update(schema.tokens)
                    .where(schema.tokens.c.id == token_id)
                    .values(**values, updated_at=now_ms())
                    .returning(*schema.tokens.c)
                )
            ).first()
            if row is not None:
                await self._bump(conn)
        return _token(row) if row else None

    async def delete_token(self, token_id: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(schema.tokens).where(schema.tokens.c.id == token_id))
            if result.rowcount:
                await self._bump(conn)
        return bool(result.rowcount)

    # -- usage ------------------------------------------------------------------------------

    async def insert_usage(self, records: Sequence[UsageRecord]) -> None:
        """Insert a batch, with the charges it books, in one transaction; a record already
        stored (same request id) is skipped (:mod:`~vectorengine.store.usage_log`)."""
        if not records:
            return
        try:
            await self._write_usage(records)
        except (IntegrityError, sqlite3.IntegrityError):
            # A retried batch that was partly stored before: insert one by one, skip duplicates
            # (a record and its ledger entry are stored together or not at all).
            for record in records:
                try:
                    await self._write_usage([record])
                except (IntegrityError, sqlite3.IntegrityError):
                    log.debug("usage record %s already stored", record.request_id)

    async def _write_usage(self, records: Sequence[UsageRecord]) -> None:
        statements = batch_statements(self._usage_sql, records, self.billing_tz)
        if self._sqlite is not None:
            await self._sqlite.write(statements)
            return
        async with self.engine.begin() as conn:
            for text, rows in statements:
                if rows:
                    await conn.exec_driver_sql(text, rows)

    async def query_usage(
        self, flt: UsageFilter, *, limit: int, after: int | None = None
    ) -> list[StoredUsage]:
        """Newest first; ``after`` is the ``id`` of the last record of the previous page."""
        t = schema.usage_records
        q = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if after is not None:
            q = q.where(t.c.id < after)
        if flt.token_id is not None:
            q = q.where(t.c.token_id == flt.token_id)
        if flt.user_id is not None:
            q = q.where(t.c.user_id == flt.user_id)
        if flt.model is not None:
            q = q.where(t.c.model == flt.model)
        if flt.channel_id is not None:
            q = q.where(t.c.channel_id == flt.channel_id)
        if flt.status is not None:
            q = q.where(t.c.status == flt.status)
        if flt.since_ms is not None:
            q = q.where(t.c.created_at >= flt.since_ms)
        if flt.until_ms is not None:
            q = q.where(t.c.created_at < flt.until_ms)
        async with self.engine.connect() as conn:
            rows = await conn.execute(q)
            return [_usage(r) for r in rows]

    async def get_usage(self, request_id: str) -> StoredUsage | None:
        t = schema.usage_records
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.request_id == request_id))).first()
        return _usage(row) if row else None

    async def count_usage(self) -> int:
        async with self.engine.connect() as conn:
            n = await conn.scalar(sa.select(sa.func.count()).select_from(schema.usage_records))
        return int(n or 0)


def _only(fields: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    values = {k: v for k, v in fields.items() if k in allowed}
    for key in ("keys", "models", "groups"):
        if isinstance(values.get(key), tuple):
            values[key] = list(values[key])
    for key in ("timeouts", "hedge"):
        if isinstance(values.get(key), msgspec.Struct):
            values[key] = msgspec.to_builtins(values[key])
    if "timeouts" in values and values["timeouts"] is None:
        values["timeouts"] = {}
    return values


def _same(current: Any, new: Any) -> bool:
    if isinstance(current, tuple):
        return list(current) == list(new)
    if isinstance(current, msgspec.Struct):
        return bool(msgspec.to_builtins(current) == new)
    return bool(current == new)
