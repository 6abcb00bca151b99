"""Small fakes shared by the unit tests."""

from __future__ import annotations

from typing import Any

from vectorengine.protocol.openai import Endpoint
from vectorengine.routing.health import CallShape
from vectorengine.store.records import Channel

SHAPE = CallShape(Endpoint.CHAT, False, "m")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_channel(**fields: Any) -> Channel:
    """A stored channel with every required field filled in; ``fields`` override them."""
    values: dict[str, Any] = {
        "id": 1,
        "name": "c",
        "type": "openai",
        "base_url": "http://x",
        "keys": ("k",),
        "models": ("m",),
        "model_map": {},
        "priority": 0,
        "weight": 1,
        "enabled": True,
        "managed_by": "api",
        "created_at": 0,
        "updated_at": 0,
    }
    return Channel(**(values | fields))
