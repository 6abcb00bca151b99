"""Resilience under sustained faults: health and probes, pacing, cancellation, context fallbacks.

These drive the gateway with many requests against simulator keys whose behaviour the test
changes at run time (``SimHandle.set_fault``) and checks what the simulator saw.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess, wait_record
from tests.support.procs import SimHandle, start_simulator
from tests.support.routing import FAST_HEALTH, KEY, MSG, STREAM, channel, gateway, health
from vectorengine.simulator import SimulatorConfig


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimHandle]:
    handle = start_simulator(SimulatorConfig(chunk_delay_ms=20))
    yield handle
    handle.stop()


async def _hammer(gw: GatewayProcess, n: int, concurrency: int, stream: bool) -> dict[int, int]:
    """``n`` requests, ``concurrency`` at a time; how many got each status (a broken stream is 0)."""
    statuses: dict[int, int] = {}
    queue = iter(range(n))
    body = {"model": "gpt-4o-mini", "messages": MSG, "stream": stream}
    async with httpx.AsyncClient(timeout=20, headers={"Authorization": f"Bearer {KEY}"}) as c:

        async def worker() -> None:
            for _ in queue:
                r = await c.post(gw.base_url + "/chat/completions", json=body)
                ok = r.status_code != 200 or not stream or r.text.endswith("data: [DONE]\n\n")
                status = r.status_code if ok else 0
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@STREAM
def test_1000_requests_over_a_healthy_a_rate_limited_and_a_failing_key(
    sim: SimHandle, tmp_path: Path, stream: bool
) -> None:
    a, b, c = f"good-abc{stream:d}", f"fault-429-ra2_abc{stream:d}", f"fault-500_abc{stream:d}"
    gw = gateway(tmp_path, [channel("pool", sim, [a, b, c])])
    try:
        statuses = asyncio.run(_hammer(gw, 1000, 10, stream))
        assert statuses == {200: 1000}  # no client ever saw an error

        keys = health(gw, "pool")
        assert keys[1]["state"] == "cooling" and keys[1]["reason"].startswith("rate_limited")
        assert keys[2]["state"] == "open" and "server" in keys[2]["reason"]
        # B was cooled down per its retry-after (2 s): after the first wave of concurrent
        # requests (at most one per worker) it was only touched by probes, 2 s apart.
        times = sim.calls_at(b)
        first_wave = [t for t in times if t - times[0] < 500]
        assert len(first_wave) <= 10
        later = times[len(first_wave) :]
        gaps = [y - x for x, y in itertools.pairwise(later)]
        assert all(g >= 1900 for g in gaps), gaps
        # C's breaker opened after 3 failures in a row: far fewer than its share of 1000 calls.
        assert sim.statuses(c).get(500, 0) < 40

        sim.set_fault(b, None)  # both keys recover; probes must notice and bring them back
        sim.set_fault(c, None)
        back = _wait_for(lambda: [k["state"] for k in health(gw, "pool")] == ["healthy"] * 3, 5.0)
        assert back, health(gw, "pool")
        assert all(k["last_probe_ok"] is True for k in health(gw, "pool")[1:])
        before = {k: sim.calls(k) for k in (b, c)}
        assert asyncio.run(_hammer(gw, 60, 3, stream)) == {200: 60}
        assert all(sim.calls(k) > before[k] for k in (b, c))  # real traffic again
    finally:
        gw.stop()


def test_pacing_keeps_a_header_limited_key_under_its_limit(sim: SimHandle, tmp_path: Path) -> None:
    limited, spare = "fault-ratelimit-l60_pace", "good-pace"
    gw = gateway(tmp_path, [channel("limited", sim, [limited], priority=10), channel("spare", sim, [spare])])
    try:
        statuses = asyncio.run(_hammer(gw, 150, 5, False))
        assert statuses == {200: 150}
        assert sim.statuses(limited).get(429, 0) == 0  # the gateway never ran the key into its limit
        used = sim.calls(limited)
        assert 6 <= used <= 60
        key = health(gw, "limited")[0]
        assert key["learned_rpm"] == 60 and key["rpm"] == 60
    finally:
        gw.stop()


def test_when_every_key_is_at_its_limit_requests_wait_instead_of_failing(
    sim: SimHandle, tmp_path: Path
) -> None:
    only = "good-paced-only"
    gw = gateway(tmp_path, [channel("only", sim, [only], rpm=600)])  # 10 a second, bursts of 60
    try:
        t0 = time.monotonic()
        statuses = asyncio.run(_hammer(gw, 75, 1, False))
        elapsed = time.monotonic() - t0
        assert statuses == {200: 75}
        assert elapsed >= 1.2  # 60 at once, then one every 100 ms
        times = sim.calls_at(only)
        # a bucket of 60 refilled at 10 a second: 75 calls span at least (75 - 60) / 10 s = 1.5 s
        assert len(times) == 75 and (times[-1] - times[0]) >= 1400
    finally:
        gw.stop()


def _abandon_stream(gw: GatewayProcess, model: str, content_first: bool) -> tuple[str, float]:
    """Open a stream, read until the first content event (or give up waiting), close it.

    Returns the request id and the wall-clock time (unix ms) the connection was closed.
    """
    with httpx.Client(timeout=httpx.Timeout(10, read=0.3)) as c:
        try:
            with c.stream(
                "POST",
                gw.base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": model, "messages": [{"role": "user", "content": "w " * 40}], "stream": True},
            ) as r:
                request_id = r.headers["x-request-id"]
                assert content_first
                next(line for line in r.iter_lines() if '"content":"' in line and '"content":""' not in line)
        except httpx.ReadTimeout:
            assert not content_first
            request_id = ""
        closed = time.time() * 1000
    return request_id, closed


def test_a_client_leaving_a_stream_cancels_the_upstream_within_100_ms(
    slow_sim: SimHandle, tmp_path: Path
) -> None:
    key = "good-cancel-stream"
    gw = gateway(tmp_path, [channel("slow", slow_sim, [key])])
    try:
        request_id, closed = _abandon_stream(gw, "gpt-4o-mini", content_first=True)
        assert slow_sim.wait_aborted(key) == 1
        noticed = slow_sim.last_abort_ms(key)
        assert noticed is not None and noticed - closed < 100, noticed - closed
        rec = wait_record(gw, request_id)
        assert rec["status"] == 499 and rec["error_kind"] == "client_aborted"
    finally:
        gw.stop()


def test_a_client_leaving_before_the_first_byte_is_recorded_at_once(
    slow_sim: SimHandle, tmp_path: Path
) -> None:
    # The gateway stops waiting and records the request at once. (The upstream request itself
    # is abandoned only once its response headers arrive: pyreqwest cannot abort a request that
    # is still waiting for them, so a hung upstream is left to the channel's total timeout.)
    key = "fault-hang_cancel"
    gw = gateway(tmp_path, [channel("hung", slow_sim, [key])])
    try:
        _, closed = _abandon_stream(gw, "gpt-4o-mini", content_first=False)
        with gw.admin() as admin:
            assert _wait_for(lambda: admin.get("/api/usage", params={"limit": 1}).json()["data"], 5.0)
            rec = admin.get("/api/usage", params={"limit": 1}).json()["data"][0]
        assert rec["status"] == 499 and rec["error_kind"] == "client_aborted"
        assert rec["attempts"][0]["outcome"] == "cancelled"
        recorded_at = rec["created_at"] + rec["latency_ms"]
        assert recorded_at - closed < 100, recorded_at - closed
    finally:
        gw.stop()


def test_context_length_is_retried_only_on_a_larger_context_fallback(sim: SimHandle, tmp_path: Path) -> None:
    small, big, other = "fault-context-length_ctx", "good-ctx-big", "good-ctx-other"
    channels = [
        channel("small", sim, [small], priority=10),
        channel("other", sim, [other]),  # serves the same model: must not be tried for this error
        {"name": "big", "base_url": sim.base_url, "keys": [big], "models": ["gpt-4.1"]},
    ]
    gw = gateway(tmp_path / "with", channels, routing={"context_fallbacks": {"gpt-4o-mini": ["gpt-4.1"]}})
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
        assert raw.parse().model.startswith("gpt-4.1")
        rec = wait_record(gw, raw.headers["x-request-id"])
        assert [a["error_class"] for a in rec["attempts"]] == ["context_length", None]
        assert sim.calls(other) == 0 and sim.calls(big) == 1
    finally:
        gw.stop()
    gw = gateway(tmp_path / "without", channels[:2])
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0).chat.completions.create(
                model="gpt-4o-mini", messages=MSG
            )
        body: Any = caught.value.body
        assert body["code"] == "context_length_exceeded"
        assert sim.calls(other) == 0
    finally:
        gw.stop()


def test_health_endpoint_answers_for_unknown_channels_with_404(sim: SimHandle, tmp_path: Path) -> None:
    gw = gateway(tmp_path, [channel("one", sim, ["good-h404"])], health=FAST_HEALTH)
    try:
        with gw.admin() as admin:
            assert admin.get("/api/channels/999/health").status_code == 404
            ids = {c["name"]: c["id"] for c in admin.get("/api/channels").json()}
            r = admin.post(f"/api/channels/{ids['one']}/keys/5/reset")
            assert r.status_code == 404 and r.json()["error"]["param"] == "index"
    finally:
        gw.stop()
