"""Choosing a channel and key: highest priority tier first, then weight (or latency), then keys in turn.

Route tables are built once per snapshot and per token group. A pick skips what the request
has already excluded (keys and channels that failed it), keys out of service
(:mod:`~vectorengine.routing.health`) and keys at their rate limit
(:mod:`~vectorengine.routing.pacing`). When nothing is left but keys that will be free
soon, the pick says how long to wait instead.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from vectorengine.routing.health import HealthBoard
from vectorengine.routing.pacing import Pacer
from vectorengine.store.records import Channel

KeyId = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Candidate:
    channel: Channel
    upstream_model: str


@dataclass(frozen=True, slots=True)
class Tier:
    priority: int
    candidates: tuple[Candidate, ...]
    cumulative: tuple[int, ...]  # running sum of weights

    @property
    def total(self) -> int:
        return self.cumulative[-1]


@dataclass(frozen=True, slots=True)
class RouteTable:
    model: str
    tiers: tuple[Tier, ...]  # highest priority first; only tiers with positive weight


def build_routes(channels: Iterable[Channel], groups: frozenset[str] | None = None) -> dict[str, RouteTable]:
    """Model name → route table, from the enabled channels that list the model.

    With ``groups``, only channels in at least one of those channel groups count.
    """
    by_model: dict[str, list[Candidate]] = {}
    for ch in channels:
        if not ch.enabled or ch.weight <= 0 or not ch.keys:
            continue
        if groups is not None and groups.isdisjoint(ch.groups):
            continue
        for model in ch.models:
            by_model.setdefault(model, []).append(Candidate(ch, ch.model_map.get(model, model)))
    tables: dict[str, RouteTable] = {}
    for model, cands in by_model.items():
        cands.sort(key=lambda c: (-c.channel.priority, c.channel.id))
        tiers = []
        for prio, group in itertools.groupby(cands, key=lambda c: c.channel.priority):
            members = tuple(group)
            tiers.append(Tier(prio, members, tuple(itertools.accumulate(c.channel.weight for c in members))))
        tables[model] = RouteTable(model, tuple(tiers))
    return tables


class Avoid(msgspec.Struct):
    """What one request has excluded so far, and whether it has waited for capacity."""

    keys: set[KeyId] = msgspec.field(default_factory=set)
    channels: set[int] = msgspec.field(default_factory=set)
    # After waiting for capacity, a cooling key whose rest is over may be used directly
    # (the request acts as its probe).
    rested: bool = False


class Pick(msgspec.Struct, frozen=True, gc=False):
    candidate: Candidate
    key_index: int


class Selector:
    """Picks a candidate and key. Holds the key round-robin positions and the affinity map."""

    def __init__(
        self,
        health: HealthBoard,
        pacer: Pacer,
        *,
        strategy: Literal["weighted", "latency"] = "weighted",
        affinity_ttl_s: float | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health = health
        self.pacer = pacer
        self.strategy = strategy
        self.affinity_ttl_s = affinity_ttl_s
        self.rng = rng or random.Random()
        self._clock = clock
        self._next_key: dict[int, int] = {}
        self._affinity: dict[tuple[str, str], tuple[int, float]] = {}

    def pick(
        self,
        table: RouteTable,
        avoid: Avoid | None = None,
        *,
        prefer_channel: int | None = None,
        affinity: str | None = None,
    ) -> Pick | float | None:
        """A pick; or seconds to wait until a key paced or cooling is free; or None: nothing left."""
        if affinity is not None and self.affinity_ttl_s is not None and prefer_channel is None:
            prefer_channel = self._affine_channel(table.model, affinity)
        if prefer_channel is not None:
            for tier in table.tiers:
                for cand in tier.candidates:
                    if cand.channel.id == prefer_channel and (
                        avoid is None or prefer_channel not in avoid.channels
                    ):
                        key = self._key(cand.channel, avoid)
                        if key is not None:
                            return Pick(cand, key)
        for tier in table.tiers:
            picked = self._pick_in_tier(tier, avoid)
            if picked is not None:
                return picked
        return self._soonest(table, avoid)

    def remember(self, model: str, affinity: str | None, channel_id: int) -> None:
        """A request with this affinity key succeeded on ``channel_id``: send its next ones there too."""
        if affinity is None or self.affinity_ttl_s is None:
            return
        if len(self._affinity) > 100_000:
            now = self._clock()
            self._affinity = {k: v for k, v in self._affinity.items() if v[1] > now}
        self._affinity[(model, affinity)] = (channel_id, self._clock() + self.affinity_ttl_s)

    # -- internals ----------------------------------------------------------------------------

    def _pick_in_tier(self, tier: Tier, avoid: Avoid | None) -> Pick | None:
        cands = tier.candidates
        if len(cands) == 1:
            cand = cands[0]
            if avoid is not None and cand.channel.id in avoid.channels:
                return None
            key = self._key(cand.channel, avoid)
            return Pick(cand, key) if key is not None else None
        if self.strategy == "latency":
            return self._pick_by_latency(cands, avoid)
        # Weighted: draw; if the drawn channel has no usable key, draw again among the rest.
        weights = list(tier.cumulative)
        pool = list(cands)
        if avoid is not None and avoid.channels:
            pool = [c for c in pool if c.channel.id not in avoid.channels]
            weights = list(itertools.accumulate(c.channel.weight for c in pool))
        while pool:
            i = bisect.bisect_right(weights, self.rng.randrange(weights[-1]))
            key = self._key(pool[i].channel, avoid)
            if key is not None:
                return Pick(pool[i], key)
            del pool[i]
            weights = list(itertools.accumulate(c.channel.weight for c in pool))
        return None

    def _pick_by_latency(self, cands: tuple[Candidate, ...], avoid: Avoid | None) -> Pick | None:
        """Power of two choices on the channels' recent time to first byte (unmeasured first)."""
        pool = [c for c in cands if avoid is None or c.channel.id not in avoid.channels]
        while pool:
            if len(pool) == 1:
                choice = pool[0]
            else:
                a, b = self.rng.sample(pool, 2)
                la, lb = self.health.channel_latency(a.channel.id), self.health.channel_latency(b.channel.id)
                choice = a if (la if la is not None else -1.0) <= (lb if lb is not None else -1.0) else b
            key = self._key(choice.channel, avoid)
            if key is not None:
                return Pick(choice, key)
            pool.remove(choice)
        return None

    def _key(self, channel: Channel, avoid: Avoid | None) -> int | None:
        """The channel's next key in turn that is usable now, or None."""
        n = len(channel.keys)
        start = self._next_key.get(channel.id, 0) if n > 1 else 0
        health, pacer, cid = self.health, self.pacer, channel.id
        for step in range(n):
            i = (start + step) % n
            if avoid is not None and (cid, i) in avoid.keys:
                continue
            if health.out and not health.usable(cid, i) and not self._rested_key(cid, i, avoid):
                continue
            if pacer.wait_s(channel, i) > 0.0:
                continue
            if n > 1:
                self._next_key[cid] = (i + 1) % n
            return i
        return None

    def _rested_key(self, channel_id: int, key_index: int, avoid: Avoid | None) -> bool:
        if avoid is None or not avoid.rested:
            return False
        until = self.health.cooling_until(channel_id, key_index)
        return until is not None and until <= self._clock()

    def _soonest(self, table: RouteTable, avoid: Avoid | None) -> float | None:
        """Seconds until the first key that is only paced or cooling (not failed) is free."""
        now, best = self._clock(), None
        for tier in table.tiers:
            for cand in tier.candidates:
                cid = cand.channel.id
                if avoid is not None and cid in avoid.channels:
                    continue
                for i in range(len(cand.channel.keys)):
                    if avoid is not None and (cid, i) in avoid.keys:
                        continue
                    if self.health.usable(cid, i):
                        wait = self.pacer.wait_s(cand.channel, i)
                    else:
                        until = self.health.cooling_until(cid, i)
                        if until is None:
                            continue
                        wait = max(until - now, self.pacer.wait_s(cand.channel, i), 0.0)
                    best = wait if best is None else min(best, wait)
        return best

    def _affine_channel(self, model: str, affinity: str) -> int | None:
        hit = self._affinity.get((model, affinity))
        if hit is None:
            return None
        if hit[1] < self._clock():
            del self._affinity[(model, affinity)]
            return None
        return hit[0]


def routes_by_group(
    channels: list[Channel], token_groups: Iterable[str], group_map: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, RouteTable]]:
    """Route tables for each token group: a token group uses the channel groups ``group_map``
    gives it, or the channel group of the same name."""
    out: dict[str, dict[str, RouteTable]] = {}
    for g in set(token_groups) | {"default"}:
        out[g] = build_routes(channels, frozenset(group_map.get(g, (g,))))
    return out
