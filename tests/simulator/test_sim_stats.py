"""``/_sim/stats`` per key: statuses, abandoned requests (noticed at once) and call times."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.simulator.test_sim_faults import CHAT, post, sdk
from tests.support.procs import SimHandle, unique_key


def now_ms() -> float:
    return time.time() * 1000


def test_statuses_per_key(simulator: SimHandle) -> None:
    flaky, cut = unique_key("fault-429-p50"), unique_key("fault-drop-mid-stream-n1")
    for _ in range(3):
        post(simulator, flaky, CHAT)
    with pytest.raises(httpx.HTTPError):
        post(simulator, cut, {**CHAT, "stream": True})
    assert simulator.statuses(flaky) == {429: 2, 200: 1}
    # the simulator cut that stream itself: a 200 that was not abandoned by the client
    assert simulator.statuses(cut) == {200: 1}
    assert simulator.aborted(cut) == 0 and simulator.aborted(flaky) == 0
    assert simulator.statuses(unique_key()) == {}


def test_stream_abandoned_by_the_client_is_noticed_at_once(simulator: SimHandle) -> None:
    key = unique_key()
    slow = {"x-sim-chunk-delay-ms": "40"}
    with sdk(simulator, key, default_headers=slow) as client:
        complete = list(client.chat.completions.create(**CHAT, stream=True, max_tokens=3))
        assert complete[-1].choices[0].finish_reason == "length"
        assert simulator.aborted(key) == 0  # a stream read to its end is not an abort
        stream = client.chat.completions.create(**CHAT, stream=True)
        assert next(stream).choices[0].delta.role == "assistant"
        next(stream)
        closing = now_ms()
        stream.close()  # mid-stream: the connection goes away
        closed = now_ms()
    assert simulator.wait_aborted(key) == 1
    noticed = simulator.last_abort_ms(key)
    assert noticed is not None
    assert closing - 5 <= noticed <= closed + 100, (noticed - closing, closed - closing)
    assert simulator.statuses(key) == {200: 2}
    time.sleep(0.1)
    assert simulator.aborted(key) == 1  # counted once


@pytest.mark.parametrize(
    ("fault", "headers"),
    [("fault-hang", {}), ("fault-slow-first-byte-ms5000", {}), ("sk-slow", {"x-sim-latency-ms": "5000"})],
)
def test_wait_abandoned_before_the_status_line_is_noticed_at_once(
    simulator: SimHandle, fault: str, headers: dict[str, str]
) -> None:
    key = unique_key(fault)
    with sdk(simulator, key, timeout=0.3, default_headers=headers) as client:
        sent = now_ms()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**CHAT)
        gave_up = now_ms()
    assert simulator.wait_aborted(key) == 1
    noticed = simulator.last_abort_ms(key)
    assert noticed is not None
    assert sent + 250 <= noticed <= gave_up + 100, (noticed - sent, gave_up - sent)
    assert simulator.statuses(key) == {}  # it never got a status line
    assert simulator.calls(key) == 1


def test_calls_at_and_busiest_span(simulator: SimHandle) -> None:
    key = unique_key()
    started = now_ms()
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=5) as http:
        for i in range(5):
            assert http.get(f"{simulator.base_url}/models").status_code == 200
            if i == 2:
                time.sleep(0.3)
    ended = now_ms()
    times = simulator.calls_at(key)
    assert len(times) == 5 and times == sorted(times)
    assert started <= times[0] and times[-1] <= ended
    assert times[3] - times[2] >= 300
    assert simulator.max_calls_within(key, 0.25) == 3
    assert simulator.max_calls_within(key, 60) == 5
    assert simulator.calls_at(unique_key()) == [] and simulator.max_calls_within(unique_key()) == 0
