"""Retry policy, rate-limit headers, the health state machine and pacing, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fakes import SHAPE, FakeClock, make_channel
from vectorengine.errors import Kind
from vectorengine.routing.health import HealthBoard, State
from vectorengine.routing.pacing import Pacer
from vectorengine.routing.policy import (
    POLICY,
    Effect,
    ErrorClass,
    Exclude,
    Retry,
    classify_event,
    classify_status,
    classify_transport,
)
from vectorengine.routing.ratelimit_headers import budgets, parse_duration, retry_after_s
from vectorengine.settings import HealthConfig
from vectorengine.store.records import Channel

# -- the policy table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (400, {"code": None, "type": "invalid_request_error"}, ErrorClass.BAD_REQUEST),
        (422, None, ErrorClass.BAD_REQUEST),
        (413, None, ErrorClass.BAD_REQUEST),
        (400, {"code": "context_length_exceeded"}, ErrorClass.CONTEXT_LENGTH),
        (400, {"message": "This model's maximum context length is 8192 tokens."}, ErrorClass.CONTEXT_LENGTH),
        (401, {"code": "invalid_api_key"}, ErrorClass.AUTH),
        (403, None, ErrorClass.AUTH),
        (402, None, ErrorClass.BILLING),
        (429, {"code": "insufficient_quota", "type": "insufficient_quota"}, ErrorClass.BILLING),
        (429, {"code": "rate_limit_exceeded", "type": "requests"}, ErrorClass.RATE_LIMITED),
        (429, None, ErrorClass.RATE_LIMITED),
        (404, {"code": "model_not_found"}, ErrorClass.NOT_FOUND),
        (408, None, ErrorClass.SERVER),
        (409, None, ErrorClass.SERVER),
        (500, None, ErrorClass.SERVER),
        (503, {"type": "server_error"}, ErrorClass.SERVER),
    ],
)
def test_statuses_are_classified(status: int, error: dict[str, Any] | None, expected: ErrorClass) -> None:
    assert classify_status(status, error) is expected


def test_the_policy_table_covers_every_class_and_never_retries_a_bad_request() -> None:
    assert set(POLICY) == set(ErrorClass)
    assert POLICY[ErrorClass.BAD_REQUEST].retry is Retry.NEVER
    assert POLICY[ErrorClass.CONTEXT_LENGTH].retry is Retry.CONTEXT_FALLBACK
    assert POLICY[ErrorClass.AUTH].effect is POLICY[ErrorClass.BILLING].effect is Effect.DISABLE
    assert POLICY[ErrorClass.RATE_LIMITED].effect is Effect.COOLDOWN
    for cls in (ErrorClass.SERVER, ErrorClass.TIMEOUT, ErrorClass.CONNECTION):
        assert POLICY[cls].retry is Retry.ELSEWHERE and POLICY[cls].effect is Effect.FAILURE
    # keys of a channel rotate before the channel is left, unless the host itself is the problem
    assert POLICY[ErrorClass.RATE_LIMITED].exclude is Exclude.KEY
    assert POLICY[ErrorClass.CONNECTION].exclude is Exclude.CHANNEL


def test_transport_failures_and_in_band_errors_are_classified() -> None:
    assert classify_transport(Kind.UPSTREAM_TIMEOUT) is ErrorClass.TIMEOUT
    assert classify_transport(Kind.UPSTREAM_UNREACHABLE) is ErrorClass.CONNECTION
    assert classify_transport(Kind.UPSTREAM_BAD_RESPONSE) is ErrorClass.BAD_RESPONSE
    assert classify_event({"code": "rate_limit_exceeded"}) is ErrorClass.RATE_LIMITED
    assert classify_event({"type": "insufficient_quota"}) is ErrorClass.BILLING
    assert classify_event({"message": "boom", "type": "server_error"}) is ErrorClass.BAD_RESPONSE


# -- rate-limit headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1h2m3s", 3723.0),
        ("2", 2.0),
        ("0.5", 0.5),
        ("1m30.5s", 90.5),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "5s3", "ms", "-", "1s 2s"])
def test_non_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


@given(h=st.integers(0, 48), m=st.integers(0, 59), s=st.integers(0, 59), ms=st.integers(0, 999))
def test_any_duration_the_provider_writes_parses_back(h: int, m: int, s: int, ms: int) -> None:
    parts = [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")]
    text = "".join(f"{v}{u}" for v, u in parts if v) or "0s"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


@given(st.text(max_size=20))
def test_duration_parsing_never_raises(text: str) -> None:
    result = parse_duration(text)
    assert result is None or result >= 0


def test_retry_after_prefers_milliseconds_and_reads_dates() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}.get) == 1.5
    assert retry_after_s({"retry-after": "2"}.get) == 2.0
    assert retry_after_s({}.get) is None
    future = retry_after_s({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}.get)
    assert future is not None and future > 3600
    assert retry_after_s({"retry-after": "soon"}.get) is None


def test_budgets_are_read_from_the_x_ratelimit_headers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149980",
        "x-ratelimit-reset-tokens": "8ms",
    }
    req, tok = budgets(headers.get)
    assert req is not None and (req.limit, req.remaining, req.reset_s) == (60, 0, 1.0)
    assert tok is not None and (tok.limit, tok.remaining, tok.reset_s) == (150000, 149980, 0.008)
    assert budgets({}.get) == (None, None)


# -- health ---------------------------------------------------------------------------------------


def board(clock: FakeClock, **cfg: Any) -> HealthBoard:
    return HealthBoard(
        HealthConfig(**{"failures_to_open": 3, "open_s": 2.0, "max_open_s": 10.0, **cfg}), clock
    )


def test_consecutive_failures_open_the_breaker_and_probes_back_off() -> None:
    clock = FakeClock()
    b = board(clock)
    for _ in range(2):
        b.failure(1, 0, Effect.FAILURE, "server: 500", None, SHAPE)
    assert b.usable(1, 0)
    b.failure(1, 0, Effect.FAILURE, "server: 500", None, SHAPE)
    h = b.get(1, 0)
    assert h is not None and h.state is State.OPEN and not b.usable(1, 0)
    assert b.due() == []
    clock.advance(2.0)
    assert b.due() == [h]
    h.probing = True
    assert b.due() == []  # one probe at a time
    b.probe_result(h, False, Effect.FAILURE, "server: 500", None)
    assert h.state is State.OPEN and h.retry_at == pytest.approx(clock.now + 4.0)  # doubled
    for _ in range(5):
        clock.advance(100)
        b.probe_result(h, False, Effect.FAILURE, "server: 500", None)
    assert h.retry_at - clock.now == pytest.approx(10.0)  # capped
    b.probe_result(h, True, Effect.NONE, "", None)
    assert h.state is State.HEALTHY and b.usable(1, 0) and h.consecutive_failures == 0


def test_a_high_error_rate_opens_the_breaker_without_a_run_of_failures() -> None:
    b = board(FakeClock(), min_samples=10, window=10, error_rate_to_open=0.5)
    for i in range(40):
        if i % 3 == 0:
            b.success(1, 0, 10.0, SHAPE)
        else:
            b.failure(1, 0, Effect.FAILURE, "server: 500", None, SHAPE)
        if not b.usable(1, 0):
            break
    h = b.get(1, 0)
    assert h is not None and h.state is State.OPEN and "error rate" in (h.reason or "")


def test_cooldown_follows_retry_after_and_disable_waits_for_a_probe() -> None:
    clock = FakeClock()
    b = board(clock, disabled_probe_s=300.0, cooldown_s=1.0)
    b.failure(1, 0, Effect.COOLDOWN, "rate_limited: 429", 7.5, SHAPE)
    b.failure(1, 1, Effect.COOLDOWN, "rate_limited: 429", None, SHAPE)
    b.failure(1, 2, Effect.DISABLE, "auth: 401", None, SHAPE)
    assert b.cooling_until(1, 0) == pytest.approx(clock.now + 7.5)
    assert b.cooling_until(1, 1) == pytest.approx(clock.now + 1.0)
    assert b.cooling_until(1, 2) is None
    clock.advance(299)
    assert {(h.channel_id, h.key_index) for h in b.due()} == {(1, 0), (1, 1)}
    clock.advance(1)
    assert (1, 2) in {(h.channel_id, h.key_index) for h in b.due()}
    b.reset(1, 2)
    assert b.usable(1, 2)


def test_the_view_shows_state_reason_and_scores() -> None:
    clock = FakeClock()
    b = board(clock)
    b.success(1, 0, 20.0, SHAPE)
    b.failure(1, 1, Effect.DISABLE, "auth: invalid key", None, SHAPE)
    rows = b.view(1, 3)
    assert [r["state"] for r in rows] == ["healthy", "disabled", "healthy"]
    assert rows[0]["latency_ms"] == 20.0 and rows[1]["reason"] == "auth: invalid key"
    assert rows[1]["next_probe_in_s"] == pytest.approx(300.0) and rows[0]["next_probe_in_s"] is None


# -- pacing ---------------------------------------------------------------------------------------


def channel(rpm: int | None = None, tpm: int | None = None) -> Channel:
    return make_channel(rpm=rpm, tpm=tpm)


def test_pacing_spreads_a_configured_rpm_evenly() -> None:
    clock = FakeClock()
    pacer, ch = Pacer(clock), channel(rpm=600)  # 10 a second, bursts of 60
    sent = 0
    for _ in range(6000):  # 60 s in 10 ms steps
        while pacer.wait_s(ch, 0) == 0.0:
            pacer.take(ch, 0)
            sent += 1
        clock.advance(0.01)
    assert 600 <= sent <= 600 + 60  # the minute's budget plus at most one burst


def test_pacing_learns_the_limit_and_rests_when_the_provider_says_it_is_spent() -> None:
    clock = FakeClock()
    pacer, ch = Pacer(clock), channel()
    assert pacer.wait_s(ch, 0) == 0.0
    pacer.observe(ch, 0, {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59"}.get)
    assert pacer.view(ch, 0)["learned_rpm"] == 60
    spent = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "60s",
    }
    pacer.observe(ch, 0, spent.get)
    assert pacer.wait_s(ch, 0) == pytest.approx(1.0)  # one request's worth back after 60 s / 60
    clock.advance(1.0)
    assert pacer.wait_s(ch, 0) == 0.0


def test_token_pacing_charges_what_requests_used() -> None:
    clock = FakeClock()
    pacer, ch = Pacer(clock), channel(tpm=6000)  # 100 tokens a second, bursts of 600
    assert pacer.wait_s(ch, 0) == 0.0
    pacer.charge(ch, 0, 1600)  # 1000 tokens in debt
    assert pacer.wait_s(ch, 0) == pytest.approx(10.0)
    clock.advance(10.0)
    assert pacer.wait_s(ch, 0) == 0.0


def test_health_state_is_dropped_when_a_channel_changes_its_keys_or_goes() -> None:
    b = board(FakeClock())
    b.sync({1: ("k0", "k1"), 2: ("x",)})
    b.failure(1, 1, Effect.DISABLE, "auth: 401", None, SHAPE)
    b.failure(2, 0, Effect.DISABLE, "auth: 401", None, SHAPE)
    b.sync({1: ("k0", "k1"), 2: ("x",)})  # nothing changed
    assert not b.usable(1, 1) and not b.usable(2, 0)
    b.sync({1: ("k0", "k2")})  # channel 1 got a new second key; channel 2 was deleted
    assert b.usable(1, 1) and b.usable(2, 0) and b.get(1, 1) is None and b.out == set()
