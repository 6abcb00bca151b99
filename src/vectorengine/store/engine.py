"""Database URLs, engines and migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_MIGRATIONS = Path(__file__).parent / "migrations"


def async_url(url: str) -> str:
    """Pick the async driver: ``sqlite:///x`` → aiosqlite, ``postgresql://`` → asyncpg."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: Any) -> str | None:
    """The database file of a SQLite URL (None for any other database).

    The gateway opens a SQLite database from several connections (the pool, the usage
    writer's own), so it must be a file: each connection to ``:memory:`` would see a database
    of its own.
    """
    u = make_url(url) if isinstance(url, str) else url
    if u.get_backend_name() != "sqlite":
        return None
    database = u.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise ValueError("SQLite in memory is not supported: give the database a file (sqlite:///./x.db)")
    return str(database)


def create_engine(url: str) -> AsyncEngine:
    url = async_url(url)
    kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_size"] = 5
        kwargs["max_overflow"] = 5
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def migrate(url: str) -> None:
    """Bring the database schema to the newest revision (Alembic ``upgrade head``)."""
    url = async_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    # Imported here: Alembic (with Mako) is ~10 MB that a serving worker never needs.
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")


async def migrate_async(url: str) -> None:
    """:func:`migrate` from inside an event loop (Alembic's env runs a loop of its own)."""
    await asyncio.to_thread(migrate, url)
