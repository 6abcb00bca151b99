"""The provider balance poller against an injected transport: readings, errors, alerts per crossing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from tests.unit.fakes import make_channel
from vectorengine.errors import GatewayError, Kind
from vectorengine.routing.balance import ALERT_KIND, BalancePoller, Reading, decimal_text, polled
from vectorengine.store.records import Channel
from vectorengine.upstreams.transport import Headers

LOW_DS = "sk-deepseek-low-0001"
OK_DS = "sk-deepseek-ok-0002"


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body
        self.broken: tuple[type[BaseException], ...] = ()

    async def next_chunk(self) -> bytes | None:
        return None

    def header(self, name: str) -> str | None:
        return None

    async def read(self) -> bytes:
        return self._body


def deepseek_body(amount: str) -> bytes:
    return (
        b'{"is_available": true, "balance_infos": [{"currency": "CNY", "total_balance": "'
        + amount.encode()
        + b'", "granted_balance": "0.00", "topped_up_balance": "0.00"}]}'
    )


class FakeUpstream:
    """Answers each balance request from ``answers[key]``: a body, (status, body), an exception
    to raise, or ``"hang"``."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.calls: list[tuple[str, str, str]] = []  # method, url, key

    async def send(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        *,
        connect_s: float | None = None,
        total_s: float | None = None,
    ) -> Answer:
        key = dict(headers)["authorization"].removeprefix("Bearer ")
        self.calls.append((method, url, key))
        answer = self.answers.get(key, deepseek_body("100.00"))
        if answer == "hang":
            await asyncio.sleep(60)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, tuple):
            return Answer(*answer)
        return Answer(200, answer)

    def open(self, *args: Any, **kwargs: Any) -> AbstractAsyncContextManager[Answer]:
        raise AssertionError("the poller reads whole answers")

    async def close(self) -> None:
        return None


def channel(id_: int = 1, type_: str = "deepseek", **fields: Any) -> Channel:
    defaults: dict[str, Any] = {
        "id": id_,
        "name": f"ch{id_}",
        "type": type_,
        "base_url": "http://127.0.0.1:9/v1",
        "keys": (LOW_DS, OK_DS),
        "models": ("deepseek-chat",),
        "balance_alert_below_micro": 5_000_000,
    }
    return make_channel(**(defaults | fields))


Alerts = list[tuple[str, str, str, dict[str, Any]]]


def poller(
    channels: dict[int, Channel], upstream: FakeUpstream, timeout_s: float = 5.0
) -> tuple[BalancePoller, Alerts, Callable[[dict[int, Channel]], None]]:
    alerts: Alerts = []
    current = {"channels": channels}

    async def sink(kind: str, subject: str, message: str, data: dict[str, Any]) -> None:
        alerts.append((kind, subject, message, data))

    def swap(new: dict[int, Channel]) -> None:
        current["channels"] = new

    p = BalancePoller(
        lambda: current["channels"], upstream, 600, sink, timeout_s=timeout_s, clock=lambda: 1700.5
    )
    return p, alerts, swap


async def test_a_low_key_alerts_once_per_crossing() -> None:
    up = FakeUpstream()
    up.answers[LOW_DS] = deepseek_body("3.50")
    ch = channel()
    p, alerts, _ = poller({1: ch}, up)
    for _ in range(3):
        await p.poll()
    assert [a[:2] for a in alerts] == [(ALERT_KIND, "channel:1#0")]  # three low readings, one alert
    _, _, message, data = alerts[0]
    # the key other workers' identical alert is deduplicated by: channel, key index, poll round
    assert re.fullmatch(r"provider-balance:1:0:\d+", data.pop("dedupe"))
    assert data == {
        "channel_id": 1,
        "key_index": 0,
        "key": "sk-deepseek-…0001",
        "balance": "3.50",
        "balance_micro": 3_500_000,
        "currency": "CNY",
        "threshold": "5",
        "threshold_micro": 5_000_000,
    }
    assert message == (
        "The DeepSeek balance of key #0 (sk-deepseek-…0001) of channel 'ch1' is 3.50 CNY, below 5 CNY."
    )
    assert up.calls[0] == ("GET", "http://127.0.0.1:9/user/balance", LOW_DS)
    assert len(up.calls) == 6
    view = p.view(ch)
    assert [(kb.key_index, kb.low) for kb in view] == [(0, True), (1, False)]
    assert view[0].reading == Reading(LOW_DS, 1_700_500, Decimal("3.50"), "CNY")
    assert view[1].reading is not None and view[1].reading.micro == 100_000_000

    up.answers[LOW_DS] = deepseek_body("5.00")  # at the threshold is not below it
    await p.poll()
    assert len(alerts) == 1 and not p.view(ch)[0].low
    up.answers[LOW_DS] = deepseek_body("4.99")
    await p.poll()
    await p.poll()
    assert [a[3]["balance"] for a in alerts] == ["3.50", "4.99"]  # fell again: alerted again, once


async def test_failed_readings_are_kept_as_errors_and_change_nothing() -> None:
    up = FakeUpstream()
    ch = channel(keys=("sk-401", "sk-json", "sk-hang", "sk-gone", "sk-boom", "sk-low"))
    up.answers |= {
        "sk-401": (401, b'{"error":{"message":"Authentication Fails (no such user)"}}'),
        "sk-json": b'{"is_available": true, "balance_infos": [{"currency": "CNY", "total_ba',
        "sk-hang": "hang",
        "sk-gone": GatewayError(Kind.UPSTREAM_UNREACHABLE, "could not connect to the upstream: ConnectError"),
        "sk-boom": RuntimeError("surprise"),
        "sk-low": deepseek_body("1.00"),
    }
    p, alerts, _ = poller({1: ch}, up, timeout_s=0.05)
    await p.poll()
    readings = [kb.reading for kb in p.view(ch)]
    assert all(r is not None for r in readings)
    errors = [r.error for r in readings if r is not None]
    assert errors[0] == 'HTTP 401: {"error":{"message":"Authentication Fails (no such user)"}}'
    assert errors[1] is not None and errors[1].startswith("the answer is not JSON")
    assert errors[2] == "no answer within 0.05 s"
    assert errors[3] == "could not connect to the upstream: ConnectError"
    assert errors[4] == "RuntimeError: surprise"
    assert errors[5] is None
    assert [r.amount for r in readings if r is not None] == [None] * 5 + [Decimal("1.00")]
    assert [a[1] for a in alerts] == ["channel:1#5"]  # only the key that was read and is low
    # a failed reading neither clears a low key nor raises again
    up.answers["sk-low"] = (500, b"oops")
    await p.poll()
    assert len(alerts) == 1 and p.view(ch)[5].low
    up.answers["sk-low"] = deepseek_body("0.50")
    await p.poll()
    assert len(alerts) == 1


async def test_only_enabled_channels_with_a_threshold_and_a_balance_api_are_polled() -> None:
    up = FakeUpstream()
    channels = {
        1: channel(1, enabled=False),
        2: channel(2, balance_alert_below_micro=None),
        3: channel(3, type_="openai"),
        4: channel(4, keys=("sk-only",)),
    }
    assert [polled(c) for c in channels.values()] == [False, False, False, True]
    p, _, _ = poller(channels, up)
    await p.poll()
    assert [c[2] for c in up.calls] == ["sk-only"]
    assert [kb.reading for kb in p.view(channels[2])] == [None, None]


async def test_a_replaced_key_or_a_dropped_threshold_forgets_the_old_reading() -> None:
    up = FakeUpstream()
    up.answers[LOW_DS] = deepseek_body("1.00")
    ch = channel()
    p, alerts, swap = poller({1: ch}, up)
    await p.poll()
    assert p.view(ch)[0].low
    replaced = msgspec.structs.replace(ch, keys=("sk-new-key-0003", OK_DS))
    swap({1: replaced})
    up.answers["sk-new-key-0003"] = "hang"  # not answered yet: no reading
    p._timeout_s = 0.01
    await p.poll()
    view = p.view(replaced)
    assert view[0].reading is not None and view[0].reading.key == "sk-new-key-0003"
    assert view[0].reading.error is not None and not view[0].low
    swap({1: msgspec.structs.replace(ch, balance_alert_below_micro=None)})
    await p.poll()
    assert p.view(ch)[0].reading is None and not p.view(ch)[0].low
    swap({1: ch})  # the threshold back, the key still low: a new crossing as far as we know
    await p.poll()
    assert len(alerts) == 2


async def test_an_alert_that_could_not_be_stored_is_raised_again_next_round() -> None:
    up = FakeUpstream()
    up.answers[LOW_DS] = deepseek_body("1.00")
    raised: list[str] = []
    fail = [True]

    async def sink(kind: str, subject: str, message: str, data: dict[str, Any]) -> None:
        if fail[0]:
            fail[0] = False
            raise OSError("database is locked")
        raised.append(subject)

    p = BalancePoller(lambda: {1: channel()}, up, 600, sink)
    await p.poll()
    assert raised == []
    await p.poll()
    await p.poll()
    assert raised == ["channel:1#0"]


async def test_the_threshold_compares_the_exact_amount() -> None:
    up = FakeUpstream()
    up.answers[LOW_DS] = deepseek_body("4.9999999")  # finer than a micro-unit, still below 5
    up.answers[OK_DS] = deepseek_body("5.0000001")
    p, alerts, _ = poller({1: channel()}, up)
    await p.poll()
    assert [(a[1], a[3]["balance"], a[3]["balance_micro"]) for a in alerts] == [
        ("channel:1#0", "4.9999999", 4_999_999)
    ]


async def test_run_keeps_polling_after_a_failed_round() -> None:
    up = FakeUpstream()
    rounds = [0]

    def channels() -> dict[int, Channel]:
        rounds[0] += 1
        if rounds[0] == 1:
            raise RuntimeError("snapshot not ready")
        return {1: channel()}

    async def sink(*args: Any) -> None:
        return None

    p = BalancePoller(channels, up, 0.01, sink)
    task = asyncio.get_running_loop().create_task(p.run())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds[0] > 2 and len(up.calls) >= 2


@pytest.mark.parametrize(
    ("micro", "text"), [(5_000_000, "5"), (1_250_000, "1.25"), (1, "0.000001"), (0, "0")]
)
def test_decimal_text(micro: int, text: str) -> None:
    assert decimal_text(micro) == text
