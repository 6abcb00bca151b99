"""The store on real SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from vectorengine.store.engine import migrate_async
from vectorengine.store.records import UsageFilter, UsageRecord
from vectorengine.store.repository import Store
from vectorengine.store.snapshot import SnapshotHolder
from vectorengine.store.usage_log import Days
from vectorengine.store.usage_writer import UsageWriter

CHANNEL = {
    "name": "main",
    "type": "openai",
    "base_url": "http://127.0.0.1:1/v1",
    "keys": ["k1", "k2"],
    "models": ["m1", "m2"],
    "model_map": {"m1": "m1-upstream"},
    "priority": 0,
    "weight": 1,
    "enabled": True,
}


async def test_migrations_are_idempotent(db_url: str) -> None:
    await migrate_async(db_url)
    await migrate_async(db_url)
    s = Store.from_url(db_url)
    assert await s.revision() == 1
    await s.close()


async def test_channel_crud_bumps_revision(store: Store) -> None:
    r0 = await store.revision()
    ch = await store.create_channel(CHANNEL)
    assert ch.keys == ("k1", "k2") and ch.model_map == {"m1": "m1-upstream"} and ch.managed_by == "api"
    assert await store.revision() == r0 + 1
    with pytest.raises(KeyError):
        await store.create_channel(CHANNEL)
    upd = await store.update_channel(ch.id, {"weight": 5, "enabled": False})
    assert upd is not None and upd.weight == 5 and not upd.enabled
    assert await store.revision() == r0 + 2
    assert await store.update_channel(999, {"weight": 1}) is None
    assert [c.name for c in await store.list_channels()] == ["main"]
    assert await store.delete_channel(ch.id)
    assert not await store.delete_channel(ch.id)
    assert await store.get_channel(ch.id) is None


async def test_upsert_channel_only_writes_on_change(store: Store) -> None:
    a = await store.upsert_channel(CHANNEL)
    r = await store.revision()
    b = await store.upsert_channel(CHANNEL)
    assert a.id == b.id and await store.revision() == r
    c = await store.upsert_channel({**CHANNEL, "keys": ["k3"]})
    assert c.id == a.id and c.keys == ("k3",) and await store.revision() == r + 1


async def test_tokens(store: Store) -> None:
    t = await store.create_token(name="t", key_hash="h" * 64, key_hint="sk-…abcd", models=["m1"])
    assert t.models == ("m1",) and t.enabled and t.expires_at is None
    with pytest.raises(KeyError):
        await store.create_token(name="t2", key_hash="h" * 64, key_hint="x")
    assert (await store.find_token(key_hash="h" * 64)) == t
    u = await store.update_token(t.id, {"enabled": False, "models": None})
    assert u is not None and not u.enabled and u.models is None


def _rec(i: int, **kw: object) -> UsageRecord:
    base = dict(
        request_id=f"r{i}",
        created_at=1_000_000 + i,
        endpoint="/v1/chat/completions",
        token_id=1,
        model="m1",
        channel_id=1,
        key_index=0,
        status=200,
        latency_ms=1.5,
        prompt_tokens=i,
    )
    base.update(kw)
    return UsageRecord(**base)  # type: ignore[arg-type]


async def test_usage_filters_and_keyset_pagination(store: Store) -> None:
    records = [
        _rec(i, token_id=1 + i % 2, model=f"m{i % 3}", status=200 if i % 4 else 429) for i in range(25)
    ]
    await store.insert_usage(records)
    page = await store.query_usage(UsageFilter(), limit=10)
    assert [r.request_id for r in page] == [f"r{i}" for i in range(24, 14, -1)]
    seen = []
    after = None
    while True:
        rows = await store.query_usage(UsageFilter(token_id=2), limit=4, after=after)
        if not rows:
            break
        seen += [r.request_id for r in rows]
        after = rows[-1].id
    assert seen == [f"r{i}" for i in range(24, -1, -1) if i % 2 == 1]
    only = await store.query_usage(UsageFilter(model="m0", status=429), limit=100)
    assert {r.request_id for r in only} == {f"r{i}" for i in range(25) if i % 3 == 0 and i % 4 == 0}
    window = await store.query_usage(UsageFilter(since_ms=1_000_005, until_ms=1_000_010), limit=100)
    assert sorted(r.prompt_tokens for r in window) == [5, 6, 7, 8, 9]


async def test_usage_batch_retry_skips_duplicates(store: Store) -> None:
    await store.insert_usage([_rec(1), _rec(2)])
    await store.insert_usage([_rec(2), _rec(3)])  # a retried batch, partly stored already
    assert await store.count_usage() == 3
    got = await store.get_usage("r3")
    assert got is not None and got.prompt_tokens == 3 and got.stream is False


async def test_usage_writer_close_stops_it_whenever_it_is_woken(store: Store) -> None:
    """close() ends the writer's loop even when the cancellation lands as a batch wakes it
    (asyncio.wait_for on Python 3.11 drops such a cancellation, and close() then waited for
    the loop forever: a SIGTERM that never finished). Nothing queued is lost either way."""
    n = 0
    for i in range(120):
        writer = UsageWriter(store, batch_size=1, flush_interval_s=30.0)
        writer.start()
        await asyncio.sleep(0)  # the loop is waiting for its wake-up
        writer.put(_rec(n := n + 1))  # a full batch: wakes it
        for _ in range(i % 6):  # the close lands at a different step each time
            await asyncio.sleep(0)
        async with asyncio.timeout(5):
            await writer.close()
    assert await store.count_usage() == n


async def test_billed_batch_books_charges_once(store: Store) -> None:
    alice = await store.accounts.create_user("alice")
    await store.accounts.append(alice.id, "topup", 1_000)
    day = Days(store.billing_tz)(1_000_000)
    paid = [_rec(i, user_id=alice.id, cost_micro_usd=10 * i) for i in range(1, 4)]  # 10 + 20 + 30
    failed = _rec(9, user_id=alice.id, status=502, error_kind="upstream_status")  # costs nothing
    await store.insert_usage([*paid, failed])
    # A retried batch, partly stored: only the new record and its charge are added.
    await store.insert_usage([paid[2], _rec(4, user_id=alice.id, cost_micro_usd=40)])
    assert await store.count_usage() == 5
    entries = await store.accounts.ledger(alice.id, limit=10)
    assert sorted(e.amount_micro_usd for e in entries if e.kind == "charge") == [-40, -30, -20, -10]
    assert await store.accounts.balance(alice.id) == 1_000 - 100 == await store.accounts.ledger_sum(alice.id)
    (row,) = await store.accounts.daily(day, day, user_id=alice.id)
    assert (row["requests"], row["errors"], row["cost_micro_usd"]) == (5, 1, 100)
    assert row["prompt_tokens"] == 1 + 2 + 3 + 9 + 4


async def test_snapshot_routes_by_priority_and_sees_changes(store: Store) -> None:
    holder = SnapshotHolder(store, poll_s=0.01)
    await store.create_channel({**CHANNEL, "name": "low", "priority": 0})
    await store.create_channel({**CHANNEL, "name": "high", "priority": 5, "models": ["m1"]})
    snap = await holder.load()
    table = snap.routes["default"]["m1"]
    assert [t.priority for t in table.tiers] == [5, 0]
    assert table.tiers[0].candidates[0].channel.name == "high"
    assert snap.routes["default"]["m2"].tiers[0].candidates[0].upstream_model == "m2"
    other = Store(store.engine)  # a change made elsewhere (another worker, the CLI)
    await other.create_token(name="x", key_hash="z" * 64, key_hint="x")
    assert await holder.refresh_if_changed()
    assert "z" * 64 in holder.current.tokens_by_hash
    assert not await holder.refresh_if_changed()


async def test_revision_poll_sees_other_writers_and_survives_a_lost_connection(
    store: Store, db_url: str
) -> None:
    """The poll keeps one connection of its own: it must see commits made elsewhere (no read
    transaction left open on it), and a broken connection must only cost one poll."""
    other = Store.from_url(db_url)
    try:
        r0 = await store.revision()
        await other.create_channel(CHANNEL)
        assert await store.revision() == r0 + 1
        await other.update_channel((await other.list_channels())[0].id, {"weight": 3})
        assert await store.revision() == r0 + 2
        held = store._revision_conn
        assert held is not None
        await held.invalidate()  # the connection dies under the poll
        with pytest.raises(Exception):  # noqa: B017 - the driver's own error, which varies
            await store.revision()
        assert await store.revision() == r0 + 2  # the next poll opens a new connection
        assert store._revision_conn is not held
    finally:
        await other.close()


async def test_alert_dedupe_keys_move_to_their_column_once_each(db_url: str) -> None:
    """Migration 0006: alerts stored before kept their key in ``data``; duplicates (raised by
    several workers) keep the key on the first only, so the unique index can be built."""
    import asyncio
    import time

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from vectorengine.store.engine import _MIGRATIONS, async_url, create_engine

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["url"] = async_url(db_url)
    await asyncio.to_thread(command.upgrade, cfg, "0005")
    engine = create_engine(db_url)
    insert = sa.text(
        "INSERT INTO alerts (created_at, kind, subject, message, data, delivered, delivery_attempts) "
        "VALUES (:t, 'cap_threshold', 'token:1', 'm', :data, true, 1)"
    )
    now = int(time.time() * 1000)
    datas = ['{"dedupe": "cap:a:0.5"}', '{"dedupe": "cap:a:0.5"}', '{"dedupe": "cap:b:0.5"}', "{}"]
    async with engine.begin() as conn:
        for i, data in enumerate(datas):
            await conn.execute(insert, {"t": now - 1_000 + i, "data": data})
    await asyncio.to_thread(command.upgrade, cfg, "head")
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT dedupe FROM alerts ORDER BY id"))).all()
    await engine.dispose()
    assert [r[0] for r in rows] == ["cap:a:0.5", None, "cap:b:0.5", None]
    store = Store.from_url(db_url)
    try:
        row = {"created_at": now, "kind": "cap_threshold", "subject": "token:1", "message": "m"}
        row |= {"data": {}, "delivered": False, "delivery_attempts": 0}
        assert await store.alerts.insert({**row, "dedupe": "cap:a:0.5"}) is None  # already raised
        assert await store.alerts.insert({**row, "dedupe": "cap:c:0.5"}) is not None
        assert await store.alerts.insert({**row, "dedupe": None}) is not None  # no key: always stored
        assert await store.alerts.insert({**row, "dedupe": None}) is not None
        assert await store.alerts.dedupe_keys() >= {"cap:a:0.5", "cap:b:0.5", "cap:c:0.5"}
    finally:
        await store.close()
