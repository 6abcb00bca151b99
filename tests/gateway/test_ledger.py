"""No overdraw under concurrency (one process on SQLite; three workers on PostgreSQL + Redis),
global limits across workers, and a reconciliation of the ledger against the usage records."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.test_billing import ALICE, MSG, ledger_of, user_of
from tests.support.databases import REDIS_URL, postgres_database, redis_url
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import SimHandle

BALANCE = 140  # micro-USD: about ten 20-token requests at $0.15/$0.60 per 1M


def ledger_config(sim: SimHandle, balance_usd: str, keys: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "channels": [{"name": "main", "base_url": sim.base_url, "keys": keys, "models": ["gpt-4o-mini"]}],
        "users": [{"name": "alice", "initial_balance_usd": balance_usd}],
        "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075}},
        "tokens": [{"name": "alice-key", "user": "alice", "key": ALICE}],
        "usage": {"flush_interval_ms": 50},
        **extra,
    }


def records_of(gw: GatewayProcess, expect: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Every usage record, once ``expect`` of them are in the database."""
    deadline = time.monotonic() + timeout
    with gw.admin() as admin:
        while True:
            rows: list[dict[str, Any]] = []
            after = None
            while True:
                params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
                page = admin.get("/api/usage", params=params).json()
                rows += page["data"]
                if not page["has_more"]:
                    break
                after = page["next_after"]
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


async def _burst(gw: GatewayProcess, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=60, limits=limits) as client:
        body = {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 20}
        return list(await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(n))))


def wait_workers(gw: GatewayProcess, n: int, timeout: float = 60) -> None:
    """Until ``n`` distinct workers have answered (each tags its request ids with its own prefix)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < n:
        assert time.monotonic() < deadline, f"only {len(seen)} of {n} workers answered"
        seen.add(httpx.get(gw.url + "/health", timeout=5).headers["x-request-id"][:14])


def workers_seen(responses: list[httpx.Response]) -> int:
    return len({r.headers["x-request-id"][:14] for r in responses})


def redis_keys(pattern: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=pattern))
    finally:
        client.close()


def check_no_overdraw(gw: GatewayProcess, workers: int = 1) -> None:
    responses = asyncio.run(_burst(gw, 500))
    assert workers_seen(responses) == workers
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 402}, statuses
    assert all(r.json()["error"]["code"] == "insufficient_balance" for r in responses if r.status_code == 402)
    ok = statuses[200]
    records = records_of(gw, 500)
    assert len(records) == 500
    costs = [r["cost_micro_usd"] for r in records if r["status"] == 200]
    assert len(costs) == ok and ok >= 1 and min(costs) > 0
    spent = sum(costs)
    assert spent <= BALANCE and ok <= BALANCE // min(costs)  # at most the covered ones succeeded
    assert all(r["cost_micro_usd"] == 0 for r in records if r["status"] == 402)
    deadline = time.monotonic() + 10
    while (alice := user_of(gw))["balance_micro_usd"] != BALANCE - spent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alice["balance_micro_usd"] == BALANCE - spent >= 0
    assert alice["available_micro_usd"] == alice["balance_micro_usd"]  # no hold left behind
    entries = ledger_of(gw, alice["id"])
    assert sum(e["amount_micro_usd"] for e in entries) == alice["balance_micro_usd"]
    assert Counter(e["kind"] for e in entries) == {"initial": 1, "charge": ok}


def test_no_overdraw_on_sqlite_with_one_worker(sim: SimHandle, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, ledger_config(sim, "0.000140", ["key-a"]))
    try:
        check_no_overdraw(gw)
    finally:
        gw.stop()


@pytest.mark.postgres
def test_no_overdraw_on_postgres_and_redis_with_three_workers(sim: SimHandle, tmp_path: Path) -> None:
    with postgres_database() as url:
        config = ledger_config(sim, "0.000140", ["key-a"], database=url, redis=redis_url(), workers=3)
        gw = start_gateway(tmp_path, config, wait=60)
        try:
            wait_workers(gw, 3)
            check_no_overdraw(gw, workers=3)
            assert len(redis_keys("ve:alive:*")) == 3  # each worker's meter announces itself
        finally:
            gw.stop()
        # Every hold was settled and each worker's meter signed off on the way out.
        assert redis_keys("ve:holds:*") == [] and redis_keys("ve:alive:*") == []


@pytest.mark.postgres
def test_rate_limits_hold_across_workers(sim: SimHandle, tmp_path: Path) -> None:
    with postgres_database() as url:
        config = ledger_config(sim, "10", ["key-a"], database=url, redis=redis_url(), workers=3)
        config["tokens"][0]["rpm"] = 25
        gw = start_gateway(tmp_path, config, wait=60)
        try:
            wait_workers(gw, 3)
            responses = asyncio.run(_burst(gw, 90))
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {200: 25, 429: 65}
            assert workers_seen(responses) >= 2  # the requests really were spread over the workers
        finally:
            gw.stop()


async def _mixed_traffic(gw: GatewayProcess, total: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=60, limits=limits) as client:
        sem = asyncio.Semaphore(32)

        async def one() -> None:
            stream = rng.random() < 0.5
            abort_after = rng.choice([1, 2, 3]) if stream and rng.random() < 0.2 else None
            limit = rng.randint(5, 40)
            body = {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": limit, "stream": stream}
            async with sem:
                if not stream:
                    r = await client.post("/chat/completions", json=body)
                    outcomes[f"json {r.status_code}"] += 1
                    return
                async with client.stream("POST", "/chat/completions", json=body) as r:
                    lines = 0
                    try:
                        async for line in r.aiter_lines():
                            if line.startswith("data:"):
                                lines += 1
                                if abort_after is not None and lines >= abort_after:
                                    outcomes["stream aborted"] += 1
                                    return  # leaving the block closes the connection mid-stream
                    except httpx.HTTPError:
                        outcomes["stream cut"] += 1
                        return
                    outcomes[f"stream {r.status_code}"] += 1

        await asyncio.gather(*(one() for _ in range(total)))
    return outcomes


def test_ledger_reconciles_with_usage_records_after_faults_aborts_and_cut_streams(
    sim: SimHandle, tmp_path: Path
) -> None:
    keys = ["key-a", "fault-500-p15_r", "fault-drop-mid-stream-p15-n4_r", "fault-mid-stream-error-p15-n3_r"]
    config = ledger_config(sim, "100", keys)
    config["health"] = {"failures_to_open": 1000, "error_rate_to_open": 1.0}  # keep the faulty keys in play
    gw = start_gateway(tmp_path, config)
    try:
        total = 10_000
        outcomes = asyncio.run(_mixed_traffic(gw, total, seed=5))
        assert sum(outcomes.values()) == total
        assert outcomes["stream aborted"] > 100, outcomes
        records = records_of(gw, total, timeout=120)
        assert len(records) == total
        kinds = Counter(r["error_kind"] for r in records)
        # (an abort that comes after the simulator's last chunk finds the request already answered)
        assert kinds["client_aborted"] > 20 and kinds["upstream_stream_broken"] > 10, kinds
        assert kinds["upstream_status"] > 10, kinds  # in-band errors after the stream started
        charged = sum(r["cost_micro_usd"] for r in records)
        assert charged > 0
        assert all(r["cost_micro_usd"] <= r["reserved_micro_usd"] for r in records)
        estimated = [r for r in records if r["usage_estimated"]]
        assert estimated and all(r["cost_micro_usd"] > 0 for r in estimated)
        deadline = time.monotonic() + 20
        while (alice := user_of(gw))["balance_micro_usd"] != 100_000_000 - charged:
            assert time.monotonic() < deadline, (alice, charged)
            time.sleep(0.2)
        entries = ledger_of(gw, alice["id"])
        charges = [e for e in entries if e["kind"] == "charge"]
        assert -sum(e["amount_micro_usd"] for e in charges) == charged  # to the micro-USD
        assert len(charges) == sum(1 for r in records if r["cost_micro_usd"])
        assert sum(e["amount_micro_usd"] for e in entries) == alice["balance_micro_usd"]
        assert alice["available_micro_usd"] == alice["balance_micro_usd"]  # every hold released
    finally:
        gw.stop()
