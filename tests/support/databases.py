"""Real databases for tests: a fresh SQLite file, or a fresh PostgreSQL database per use."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

PG_HOST = os.environ.get("VE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("VE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("VE_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("VE_TEST_PG_DB", "test")
REDIS_URL = os.environ.get("VE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: object) -> None:
    # These helpers may be called from inside a running loop (async fixtures): use a thread.
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a throw-away database on the local server; yield its SQLAlchemy URL; drop it.

    PostgreSQL tests must run in CI: an unreachable server is an error, not a skip.
    """
    name = "ve_test_" + secrets.token_hex(4)
    _run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def redis_url() -> str:
    """The tests' Redis database, emptied. Like PostgreSQL, an unreachable server is an error."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()
    return REDIS_URL
