"""Money arithmetic, prices, the meters' admission rules and the calendar periods."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.databases import redis_url
from vectorengine.billing.accountant import Accountant, Billing, Periods
from vectorengine.billing.meter import Check, Denied, MemoryMeter, Meter, Plan
from vectorengine.billing.money import MoneyError, round_half_up, to_micro, usd
from vectorengine.billing.prices import PPM, Price, PriceConfig, Units, bound, cost, load_default_prices
from vectorengine.errors import GatewayError, Kind
from vectorengine.protocol.openai import Call, Endpoint, decode
from vectorengine.protocol.usage import Usage
from vectorengine.store.records import NO_LIMITS, Limits, Token, UsageRecord, User
from vectorengine.store.usage_log import Days

# -- money ---------------------------------------------------------------------------------------


def test_decimal_usd_converts_exactly() -> None:
    assert to_micro(Decimal("0.50")) == 500_000
    assert to_micro(0.075) == 75_000  # a YAML float goes through its shortest text, not binary noise
    assert to_micro("1.000001") == 1_000_001
    assert to_micro(3) == 3_000_000
    with pytest.raises(MoneyError):
        to_micro("0.0000001")  # finer than a micro-dollar: refused, not rounded
    with pytest.raises(MoneyError):
        to_micro("NaN")
    assert usd(-1_500_001) == "-1.500001"


@given(st.integers(-(10**18), 10**18), st.integers(1, 10**12))
def test_round_half_up_is_the_nearest_integer(n: int, d: int) -> None:
    q = round_half_up(n, d)
    assert abs(Decimal(n) / Decimal(d) - q) <= Decimal(1) / 2
    if (2 * abs(n)) % (2 * d) == d:  # exactly half: away from zero
        assert abs(q) * d > abs(n)


# -- prices ---------------------------------------------------------------------------------------

MINI = PriceConfig(input=Decimal("0.15"), output=Decimal("0.60"), cached_input=Decimal("0.075")).to_price()


def test_cost_prices_each_kind_of_token_once() -> None:
    # 10,000 prompt tokens of which 4,000 cached; 2,000 completion tokens of which 500 reasoning.
    u = Usage(prompt_tokens=10_000, completion_tokens=2_000, cached_tokens=4_000, reasoning_tokens=500)
    # 6,000 × 0.15 + 4,000 × 0.075 + 2,000 × 0.60 per 1M = 900 + 300 + 1,200 micro-USD
    assert cost(MINI, Units(usage=u), PPM) == 2_400
    reasoning = Price(input=150_000, output=600_000, reasoning=2_000_000)
    # 10,000 × 0.15 + 1,500 × 0.60 + 500 × 2.00 = 1,500 + 900 + 1,000
    assert cost(reasoning, Units(usage=u), PPM) == 3_400
    claude = Price(input=3_000_000, output=15_000_000, cached_input=300_000, cache_write=3_750_000)
    u2 = Usage(prompt_tokens=3_000, completion_tokens=100, cached_tokens=1_000, cache_write_tokens=1_500)
    # 500 fresh × 3 + 1,000 read × 0.30 + 1,500 written × 3.75 + 100 × 15 = 1,500 + 300 + 5,625 + 1,500
    assert cost(claude, Units(usage=u2), PPM) == 8_925


def test_multiplier_and_media_units() -> None:
    u = Usage(prompt_tokens=1_000_000)
    assert cost(MINI, Units(usage=u), 800_000) == 120_000  # a 0.8 group
    image = Price(per_image=40_000, per_call=1)
    assert cost(image, Units(images=3), PPM) == 120_001
    whisper = Price(per_second=100)  # $0.0001 per second
    assert cost(whisper, Units(media_ms=12_345), PPM) == 1_235  # 12.345 s → 1,234.5 → rounded half up


@given(
    prompt=st.integers(0, 200_000),
    cached=st.integers(0, 200_000),
    written=st.integers(0, 200_000),
    completion=st.integers(0, 50_000),
    reasoning=st.integers(0, 50_000),
    mult=st.integers(0, 5 * PPM),
)
def test_cost_never_exceeds_the_bound_within_the_estimates(
    prompt: int, cached: int, written: int, completion: int, reasoning: int, mult: int
) -> None:
    price = Price(
        input=1_250_000, output=10_000_000, cached_input=125_000, cache_write=1_500_000, reasoning=12_000_000
    )
    u = Usage(prompt, completion, min(cached, prompt), min(reasoning, completion), written)
    assert 0 <= cost(price, Units(usage=u), mult) <= bound(price, prompt, completion, mult, Units())


def test_default_prices_ship_with_the_package() -> None:
    prices = load_default_prices()
    assert prices["gpt-4o-mini"] == Price(
        input=150_000, output=600_000, cached_input=75_000, max_output=16384
    )
    assert prices["dall-e-3"].per_image == 40_000
    assert len(prices) >= 30


# -- meters: the same rules in memory and in Redis -------------------------------------------------


async def _no_balance(user_id: int) -> int:
    return 0


async def _no_spend() -> dict[str, int]:
    return {}


@pytest.fixture(params=["memory", "redis"])
async def meter(request: pytest.FixtureRequest) -> AsyncIterator[Meter]:
    if request.param == "memory":
        mem = MemoryMeter()
        mem.seed({1: 1_000}, {})
        yield mem
        return
    from vectorengine.billing.redis_meter import RedisMeter

    async def load_balance(user_id: int) -> int:
        return 1_000 if user_id == 1 else 0

    url = redis_url()
    red = RedisMeter(url, load_balance, _no_spend)
    await red.seed()
    yield red
    await red.close()


BAL = Check("balance", "bal:1", 0, "the balance of user 'u'")


async def test_nothing_changes_when_one_check_fails(meter: Meter) -> None:
    cap = Check(
        "cap", "spend:t:1:p20261203", 700, "the daily spend cap of token 't'", expires_at=2_000_000_000
    )
    plan = Plan(400, (cap, BAL), user_id=1)
    ticket = await meter.admit(plan, 100)
    with pytest.raises(Denied) as denied:
        await meter.admit(plan, 100)  # 800 > the 700 cap
    assert denied.value.check is cap
    assert await meter.balance(1) == 600  # the failed admission changed nothing
    assert await meter.spent(cap.key) == 400
    meter.settle(plan, ticket, 150, 0, 100)
    await _settled(meter)
    assert await meter.balance(1) == 850
    assert await meter.spent(cap.key) == 150
    await meter.admit(Plan(850, (BAL,), user_id=1), 100)
    with pytest.raises(Denied):
        await meter.admit(Plan(1, (BAL,), user_id=1), 100)
    assert await meter.balance(1) == 0


async def test_a_refusal_by_the_last_check_takes_back_the_checks_before_it(meter: Meter) -> None:
    conc = Check("concurrency", "conc:t:5", 1, "the concurrent request limit of token 't'")
    rpm = Check("rpm", "rpm:t:5", 1, "the requests-per-minute limit of token 't'")
    cap = Check("cap", "spend:t:5:total", 5_000, "the quota of token 't'")
    with pytest.raises(Denied) as denied:
        await meter.admit(Plan(1_001, (conc, rpm, cap, BAL), user_id=1), 100)  # balance 1,000
    assert denied.value.check is BAL
    assert await meter.balance(1) == 1_000
    assert await meter.spent(cap.key) == 0
    # The one concurrency slot and the one request of the minute are still free.
    await meter.admit(Plan(1_000, (conc, rpm, cap, BAL), user_id=1), 100)
    assert await meter.balance(1) == 0
    assert await meter.spent(cap.key) == 1_000
    with pytest.raises(Denied) as denied:
        await meter.admit(Plan(0, (conc, rpm), user_id=1), 100)
    assert denied.value.check is conc


async def test_requests_per_minute_slide(meter: Meter) -> None:
    rpm = Check("rpm", "rpm:t:9", 3, "the requests-per-minute limit of token 't'")
    plan = Plan(0, (rpm,))
    for t in (1000, 1010, 1020):
        await meter.admit(plan, t)
    with pytest.raises(Denied) as denied:
        await meter.admit(plan, 1059)
    assert denied.value.retry_after_s == 1  # the request at 1000 leaves the window at 1060
    await meter.admit(plan, 1060)
    with pytest.raises(Denied) as denied:
        await meter.admit(plan, 1061)
    assert denied.value.retry_after_s == 9  # next to leave: the one at 1010, at 1070


async def test_tokens_per_minute_count_what_was_used(meter: Meter) -> None:
    tpm = Check("tpm", "tpm:t:9", 1000, "the tokens-per-minute limit of token 't'")
    plan = Plan(0, (tpm,))
    ticket = await meter.admit(plan, 500)
    meter.settle(plan, ticket, 0, 999, 500)
    await _settled(meter)
    ticket = await meter.admit(plan, 501)  # 999 < 1,000: still under
    meter.settle(plan, ticket, 0, 1, 501)
    await _settled(meter)
    with pytest.raises(Denied) as denied:
        await meter.admit(plan, 502)
    assert denied.value.retry_after_s == 58  # 999 of them leave at 560


async def test_concurrency_slots_come_back(meter: Meter) -> None:
    conc = Check("concurrency", "conc:t:9", 2, "the concurrent request limit of token 't'")
    plan = Plan(0, (conc,))
    ticket = await meter.admit(plan, 1)
    await meter.admit(plan, 1)
    with pytest.raises(Denied):
        await meter.admit(plan, 1)
    meter.settle(plan, ticket, 0, 0, 1)
    await _settled(meter)
    await meter.admit(plan, 1)


async def test_a_dead_workers_holds_go_back_and_a_late_settlement_is_not_counted_twice() -> None:
    """A worker killed mid-request leaves holds in Redis; once its liveness key expires any
    other worker gives them back (balance, cap room, concurrency slot). If the presumed-dead
    worker settles after all, the charge is taken in full, never credited twice."""
    from vectorengine.billing.redis_meter import ALIVE, HOLDS, RedisMeter

    async def load_balance(user_id: int) -> int:
        return 10_000

    url = redis_url()
    dead = RedisMeter(url, load_balance, _no_spend, alive_ttl_s=0.3)
    alive = RedisMeter(url, load_balance, _no_spend, alive_ttl_s=0.3)
    await dead.seed()
    await dead.start()
    await alive.start()
    try:
        cap = Check("cap", "spend:u:1:p20261203", 10_000, "the daily spend cap of user 'u'")
        conc = Check("concurrency", "conc:u:1", 3, "the concurrent request limit of user 'u'")
        plan = Plan(400, (BAL, cap, conc), user_id=1)
        lost = await dead.admit(plan, 100)
        late = await dead.admit(plan, 100)
        kept = await alive.admit(plan, 100)
        assert await alive.balance(1) == 10_000 - 3 * 400
        with pytest.raises(Denied):  # two slots taken by the worker about to die, one here
            await alive.admit(Plan(0, (conc,)), 100)
        assert dead._watch is not None
        dead._watch.cancel()  # the worker dies: no more heartbeats, nothing settled
        assert await alive.release_dead() == 0  # still within its liveness window
        assert await alive._redis.hlen(HOLDS + dead.id) == 2
        await asyncio.sleep(0.6)  # the dead one's liveness expires; the live one's heartbeat sweeps
        assert not await alive._redis.exists(ALIVE + dead.id)
        assert not await alive._redis.exists(HOLDS + dead.id)
        assert await alive.balance(1) == 10_000 - 400  # only the live worker's hold remains
        assert await alive.spent(cap.key) == 400
        assert await alive.release_dead() == 0  # released once only
        # The presumed-dead worker was only stalled: its late settlement charges in full.
        dead.settle(plan, late, 150, 0, 100)
        await dead.flush()
        assert await alive.balance(1) == 10_000 - 400 - 150
        assert await alive.spent(cap.key) == 400 + 150
        alive.settle(plan, kept, 100, 0, 100)
        await alive.flush()
        assert await alive.balance(1) == 10_000 - 150 - 100
        assert await alive.spent(cap.key) == 150 + 100
        # Every slot is free again: the live worker's settled, the dead one's released.
        tickets = [await alive.admit(Plan(0, (conc,)), 100) for _ in range(3)]
        assert len(set(tickets)) == 3 and lost != late
        with pytest.raises(Denied):
            await alive.admit(Plan(0, (conc,)), 100)
    finally:
        await alive.close()
        await dead.close()


async def test_redis_meter_fails_closed_when_redis_is_gone_or_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """No admission without the shared state: a refused connection and a server that accepts
    but never answers both give 503 state_unavailable, the silent one within the timeout."""
    from vectorengine.billing import redis_meter

    monkeypatch.setattr(redis_meter, "REDIS_TIMEOUT_S", 0.5)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_port = server.sockets[0].getsockname()[1]
    probe = await asyncio.start_server(silent, "127.0.0.1", 0)
    closed_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()

    plan = Plan(100, (BAL,), user_id=1)
    try:
        for port in (closed_port, silent_port):
            meter = redis_meter.RedisMeter(f"redis://127.0.0.1:{port}/0", _no_balance, _no_spend)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(GatewayError) as caught:
                await meter.admit(plan, 100)
            assert caught.value.kind is Kind.STATE_UNAVAILABLE
            assert caught.value.status == 503
            assert asyncio.get_running_loop().time() - t0 < 5.0
            await meter._redis.aclose()
        assert accepted, "the silent server was never reached"
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_redis_meter_calls_never_swallow_a_cancellation() -> None:
    """A cancelled Redis exchange ends cancelled, wherever the cancellation lands in it (with a
    socket timeout, redis-py wraps each write in asyncio.wait_for, which on Python 3.11 drops
    a cancellation that arrives as the write completes: the meter's heartbeat then ran on
    after its worker closed, and a gone client's admission carried on)."""
    from vectorengine.billing.redis_meter import RedisMeter

    meter = RedisMeter(redis_url(), _no_balance, _no_spend)
    swallowed, cancelled = 0, 0
    try:
        for i in range(600):
            if i % 50 == 0:  # a new connection now and then: its handshake is a write too
                await meter._redis.connection_pool.disconnect()
            call = asyncio.ensure_future(meter._redis.set("ve:test:cancel", i))
            for _ in range(i % 12):  # land the cancellation at a different step each time
                await asyncio.sleep(0)
            if not call.cancel():
                continue
            cancelled += 1
            try:
                await call
            except asyncio.CancelledError:
                continue
            swallowed += 1
        assert cancelled > 300
        assert swallowed == 0, f"{swallowed} of {cancelled} cancellations were swallowed"
    finally:
        await meter._redis.aclose()


async def _settled(meter: Meter) -> None:
    flush = getattr(meter, "flush", None)
    if flush is not None:
        await flush()


# -- the accountant: caps reset at calendar boundaries in the billing time zone --------------------


def _token(limits: Limits = NO_LIMITS) -> Token:
    return Token(
        id=7,
        name="t",
        key_hash="h",
        key_hint="k",
        models=None,
        enabled=True,
        expires_at=None,
        managed_by="api",
        created_at=0,
        updated_at=0,
        user_id=3,
        limits=limits,
    )


USER = User(
    id=3,
    name="u",
    group="default",
    enabled=True,
    limits=NO_LIMITS,
    managed_by="api",
    created_at=0,
    updated_at=0,
)


def _call(max_tokens: int = 10) -> Call:
    body = b'{"model":"gpt-4o-mini","max_tokens":%d,"messages":[{"role":"user","content":"hi"}]}' % max_tokens
    return decode(Endpoint.CHAT, body)


async def test_daily_cap_resets_at_local_midnight() -> None:
    tz = ZoneInfo("Asia/Tokyo")
    now = [dt.datetime(2026, 12, 3, 23, 59, 0, tzinfo=tz).timestamp()]
    meter = MemoryMeter()
    meter.seed({3: 10**9}, {})
    acct = Accountant(meter, Billing(timezone="Asia/Tokyo"), clock=lambda: now[0])
    token = _token(Limits(daily_cap_micro_usd=20))
    call = _call()
    hold = await acct.admit(token, USER, MINI, PPM, call, "127.0.0.1")
    # 83 bytes of body hold 41 prompt tokens at $0.15/1M and 10 output tokens at $0.60/1M: 12.15 → 13
    assert hold.plan is not None and hold.plan.amount == 13  # a second hold does not fit
    with pytest.raises(GatewayError) as err:
        await acct.admit(token, USER, MINI, PPM, call, "127.0.0.1")
    assert err.value.kind is Kind.SPEND_CAP_REACHED and "daily spend cap of token 't'" in err.value.message
    now[0] += 60  # 00:00 in Tokyo (15:00 UTC): a new day
    again = await acct.admit(token, USER, MINI, PPM, call, "127.0.0.1")
    assert again.plan is not None


def test_periods_follow_the_time_zone() -> None:
    p = Periods("America/New_York")
    t = dt.datetime(2026, 3, 1, 4, 30, tzinfo=dt.UTC).timestamp()  # 23:30 on Feb 28 in New York
    assert (p.at(t).day, p.month) == ("20260228", "202602")
    assert p.day_end == p.month_end == t + 30 * 60  # midnight, and the 1st of March, in New York
    assert p.at(t + 31 * 60).day == "20260301"


async def test_ip_allow_list_and_unpriced_models() -> None:
    meter = MemoryMeter()
    meter.seed({3: 10**9}, {})
    acct = Accountant(meter, Billing())
    token = _token(Limits(ip_allow=("10.0.0.0/8",)))
    with pytest.raises(GatewayError) as err:
        await acct.admit(token, USER, MINI, PPM, _call(), "192.168.1.5")
    assert err.value.kind is Kind.IP_NOT_ALLOWED and err.value.status == 403
    assert await acct.admit(token, USER, MINI, PPM, _call(), "10.1.2.3")
    with pytest.raises(GatewayError) as err:
        await acct.admit(_token(), USER, None, PPM, _call(), "10.1.2.3")
    assert err.value.kind is Kind.MODEL_NOT_PRICED


async def test_user_caps_and_the_monthly_reset() -> None:
    """A user's daily and monthly caps count every token of the user; months start on the 1st."""
    now = [dt.datetime(2026, 1, 31, 23, 0, tzinfo=dt.UTC).timestamp()]
    meter = MemoryMeter()
    meter.seed({3: 10**9}, {})
    acct = Accountant(meter, Billing(), clock=lambda: now[0])
    user = msgspec.structs.replace(USER, limits=Limits(monthly_cap_micro_usd=20))
    one, other = _token(), msgspec.structs.replace(_token(), id=8, name="t2")
    held = await acct.admit(one, user, MINI, PPM, _call(), None)
    assert held.plan is not None and held.plan.amount == 13
    with pytest.raises(GatewayError) as err:
        await acct.admit(other, user, MINI, PPM, _call(), None)  # the user's cap, through another key
    assert err.value.kind is Kind.SPEND_CAP_REACHED and "monthly spend cap of user 'u'" in err.value.message
    now[0] += 3600  # February 1st
    assert (await acct.admit(other, user, MINI, PPM, _call(), None)).plan is not None
    daily = msgspec.structs.replace(USER, limits=Limits(daily_cap_micro_usd=15, rpm=1))
    await acct.admit(one, daily, MINI, PPM, _call(), None)
    with pytest.raises(GatewayError) as err:
        await acct.admit(other, daily, MINI, PPM, _call(), None)
    assert err.value.kind is Kind.RATE_LIMITED and err.value.status == 429
    assert "requests-per-minute limit of user 'u'" in err.value.message
    assert dict(err.value.headers)["retry-after"] == "60"


async def test_a_settled_request_releases_what_it_did_not_use() -> None:
    meter = MemoryMeter()
    meter.seed({3: 1_000}, {})
    acct = Accountant(meter, Billing())
    hold = await acct.admit(_token(), USER, MINI, PPM, _call(max_tokens=1000), None)
    assert hold.plan is not None and await meter.balance(3) == 1_000 - hold.plan.amount
    rec = UsageRecord(request_id="r", created_at=0, endpoint="/v1/chat/completions")
    acct.settle(hold, rec, Usage(prompt_tokens=10, completion_tokens=100), True, 0)
    assert rec.cost_micro_usd == 62  # 10 × 0.15 + 100 × 0.60 = 61.5 → 62
    assert await meter.balance(3) == 1_000 - 62 and rec.reserved_micro_usd == hold.plan.amount
    over = await acct.admit(_token(), USER, MINI, PPM, _call(max_tokens=10), None)
    rec2 = UsageRecord(request_id="r2", created_at=0, endpoint="/v1/chat/completions")
    acct.settle(over, rec2, Usage(prompt_tokens=10, completion_tokens=5_000), True, 0)  # ignored max_tokens
    assert over.plan is not None and rec2.cost_micro_usd == over.plan.amount  # never more than held
    assert rec2.unbilled_micro_usd == 3_002 - over.plan.amount
    failed = await acct.admit(_token(), USER, MINI, PPM, _call(max_tokens=10), None)
    rec3 = UsageRecord(request_id="r3", created_at=0, endpoint="/v1/chat/completions")
    acct.settle(failed, rec3, None, False, 0)  # no upstream answered
    assert rec3.cost_micro_usd == 0 and await meter.balance(3) == 1_000 - 62 - rec2.cost_micro_usd


@given(
    st.integers(0, 4_102_444_800_000),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Europe/London"]),
)
def test_rollup_days_match_a_plain_conversion(ms: int, zone: str) -> None:
    tz = ZoneInfo(zone)
    days = Days(tz)
    for t in (ms, ms + 3_600_000, ms - 1, ms + 86_400_000):  # the cache must notice each new day
        if t >= 0:
            assert days(t) == dt.datetime.fromtimestamp(t / 1000, tz).strftime("%Y%m%d")


@pytest.mark.parametrize("holder", ["token", "user"])
@pytest.mark.parametrize(
    ("limits", "refusal", "label"),
    [
        (Limits(daily_cap_micro_usd=20), Kind.SPEND_CAP_REACHED, "daily spend cap"),
        (Limits(monthly_cap_micro_usd=20), Kind.SPEND_CAP_REACHED, "monthly spend cap"),
        (Limits(rpm=1), Kind.RATE_LIMITED, "requests-per-minute limit"),
        (Limits(tpm=50), Kind.RATE_LIMITED, "tokens-per-minute limit"),
        (Limits(max_concurrency=1), Kind.RATE_LIMITED, "concurrent request limit"),
        (Limits(ip_allow=("10.0.0.0/8",)), Kind.IP_NOT_ALLOWED, "not allowed"),
    ],
)
async def test_every_limit_of_tokens_and_users(
    holder: str, limits: Limits, refusal: Kind, label: str
) -> None:
    """The first request passes (from inside an allowed network), the second is refused naming the
    limit and its holder; nothing is refused without the limit."""
    meter = MemoryMeter()
    meter.seed({3: 10**9}, {})
    acct = Accountant(meter, Billing())
    token = _token(limits) if holder == "token" else _token()
    user = msgspec.structs.replace(USER, limits=limits) if holder == "user" else USER
    first = await acct.admit(token, user, MINI, PPM, _call(), "10.0.0.1")
    if limits.tpm is not None:  # tokens count once used: this request used 60
        rec = UsageRecord(request_id="r", created_at=0, endpoint="/v1/chat/completions")
        acct.settle(first, rec, Usage(prompt_tokens=20, completion_tokens=40), True, 0)
    ip = "192.168.0.9" if limits.ip_allow else "10.0.0.1"
    with pytest.raises(GatewayError) as err:
        await acct.admit(token, user, MINI, PPM, _call(), ip)
    assert err.value.kind is refusal and label in err.value.message
    assert f"{holder} '{token.name if holder == 'token' else user.name}'" in err.value.message
    unlimited = MemoryMeter()
    unlimited.seed({3: 10**9}, {})
    fresh = Accountant(unlimited, Billing())
    for _ in range(2):
        await fresh.admit(_token(), USER, MINI, PPM, _call(), ip)
