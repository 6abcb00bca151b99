"""Channel and key selection: priority tiers, weights, keys in turn; exclusions, health, pacing, groups."""

from __future__ import annotations

import random
from collections import Counter

from tests.unit.fakes import SHAPE, FakeClock, make_channel
from vectorengine.routing.health import HealthBoard
from vectorengine.routing.pacing import Pacer
from vectorengine.routing.policy import Effect
from vectorengine.routing.selection import Avoid, Pick, Selector, build_routes, routes_by_group
from vectorengine.settings import HealthConfig
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
    groups: tuple[str, ...] = ("default",),
    rpm: int | None = None,
) -> Channel:
    return make_channel(
        id=cid,
        name=f"c{cid}",
        keys=tuple(f"k{i}" for i in range(keys)),
        models=models,
        model_map=model_map or {},
        priority=priority,
        weight=weight,
        enabled=enabled,
        groups=groups,
        rpm=rpm,
    )


def selector(seed: int = 1, clock: FakeClock | None = None, **kw: object) -> Selector:
    clock = clock or FakeClock()
    return Selector(
        HealthBoard(HealthConfig(), clock), Pacer(clock), rng=random.Random(seed), clock=clock, **kw
    )  # type: ignore[arg-type]


def pick(sel: Selector, table: object, avoid: Avoid | None = None, **kw: object) -> Pick:
    p = sel.pick(table, avoid, **kw)  # type: ignore[arg-type]
    assert isinstance(p, Pick), p
    return p


def test_highest_priority_tier_takes_all_traffic() -> None:
    routes = build_routes([ch(1, priority=0, weight=100), ch(2, priority=5), ch(3, priority=5)])
    sel = selector()
    picked = Counter(pick(sel, routes["m"]).candidate.channel.id for _ in range(1000))
    assert set(picked) == {2, 3}


def test_weights_split_traffic_within_a_tier() -> None:
    routes = build_routes([ch(1, weight=1), ch(2, weight=3), ch(3, weight=0)])
    sel = selector(7)
    picked = Counter(pick(sel, routes["m"]).candidate.channel.id for _ in range(20_000))
    assert 3 not in picked  # weight 0 drains a channel
    share = picked[2] / (picked[1] + picked[2])
    assert 0.72 < share < 0.78


def test_disabled_or_keyless_channels_are_not_routes() -> None:
    routes = build_routes([ch(1, enabled=False), ch(2, keys=0)])
    assert routes == {}


def test_keys_rotate_within_a_channel() -> None:
    routes = build_routes([ch(1, keys=3)])
    sel = selector(0)
    assert [pick(sel, routes["m"]).key_index for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_model_map_gives_the_upstream_name() -> None:
    routes = build_routes([ch(1, models=("a", "b"), model_map={"a": "a-2024"})])
    assert routes["a"].tiers[0].candidates[0].upstream_model == "a-2024"
    assert routes["b"].tiers[0].candidates[0].upstream_model == "b"


def test_excluded_keys_rotate_within_the_channel_before_it_is_left() -> None:
    routes = build_routes([ch(1, keys=3, priority=5), ch(2, keys=1)])
    sel = selector()
    avoid = Avoid(keys={(1, 0)})
    first = pick(sel, routes["m"], avoid)
    assert (first.candidate.channel.id, first.key_index) == (1, 1)
    avoid.keys |= {(1, 1), (1, 2)}
    assert pick(sel, routes["m"], avoid).candidate.channel.id == 2  # channel 1 has no key left
    avoid.channels.add(2)
    assert sel.pick(routes["m"], avoid) is None


def test_prefer_channel_keeps_a_retry_on_the_same_channel() -> None:
    routes = build_routes([ch(1, keys=2), ch(2, keys=2), ch(3, keys=2)])
    sel = selector()
    for _ in range(20):
        p = pick(sel, routes["m"], Avoid(keys={(2, 0)}), prefer_channel=2)
        assert (p.candidate.channel.id, p.key_index) == (2, 1)


def test_keys_out_of_service_are_skipped_and_a_cooling_key_means_wait() -> None:
    clock = FakeClock()
    sel = selector(clock=clock)
    routes = build_routes([ch(1, keys=2)])
    sel.health.failure(1, 0, Effect.COOLDOWN, "429", 2.0, SHAPE)
    assert {pick(sel, routes["m"]).key_index for _ in range(5)} == {1}
    sel.health.failure(1, 1, Effect.DISABLE, "401", None, SHAPE)
    wait = sel.pick(routes["m"])
    assert isinstance(wait, float) and 1.99 <= wait <= 2.0  # only the cooling key can come back soon
    clock.advance(2.0)
    assert sel.pick(routes["m"]) == 0.0  # still out until a probe (or a waiting request) takes it
    assert pick(sel, routes["m"], Avoid(rested=True)).key_index == 0


def test_a_paced_key_is_skipped_and_when_all_are_paced_the_pick_says_how_long() -> None:
    clock = FakeClock()
    sel = selector(clock=clock)
    channel = ch(1, keys=1, rpm=60)  # one per second, burst of 6
    routes = build_routes([channel])
    for _ in range(6):
        p = pick(sel, routes["m"])
        sel.pacer.take(channel, p.key_index)
    wait = sel.pick(routes["m"])
    assert isinstance(wait, float) and 0.9 < wait <= 1.0
    clock.advance(wait)
    assert isinstance(sel.pick(routes["m"]), Pick)


def test_token_groups_see_only_their_channel_groups() -> None:
    channels = [ch(1, groups=("default",)), ch(2, groups=("vip",)), ch(3, groups=("vip", "default"))]
    by_group = routes_by_group(channels, ["vip", "team"], {"team": ["vip", "default"]})
    ids = {g: {c.channel.id for t in r["m"].tiers for c in t.candidates} for g, r in by_group.items()}
    assert ids == {"default": {1, 3}, "vip": {2, 3}, "team": {1, 2, 3}}


def test_affinity_sends_the_same_user_to_the_same_channel() -> None:
    routes = build_routes([ch(i) for i in range(1, 6)])
    sel = selector(3, affinity_ttl_s=60.0)
    first = pick(sel, routes["m"], affinity="user:alice").candidate.channel.id
    sel.remember("m", "user:alice", first)
    assert {pick(sel, routes["m"], affinity="user:alice").candidate.channel.id for _ in range(30)} == {first}
    others = {pick(sel, routes["m"], affinity="user:bob").candidate.channel.id for _ in range(60)}
    assert len(others) > 1


def test_latency_strategy_prefers_the_faster_channel() -> None:
    routes = build_routes([ch(1), ch(2), ch(3)])
    sel = selector(5, strategy="latency")
    for _ in range(30):
        sel.health.success(1, 0, 50.0, SHAPE)
        sel.health.success(2, 0, 5.0, SHAPE)
        sel.health.success(3, 0, 500.0, SHAPE)
    picked = Counter(pick(sel, routes["m"]).candidate.channel.id for _ in range(3000))
    assert picked[2] > picked[1] > picked[3]
    assert picked[3] == 0  # power of two choices never takes the slowest of any pair
