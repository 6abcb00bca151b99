"""Choosing a channel and key for a model: highest priority tier first, weighted within it.

Route tables are built once per snapshot; picking is a binary search over cumulative
weights plus a per-channel round-robin over keys.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from vectorengine.store.records import Channel


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


def build_routes(channels: Iterable[Channel]) -> dict[str, RouteTable]:
    """Model name → route table, from the enabled channels that list the model."""
    by_model: dict[str, list[Candidate]] = {}
    for ch in channels:
        if not ch.enabled or ch.weight <= 0 or not ch.keys:
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


@dataclass(slots=True)
class Selector:
    """Picks a candidate and a key index. Holds the round-robin position of every channel."""

    rng: random.Random = field(default_factory=random.Random)
    _next_key: dict[int, int] = field(default_factory=dict)

    def pick(self, table: RouteTable) -> tuple[Candidate, int]:
        tier = table.tiers[0]
        if len(tier.candidates) == 1:
            cand = tier.candidates[0]
        else:
            point = self.rng.randrange(tier.total)
            cand = tier.candidates[bisect.bisect_right(tier.cumulative, point)]
        return cand, self.next_key(cand.channel)

    def next_key(self, channel: Channel) -> int:
        n = len(channel.keys)
        if n == 1:
            return 0
        i = self._next_key.get(channel.id, 0)
        self._next_key[channel.id] = (i + 1) % n
        return i
