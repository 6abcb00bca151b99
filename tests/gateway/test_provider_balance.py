"""Provider balances of upstream keys: polled from the simulator, shown per key, alerted once when low."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.test_alerts_and_reports import SECRET, Receiver, wait_for
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import SimHandle, unique_key

POLL_S = 0.2


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=0)
    yield r
    r.close()


def balance_of(admin: httpx.Client, channel_id: int) -> dict[str, Any]:
    r = admin.get(f"/api/channels/{channel_id}/balance")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def low_alerts(admin: httpx.Client) -> list[dict[str, Any]]:
    page = admin.get("/api/alerts", params={"kind": "upstream_balance_low"}).json()
    return sorted(page["data"], key=lambda a: a["id"])


def test_low_provider_balances_are_polled_shown_and_alerted_once(
    sim: SimHandle, tmp_path: Path, receiver: Receiver
) -> None:
    low, ok, kimi, refused, credits, flow, plain_key = (
        unique_key(p) for p in ("ds", "ds", "k", "fault-401", "or", "sf", "plain")
    )
    sim.set_balance(low, "3.50")  # below DeepSeek's 5
    sim.set_balance(kimi, "10.5")  # exactly Moonshot's threshold: not below it
    sim.set_balance(credits, "0.75")  # OpenRouter: 26.25 credited − 25.5 used, below 1
    sim.set_balance(flow, "2.00")
    base = sim.base_url

    def channel(name: str, type_: str, keys: list[str], below: Any) -> dict[str, Any]:
        return {"name": name, "type": type_, "base_url": base, "keys": keys, "models": [f"{name}-model"]} | (
            {"balance_alert_below": below} if below is not None else {}
        )

    config = {
        "channels": [
            channel("ds", "deepseek", [low, ok], 5),
            channel("kimi", "moonshot", [kimi, refused], "10.5"),
            channel("or", "openrouter", [credits], 1),
            channel("sf", "siliconflow", [flow], 2),
            channel("plain", "openai", [plain_key], None),
        ],
        "alerts": {
            "webhooks": [{"url": receiver.url, "secret": SECRET}],
            "retry_base_s": 0.05,
            "provider_balance_poll_s": POLL_S,
        },
    }
    gw = start_gateway(tmp_path, config)
    try:
        with gw.admin() as admin:
            ids = {c["name"]: c["id"] for c in admin.get("/api/channels").json()}
            by_name = {c["name"]: c for c in admin.get("/api/channels").json()}
            assert by_name["ds"]["balance_alert_below_micro"] == 5_000_000
            assert by_name["kimi"]["balance_alert_below_micro"] == 10_500_000
            assert by_name["plain"]["balance_alert_below_micro"] is None

            # several rounds of polling: the low keys are read again and again
            assert wait_for(lambda: sim.calls(low) >= 4 and sim.calls(credits) >= 4), sim.calls(low)
            ds = balance_of(admin, ids["ds"])
            assert ds["polled"] is True and ds["poll_interval_s"] == POLL_S
            assert ds["balance_alert_below_micro"] == 5_000_000
            first, second = ds["keys"]
            assert {
                k: first[k] for k in ("key_index", "balance", "balance_micro", "currency", "error", "low")
            } == {
                "key_index": 0,
                "balance": "3.50",
                "balance_micro": 3_500_000,
                "currency": "CNY",
                "error": None,
                "low": True,
            }
            assert abs(first["checked_at"] / 1000 - time.time()) < 30
            assert (second["balance"], second["balance_micro"], second["low"]) == (
                "100.00",
                100_000_000,
                False,
            )
            assert first["key"].endswith(low[-4:]) and low not in str(ds)  # hints only, never keys

            kimi_keys = balance_of(admin, ids["kimi"])["keys"]
            assert (kimi_keys[0]["balance"], kimi_keys[0]["currency"], kimi_keys[0]["low"]) == (
                "10.5",
                "CNY",
                False,
            )
            assert kimi_keys[1]["balance"] is None and kimi_keys[1]["balance_micro"] is None
            assert kimi_keys[1]["error"].startswith("HTTP 401: ")
            assert "Invalid Authentication" in kimi_keys[1]["error"]
            assert kimi_keys[1]["checked_at"] is not None and kimi_keys[1]["low"] is False

            or_key = balance_of(admin, ids["or"])["keys"][0]
            assert (or_key["balance"], or_key["balance_micro"], or_key["currency"]) == (
                "0.75",
                750_000,
                "USD",
            )
            sf_key = balance_of(admin, ids["sf"])["keys"][0]
            assert (sf_key["balance"], sf_key["low"]) == ("2.00", False)

            plain = balance_of(admin, ids["plain"])
            assert plain["polled"] is False and plain["keys"][0]["checked_at"] is None
            assert sim.calls(plain_key) == 0

            # raised once each while they stay low; the refused key raised nothing
            alerts = low_alerts(admin)
            assert sorted(a["subject"] for a in alerts) == sorted(
                [f"channel:{ids['ds']}#0", f"channel:{ids['or']}#0"]
            )
            got = {a["data"]["channel_id"]: a for a in alerts}
            for a in alerts:  # what workers polling the same key deduplicate their alert by
                ch, k = a["data"]["channel_id"], a["data"]["key_index"]
                assert a["data"].pop("dedupe").startswith(f"provider-balance:{ch}:{k}:")
            assert got[ids["ds"]]["data"] | {"key": None} == {
                "channel_id": ids["ds"],
                "key_index": 0,
                "key": None,
                "balance": "3.50",
                "balance_micro": 3_500_000,
                "currency": "CNY",
                "threshold": "5",
                "threshold_micro": 5_000_000,
            }
            assert (
                "channel 'ds'" in got[ids["ds"]]["message"]
                and "3.50 CNY, below 5 CNY" in got[ids["ds"]]["message"]
            )
            assert got[ids["or"]]["data"]["balance"] == "0.75" and got[ids["or"]]["data"]["currency"] == "USD"

            # delivered to the webhook, signed (Receiver.delivered checks every signature)
            def delivered() -> list[dict[str, Any]]:
                return [a for a in receiver.delivered() if a["kind"] == "upstream_balance_low"]

            assert wait_for(lambda: len(delivered()) == 2), delivered()
            assert sorted(a["id"] for a in delivered()) == [a["id"] for a in alerts]
            assert wait_for(lambda: all(a["delivered"] for a in low_alerts(admin)))

            # more rounds while still low: nothing new
            calls = sim.calls(low)
            assert wait_for(lambda: sim.calls(low) >= calls + 3)
            assert len(low_alerts(admin)) == 2 and len(delivered()) == 2

            # back above the threshold, then below again: one new alert for that key
            sim.set_balance(low, "50")
            assert wait_for(lambda: balance_of(admin, ids["ds"])["keys"][0]["balance"] == "50.00")
            assert balance_of(admin, ids["ds"])["keys"][0]["low"] is False
            sim.set_balance(low, "4.99")
            assert wait_for(lambda: len(low_alerts(admin)) == 3), low_alerts(admin)
            assert low_alerts(admin)[-1]["data"]["balance"] == "4.99"
            assert wait_for(lambda: len(delivered()) == 3)
            calls = sim.calls(low)
            assert wait_for(lambda: sim.calls(low) >= calls + 3)
            assert len(low_alerts(admin)) == 3
    finally:
        gw.stop()


def test_thresholds_through_the_admin_api(sim: SimHandle, tmp_path: Path) -> None:
    key = unique_key("api")
    sim.set_balance(key, "0.10")
    gw: GatewayProcess = start_gateway(tmp_path, {"alerts": {"provider_balance_poll_s": POLL_S}})
    try:
        with gw.admin() as admin:
            plain = {"name": "plain", "base_url": sim.base_url, "keys": ["key-a"], "models": ["m"]}
            refused = admin.post("/api/channels", json={**plain, "balance_alert_below_micro": 1})
            assert (
                refused.status_code == 400 and refused.json()["error"]["param"] == "balance_alert_below_micro"
            )
            assert (
                admin.post("/api/channels", json={**plain, "balance_alert_below_micro": -1}).status_code
                == 400
            )
            made = admin.post(
                "/api/channels",
                json={
                    "name": "sf",
                    "type": "siliconflow",
                    "base_url": sim.base_url,
                    "keys": [key],
                    "models": ["m"],
                    "balance_alert_below_micro": 500_000,
                },
            )
            assert made.status_code == 201, made.text
            channel = made.json()
            assert channel["balance_alert_below_micro"] == 500_000
            assert admin.get(f"/api/channels/{channel['id']}").json()["balance_alert_below_micro"] == 500_000

            assert wait_for(lambda: len(low_alerts(admin)) == 1), balance_of(admin, channel["id"])
            reading = balance_of(admin, channel["id"])["keys"][0]
            assert (reading["balance"], reading["balance_micro"], reading["low"]) == ("0.10", 100_000, True)

            # no longer polled once the threshold goes; a type without a balance cannot take one
            patched = admin.patch(f"/api/channels/{channel['id']}", json={"balance_alert_below_micro": None})
            assert patched.status_code == 200 and patched.json()["balance_alert_below_micro"] is None
            assert balance_of(admin, channel["id"])["polled"] is False
            to_openai = admin.patch(f"/api/channels/{channel['id']}", json={"type": "openai"})
            assert to_openai.status_code == 200
            bad = admin.patch(f"/api/channels/{channel['id']}", json={"balance_alert_below_micro": 5})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "balance_alert_below_micro"
            assert admin.get(f"/api/channels/{channel['id'] + 100}/balance").status_code == 404

            spec = httpx.get(gw.url + "/api/openapi.json").json()
            op = spec["paths"]["/api/channels/{id}/balance"]["get"]
            assert op["operationId"] == "channel_balance"
            assert "ChannelBalance" in spec["components"]["schemas"]
            assert "balance_alert_below_micro" in spec["components"]["schemas"]["ChannelCreate"]["properties"]
    finally:
        gw.stop()
