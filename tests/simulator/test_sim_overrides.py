"""Runtime fault overrides: ``GET``/``PUT``/``DELETE /_sim/keys/{key}`` and ``POST /_sim/reset``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.simulator.test_sim_faults import CHAT, error_of, post, sdk
from tests.support.procs import SimHandle, start_simulator, unique_key
from vectorengine.simulator import FaultSpec, SimulatorConfig


def statuses(simulator: SimHandle, key: str, count: int) -> list[int]:
    return [post(simulator, key, CHAT).status_code for _ in range(count)]


def test_override_heals_a_failing_key_and_delete_restores_it(simulator: SimHandle) -> None:
    key = unique_key("fault-500")
    assert statuses(simulator, key, 2) == [500, 500]
    state = simulator.set_fault(key, None)
    assert state == {"key": key, "source": "override", "fault": None, "settings": None}
    with sdk(simulator, key) as client:
        assert client.chat.completions.create(**CHAT).choices[0].finish_reason == "stop"
    assert statuses(simulator, key, 2) == [200, 200]
    assert simulator.stats()["overrides"][key] is None
    state = simulator.clear_fault(key)
    assert state["source"] == "key" and state["fault"] == "500"
    assert state["settings"]["mode"] == "500" and state["settings"]["percent"] == 100
    assert statuses(simulator, key, 1) == [500]
    assert key not in simulator.stats()["overrides"]
    assert simulator.statuses(key) == {500: 3, 200: 3}
    assert simulator.stats()["faults"][key] == 3


def test_override_breaks_a_healthy_key(simulator: SimHandle) -> None:
    key = unique_key()
    assert simulator.fault_state(key) == {"key": key, "source": "none", "fault": None, "settings": None}
    assert statuses(simulator, key, 3) == [200, 200, 200]
    state = simulator.set_fault(key, "429-ra2")
    assert state["source"] == "override" and state["fault"] == "429-ra2"
    assert state["settings"]["retry_after_s"] == 2
    response = post(simulator, key, CHAT)
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert error_of(response)["code"] == "rate_limit_exceeded"
    # the fault counter starts again at the override: p50 fails its 1st, 3rd … call
    assert simulator.set_fault(key, "503-p50")["fault"] == "503-p50"
    assert statuses(simulator, key, 4) == [503, 200, 503, 200]
    simulator.clear_fault(key)
    assert statuses(simulator, key, 2) == [200, 200]


def test_override_to_a_rate_limit_and_back(simulator: SimHandle) -> None:
    key = unique_key()
    assert simulator.set_fault(key, "ratelimit-l2")["fault"] == "ratelimit-l2"
    with sdk(simulator, key) as client:
        remaining = [
            client.models.with_raw_response.list().headers["x-ratelimit-remaining-requests"] for _ in range(2)
        ]
        assert remaining == ["1", "0"]
        with pytest.raises(openai.RateLimitError):
            client.models.list()
        simulator.set_fault(key, "ratelimit-l2")  # set again: a full bucket
        assert client.models.with_raw_response.list().headers["x-ratelimit-remaining-requests"] == "1"
        simulator.clear_fault(key)
        raw = client.models.with_raw_response.list()
        assert raw.headers["x-ratelimit-limit-requests"] == "10000"


def test_override_heals_a_malformed_fault_key(simulator: SimHandle) -> None:
    key = "fault-teapot-418"
    assert post(simulator, key, CHAT).status_code == 401
    assert "unknown fault mode" in simulator.fault_state(key)["error"]
    simulator.set_fault(key, None)
    assert post(simulator, key, CHAT).status_code == 200
    simulator.clear_fault(key)
    assert post(simulator, key, CHAT).status_code == 401


def test_override_beats_the_configured_fault_map() -> None:
    config = SimulatorConfig(faults={"sk-configured": FaultSpec(mode="503")})
    with start_simulator(config) as sim:
        assert sim.fault_state("sk-configured")["source"] == "config"
        assert post(sim, "sk-configured", CHAT).status_code == 503
        sim.set_fault("sk-configured", "400")
        assert post(sim, "sk-configured", CHAT).status_code == 400
        sim.clear_fault("sk-configured")
        assert post(sim, "sk-configured", CHAT).status_code == 503


def test_reset_drops_the_overrides() -> None:
    # a separate process: resetting the shared one would wipe other tests' counters
    with start_simulator() as sim:
        sim.set_fault("sk-a", "500")
        sim.set_fault("fault-500_b", None)
        assert sim.stats()["overrides"] == {"sk-a": "500", "fault-500_b": None}
        sim.reset()
        assert sim.stats()["overrides"] == {}
        assert post(sim, "sk-a", CHAT).status_code == 200
        assert post(sim, "fault-500_b", CHAT).status_code == 500


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"fault": "418"}, "unknown fault mode in spec '418'"),
        ({"fault": "429-x5"}, "bad fault parameter 'x5'"),
        ({"fault": "fault-500"}, "unknown fault mode"),
        ({"fault": "500_label"}, "contains '_'"),
        ({"fault": "429-p150"}, "percent must be within 0..100"),
        ({"fault": "ratelimit-l0"}, "must be positive"),
        ({"fault": 500}, "expected a string or null"),
        ({"spec": "500"}, 'Expected a JSON body {"fault"'),
        ([], 'Expected a JSON body {"fault"'),
    ],
)
def test_bad_override_is_a_400_explaining_the_grammar(simulator: SimHandle, body: Any, needle: str) -> None:
    key = unique_key()
    response = httpx.put(f"{simulator.root_url}/_sim/keys/{key}", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and error["param"] == "fault"
    assert needle in error["message"]
    assert "ratelimit-l60" in error["message"] and "p<percent>" in error["message"]  # the grammar
    assert simulator.fault_state(key)["source"] == "none"  # nothing changed


def test_keys_route_methods_and_encoding(simulator: SimHandle) -> None:
    response = httpx.post(f"{simulator.root_url}/_sim/keys/sk-x", json={"fault": None})
    assert response.status_code == 405 and response.headers["allow"] == "GET, PUT, DELETE"
    assert httpx.get(f"{simulator.root_url}/_sim/keys/").status_code == 404
    odd = unique_key("sk/with%slash")  # the key is a path segment: it travels percent-encoded
    assert simulator.set_fault(odd, "500")["key"] == odd
    assert post(simulator, odd, CHAT).status_code == 500
    assert simulator.fault_state(odd)["fault"] == "500"
