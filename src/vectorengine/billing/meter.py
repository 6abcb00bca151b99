"""Admission state: balances, spend counters, request and token rates, concurrency.

:meth:`Meter.admit` checks every limit of a request and, only if all pass, applies them at
once: the balance is lowered by the hold, spend counters raised by it, the request counted in
its rate windows and its concurrency slots. :meth:`Meter.settle` puts right what the request
really cost. Two implementations keep the same rules: :class:`MemoryMeter` for one worker
process (each call runs without a suspension point, so it is atomic on the event loop) and
``RedisMeter`` (``redis_meter.py``) where several workers or instances share the state.
"""

from __future__ import annotations

import collections
import time
from typing import Literal, Protocol

import msgspec

WINDOW_S = 60  # rpm and tpm count the last 60 seconds, in one-second buckets

CheckKind = Literal["balance", "cap", "rpm", "tpm", "concurrency"]


class Check(msgspec.Struct, frozen=True, gc=False):
    """One limit a request must pass; ``key`` names its state, ``limit`` its ceiling."""

    kind: CheckKind
    key: str
    limit: int
    label: str  # for the error message: "the daily spend cap of token 'ci'"
    expires_at: int = 0  # cap counters: unix seconds when the period ends (0: never)


class Plan(msgspec.Struct, frozen=True, gc=False):
    """Everything one request is checked against; ``amount`` is the hold in micro-USD."""

    amount: int
    checks: tuple[Check, ...]
    user_id: int | None = None  # whose balance pays (a ``balance`` check names its key)


class Denied(Exception):
    def __init__(self, check: Check, retry_after_s: int | None = None) -> None:
        super().__init__(check.label)
        self.check = check
        self.retry_after_s = retry_after_s


class Meter(Protocol):
    async def admit(self, plan: Plan, now_s: int) -> int:
        """Apply ``plan`` if every check passes, else raise :class:`Denied` and change nothing.
        Returns the hold's ticket, which its settlement names."""
        ...

    def settle(self, plan: Plan, ticket: int, charged: int, tokens: int, now_s: int) -> None:
        """The request is over: it cost ``charged`` (≤ ``plan.amount``) and used ``tokens``."""
        ...

    async def credit(self, user_id: int, amount: int) -> None:
        """Add ``amount`` (negative to take away) to a user's balance: top-ups, redemptions."""
        ...

    async def balance(self, user_id: int) -> int | None: ...

    async def bump(self, key: str, ttl_s: int) -> int:
        """Add one to a counter every worker shares, kept ``ttl_s`` seconds; returns its value
        (the alert watch counts authentication failures per address with it)."""
        ...

    async def spent(self, key: str) -> int:
        """A spend counter (held amounts included)."""
        ...

    async def close(self) -> None: ...


def balance_key(user_id: int) -> str:
    return f"bal:{user_id}"


class Window:
    """Counts over the last :data:`WINDOW_S` seconds in one-second buckets."""

    __slots__ = ("_buckets", "total")

    def __init__(self) -> None:
        self._buckets: collections.deque[list[int]] = collections.deque()  # [second, count]
        self.total = 0

    def _evict(self, now_s: int) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] <= now_s - WINDOW_S:
            self.total -= buckets.popleft()[1]

    def count(self, now_s: int) -> int:
        self._evict(now_s)
        return self.total

    def add(self, now_s: int, n: int) -> None:
        buckets = self._buckets
        if buckets and buckets[-1][0] == now_s:
            buckets[-1][1] += n
        else:
            buckets.append([now_s, n])
        self.total += n

    def retry_after(self, now_s: int, room: int) -> int:
        """Seconds until the window's total is at most ``room``."""
        total = self.total
        for second, n in self._buckets:
            if total <= room:
                break
            total -= n
            if total <= room:
                return max(1, second + WINDOW_S - now_s)
        return 1


class MemoryMeter:
    """The state of one worker process (the default: one worker, no Redis)."""

    def __init__(self) -> None:
        self.balances: dict[int, int] = {}
        self.spend: dict[str, int] = {}
        self.windows: dict[str, Window] = {}
        self.inflight: dict[str, int] = {}
        self._counters: dict[str, list[float]] = {}  # key → [expires at (monotonic), count]

    async def bump(self, key: str, ttl_s: int) -> int:
        now = time.monotonic()
        slot = self._counters.get(key)
        if slot is None or slot[0] <= now:
            if len(self._counters) > 10_000:
                self._counters = {k: v for k, v in self._counters.items() if v[0] > now}
            slot = self._counters[key] = [now + ttl_s, 0]
        slot[1] += 1
        return int(slot[1])

    def seed(self, balances: dict[int, int], spend: dict[str, int]) -> None:
        self.balances.update(balances)
        self.spend.update(spend)

    async def admit(self, plan: Plan, now_s: int) -> int:
        # One pass: each check is applied as soon as it passes, and a refusal undoes what this
        # call applied before it. Nothing here suspends, so nobody sees the partial state.
        amount, uid = plan.amount, plan.user_id or 0
        balances, spend, inflight = self.balances, self.spend, self.inflight
        applied = 0
        try:
            for check in plan.checks:
                kind = check.kind
                if kind == "cap":
                    spent = spend.get(check.key, 0) + amount
                    if spent > check.limit:
                        raise Denied(check)
                    spend[check.key] = spent
                elif kind == "balance":
                    left = balances.get(uid, 0)
                    if left < amount:
                        raise Denied(check)
                    balances[uid] = left - amount
                elif kind == "concurrency":
                    n = inflight.get(check.key, 0)
                    if n >= check.limit:
                        raise Denied(check, 1)
                    inflight[check.key] = n + 1
                else:  # rpm: room for this one request; tpm: not yet over the token budget
                    window = self.windows.get(check.key)
                    room = check.limit - 1
                    if window is not None and window.count(now_s) > room:
                        raise Denied(check, window.retry_after(now_s, room))
                    if kind == "rpm":
                        self._window(check.key).add(now_s, 1)
                applied += 1
        except Denied:
            self._undo(plan, applied, now_s)
            raise
        return 0  # holds die with the process, so they need no name

    def _undo(self, plan: Plan, applied: int, now_s: int) -> None:
        """Take back the first ``applied`` checks of a plan that was then refused."""
        amount, uid = plan.amount, plan.user_id or 0
        for check in plan.checks[:applied]:
            kind = check.kind
            if kind == "cap":
                self.spend[check.key] -= amount
            elif kind == "balance":
                self.balances[uid] += amount
            elif kind == "concurrency":
                self.inflight[check.key] -= 1
            elif kind == "rpm":
                self.windows[check.key].add(now_s, -1)

    def _window(self, key: str) -> Window:
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = Window()
        return window

    def settle(self, plan: Plan, ticket: int, charged: int, tokens: int, now_s: int) -> None:
        back = plan.amount - charged
        spend, inflight = self.spend, self.inflight
        for check in plan.checks:
            kind = check.kind
            if kind == "cap":
                spend[check.key] = spend.get(check.key, 0) - back
            elif kind == "balance":
                uid = plan.user_id or 0
                self.balances[uid] = self.balances.get(uid, 0) + back
            elif kind == "concurrency":
                inflight[check.key] = max(0, inflight.get(check.key, 0) - 1)
            elif kind == "tpm" and tokens:
                self._window(check.key).add(now_s, tokens)

    async def credit(self, user_id: int, amount: int) -> None:
        self.balances[user_id] = self.balances.get(user_id, 0) + amount

    async def balance(self, user_id: int) -> int | None:
        return self.balances.get(user_id)

    async def spent(self, key: str) -> int:
        return self.spend.get(key, 0)

    async def close(self) -> None:
        return None
