"""A failed-over request leaves no reference cycles behind.

A raised exception's traceback holds the frames it passed through; a frame that also holds the
exception in a local is a cycle that only the cyclic GC frees. The worker runs the GC rarely
(see ``Gateway.__rsgi_init__``), so such cycles from failed attempts piled up: the worker grew
by 15-25 MB during a saturated failover run. This test catches any new cycle on that path.
"""

from __future__ import annotations

import gc
import random
import time
import types
from typing import Any

import orjson
import pytest

from tests.unit.fakes import make_channel
from vectorengine.errors import GatewayError
from vectorengine.failover import AttemptFailed, Failover
from vectorengine.ingress import OPENAI
from vectorengine.protocol.openai import Endpoint
from vectorengine.routing.health import HealthBoard
from vectorengine.routing.pacing import Pacer
from vectorengine.routing.selection import Selector, build_routes
from vectorengine.settings import HealthConfig, RoutingConfig, UpstreamConfig
from vectorengine.store.records import AttemptRecord, Token

_OK = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)
_ERR = orjson.dumps({"error": {"message": "boom", "type": "server_error", "param": None, "code": None}})


class _Response:
    """What the failover reads of a JSON answer: status, headers, body."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body

    def header(self, name: str) -> str | None:
        return "application/json" if name == "content-type" else None

    async def read(self) -> bytes:
        return self._body


class _Transport:
    """Key ``bad`` answers ``bad_status`` with an OpenAI error envelope, every other key 200."""

    def __init__(self, bad_status: int = 500) -> None:
        self.bad_status = bad_status
        self.calls = 0

    async def send(self, method: str, url: str, headers: Any, body: bytes, **_: Any) -> _Response:
        self.calls += 1
        if ("authorization", "Bearer bad") in headers:
            return _Response(self.bad_status, _ERR)
        return _Response(200, _OK)

    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("JSON requests only")

    async def close(self) -> None:
        return None


def _token() -> Token:
    return Token(
        id=1, name="t", key_hash="h", key_hint="sk-…t", models=None, enabled=True,
        expires_at=None, managed_by="api", created_at=0, updated_at=0,
    )  # fmt: skip


def _failover(transport: _Transport) -> tuple[Failover, Any]:
    # The failing channel first (higher priority), so every request fails over once.
    routes = build_routes(
        [
            make_channel(id=1, name="bad", keys=("bad",), priority=10),
            make_channel(id=2, name="good", keys=("good",)),
        ]
    )
    health = HealthConfig(failures_to_open=1_000_000, error_rate_to_open=1.0)  # the breaker stays shut
    selector = Selector(HealthBoard(health), Pacer(), rng=random.Random(1))
    return Failover(transport, selector, RoutingConfig(), UpstreamConfig()), routes  # type: ignore[arg-type]


def _cycles_from_failover() -> list[str]:
    """What the cyclic GC would have had to free on the failover path, by kind."""
    found = []
    for obj in gc.garbage:
        if isinstance(obj, (AttemptFailed, GatewayError)):
            found.append(type(obj).__name__)
        elif isinstance(obj, types.FrameType) and obj.f_code.co_name in ("open", "_attempt", "_hedged"):
            found.append(f"frame {obj.f_code.co_name}")
    return found


async def _run(transport: _Transport, n: int) -> list[int | None]:
    """``n`` requests; each one's outcome is None (answered) or the status of the error it
    raised. Only the status is kept, so a cycle through a raised error would be garbage too."""
    failover, routes = _failover(transport)
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    outcomes: list[int | None] = []
    for _ in range(n):
        call = OPENAI.decode(Endpoint.CHAT, body, None)
        attempts: list[AttemptRecord] = []
        try:
            opened = await failover.open(call, _token(), routes, attempts, time.perf_counter())
            assert opened.pick.candidate.channel.name == "good" and len(attempts) == 2
            outcomes.append(None)
        except GatewayError as err:
            outcomes.append(err.status)
    return outcomes


@pytest.mark.parametrize("bad_status", [500, 400])
async def test_failed_attempts_are_freed_by_reference_counting(bad_status: int) -> None:
    transport = _Transport(bad_status)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        outcomes = await _run(transport, 20)
        gc.collect()
        cycles = _cycles_from_failover()
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    if bad_status == 500:  # retried elsewhere: every request answered by the second channel
        assert outcomes == [None] * 20 and transport.calls == 40
    else:  # a bad request is never retried: the caller gets it, once per request
        assert outcomes == [400] * 20 and transport.calls == 20
    assert cycles == []
