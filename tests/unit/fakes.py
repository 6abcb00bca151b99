"""Small fakes shared by the unit tests."""

from __future__ import annotations

from vectorengine.protocol.openai import Endpoint
from vectorengine.routing.health import CallShape

SHAPE = CallShape(Endpoint.CHAT, False, "m")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
