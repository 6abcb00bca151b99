"""Per-key pacing: spend each key's request and token budget evenly instead of running into 429s.

Limits come from the channel's ``rpm``/``tpm`` and from what the provider reports in its
``x-ratelimit-*`` headers (the smaller wins). Requests are paced with GCRA: one request per
``60/rpm`` seconds, with a burst of a tenth of the minute's budget. Tokens are charged after
the fact (the real count is only known then) to a bucket refilled at ``tpm/60`` per second.
When the provider reports its remaining budget at zero, the key rests until enough of it is
back. Keys with no limit cost one dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vectorengine.routing.ratelimit_headers import Budget, HeaderGetter, budgets
from vectorengine.store.records import Channel

KeyId = tuple[int, int]
BURST_SHARE = 0.1  # of a minute's budget


@dataclass(slots=True)
class KeyPace:
    rpm: float | None = None  # effective request limit per minute
    tpm: float | None = None
    learned_rpm: int | None = None
    learned_tpm: int | None = None
    tat: float = 0.0  # GCRA theoretical arrival time (monotonic)
    tokens: float = 0.0  # token bucket level (negative: in debt)
    tokens_at: float = 0.0
    rest_until: float = 0.0  # the provider said the budget is spent


class Pacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[KeyId, KeyPace] = {}

    def wait_s(self, channel: Channel, key_index: int) -> float:
        """0.0 if the key may send now, else how long until it may."""
        p = self._keys.get((channel.id, key_index))
        if p is None:
            if channel.rpm is None and channel.tpm is None:
                return 0.0
            p = self._pace(channel, key_index)
        now = self._clock()
        wait = p.rest_until - now
        if p.rpm is not None:
            interval = 60.0 / p.rpm
            tolerance = (max(1.0, p.rpm * BURST_SHARE) - 1.0) * interval  # a burst of that many
            wait = max(wait, p.tat - tolerance - now)
        if p.tpm is not None:
            level = self._refill(p, now)
            if level < 0:
                wait = max(wait, -level / (p.tpm / 60.0))
        return max(0.0, wait)

    def take(self, channel: Channel, key_index: int) -> None:
        """One request goes out on the key now."""
        p = self._keys.get((channel.id, key_index))
        if p is None or p.rpm is None:
            return
        now = self._clock()
        p.tat = max(p.tat, now) + 60.0 / p.rpm

    def observe(self, channel: Channel, key_index: int, header: HeaderGetter) -> None:
        """After a response (or an error status): learn from its rate-limit headers."""
        key = (channel.id, key_index)
        p = self._keys.get(key)
        remaining = header("x-ratelimit-remaining-requests")
        if p is None:
            if remaining is None and channel.rpm is None and channel.tpm is None:
                return
            p = self._pace(channel, key_index)
        if remaining is not None and (p.learned_rpm is None or _low(remaining, p.learned_rpm)):
            self._learn(channel, p, *budgets(header))
        elif remaining is not None:
            tok = header("x-ratelimit-remaining-tokens")
            if tok is not None and p.learned_tpm is not None and _low(tok, p.learned_tpm):
                self._learn(channel, p, *budgets(header))

    def charge(self, channel: Channel, key_index: int, tokens: int) -> None:
        """The tokens a finished request used on the key."""
        p = self._keys.get((channel.id, key_index))
        if p is not None and p.tpm is not None:
            self._refill(p, self._clock())
            p.tokens -= tokens

    def view(self, channel: Channel, key_index: int) -> dict[str, float | int | None]:
        p = self._keys.get((channel.id, key_index))
        if p is None:
            return {"rpm": channel.rpm, "tpm": channel.tpm, "learned_rpm": None, "learned_tpm": None}
        return {
            "rpm": p.rpm,
            "tpm": p.tpm,
            "learned_rpm": p.learned_rpm,
            "learned_tpm": p.learned_tpm,
        }

    # -- internals ----------------------------------------------------------------------------

    def _pace(self, channel: Channel, key_index: int) -> KeyPace:
        p = self._keys[(channel.id, key_index)] = KeyPace(rpm=channel.rpm, tpm=channel.tpm)
        if p.tpm is not None:
            p.tokens, p.tokens_at = p.tpm * BURST_SHARE, self._clock()
        return p

    def _learn(self, channel: Channel, p: KeyPace, req: Budget | None, tok: Budget | None) -> None:
        now = self._clock()
        if req is not None:
            p.learned_rpm = req.limit
            p.rpm = float(min(req.limit, channel.rpm or req.limit))
            if req.remaining == 0:
                # Rest until one request's worth is back (the reset is until the budget is whole).
                per_request = (req.reset_s / req.limit) if req.reset_s else 60.0 / req.limit
                p.rest_until = max(p.rest_until, now + per_request)
                p.tat = max(p.tat, now + per_request + (max(1.0, p.rpm * BURST_SHARE) - 1.0) * 60.0 / p.rpm)
        if tok is not None:
            p.learned_tpm = tok.limit
            p.tpm = float(min(tok.limit, channel.tpm or tok.limit))
            if p.tokens_at == 0.0:
                p.tokens, p.tokens_at = p.tpm * BURST_SHARE, now
            if tok.remaining < tok.limit * 0.01 and tok.reset_s:
                p.rest_until = max(p.rest_until, now + tok.reset_s * (1.0 - tok.remaining / tok.limit) * 0.1)

    def _refill(self, p: KeyPace, now: float) -> float:
        assert p.tpm is not None
        cap = p.tpm * BURST_SHARE
        p.tokens = min(cap, p.tokens + (now - p.tokens_at) * p.tpm / 60.0)
        p.tokens_at = now
        return p.tokens


def _low(remaining: str, limit: int) -> bool:
    """Whether a reported remaining budget is low enough to look at the whole header set."""
    try:
        return float(remaining) <= max(2.0, limit * 0.05)
    except ValueError:
        return False
