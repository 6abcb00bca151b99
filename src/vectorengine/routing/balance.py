"""Provider balances of upstream keys: polled off the hot path, kept per key, alerted when low.

Every ``alerts.provider_balance_poll_s`` the poller asks the provider, for every key of every
enabled channel that has a ``balance_alert_below_micro`` and whose upstream type reports a
balance, how much is left on the key's account (``GET`` with the key's own credentials; what to
ask and how to read the answer is data in the registry, see :mod:`vectorengine.upstreams.balance`).
The last reading of each key is kept in memory, per worker (like health): the amount and its
currency, or the error that kept it from being read (a status other than 200, an answer that
holds no balance, no answer in time). A failed reading is logged and kept; it never stops the loop.

A reading below the channel's threshold raises ``upstream_balance_low`` once per crossing: the
key is reported again only after a reading at or above the threshold and a new fall below it. A
failed reading changes nothing. The crossing state lives in memory too: after a restart a key
that is still low is reported once more. Every worker polls; the alert's deduplication key
(channel, key, poll round) lets only the first worker to store it raise it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from vectorengine.billing.money import MICRO, floor_micro
from vectorengine.errors import GatewayError
from vectorengine.keys import key_hint
from vectorengine.store.records import Channel
from vectorengine.upstreams.balance import BalanceError, balance_api, balance_request, read_balance
from vectorengine.upstreams.registry import UPSTREAM_TYPES
from vectorengine.upstreams.transport import Transport

log = logging.getLogger(__name__)

ALERT_KIND = "upstream_balance_low"
TIMEOUT_S = 30.0  # one balance request, connection included
_CONCURRENCY = 8  # balance requests in flight at once
_EXCERPT = 300  # characters of an error answer kept in the reading

AlertSink = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]  # kind, subject, message, data


@dataclass(frozen=True, slots=True)
class Reading:
    """The last answer about one key's balance: an amount, or why there is none."""

    key: str  # the key that was read (a key replaced at its index has no reading yet)
    checked_at: int  # unix ms
    amount: Decimal | None = None  # in ``currency``, exactly as the provider reported it
    currency: str | None = None
    error: str | None = None

    @property
    def micro(self) -> int | None:
        """The amount in micro-units of its currency, rounded down."""
        return floor_micro(self.amount) if self.amount is not None else None


@dataclass(frozen=True, slots=True)
class KeyBalance:
    key_index: int
    reading: Reading | None  # None: not read yet
    low: bool  # below the channel's threshold, alerted, not back above since


def polled(channel: Channel) -> bool:
    """Whether the poller reads the balances of ``channel``'s keys."""
    return (
        channel.enabled and channel.balance_alert_below_micro is not None and balance_api(channel) is not None
    )


def decimal_text(micro: int) -> str:
    """``5_000_000`` → ``"5"``, ``1_250_000`` → ``"1.25"``."""
    return format((Decimal(micro) / MICRO).normalize(), "f")


class BalancePoller:
    def __init__(
        self,
        channels: Callable[[], dict[int, Channel]],
        transport: Transport,
        interval_s: float,
        alert: AlertSink,
        *,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._channels = channels
        self._transport = transport
        self.interval_s = interval_s
        self._round_ms = max(1, int(interval_s * 1000))
        self._alert = alert
        self._timeout_s = timeout_s
        self._clock = clock
        self._readings: dict[tuple[int, int], Reading] = {}  # (channel id, key index) → last reading
        self._low: set[tuple[int, str]] = set()  # (channel id, key) alerted and not back above since

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # never let one bad round stop the poller
                log.exception("polling provider balances failed")
            await asyncio.sleep(self.interval_s)

    async def poll(self) -> None:
        """Read the balance of every polled key once, and raise the alerts that are due."""
        channels = self._channels()
        self._forget(channels)
        slots = asyncio.Semaphore(_CONCURRENCY)

        async def one(channel: Channel, index: int) -> None:
            async with slots:
                reading = await self._read(channel, index)
            self._readings[(channel.id, index)] = reading
            await self._judge(channel, index, reading)

        await asyncio.gather(
            *(one(ch, i) for ch in channels.values() if polled(ch) for i in range(len(ch.keys)))
        )

    def view(self, channel: Channel) -> list[KeyBalance]:
        """The last reading of each of ``channel``'s keys (this worker's)."""
        out = []
        for i, key in enumerate(channel.keys):
            reading = self._readings.get((channel.id, i))
            current = reading if reading is not None and reading.key == key else None
            out.append(KeyBalance(i, current, (channel.id, key) in self._low))
        return out

    # -- one key ---------------------------------------------------------------------------------

    async def _read(self, channel: Channel, index: int) -> Reading:
        req = balance_request(channel, index)
        api = balance_api(channel)
        assert req is not None and api is not None  # polled(channel)
        key = channel.keys[index]
        try:
            async with asyncio.timeout(self._timeout_s):
                resp = await self._transport.send(
                    "GET",
                    req.url,
                    req.headers,
                    req.body,
                    connect_s=channel.timeouts.connect_s,
                    total_s=self._timeout_s,
                )
                body = bytes(await resp.read())
            if resp.status != 200:
                raise BalanceError(f"HTTP {resp.status}: {body[:_EXCERPT].decode(errors='replace')}")
            balance = read_balance(api, body, urlsplit(req.url).hostname or "")
        except TimeoutError:
            error = f"no answer within {self._timeout_s:g} s"
        except GatewayError as err:
            error = err.message
        except BalanceError as err:
            error = str(err)
        except Exception as exc:  # whatever it is, it is this key's reading, not the loop's end
            error = f"{type(exc).__name__}: {exc}"
        else:
            return Reading(key, self._now_ms(), balance.amount, balance.currency)
        log.warning("provider balance of key #%d of channel '%s': %s", index, channel.name, error)
        return Reading(key, self._now_ms(), error=error)

    async def _judge(self, channel: Channel, index: int, reading: Reading) -> None:
        threshold = channel.balance_alert_below_micro
        micro = reading.micro
        if micro is None or threshold is None:
            return  # no reading: whether the key is low is unknown, so nothing changes
        mark = (channel.id, reading.key)
        if micro >= threshold:
            self._low.discard(mark)
            return
        if mark in self._low:
            return
        self._low.add(mark)
        try:
            kind, subject, message, data = _low_alert(channel, index, reading, micro, threshold)
            # Every worker polls and sees the crossing: the first to store this key raises it.
            data["dedupe"] = f"provider-balance:{channel.id}:{index}:{reading.checked_at // self._round_ms}"
            await self._alert(kind, subject, message, data)
        except Exception:  # not stored (the database may be down): the next round tries again
            self._low.discard(mark)
            log.exception("raising %s for channel '%s' failed", ALERT_KIND, channel.name)

    def _forget(self, channels: dict[int, Channel]) -> None:
        """Drop what belongs to channels no longer polled and to keys no longer there."""
        keys = {(ch.id, key) for ch in channels.values() if polled(ch) for key in ch.keys}
        for (channel_id, index), reading in list(self._readings.items()):
            if (channel_id, reading.key) not in keys:
                del self._readings[(channel_id, index)]
        self._low &= keys

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _low_alert(
    channel: Channel, index: int, reading: Reading, micro: int, threshold: int
) -> tuple[str, str, str, dict[str, Any]]:
    assert reading.amount is not None and reading.currency is not None
    host = UPSTREAM_TYPES[channel.type].description or channel.type
    amount, below, currency = format(reading.amount, "f"), decimal_text(threshold), reading.currency
    hint = key_hint(reading.key)
    message = (
        f"The {host} balance of key #{index} ({hint}) of channel '{channel.name}' is {amount} {currency}, "
        f"below {below} {currency}."
    )
    data = {
        "channel_id": channel.id,
        "key_index": index,
        "key": hint,
        "balance": amount,
        "balance_micro": micro,
        "currency": currency,
        "threshold": below,
        "threshold_micro": threshold,
    }
    return ALERT_KIND, f"channel:{channel.id}#{index}", message, data
