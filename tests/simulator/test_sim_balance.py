"""The providers' balance endpoints: their real shapes, per-key balances, the providers' own 401s."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.procs import SimHandle, start_simulator, unique_key
from vectorengine.simulator import SimulatorConfig
from vectorengine.upstreams.balance import read_balance
from vectorengine.upstreams.registry import UPSTREAM_TYPES

PATHS = {
    "deepseek": "/user/balance",
    "moonshot": "/v1/users/me/balance",
    "openrouter": "/v1/credits",
    "siliconflow": "/v1/user/info",
}


def get(sim: SimHandle, provider: str, key: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(sim.root_url + PATHS[provider], headers=headers, timeout=5)


def test_deepseek_shape(simulator: SimHandle) -> None:
    key = unique_key()
    simulator.set_balance(key, "110.00")
    r = get(simulator, "deepseek", key)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "is_available": True,
        "balance_infos": [
            {
                "currency": "CNY",
                "total_balance": "110.00",
                "granted_balance": "0.00",
                "topped_up_balance": "110.00",
            }
        ],
    }
    simulator.set_balance(key, "7")  # amounts are written with (at least) two decimals
    assert get(simulator, "deepseek", key).json()["balance_infos"][0]["total_balance"] == "7.00"


def test_moonshot_shape_has_json_numbers_with_the_exact_digits(simulator: SimHandle) -> None:
    key = unique_key()
    simulator.set_balance(key, "49.58894")
    r = get(simulator, "moonshot", key)
    assert r.status_code == 200
    assert r.content == (
        b'{"code":0,"data":{"available_balance":49.58894,"voucher_balance":0,"cash_balance":49.58894},'
        b'"scode":"0x0","status":true}'
    )
    simulator.set_balance(key, "-2.5")  # cash owed: nothing available
    assert get(simulator, "moonshot", key).json()["data"] == {
        "available_balance": 0,
        "voucher_balance": 0,
        "cash_balance": -2.5,
    }


def test_openrouter_reports_total_and_usage(simulator: SimHandle) -> None:
    key = unique_key()
    simulator.set_balance(key, "74.5")
    r = get(simulator, "openrouter", key)
    assert r.status_code == 200 and r.content == b'{"data":{"total_credits":100.0,"total_usage":25.5}}'


def test_siliconflow_shape(simulator: SimHandle) -> None:
    key = unique_key()
    simulator.set_balance(key, "88.88")
    body = get(simulator, "siliconflow", key).json()
    assert {k: body[k] for k in ("code", "message", "status")} == {
        "code": 20000,
        "message": "OK",
        "status": True,
    }
    data = body["data"]
    assert set(data) == {
        "id",
        "name",
        "image",
        "email",
        "isAdmin",
        "balance",
        "status",
        "introduction",
        "role",
        "chargeBalance",
        "totalBalance",
    }
    assert (data["balance"], data["chargeBalance"], data["totalBalance"]) == ("0.00", "88.88", "88.88")


@pytest.mark.parametrize("provider", sorted(PATHS))
def test_the_gateways_reader_reads_what_the_simulator_reports(simulator: SimHandle, provider: str) -> None:
    key = unique_key()
    simulator.set_balance(key, "12.34")
    api = UPSTREAM_TYPES[provider].balance
    assert api is not None
    balance = read_balance(api, get(simulator, provider, key).content, "127.0.0.1")
    assert balance.amount == Decimal("12.34")
    assert balance.currency == ("USD" if provider == "openrouter" else "CNY")


@pytest.mark.parametrize(
    ("provider", "bad_key", "no_key"),
    [
        (
            "deepseek",
            {
                "error": {
                    "message": "Authentication Fails, Your api key: ****{last4} is invalid",
                    "type": "authentication_error",
                    "param": None,
                    "code": "invalid_request_error",
                }
            },
            {
                "error": {
                    "message": "Authentication Fails (auth header format should be Bearer sk-...)",
                    "type": "authentication_error",
                    "param": None,
                    "code": "invalid_request_error",
                }
            },
        ),
        (
            "moonshot",
            {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}},
            {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}},
        ),
        (
            "openrouter",
            {"error": {"message": "User not found.", "code": 401}},
            {"error": {"message": "No cookie auth credentials found", "code": 401}},
        ),
        ("siliconflow", "Api key is invalid", "Invalid token"),
    ],
)
def test_a_bad_or_missing_key_gets_the_providers_own_401(
    simulator: SimHandle, provider: str, bad_key: Any, no_key: Any
) -> None:
    key = unique_key("fault-401")
    r = get(simulator, provider, key)
    assert r.status_code == 401
    if provider == "deepseek":
        bad_key["error"]["message"] = bad_key["error"]["message"].format(last4=key[-4:])
    assert r.json() == bad_key
    missing = get(simulator, provider, None)
    assert missing.status_code == 401 and missing.json() == no_key
    assert simulator.statuses(key) == {401: 1}


def test_runtime_balances_override_the_configuration(simulator: SimHandle) -> None:
    key = unique_key()
    url = f"{simulator.root_url}/_sim/balances/{key}"
    assert httpx.get(url).json() == {"key": key, "balance": "100.00", "source": "default"}
    assert simulator.set_balance(key, "3.5") == {"key": key, "balance": "3.5", "source": "override"}
    assert httpx.put(url, json={"balance": "lots"}).status_code == 400
    assert httpx.put(url, json={"balance": True}).status_code == 400
    assert simulator.clear_balance(key)["source"] == "default"
    assert simulator.calls(key) == 0  # control calls are not provider calls


def test_configured_balances_and_a_fault_on_the_balance_endpoint() -> None:
    config = SimulatorConfig(balances={"sk-configured": Decimal("0.25")}, default_balance=Decimal("9"))
    with start_simulator(config) as sim:
        assert get(sim, "deepseek", "sk-configured").json()["balance_infos"][0]["total_balance"] == "0.25"
        assert get(sim, "siliconflow", "sk-other").json()["data"]["totalBalance"] == "9.00"
        r = get(sim, "openrouter", "fault-500")
        assert r.status_code == 500 and "error" in r.json()
        cut = get(sim, "moonshot", "fault-malformed-json")
        assert cut.status_code == 200 and cut.content.startswith(b'{"code":0,')
        with pytest.raises(ValueError):
            cut.json()
        sim.reset()
        assert get(sim, "deepseek", "sk-configured").json()["balance_infos"][0]["total_balance"] == "0.25"
