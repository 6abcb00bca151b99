"""In-process tests of the simulator's pure parts: key grammar, counters, content, config."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec
import orjson
import pytest

from vectorengine.simulator import FaultSpec, OpenAISimulator, SimulatorConfig
from vectorengine.simulator.content import (
    chat_reply,
    count_tokens,
    embedding,
    sample_arguments,
    tokenize,
    truncate_at_stop,
)
from vectorengine.simulator.faults import FaultKeyError, parse_fault_key, strikes
from vectorengine.simulator.wire import duration


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("sk-proj-abc", None),
        ("fault-429", FaultSpec(mode="429")),
        ("fault-429-ra2-p50", FaultSpec(mode="429", retry_after_s=2, percent=50)),
        ("fault-429-ra0.5_my-test-1", FaultSpec(mode="429", retry_after_s=0.5)),
        ("fault-slow-first-byte-ms500", FaultSpec(mode="slow-first-byte", delay_ms=500)),
        ("fault-drop-mid-stream-n1-p25", FaultSpec(mode="drop-mid-stream", after_chunks=1, percent=25)),
        ("fault-insufficient-quota", FaultSpec(mode="insufficient-quota")),
        ("fault-mid-stream-error_x", FaultSpec(mode="mid-stream-error")),
    ],
)
def test_fault_key_grammar(key: str, expected: FaultSpec | None) -> None:
    assert parse_fault_key(key) == expected


@pytest.mark.parametrize(
    "key", ["fault-", "fault-418", "fault-429-p5O", "fault-429-p150", "fault-hangs", "fault-500-x"]
)
def test_fault_key_errors(key: str) -> None:
    with pytest.raises(FaultKeyError):
        parse_fault_key(key)


def test_strikes_is_a_deterministic_share() -> None:
    assert [strikes(50, n) for n in range(1, 7)] == [True, False, True, False, True, False]
    assert [strikes(25, n) for n in range(1, 9)] == [True, False, False, False, True, False, False, False]
    assert all(strikes(100, n) for n in range(1, 20))
    assert not any(strikes(0, n) for n in range(1, 20))
    for percent in (10, 33, 70):
        assert sum(strikes(percent, n) for n in range(1, 101)) == percent


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.012, "12ms"),
        (0.0, "0ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (360, "6m0s"),
        (3725, "1h2m5s"),
    ],
)
def test_duration_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_tokenizer_round_trips_and_is_plausible() -> None:
    text = "Hello, world! Internationalization in 2024 costs 12345 tokens?\n\nYes."
    pieces = tokenize(text)
    assert "".join(pieces) == text
    assert len(text) / 6 < count_tokens(text) < len(text) / 2


def test_reply_mentions_user_words_and_stop() -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "purple elephants"},
    ]
    reply = chat_reply(messages, "m", 0)
    assert "purple elephants" in reply
    assert chat_reply(messages, "m", 1) != reply
    assert truncate_at_stop("abc STOP def", ["x", "STOP"]) == ("abc ", True)
    assert truncate_at_stop("abc", "z") == ("abc", False)


def test_sample_arguments_follow_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "count": {"type": "integer", "minimum": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "mode": {"$ref": "#/$defs/mode"},
            "when": {"type": "string", "format": "date-time"},
            "optional": {"type": "string"},
            "nested": {"type": "object", "properties": {"flag": {"type": ["boolean", "null"]}}},
        },
        "required": ["city", "count", "tags", "mode", "when", "nested"],
        "$defs": {"mode": {"enum": ["fast", "slow"]}},
    }
    assert sample_arguments(schema, "topic words") == {
        "city": "Paris",
        "count": 3,
        "tags": ["topic words", "topic words"],
        "mode": "fast",
        "when": "2024-01-01T12:00:00Z",
        "nested": {"flag": True},
    }
    assert sample_arguments(None, "x") == {}


def test_embeddings_are_deterministic_unit_vectors() -> None:
    first, again, other = embedding("a", 64), embedding("a", 64), embedding("b", 64)
    assert first == again and first != other
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-6)


def test_config_round_trip_and_checks() -> None:
    config = SimulatorConfig(latency_ms=5, faults={"k": FaultSpec(mode="hang")}, models=("a",))
    assert SimulatorConfig.from_json(config.to_json()) == config
    with pytest.raises(msgspec.ValidationError):
        SimulatorConfig.from_json('{"latency_ms": -1}')
    with pytest.raises(msgspec.ValidationError):
        SimulatorConfig.from_json('{"faults": {"k": {"mode": "teapot"}}}')
    with pytest.raises(msgspec.ValidationError):
        SimulatorConfig.from_json('{"unknown_field": 1}')
    with pytest.raises(ValueError):
        FaultSpec(mode="429", percent=101)


class _FakeProtocol:
    """Just enough of Granian's RSGI HTTP protocol to call the app without a server."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.sent = b""

    async def __call__(self) -> bytes:
        return self.body

    async def client_disconnect(self) -> None:
        await asyncio.sleep(3600)

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.sent = status, headers, body

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _FakeProtocol:
        self.status, self.headers = status, headers
        return self

    async def send_bytes(self, data: bytes) -> None:
        self.sent += data


class _Headers(dict[str, str]):
    pass


class _Scope:
    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method, self.path, self.client = method, path, "127.0.0.1:1"
        self.headers = _Headers(headers)


async def test_app_in_process() -> None:
    app = OpenAISimulator(SimulatorConfig(models=("m1",)))
    body = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    proto = _FakeProtocol(body)
    await app.__rsgi__(_Scope("POST", "/v1/chat/completions", {"authorization": "Bearer k"}), proto)
    assert proto.status == 200 and dict(proto.headers)["content-type"].startswith("text/event-stream")
    assert proto.sent.endswith(b"data: [DONE]\n\n")
    assert app.stats.snapshot()["calls"] == {"k": 1}
    missing = _FakeProtocol(b"")
    await app.__rsgi__(_Scope("GET", "/v1/models/m2", {"authorization": "Bearer k"}), missing)
    assert missing.status == 404 and orjson.loads(missing.sent)["error"]["code"] == "model_not_found"


class _BrokenProtocol(_FakeProtocol):
    async def __call__(self) -> bytes:
        raise RuntimeError("boom")


async def test_app_answers_500_envelope_on_internal_failure() -> None:
    app = OpenAISimulator()
    proto = _BrokenProtocol(b"")
    await app.__rsgi__(_Scope("POST", "/v1/chat/completions", {"authorization": "Bearer k"}), proto)
    assert proto.status == 500
    assert orjson.loads(proto.sent)["error"]["type"] == "server_error"
