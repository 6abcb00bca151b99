"""Reading providers' balance answers (the registry's BalanceApi data), exactly; the config keys."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fakes import make_channel
from vectorengine.billing.money import MoneyError, floor_micro, to_micro
from vectorengine.settings import ConfigError, parse_settings
from vectorengine.store.records import Channel
from vectorengine.store.repository import Store
from vectorengine.store.snapshot import SnapshotHolder
from vectorengine.upstreams.balance import (
    BalanceError,
    balance_request,
    balance_url,
    read_balance,
)
from vectorengine.upstreams.registry import UPSTREAM_TYPES, BalanceApi

# The documented answers, byte for byte as the providers' API references show them.
DEEPSEEK = (
    b'{"is_available": true, "balance_infos": [{"currency": "CNY", "total_balance": "110.00", '
    b'"granted_balance": "10.00", "topped_up_balance": "100.00"}]}'
)
MOONSHOT = (
    b'{"code":0,"data":{"available_balance":49.58894,"voucher_balance":46.58893,"cash_balance":3.00001},'
    b'"scode":"0x0","status":true}'
)
OPENROUTER = b'{"data":{"total_credits":100,"total_usage":25.5}}'
SILICONFLOW = (
    b'{"code":20000,"message":"OK","status":true,"data":{"id":"userid","name":"username",'
    b'"image":"user_avatar_image_url","email":"user_email_address","isAdmin":false,"balance":"0.88",'
    b'"status":"normal","introduction":"user_introduction","role":"user_role","chargeBalance":"88.00",'
    b'"totalBalance":"88.88"}}'
)


def api(name: str) -> BalanceApi:
    found = UPSTREAM_TYPES[name].balance
    assert found is not None
    return found


def channel(type_: str, base_url: str, keys: tuple[str, ...] = ("sk-one", "sk-two")) -> Channel:
    return make_channel(type=type_, base_url=base_url, keys=keys)


def test_exactly_these_hosts_report_a_balance() -> None:
    assert sorted(n for n, t in UPSTREAM_TYPES.items() if t.balance is not None) == [
        "deepseek",
        "moonshot",
        "openrouter",
        "siliconflow",
    ]


@pytest.mark.parametrize(
    ("name", "body", "host", "amount", "currency"),
    [
        ("deepseek", DEEPSEEK, "api.deepseek.com", "110.00", "CNY"),
        ("moonshot", MOONSHOT, "api.moonshot.cn", "49.58894", "CNY"),
        ("moonshot", MOONSHOT, "api.moonshot.ai", "49.58894", "USD"),  # the international platform
        ("openrouter", OPENROUTER, "openrouter.ai", "74.5", "USD"),  # total_credits − total_usage
        ("siliconflow", SILICONFLOW, "api.siliconflow.cn", "88.88", "CNY"),  # totalBalance, not balance
        ("siliconflow", SILICONFLOW, "api.siliconflow.com", "88.88", "USD"),
    ],
)
def test_documented_answers_read_exactly(
    name: str, body: bytes, host: str, amount: str, currency: str
) -> None:
    got = read_balance(api(name), body, host)
    assert got.amount == Decimal(amount) and str(got.amount) == amount  # digits kept, no float noise
    assert got.currency == currency


def test_a_json_number_is_read_from_its_digits_not_as_a_binary_float() -> None:
    body = b'{"data":{"total_credits":0.3,"total_usage":0.1}}'
    assert 0.3 - 0.1 != 0.2  # what a float reader would get wrong
    assert read_balance(api("openrouter"), body, "openrouter.ai").amount == Decimal("0.2")
    cash = b'{"code":0,"data":{"available_balance":0.1000001},"scode":"0x0","status":true}'
    assert str(read_balance(api("moonshot"), cash, "api.moonshot.cn").amount) == "0.1000001"


def test_deepseek_names_its_currency_in_the_answer() -> None:
    usd = DEEPSEEK.replace(b'"CNY"', b'"usd"')
    assert read_balance(api("deepseek"), usd, "api.deepseek.com").currency == "USD"


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        ("deepseek", b'{"is_available": false, "balance_infos": []}', "balance_infos[0]"),
        ("deepseek", b'{"balance_infos": [{"currency": "CNY", "total_balance": "1,10"}]}', "not a decimal"),
        ("deepseek", b'{"balance_infos": [{"currency": 7, "total_balance": "1"}]}', "not a currency"),
        ("moonshot", b'{"code":0,"data":{"available_balance":null}}', "not an amount"),
        ("moonshot", b'{"code":0,"data":{"available_balance":true}}', "not an amount"),
        ("moonshot", b'{"code":0,"data":[]}', "data.available_balance"),
        ("moonshot", b'{"error":{"message":"Invalid Authentication"}}', "no `data`"),
        ("siliconflow", b'{"code":20000,"data":{"totalBalance":"NaN"}}', "not a plausible"),
        ("siliconflow", b'{"code":20000,"data":{"totalBalance":"Infinity"}}', "not a plausible"),
        ("siliconflow", b'{"code":20000,"data":{"totalBalance":"1e13"}}', "not a plausible"),
        ("siliconflow", b'"Api key is invalid"', "no `data`"),
        ("openrouter", b'{"data":{"total_credits":100}}', "data.total_usage"),
        ("openrouter", b"<html>502 Bad Gateway</html>", "not JSON"),
        ("openrouter", b"", "not JSON"),
    ],
)
def test_answers_without_a_balance_are_errors(name: str, body: bytes, says: str) -> None:
    with pytest.raises(BalanceError) as caught:
        read_balance(api(name), body, "example.com")
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("name", "base_url", "url"),
    [
        # DeepSeek's balance is not under /v1, whatever the channel's base URL says
        ("deepseek", "https://api.deepseek.com/v1", "https://api.deepseek.com/user/balance"),
        ("deepseek", "https://api.deepseek.com", "https://api.deepseek.com/user/balance"),
        ("deepseek", "http://127.0.0.1:8123/v1/", "http://127.0.0.1:8123/user/balance"),
        ("moonshot", "https://api.moonshot.cn/v1", "https://api.moonshot.cn/v1/users/me/balance"),
        ("openrouter", "https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1/credits"),
        ("siliconflow", "https://api.siliconflow.cn/v1", "https://api.siliconflow.cn/v1/user/info"),
    ],
)
def test_balance_urls(name: str, base_url: str, url: str) -> None:
    assert balance_url(api(name), base_url.rstrip("/")) == url
    req = balance_request(channel(name, base_url), 1)
    assert req is not None and req.url == url and req.body == b""
    assert ("authorization", "Bearer sk-two") in req.headers  # the key's own credentials


def test_a_type_without_a_balance_api_has_no_balance_request() -> None:
    assert balance_request(channel("openai", "https://api.openai.com/v1"), 0) is None
    assert balance_request(channel("azure", "https://x.openai.azure.com"), 0) is None


# -- property: whatever amount a provider writes, in a string or a JSON number, is read exactly --

AMOUNTS = st.decimals(
    min_value=Decimal("-1000000"),
    max_value=Decimal("999999999"),
    places=8,
    allow_nan=False,
    allow_infinity=False,
)


def _number(amount: Decimal) -> orjson.Fragment:
    return orjson.Fragment(format(amount, "f").encode())


@settings(max_examples=200)
@given(amount=AMOUNTS, used=AMOUNTS)
def test_every_provider_reads_any_amount_exactly(amount: Decimal, used: Decimal) -> None:
    text = format(amount, "f")
    bodies = {
        "deepseek": {"is_available": True, "balance_infos": [{"currency": "CNY", "total_balance": text}]},
        "moonshot": {
            "code": 0,
            "data": {"available_balance": _number(amount)},
            "scode": "0x0",
            "status": True,
        },
        "siliconflow": {"code": 20000, "data": {"balance": "0", "totalBalance": text}},
    }
    for name, doc in bodies.items():
        assert read_balance(api(name), orjson.dumps(doc), "h").amount == amount
    total = amount + used
    credits = {"data": {"total_credits": _number(total), "total_usage": _number(used)}}
    assert (
        read_balance(api("openrouter"), orjson.dumps(credits), "openrouter.ai").amount
        == total - used
        == amount
    )


@given(amount=AMOUNTS)
def test_floor_micro_rounds_down_and_agrees_with_to_micro(amount: Decimal) -> None:
    micro = floor_micro(amount)
    assert Decimal(micro) <= amount * 1_000_000 < Decimal(micro + 1)
    exact = amount.quantize(Decimal("0.000001"))
    assert floor_micro(exact) == to_micro(exact)


def test_floor_micro_refuses_what_is_no_amount() -> None:
    assert floor_micro(Decimal("4.9999999")) == 4_999_999  # stays below a threshold of 5
    with pytest.raises(MoneyError):
        floor_micro(Decimal("NaN"))


# -- configuration ----------------------------------------------------------------------------------


def config(**channel_fields: object) -> dict[str, object]:
    ch = {"name": "ds", "type": "deepseek", "base_url": "https://api.deepseek.com/v1", "keys": ["k"]}
    return {"channels": [{**ch, "models": ["deepseek-chat"], **channel_fields}]}


def test_the_threshold_is_a_decimal_in_the_providers_currency() -> None:
    s = parse_settings(config(balance_alert_below=5.1), env={})
    assert s.channels[0].balance_alert_below == Decimal("5.1")
    assert s.alerts.provider_balance_poll_s == 600
    assert parse_settings(config(), env={}).channels[0].balance_alert_below is None
    raw = {**config(balance_alert_below="0.5"), "alerts": {"provider_balance_poll_s": 30}}
    assert parse_settings(raw, env={}).alerts.provider_balance_poll_s == 30


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (
            config(type="openai", balance_alert_below=5),
            r"\$\.channels\[0\]\.balance_alert_below: upstream type 'openai'",
        ),
        (config(balance_alert_below=-1), r"\$\.channels\[0\]\.balance_alert_below: must not be negative"),
        (
            config(balance_alert_below="0.0000001"),
            r"\$\.channels\[0\]\.balance_alert_below: .*decimal places",
        ),
        (config(balance_alert_below_micro=5), r"\$\.channels\[0\]\.balance_alert_below_micro: unknown key"),
        ({"alerts": {"provider_balance_poll_s": 0}}, r"\$\.alerts\.provider_balance_poll_s"),
        ({"alerts": {"provider_balance_poll_s": 100_000}}, r"\$\.alerts\.provider_balance_poll_s"),
    ],
)
def test_bad_thresholds_and_intervals_name_their_path(raw: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_settings(raw, env={})


# -- storage ----------------------------------------------------------------------------------------


async def test_the_threshold_is_stored_with_the_channel_and_reaches_the_snapshot(store: Store) -> None:
    fields = {
        "name": "ds",
        "type": "deepseek",
        "base_url": "https://api.deepseek.com/v1",
        "keys": ["k"],
        "models": ["deepseek-chat"],
        "model_map": {},
        "priority": 0,
        "weight": 1,
        "enabled": True,
        "balance_alert_below_micro": 5_000_000,
    }
    made = await store.create_channel(fields)
    assert made.balance_alert_below_micro == 5_000_000
    changed = await store.update_channel(made.id, {"balance_alert_below_micro": 2**62})
    assert changed is not None and changed.balance_alert_below_micro == 2**62  # a 64-bit column
    same = await store.upsert_channel({**fields, "balance_alert_below_micro": None})
    assert same.id == made.id and same.balance_alert_below_micro is None
    await store.update_channel(made.id, {"balance_alert_below_micro": 1})
    snap = await SnapshotHolder(store).load()
    assert snap.channels[made.id].balance_alert_below_micro == 1
