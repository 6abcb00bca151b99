"""Usage records: their contents, keys never stored, nothing lost on shutdown, no waiting on the DB."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.gateway.conftest import FULL_KEY, LIMITED_KEY, gateway_config
from tests.support.databases import postgres_database
from tests.support.gateway import GatewayProcess, start_gateway, wait_record
from tests.support.procs import SimHandle, start_simulator
from vectorengine.simulator import SimulatorConfig

MSG = [{"role": "user", "content": "count my tokens please"}]


def test_record_of_a_json_request(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=FULL_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    reply = raw.parse()
    rec = wait_record(gateway, raw.headers["x-request-id"])
    with gateway.admin() as admin:
        tokens = {t["name"]: t["id"] for t in admin.get("/api/tokens").json()}
        channels = {c["name"]: c["id"] for c in admin.get("/api/channels").json()}
    assert rec["token_id"] == tokens["full"] and rec["channel_id"] == channels["main"]
    assert rec["model"] == "gpt-4o-mini" and rec["upstream_model"] == "gpt-4o-mini-2024-07-18"
    assert rec["key_index"] in (0, 1) and rec["status"] == 200 and rec["error_kind"] is None
    assert rec["stream"] is False and rec["endpoint"] == "/v1/chat/completions"
    assert rec["prompt_tokens"] == reply.usage.prompt_tokens
    assert rec["completion_tokens"] == reply.usage.completion_tokens
    assert 0 < rec["ttfb_ms"] <= rec["latency_ms"]
    assert rec["client_ip"] == "127.0.0.1"
    assert rec["attempts"] is None  # answered by its first attempt: no separate chain is stored


def test_stream_usage_is_captured_even_when_the_client_did_not_ask(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=FULL_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG, stream=True)
    chunks = list(raw.parse())
    assert all(c.usage is None for c in chunks)
    rec = wait_record(gateway, raw.headers["x-request-id"])
    assert rec["stream"] is True and rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0
    assert rec["ttft_ms"] is not None and rec["ttft_ms"] <= rec["latency_ms"]


def test_keys_alternate_and_never_appear_in_records(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=FULL_KEY, max_retries=0)
    ids = [
        client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG).headers["x-request-id"]
        for _ in range(4)
    ]
    recs = [wait_record(gateway, i) for i in ids]
    assert sorted(r["key_index"] for r in recs) == [0, 0, 1, 1]  # round-robin over the channel's two keys
    assert "key-a" not in str(recs) and FULL_KEY not in str(recs)


def test_rejected_requests_are_recorded_too(gateway: GatewayProcess) -> None:
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {LIMITED_KEY}"},
        json={"model": "gpt-4o", "messages": MSG},
        timeout=5,
    )
    rec = wait_record(gateway, r.headers["x-request-id"])
    assert rec["status"] == 403 and rec["error_kind"] == "model_not_allowed" and rec["channel_id"] is None


def test_api_keys_are_stored_only_as_hashes(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        created = admin.post("/api/tokens", json={"name": "hashed"}).json()
    new_key = created["key"]
    assert len(new_key) >= 6 + 32  # prefix + 192 random bits, url-safe base64
    db_path = Path(gateway.database.removeprefix("sqlite:///"))
    conn = sqlite3.connect(db_path)
    dump = "\n".join(conn.iterdump())
    conn.close()
    files = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    for key in (FULL_KEY, LIMITED_KEY, new_key, gateway.admin_key):
        assert key not in dump
        assert key.encode() not in files
    assert "key_hash" in dump


# -- graceful shutdown ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_sim() -> Any:
    handle = start_simulator(SimulatorConfig(latency_ms=40, chunk_delay_ms=5))
    yield handle
    handle.stop()


async def _load(gw: GatewayProcess, stop_after: float, on_started: Any) -> tuple[list[str], int]:
    """Closed-loop load (JSON and streams) until the gateway goes away; ids of complete responses."""
    done: list[str] = []
    failed = 0
    deadline = time.monotonic() + stop_after
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=64)) as c:

        async def worker(i: int) -> None:
            nonlocal failed
            stream = i % 2 == 0
            while time.monotonic() < deadline:
                try:
                    r = await c.post(
                        gw.base_url + "/chat/completions",
                        headers={"Authorization": f"Bearer {FULL_KEY}"},
                        json={"model": "gpt-4o", "messages": MSG, "stream": stream},
                    )
                except httpx.HTTPError:
                    failed += 1
                    await asyncio.sleep(0.01)
                    continue
                if r.status_code == 200 and (not stream or r.text.endswith("data: [DONE]\n\n")):
                    done.append(r.headers["x-request-id"])

        workers = [asyncio.create_task(worker(i)) for i in range(32)]
        await asyncio.sleep(0.6)
        on_started()
        await asyncio.gather(*workers)
    return done, failed


def test_graceful_shutdown_under_load_loses_no_record(slow_sim: SimHandle, tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path, gateway_config(slow_sim, usage={"flush_interval_ms": 2000, "batch_size": 10_000})
    )
    # A long flush interval: at SIGTERM many records are still only in memory.
    done, _ = asyncio.run(_load(gw, 3.0, lambda: gw.proc.send_signal(signal.SIGTERM)))
    assert gw.proc.wait(30) == 0 or gw.proc.returncode in (0, -signal.SIGTERM)
    assert len(done) > 50
    conn = sqlite3.connect(Path(gw.database.removeprefix("sqlite:///")))
    stored = {r[0] for r in conn.execute("SELECT request_id FROM usage_records")}
    conn.close()
    missing = set(done) - stored
    assert not missing, f"{len(missing)} of {len(done)} answered requests have no usage record"


def test_a_client_leaving_mid_stream_is_recorded_as_aborted(slow_sim: SimHandle, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, gateway_config(slow_sim))
    try:
        words = " ".join(f"word{i}" for i in range(24))  # a long reply: ~40 chunks, 5 ms apart
        with (
            httpx.Client(timeout=10) as c,
            c.stream(
                "POST",
                gw.base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {FULL_KEY}"},
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": words}], "stream": True},
            ) as r,
        ):
            assert r.status_code == 200
            request_id = r.headers["x-request-id"]
            first = next(
                line for line in r.iter_lines() if '"content":"' in line and '"content":""' not in line
            )
            assert first.startswith("data: ")
        # The connection is closed here, after one content event of many.
        rec = wait_record(gw, request_id)
        assert rec["status"] == 499 and rec["error_kind"] == "client_aborted"
        assert rec["stream"] is True and rec["ttft_ms"] is not None
        assert rec["latency_ms"] < 40 + 40 * 5, "the gateway kept reading after the client left"
    finally:
        gw.stop()


# -- the database locked or slow -----------------------------------------------------------------


def _hammer(gw: GatewayProcess, n: int) -> list[float]:
    client = openai.OpenAI(base_url=gw.base_url, api_key=FULL_KEY, max_retries=0, timeout=5)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        if i % 2:
            list(client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True))
        else:
            client.chat.completions.create(model="gpt-4o", messages=MSG)
        times.append(time.perf_counter() - t0)
    return times


def _count(gw: GatewayProcess) -> int:
    with gw.admin() as admin:
        page = admin.get("/api/usage", params={"limit": 1000}).json()
    return len(page["data"])


def test_requests_do_not_wait_on_a_locked_sqlite_database(sim: SimHandle, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, gateway_config(sim))
    try:
        db_path = gw.database.removeprefix("sqlite:///")
        locker = sqlite3.connect(db_path, timeout=5, isolation_level=None)
        # SQLite runs in WAL mode, where readers never block: "locked" means nobody else can write.
        locker.execute("BEGIN IMMEDIATE")
        probe = sqlite3.connect(db_path, timeout=0.2)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            probe.execute("UPDATE revision SET n = n")  # the lock really is in place
        probe.close()
        try:
            times = _hammer(gw, 40)
            assert max(times) < 1.0, f"a request took {max(times):.2f}s while the database was locked"
        finally:
            locker.execute("COMMIT")
            locker.close()
        deadline = time.monotonic() + 20
        while _count(gw) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(gw) >= 40  # queued records were written once the lock went away
    finally:
        gw.stop()


@pytest.mark.postgres
def test_requests_do_not_wait_on_a_locked_postgres_table(sim: SimHandle, tmp_path: Path) -> None:
    with postgres_database() as url:
        gw = start_gateway(tmp_path, gateway_config(sim, database=url))
        try:
            release = threading.Event()
            locked = threading.Event()

            async def hold_lock() -> None:
                dsn = url.replace("postgresql+asyncpg", "postgresql")
                conn = await asyncpg.connect(dsn)
                tr = conn.transaction()
                await tr.start()
                await conn.execute("LOCK TABLE usage_records, revision IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.to_thread(release.wait, 60)
                await tr.rollback()
                await conn.close()

            t = threading.Thread(target=asyncio.run, args=(hold_lock(),))
            t.start()
            assert locked.wait(10)
            try:
                times = _hammer(gw, 40)
                assert max(times) < 1.0, f"a request took {max(times):.2f}s while the tables were locked"
            finally:
                release.set()
                t.join(10)
            deadline = time.monotonic() + 20
            while _count(gw) < 40 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _count(gw) >= 40
        finally:
            gw.stop()


def test_past_max_pending_records_new_requests_are_refused_and_none_is_lost(
    sim: SimHandle, tmp_path: Path
) -> None:
    # The database is locked, so records pile up; at max_pending the gateway says 503 instead
    # of letting memory grow without bound. Every answered request is still recorded.
    gw = start_gateway(tmp_path, gateway_config(sim, usage={"flush_interval_ms": 50, "max_pending": 5}))
    try:
        db_path = gw.database.removeprefix("sqlite:///")
        locker = sqlite3.connect(db_path, timeout=5, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        client = openai.OpenAI(base_url=gw.base_url, api_key=FULL_KEY, max_retries=0, timeout=5)
        try:
            for _ in range(5):
                client.chat.completions.create(model="gpt-4o", messages=MSG)
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="gpt-4o", messages=MSG)
            assert refused.value.status_code == 503
            assert refused.value.response.headers["retry-after"] == "1"
            assert refused.value.body["code"] == "overloaded"  # type: ignore[index]
        finally:
            locker.execute("COMMIT")
            locker.close()
        deadline = time.monotonic() + 20
        while _count(gw) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(gw) == 5
        client.chat.completions.create(model="gpt-4o", messages=MSG)  # caught up: served again
    finally:
        gw.stop()
