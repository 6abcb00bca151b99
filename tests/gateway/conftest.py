"""One simulator and one gateway for the whole gateway suite (tests that need their own start one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import SimHandle, start_simulator

FULL_KEY = "sk-test-full-0123456789abcdef"
LIMITED_KEY = "sk-test-limited-0123456789abcdef"
DISABLED_KEY = "sk-test-disabled-0123456789abcdef"
EXPIRED_KEY = "sk-test-expired-0123456789abcdef"
FAULTS = ["429", "500", "503", "400", "401", "malformed-json", "drop-mid-stream", "mid-stream-error"]


def fault_model(mode: str) -> str:
    return f"fault-model-{mode}"


def gateway_config(sim: SimHandle, **extra: Any) -> dict[str, Any]:
    channels: list[dict[str, Any]] = [
        {
            "name": "main",
            "type": "openai",
            "base_url": sim.base_url,
            "keys": ["key-a", "key-b"],
            "models": ["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small"],
            "model_map": {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"},
        }
    ]
    channels += [
        {"name": f"fault-{m}", "base_url": sim.base_url, "keys": [f"fault-{m}"], "models": [fault_model(m)]}
        for m in FAULTS
    ]
    channels.append(
        {"name": "dead", "base_url": "http://127.0.0.1:9/v1", "keys": ["k"], "models": ["unreachable-model"]}
    )
    return {
        "channels": channels,
        "tokens": [
            {"name": "full", "key": FULL_KEY},
            {"name": "limited", "key": LIMITED_KEY, "models": ["gpt-4o-mini"]},
            {"name": "disabled", "key": DISABLED_KEY, "enabled": False},
            {"name": "expired", "key": EXPIRED_KEY, "expires_at": int(time.time()) - 60},
        ],
        "usage": {"flush_interval_ms": 50},
        "max_body_bytes": 1024 * 1024,
        **extra,
    }


@pytest.fixture(scope="session")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def gateway(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), gateway_config(sim))
    yield gw
    gw.stop()
