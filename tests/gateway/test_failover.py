"""Failover: the retry policy, the first-byte gate, timeouts, health and the attempt chain.

Each test runs its own gateway against one simulator; fault keys carry a per-test label so
the simulator's call counters are the test's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess, wait_record
from tests.support.procs import SimHandle, start_simulator
from tests.support.routing import (
    FAST_HEALTH,
    KEY,
    MSG,
    STREAM,
    ask,
    channel,
    channel_ids,
    client,
    gateway,
    health,
)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator()
    yield handle
    handle.stop()


@STREAM
def test_a_400_is_returned_as_is_and_never_retried(sim: SimHandle, tmp_path: Path, stream: bool) -> None:
    bad, good = f"fault-400_nr{stream:d}", f"good-nr{stream:d}"
    gw = gateway(tmp_path, [channel("first", sim, [bad], priority=10), channel("second", sim, [good])])
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            ask(gw, stream)
        assert caught.value.status_code == 400
        body: Any = caught.value.body
        assert body["type"] == "invalid_request_error"  # the upstream's own envelope, passed on
        assert sim.calls(bad) == 1 and sim.calls(good) == 0
        rec = wait_record(gw, caught.value.response.headers["x-request-id"])
        assert rec["status"] == 400
        assert [a["error_class"] for a in rec["attempts"]] == ["bad_request"]
    finally:
        gw.stop()


_EARLY_FAULTS = [
    (mode, stream)
    for mode in ("500", "503", "429", "401", "insufficient-quota", "drop-mid-stream-n0")
    for stream in (False, True)
    if stream or not mode.startswith("drop")  # a drop before the first event is a streaming fault
]


@pytest.mark.parametrize(("mode", "stream"), _EARLY_FAULTS)
def test_a_failure_before_the_first_byte_fails_over_invisibly(
    sim: SimHandle, tmp_path: Path, stream: bool, mode: str
) -> None:
    bad, good = f"fault-{mode}_fo{stream:d}", f"good-fo-{mode}{stream:d}"
    gw = gateway(tmp_path, [channel("first", sim, [bad], priority=10), channel("second", sim, [good])])
    try:
        request_id, text = ask(gw, stream)
        assert text.startswith("This is a simulated reply")
        assert sim.calls(bad) == 1 and sim.calls(good) == 1
        rec = wait_record(gw, request_id)
        assert rec["status"] == 200 and rec["error_kind"] is None
        ids = channel_ids(gw)
        chain = [(a["n"], a["channel_id"], a["outcome"]) for a in rec["attempts"]]
        assert chain == [(1, ids["first"], "failed"), (2, ids["second"], "won")]
        assert rec["attempts"][0]["error_class"] in (
            "server",
            "rate_limited",
            "auth",
            "billing",
            "connection",
        )
        assert rec["channel_id"] == ids["second"]
    finally:
        gw.stop()


def test_a_stream_that_breaks_after_its_first_chunk_ends_with_an_error_event(
    sim: SimHandle, tmp_path: Path
) -> None:
    bad, good = "fault-drop-mid-stream-n3_after", "good-after"
    gw = gateway(tmp_path, [channel("first", sim, [bad], priority=10), channel("second", sim, [good])])
    try:
        with httpx.Client(timeout=10) as c:
            r = c.post(
                gw.base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "gpt-4o-mini", "messages": MSG, "stream": True},
            )
        assert r.status_code == 200
        events = [e for e in r.text.split("\n\n") if e]
        assert len(events) >= 2 and '"error"' in events[-1] and "[DONE]" not in r.text
        assert "upstream_stream_broken" in events[-1]
        assert sim.calls(good) == 0  # once the client has its status line there is no failover
        rec = wait_record(gw, r.headers["x-request-id"])
        assert rec["error_kind"] == "upstream_stream_broken"
        assert rec["attempts"] is None  # one attempt, which won the request: the record is its record
        assert rec["channel_id"] == channel_ids(gw)["first"]
    finally:
        gw.stop()


@STREAM
def test_a_hung_upstream_fails_over_within_the_first_byte_timeout(
    sim: SimHandle, tmp_path: Path, stream: bool
) -> None:
    hung, good = f"fault-hang_h{stream:d}", f"good-h{stream:d}"
    gw = gateway(
        tmp_path,
        [
            channel("hung", sim, [hung], priority=10, timeouts={"first_byte_s": 0.4}),
            channel("second", sim, [good]),
        ],
    )
    try:
        ask(gw, stream)  # warm the connection pools
        t0 = time.monotonic()
        request_id, text = ask(gw, stream)
        elapsed = time.monotonic() - t0
        assert text.startswith("This is a simulated reply")
        # 0.4 s of waiting for the hung one, then one normal attempt (a few ms here).
        assert 0.4 <= elapsed < 0.4 + 0.3, elapsed
        rec = wait_record(gw, request_id)
        first, second = rec["attempts"]
        assert first["error_class"] == "timeout" and second["outcome"] == "won"
        assert 398 <= first["latency_ms"] < 450  # the event loop's timers have 1 ms resolution
    finally:
        gw.stop()


def test_a_401_disables_the_key_until_an_admin_resets_it(sim: SimHandle, tmp_path: Path) -> None:
    bad, good = "fault-401_auth", "good-auth"
    gw = gateway(
        tmp_path, [channel("pool", sim, [bad, good])], health={**FAST_HEALTH, "disabled_probe_s": 60}
    )
    try:
        for _ in range(10):
            ask(gw, False)
        assert sim.calls(bad) == 1  # disabled at once, not tried again
        key = health(gw, "pool")[0]
        assert key["state"] == "disabled" and key["reason"].startswith("auth:")
        with gw.admin() as admin:
            r = admin.post(f"/api/channels/{channel_ids(gw)['pool']}/keys/0/reset")
        assert r.status_code == 200 and r.json()["keys"][0]["state"] == "healthy"
        for _ in range(4):
            ask(gw, False)
        assert sim.calls(bad) == 2  # back in rotation, failed again, out again
        assert health(gw, "pool")[0]["state"] == "disabled"
    finally:
        gw.stop()


def test_a_429_cools_the_key_down_for_its_retry_after(sim: SimHandle, tmp_path: Path) -> None:
    limited, good = "fault-429-ra2_cool", "good-cool"
    gw = gateway(tmp_path, [channel("pool", sim, [limited, good])])
    try:
        slowest = 0.0
        started = time.monotonic()  # the first request meets the 429 (keys are tried in turn)
        for _ in range(20):
            t0 = time.monotonic()
            ask(gw, False)
            slowest = max(slowest, time.monotonic() - t0)
        assert slowest < 1.0  # no request waited out the 2 s cooldown: they went to the good key
        assert sim.calls(limited) == 1
        key = health(gw, "pool")[0]
        elapsed = time.monotonic() - started
        assert elapsed < 1.8, "too slow to see the cooldown"
        assert key["state"] == "cooling" and "rate_limited" in key["reason"]
        # resting for the 2 s of its retry-after, counted from the 429
        assert 2.0 - elapsed - 0.3 < key["next_probe_in_s"] <= 2.0 - (elapsed - slowest) + 0.05
    finally:
        gw.stop()


def test_a_failing_key_opens_its_breaker(sim: SimHandle, tmp_path: Path) -> None:
    failing, good = "fault-500_breaker", "good-breaker"
    gw = gateway(tmp_path, [channel("pool", sim, [failing, good])], health={**FAST_HEALTH, "open_s": 30})
    try:
        for _ in range(30):
            ask(gw, False)
        assert sim.calls(failing) == 3  # three failures in a row open it; no traffic after that
        key = health(gw, "pool")[0]
        assert key["state"] == "open" and "3 failures in a row" in key["reason"]
        assert key["consecutive_failures"] == 3 and key["error_rate"] > 0
    finally:
        gw.stop()


def test_with_nothing_healthy_left_the_caller_gets_503_no_capacity(sim: SimHandle, tmp_path: Path) -> None:
    failing = "fault-500_nocap"
    gw = gateway(tmp_path, [channel("only", sim, [failing])], health={**FAST_HEALTH, "open_s": 30})
    try:
        statuses = []
        for _ in range(3):  # the upstream's own 500 while the key is still in service
            with pytest.raises(openai.InternalServerError) as caught:
                ask(gw, False)
            statuses.append(caught.value.status_code)
        assert statuses == [500, 500, 500]
        with pytest.raises(openai.APIStatusError) as caught:
            ask(gw, False)
        assert caught.value.status_code == 503
        body: Any = caught.value.body
        assert body["code"] == "no_capacity" and caught.value.response.headers["retry-after"]
        assert sim.calls(failing) == 3
    finally:
        gw.stop()


def test_a_model_falls_back_to_its_configured_fallback(sim: SimHandle, tmp_path: Path) -> None:
    bad, good = "fault-503_fallback", "good-fallback"
    gw = gateway(
        tmp_path,
        [
            {"name": "big", "base_url": sim.base_url, "keys": [bad], "models": ["gpt-4o"]},
            channel("small", sim, [good]),
        ],
        routing={"fallbacks": {"gpt-4o": ["gpt-4o-mini"]}},
    )
    try:
        raw = client(gw).chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG)
        assert raw.parse().model.startswith("gpt-4o-mini")
        rec = wait_record(gw, raw.headers["x-request-id"])
        assert rec["model"] == "gpt-4o" and rec["upstream_model"] == "gpt-4o-mini"
        assert [a["upstream_model"] for a in rec["attempts"]] == ["gpt-4o", "gpt-4o-mini"]
    finally:
        gw.stop()


def test_attempts_never_exceed_the_budget(sim: SimHandle, tmp_path: Path) -> None:
    keys = [f"fault-500_budget{i}" for i in range(6)]
    gw = gateway(tmp_path, [channel("pool", sim, keys)], routing={"max_attempts": 4})
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            ask(gw, False)
        rec = wait_record(gw, caught.value.response.headers["x-request-id"])
        assert len(rec["attempts"]) == 4
        assert sum(sim.calls(k) for k in keys) == 4
        assert len({a["key_index"] for a in rec["attempts"]}) == 4  # a failed key is not tried twice
    finally:
        gw.stop()


def _ttfb_run(gw: GatewayProcess, n: int, stream: bool) -> tuple[list[float], list[str]]:
    """Sequential requests; the time to the first body byte of each, and their request ids."""
    times, ids = [], []
    with httpx.Client(timeout=20) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            with c.stream(
                "POST",
                gw.base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "gpt-4o-mini", "messages": MSG, "stream": stream},
            ) as r:
                chunks = r.iter_bytes()
                first = next(chunks)
                times.append(time.perf_counter() - t0)
                rest = b"".join(chunks)
                assert r.status_code == 200 and first
                assert (b"[DONE]" in rest or b"[DONE]" in first) if stream else b"choices" in first + rest
                ids.append(r.headers["x-request-id"])
    return times, ids


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@STREAM
def test_hedging_cuts_the_tail_of_time_to_first_byte(
    sim: SimHandle, tmp_path: Path, stream: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for hedged in (False, True):
        slow = f"fault-slow-first-byte-p10-ms400_hedge{stream:d}{hedged:d}"  # every 10th call waits 400 ms
        routing = {"hedge": {"gpt-4o-mini": {"after_ms": 50}}} if hedged else {}
        gw = gateway(
            tmp_path / f"h{hedged:d}",
            [channel("slowish", sim, [slow], priority=10), channel("backup", sim, [f"good-hedge{stream:d}"])],
            routing=routing,
        )
        try:
            times, ids = _ttfb_run(gw, 60, stream)
            results[hedged] = _p99(times)
            if hedged:
                slow_ids = [rid for rid, t in zip(ids, times, strict=True) if t > 0.04]
                assert slow_ids, "no request was slow enough to be hedged"
                rec = wait_record(gw, slow_ids[0])
                outcomes = sorted((a["hedge"], a["outcome"]) for a in rec["attempts"])
                assert outcomes == [(False, "cancelled"), (True, "won")]
        finally:
            gw.stop()
    with capsys.disabled():
        print(
            f"\n  hedging, stream={stream}: p99 time to first byte {results[False] * 1000:.0f} ms "
            f"without, {results[True] * 1000:.0f} ms with (hedge after 50 ms)"
        )
    assert results[False] >= 0.4
    assert results[True] < 0.2
