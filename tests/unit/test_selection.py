"""Channel and key selection: priority tiers first, then weights, keys in turn."""

from __future__ import annotations

import random
from collections import Counter

from vectorengine.routing.selection import Selector, build_routes
from vectorengine.store.records import Channel


def ch(
    cid: int,
    *,
    priority: int = 0,
    weight: int = 1,
    keys: int = 1,
    models: tuple[str, ...] = ("m",),
    enabled: bool = True,
    model_map: dict[str, str] | None = None,
) -> Channel:
    return Channel(
        id=cid,
        name=f"c{cid}",
        type="openai",
        base_url="http://x",
        keys=tuple(f"k{i}" for i in range(keys)),
        models=models,
        model_map=model_map or {},
        priority=priority,
        weight=weight,
        enabled=enabled,
        managed_by="api",
        created_at=0,
        updated_at=0,
    )


def test_highest_priority_tier_takes_all_traffic() -> None:
    routes = build_routes([ch(1, priority=0, weight=100), ch(2, priority=5), ch(3, priority=5)])
    sel = Selector(random.Random(1))
    picked = Counter(sel.pick(routes["m"])[0].channel.id for _ in range(1000))
    assert set(picked) == {2, 3}


def test_weights_split_traffic_within_a_tier() -> None:
    routes = build_routes([ch(1, weight=1), ch(2, weight=3), ch(3, weight=0)])
    sel = Selector(random.Random(7))
    picked = Counter(sel.pick(routes["m"])[0].channel.id for _ in range(20_000))
    assert 3 not in picked  # weight 0 drains a channel
    share = picked[2] / (picked[1] + picked[2])
    assert 0.72 < share < 0.78


def test_disabled_or_keyless_channels_are_not_routes() -> None:
    routes = build_routes([ch(1, enabled=False), ch(2, keys=0)])
    assert routes == {}


def test_keys_rotate_within_a_channel() -> None:
    routes = build_routes([ch(1, keys=3)])
    sel = Selector(random.Random(0))
    assert [sel.pick(routes["m"])[1] for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_model_map_gives_the_upstream_name() -> None:
    routes = build_routes([ch(1, models=("a", "b"), model_map={"a": "a-2024"})])
    assert routes["a"].tiers[0].candidates[0].upstream_model == "a-2024"
    assert routes["b"].tiers[0].candidates[0].upstream_model == "b"
