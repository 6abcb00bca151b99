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
from vectorengine.simulator.faults import (
    FaultKeyError,
    format_fault,
    parse_fault_key,
    parse_fault_spec,
    strikes,
    strikes_in_window,
)
from vectorengine.simulator.ratelimit import KeyRateLimit
from vectorengine.simulator.stats import CALL_TIMES_KEPT, CallStats
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
        ("fault-429-p30-w1000", FaultSpec(mode="429", percent=30, window_ms=1000)),
        ("fault-ratelimit", FaultSpec(mode="ratelimit")),
        ("fault-ratelimit-l3-t500_x", FaultSpec(mode="ratelimit", rpm_limit=3, tpm_limit=500)),
        ("fault-context-length-p50", FaultSpec(mode="context-length", percent=50)),
    ],
)
def test_fault_key_grammar(key: str, expected: FaultSpec | None) -> None:
    assert parse_fault_key(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        "fault-",
        "fault-418",
        "fault-429-p5O",
        "fault-429-p150",
        "fault-hangs",
        "fault-500-x",
        "fault-429-w0",
        "fault-ratelimit-l0",
        "fault-ratelimit-t0",
        "fault-ratelimits",
    ],
)
def test_fault_key_errors(key: str) -> None:
    with pytest.raises(FaultKeyError):
        parse_fault_key(key)


@pytest.mark.parametrize(
    "spec", ["500", "429-ra2", "429-ra0.5", "503-p30-w1000", "ratelimit-l60", "ratelimit-l3-t500", "hang"]
)
def test_fault_spec_round_trip(spec: str) -> None:
    fault = parse_fault_spec(spec)
    assert fault == parse_fault_key(f"fault-{spec}_label")
    assert format_fault(fault) == spec
    assert format_fault(parse_fault_spec("ratelimit")) == "ratelimit-l60"
    assert (
        format_fault(FaultSpec(mode="drop-mid-stream", after_chunks=1, delay_ms=5))
        == "drop-mid-stream-ms5-n1"
    )


@pytest.mark.parametrize("spec", ["", "fault-500", "500_label", "500-", "teapot"])
def test_fault_spec_errors(spec: str) -> None:
    with pytest.raises(FaultKeyError):
        parse_fault_spec(spec)


def test_strikes_in_window() -> None:
    hits = [strikes_in_window(30, 1000, ms) for ms in (0, 299.9, 300, 999, 1000, 1299, 1300, 5250)]
    assert hits == [True, True, False, False, True, True, False, True]
    assert not any(strikes_in_window(0, 100, ms) for ms in range(0, 300, 7))
    assert all(strikes_in_window(100, 100, ms) for ms in range(0, 300, 7))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_buckets() -> None:
    clock = _Clock()
    limits = KeyRateLimit(60, 120, clock)  # 1 request and 2 tokens come back per second
    assert all(limits.admit(0) is None for _ in range(60))
    rejection = limits.admit(0)
    assert rejection is not None and rejection.kind == "requests"
    assert (rejection.limit, rejection.used, rejection.requested, rejection.wait_s) == (60, 60, 1, 1.0)
    headers = dict(limits.headers())
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.now += 0.5
    rejection = limits.admit(0)
    assert rejection is not None and rejection.wait_s == pytest.approx(0.5)
    clock.now += 0.5
    assert limits.admit(100) is None
    limits.charge(150)  # the answer overdraws the token bucket: 120 - 150 = -30
    clock.now += 5  # +10 tokens, +5 requests
    headers = dict(limits.headers())
    assert headers["x-ratelimit-remaining-tokens"] == "0" and headers["x-ratelimit-reset-tokens"] == "1m10s"
    assert headers["x-ratelimit-remaining-requests"] == "5"
    rejection = limits.admit(10)
    assert rejection is not None and rejection.kind == "tokens"
    assert (rejection.used, rejection.requested, rejection.wait_s) == (140, 10, 15.0)
    too_big = limits.admit(121)
    assert too_big is not None and math.isinf(too_big.wait_s)
    clock.now += 1000
    headers = dict(limits.headers())
    assert headers["x-ratelimit-remaining-tokens"] == "120" and headers["x-ratelimit-reset-tokens"] == "0ms"


def test_call_stats_keep_the_latest_call_times() -> None:
    stats = CallStats(10, 10)
    for _ in range(CALL_TIMES_KEPT + 5):
        stats.record("k", "/v1/models")
    snapshot = stats.snapshot()
    assert snapshot["calls"] == {"k": CALL_TIMES_KEPT + 5}
    assert len(snapshot["calls_at"]["k"]) == CALL_TIMES_KEPT
    stats.record_status("k", 200)
    stats.record_abort("k")
    snapshot = stats.snapshot()
    assert snapshot["statuses"] == {"k": {"200": 1}} and snapshot["aborted"] == {"k": 1}
    assert snapshot["last_abort_ms"]["k"] >= snapshot["calls_at"]["k"][-1]
    stats.reset()
    assert stats.snapshot()["calls_at"] == {} and stats.snapshot()["aborted"] == {}


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
    assert truncate_at_stop("abc STOP def", ["x", "STOP"]) == ("abc ", "STOP")
    assert truncate_at_stop("abc", "z") == ("abc", None)


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
