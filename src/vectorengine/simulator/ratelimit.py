"""Enforced per-key rate limits (fault mode ``ratelimit``), shaped like OpenAI's.

Each key gets two buckets: requests and tokens. A bucket holds at most its per-minute limit
and refills continuously at ``limit / 60`` per second. A request takes one request at
admission, if one is there, and is refused when its prompt's tokens exceed what the token
bucket holds; once answered, its prompt and completion tokens are taken from the token bucket,
which may then go below zero (the debt delays the next requests). The ``x-ratelimit-*``
headers show the limits, the whole units left, and the time until a bucket is full again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from vectorengine.simulator.wire import Headers, duration

Clock = Callable[[], float]


class Bucket:
    """A continuously refilled bucket of ``capacity`` units that refills in one minute."""

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0  # units per second
        self._level = float(capacity)
        self._at = now

    def level(self, now: float) -> float:
        if now > self._at:
            self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
            self._at = now
        return self._level

    def take(self, amount: float, now: float) -> None:
        self._level = self.level(now) - amount

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds ``amount``; 0 when it does now."""
        return max(0.0, (amount - self.level(now)) / self.rate)

    def until_full(self, now: float) -> float:
        return max(0.0, (self.capacity - self.level(now)) / self.rate)

    def remaining(self, now: float) -> int:
        return max(0, math.floor(self.level(now)))


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request was refused: what ran out, and how long until it would be admitted."""

    kind: Literal["requests", "tokens"]
    limit: int
    used: int
    requested: int
    wait_s: float  # ``math.inf`` when the request can never fit (bigger than the limit)


class KeyRateLimit:
    """The request and token buckets of one key."""

    def __init__(self, rpm: int, tpm: int, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        self.requests = Bucket(rpm, now)
        self.tokens = Bucket(tpm, now)

    def admit(self, tokens: int) -> Rejection | None:
        """Take one request for a call whose prompt has ``tokens`` tokens, or say why not."""
        now = self._clock()
        if self.requests.level(now) < 1:
            return self._rejection("requests", self.requests, 1, now)
        if tokens > self.tokens.capacity:
            return Rejection("tokens", self.tokens.capacity, 0, tokens, math.inf)
        if tokens > self.tokens.level(now):
            return self._rejection("tokens", self.tokens, tokens, now)
        self.requests.take(1, now)
        return None

    def charge(self, tokens: int) -> None:
        """Take the tokens of an answered request (prompt and completion)."""
        self.tokens.take(tokens, self._clock())

    def headers(self) -> Headers:
        now = self._clock()
        return [
            ("x-ratelimit-limit-requests", str(self.requests.capacity)),
            ("x-ratelimit-limit-tokens", str(self.tokens.capacity)),
            ("x-ratelimit-remaining-requests", str(self.requests.remaining(now))),
            ("x-ratelimit-remaining-tokens", str(self.tokens.remaining(now))),
            ("x-ratelimit-reset-requests", duration(self.requests.until_full(now))),
            ("x-ratelimit-reset-tokens", duration(self.tokens.until_full(now))),
        ]

    @staticmethod
    def _rejection(
        kind: Literal["requests", "tokens"], bucket: Bucket, requested: int, now: float
    ) -> Rejection:
        used = bucket.capacity - math.floor(bucket.level(now))  # more than the limit while in debt
        return Rejection(kind, bucket.capacity, used, requested, bucket.wait_for(requested, now))
