"""Shared pieces of the failover and resilience tests: one token, small channels, fast health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import SimHandle

KEY = "sk-test-failover-0123456789abcdef"
MSG = [{"role": "user", "content": "hello there"}]
FAST_HEALTH = {"failures_to_open": 3, "open_s": 0.3, "max_open_s": 1.0, "probe_tick_ms": 20}


def channel(name: str, sim: SimHandle, keys: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "base_url": sim.base_url, "keys": keys, "models": ["gpt-4o-mini"], **extra}


def gateway(tmp_path: Path, channels: list[dict[str, Any]], **extra: Any) -> GatewayProcess:
    config = {
        "channels": channels,
        "tokens": [{"name": "t", "key": KEY}],
        "usage": {"flush_interval_ms": 50},
        "health": FAST_HEALTH,
        **extra,
    }
    return start_gateway(tmp_path, config)


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=20)


def ask(gw: GatewayProcess, stream: bool) -> tuple[str, str]:
    """One chat completion through the SDK; (request id, the text answered)."""
    c = client(gw)
    if stream:
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, stream=True)
        text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    else:
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
        text = raw.parse().choices[0].message.content or ""
    return raw.headers["x-request-id"], text


def health(gw: GatewayProcess, name: str) -> list[dict[str, Any]]:
    with gw.admin() as admin:
        ids = {c["name"]: c["id"] for c in admin.get("/api/channels").json()}
        r = admin.get(f"/api/channels/{ids[name]}/health")
        assert r.status_code == 200, r.text
        keys: list[dict[str, Any]] = r.json()["keys"]
        return keys


def channel_ids(gw: GatewayProcess) -> dict[str, int]:
    with gw.admin() as admin:
        return {c["name"]: c["id"] for c in admin.get("/api/channels").json()}


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
