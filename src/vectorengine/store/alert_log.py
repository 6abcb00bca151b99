"""The ``alerts`` table: alerts raised, and whether each reached its webhooks."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from vectorengine.store import schema

DEDUPE_DAYS = 40  # alerts this recent are not raised again after a restart


class AlertLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, row: dict[str, Any]) -> int | None:
        """Store an alert; None when one with the same ``dedupe`` key exists (another worker or
        instance raised it first)."""
        insert = _insert_for(self.engine.dialect.name)(schema.alerts).values(**row)
        if row.get("dedupe") is not None:
            insert = insert.on_conflict_do_nothing(index_elements=[schema.alerts.c.dedupe])
        async with self.engine.begin() as conn:
            new_id = await conn.scalar(insert.returning(schema.alerts.c.id))
        return int(new_id) if new_id is not None else None

    async def mark(self, alert_id: int, *, delivered: bool, attempts: int) -> None:
        a = schema.alerts
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(a).where(a.c.id == alert_id).values(delivered=delivered, delivery_attempts=attempts)
            )

    async def recent(self, since_ms: int) -> list[dict[str, Any]]:
        a = schema.alerts
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(a).where(a.c.created_at >= since_ms).order_by(a.c.id))
            return [{str(k): v for k, v in r._mapping.items()} for r in rows]

    async def dedupe_keys(self) -> set[str]:
        since = (time.time() - DEDUPE_DAYS * 86400) * 1000
        a = schema.alerts
        q = sa.select(a.c.dedupe).where(a.c.created_at >= int(since), a.c.dedupe.is_not(None))
        async with self.engine.connect() as conn:
            return {str(d) for d in (await conn.scalars(q))}

    async def undelivered(self, before_ms: int) -> list[dict[str, Any]]:
        """Alerts not delivered yet, raised in the last day and before ``before_ms``."""
        a = schema.alerts
        since = (time.time() - 86400) * 1000
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(a)
                .where(a.c.delivered.is_(False), a.c.created_at >= since, a.c.created_at < before_ms)
                .order_by(a.c.id)
            )
            return [{str(k): v for k, v in r._mapping.items()} for r in rows]

    async def page(
        self, *, limit: int, after: int | None = None, kind: str | None = None, since_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the id of the last alert of the previous page."""
        a = schema.alerts
        q = sa.select(a).order_by(a.c.id.desc()).limit(limit)
        if after is not None:
            q = q.where(a.c.id < after)
        if kind is not None:
            q = q.where(a.c.kind == kind)
        if since_ms is not None:
            q = q.where(a.c.created_at >= since_ms)
        async with self.engine.connect() as conn:
            return [{str(k): v for k, v in r._mapping.items()} for r in await conn.execute(q)]


def _insert_for(dialect: str) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING (SQLite and PostgreSQL alike)."""
    return sqlite.insert if dialect == "sqlite" else postgresql.insert
