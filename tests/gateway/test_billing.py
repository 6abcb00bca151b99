"""Accounting end to end: the config shape, exact charges, holds, refusals in each client's
envelope, limits, and the policy for failed and cut-short requests."""

from __future__ import annotations

import asyncio
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support.gateway import GatewayProcess, start_gateway, wait_record
from tests.support.procs import SimHandle

ALICE = "sk-alice-0123456789abcdef"
MSG = [{"role": "user", "content": "what does a gateway cost"}]

# The issue's config shape, exactly as written there (only the channel points at the simulator).
ISSUE_CONFIG = """
groups:
  - {name: default, multiplier: 1.0}
users:
  - name: alice
    group: default
    initial_balance_usd: 0.50      # applied once, as a ledger entry, on first start
prices:                            # USD per 1M tokens; media units per image / second / call
  gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}
tokens:
  - name: alice-key
    user: alice
    key: sk-alice-0123456789abcdef
    daily_cap_usd: 1.00
    rpm: 600
"""


def billing_config(
    sim: SimHandle,
    *,
    balance: str = "0.50",
    user: dict[str, Any] | None = None,
    token: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "channels": [
            {
                "name": "main",
                "type": "openai",
                "base_url": sim.base_url,
                "keys": ["key-a"],
                "models": ["gpt-4o-mini", "unpriced-model"],
            },
            {"name": "broken", "base_url": sim.base_url, "keys": ["fault-500"], "models": ["broken-model"]},
            {
                "name": "flaky",
                "base_url": sim.base_url,
                "keys": ["fault-500_flaky", "key-f"],
                "models": ["flaky-model"],
            },
            {
                "name": "cut",
                "base_url": sim.base_url,
                "keys": ["fault-drop-mid-stream-n6"],
                "models": ["cut-model"],
            },
        ],
        "groups": [{"name": "default", "multiplier": 1.0}],
        "users": [{"name": "alice", "group": "default", "initial_balance_usd": balance, **(user or {})}],
        "prices": {
            "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
            "broken-model": {"input": 1, "output": 1},
            "flaky-model": {"input": 1, "output": 1},
            "cut-model": {"input": 1.0, "output": 2.0},
        },
        "tokens": [{"name": "alice-key", "user": "alice", "key": ALICE, **(token or {})}],
        "usage": {"flush_interval_ms": 50},
        **extra,
    }


def expected_cost(usage: Any, input_rate: str, output_rate: str, cached_rate: str) -> int:
    """The test's own arithmetic, in decimal: USD per 1M tokens → micro-USD, halves up."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    total = (
        (usage.prompt_tokens - cached) * Decimal(input_rate)
        + cached * Decimal(cached_rate)
        + usage.completion_tokens * Decimal(output_rate)
    )  # USD per 1M tokens × tokens = micro-USD
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def user_of(gw: GatewayProcess, name: str = "alice") -> dict[str, Any]:
    with gw.admin() as admin:
        return next(u for u in admin.get("/api/users").json() if u["name"] == name)


def ledger_of(gw: GatewayProcess, user_id: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after: int | None = None
    with gw.admin() as admin:
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
            page = admin.get(f"/api/users/{user_id}/ledger", params=params).json()
            entries += page["data"]
            if not page["has_more"]:
                return entries
            after = page["next_after"]


def settled_balance(gw: GatewayProcess, expect: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        user = user_of(gw)
        if user["balance_micro_usd"] == expect or time.monotonic() > deadline:
            return user
        time.sleep(0.05)


def test_the_issue_config_charges_exactly_and_applies_the_initial_balance_once(
    sim: SimHandle, tmp_path: Path
) -> None:
    config = yaml.safe_load(ISSUE_CONFIG)
    config["channels"] = [
        {
            "name": "main",
            "type": "openai",
            "base_url": sim.base_url,
            "keys": ["key-a"],
            "models": ["gpt-4o-mini"],
        }
    ]
    config["usage"] = {"flush_interval_ms": 50}
    gw = start_gateway(tmp_path, config)
    try:
        alice = user_of(gw)
        assert alice["balance_micro_usd"] == 500_000 and alice["available_micro_usd"] == 500_000
        client = openai.OpenAI(base_url=gw.base_url, api_key=ALICE, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MSG, max_tokens=50
        )
        reply = raw.parse()
        cost = expected_cost(reply.usage, "0.15", "0.60", "0.075")
        assert cost > 0
        rec = wait_record(gw, raw.headers["x-request-id"])
        assert rec["cost_micro_usd"] == cost and rec["unbilled_micro_usd"] == 0
        assert rec["reserved_micro_usd"] >= cost and rec["user_id"] == alice["id"]
        assert rec["price"] == {"input": 150_000, "output": 600_000, "cached_input": 75_000}
        assert rec["multiplier_ppm"] == 1_000_000 and rec["usage_estimated"] is False
        alice = settled_balance(gw, 500_000 - cost)
        assert alice["balance_micro_usd"] == 500_000 - cost == alice["available_micro_usd"]
        entries = ledger_of(gw, alice["id"])
        assert [(e["kind"], e["amount_micro_usd"]) for e in entries] == [
            ("charge", -cost),
            ("initial", 500_000),
        ]
        assert entries[0]["request_id"] == raw.headers["x-request-id"]
        me = httpx.get(gw.url + "/api/me", headers={"Authorization": f"Bearer {ALICE}"}).json()
        assert me["user"]["name"] == "alice" and me["user"]["balance_micro_usd"] == 500_000 - cost
        assert me["spend"]["token_daily"] == {"cap_micro_usd": 1_000_000, "spent_micro_usd": cost}
        assert me["token"]["limits"]["rpm"] == 600 and [t["name"] for t in me["tokens"]] == ["alice-key"]
        assert me["usage"][-1]["requests"] == 1 and me["usage"][-1]["cost_micro_usd"] == cost
    finally:
        gw.stop()
    again = start_gateway(tmp_path, config)  # same database: the initial balance is not applied twice
    try:
        entries = ledger_of(again, user_of(again)["id"])
        assert [e["kind"] for e in entries] == ["charge", "initial"]
        assert user_of(again)["available_micro_usd"] == 500_000 - cost
    finally:
        again.stop()


def test_insufficient_balance_is_402_in_each_clients_envelope_until_a_top_up(
    sim: SimHandle, tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, billing_config(sim, balance="0.000100"))  # 100 micro-USD
    try:
        big = 10_000  # 10,000 output tokens at $0.60/1M hold 6,000 micro-USD
        with pytest.raises(openai.APIStatusError) as oa:
            openai.OpenAI(base_url=gw.base_url, api_key=ALICE, max_retries=0).chat.completions.create(
                model="gpt-4o-mini", messages=MSG, max_tokens=big
            )
        assert oa.value.status_code == 402
        err = oa.value.body
        assert isinstance(err, dict) and err["code"] == "insufficient_balance"
        assert err["type"] == "insufficient_quota" and "balance of user 'alice'" in err["message"]
        with pytest.raises(anthropic.APIStatusError) as an:
            anthropic.Anthropic(base_url=gw.url, api_key=ALICE, max_retries=0).messages.create(
                model="gpt-4o-mini", max_tokens=big, messages=[{"role": "user", "content": "hi"}]
            )
        assert an.value.status_code == 402
        assert an.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
        client = genai.Client(
            api_key=ALICE, http_options=genai_types.HttpOptions(base_url=gw.url, api_version="v1beta")
        )
        with pytest.raises(genai_errors.APIError) as gm:
            client.models.generate_content(
                model="gpt-4o-mini",
                contents="hi",
                config=genai_types.GenerateContentConfig(max_output_tokens=big),
            )
        assert gm.value.code == 402 and gm.value.status == "RESOURCE_EXHAUSTED"
        # A small request fits the balance.
        ok = openai.OpenAI(base_url=gw.base_url, api_key=ALICE, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=MSG, max_tokens=5
        )
        assert ok.choices[0].message.content
        alice = user_of(gw)
        with gw.admin() as admin:
            top = admin.post(
                f"/api/users/{alice['id']}/topup", json={"amount_micro_usd": 1_000_000, "note": "card"}
            )
            assert top.status_code == 201 and top.json()["kind"] == "topup"
            bad = admin.post(f"/api/users/{alice['id']}/topup", json={"amount_micro_usd": 0})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "amount_micro_usd"
        big_ok = openai.OpenAI(base_url=gw.base_url, api_key=ALICE, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=MSG, max_tokens=big
        )
        assert big_ok.usage is not None and big_ok.usage.completion_tokens > 0
    finally:
        gw.stop()


def test_token_and_user_limits_refuse_with_the_limit_named(sim: SimHandle, tmp_path: Path) -> None:
    config = billing_config(
        sim,
        token={"rpm": 3, "ip_allow": ["127.0.0.0/8"]},
        user={"tpm": 100_000},
    )
    config["users"].append({"name": "bob", "initial_balance_usd": 1})
    config["tokens"] += [
        {"name": "bob-far", "user": "bob", "key": "sk-bob-far-0123456789ab", "ip_allow": ["10.0.0.0/8"]},
        {"name": "bob-quota", "user": "bob", "key": "sk-bob-quota-0123456789", "quota_usd": 0.00002},
        {"name": "bob-tpm", "user": "bob", "key": "sk-bob-tpm-0123456789ab", "tpm": 15},
    ]
    gw = start_gateway(tmp_path, config)
    try:

        def ask(key: str, **kw: Any) -> httpx.Response:
            body = {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 5, **kw}
            auth = {"Authorization": f"Bearer {key}"}
            return httpx.post(gw.base_url + "/chat/completions", json=body, headers=auth, timeout=10)

        assert [ask(ALICE).status_code for _ in range(3)] == [200, 200, 200]
        limited = ask(ALICE)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert "requests-per-minute limit of token 'alice-key'" in limited.json()["error"]["message"]

        far = ask("sk-bob-far-0123456789ab")
        assert far.status_code == 403 and far.json()["error"]["code"] == "ip_not_allowed"

        quota = [ask("sk-bob-quota-0123456789") for _ in range(6)]
        assert quota[0].status_code == 200  # a 5-token request holds ~12 micro-USD of the 20
        assert quota[-1].status_code == 402 and quota[-1].json()["error"]["code"] == "spend_cap_reached"
        assert "quota of token 'bob-quota'" in quota[-1].json()["error"]["message"]

        first = ask("sk-bob-tpm-0123456789ab")  # over 15 tokens used: the next one waits
        assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 15
        over = ask("sk-bob-tpm-0123456789ab")
        assert over.status_code == 429 and "tokens-per-minute limit of token 'bob-tpm'" in over.text
    finally:
        gw.stop()


def test_unpriced_models_and_concurrency(sim: SimHandle, tmp_path: Path) -> None:
    config = billing_config(sim, token={"max_concurrency": 1})
    config["channels"].append(
        {
            "name": "slow",
            "base_url": sim.base_url,
            "keys": ["fault-slow-first-byte-ms800"],
            "models": ["slow-model"],
        }
    )
    config["prices"]["slow-model"] = {"input": 1, "output": 1}
    gw = start_gateway(tmp_path, config)
    try:
        headers = {"Authorization": f"Bearer {ALICE}"}
        body = {"model": "unpriced-model", "messages": MSG}
        unpriced = httpx.post(gw.base_url + "/chat/completions", headers=headers, timeout=10, json=body)
        assert unpriced.status_code == 403 and unpriced.json()["error"]["code"] == "model_not_priced"

        async def both() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=10) as client:
                slow = asyncio.create_task(
                    client.post(
                        "/chat/completions", json={"model": "slow-model", "messages": MSG, "max_tokens": 5}
                    )
                )
                await asyncio.sleep(0.3)
                second = await client.post(
                    "/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 5}
                )
                return [await slow, second]

        slow, second = asyncio.run(both())
        assert slow.status_code == 200
        assert second.status_code == 429 and "concurrent request limit of token 'alice-key'" in second.text
        body = {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 5}
        after = httpx.post(gw.base_url + "/chat/completions", headers=headers, timeout=10, json=body)
        assert after.status_code == 200  # the slot came back
    finally:
        gw.stop()


def test_no_charge_before_the_first_byte_and_a_cut_stream_pays_for_what_it_got(
    sim: SimHandle, tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, billing_config(sim))
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=ALICE, max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.with_raw_response.create(model="broken-model", messages=MSG, max_tokens=5)
        rid = failed.value.response.headers["x-request-id"]
        rec = wait_record(gw, rid)
        assert rec["status"] >= 500 and rec["cost_micro_usd"] == 0 and rec["reserved_micro_usd"] > 0

        raw = client.chat.completions.with_raw_response.create(
            model="cut-model", messages=MSG, max_tokens=200, stream=True
        )
        contents: list[str] = []
        with pytest.raises(openai.APIError):
            for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    contents.append(chunk.choices[0].delta.content)
        rec = wait_record(gw, raw.headers["x-request-id"])
        assert rec["usage_estimated"] is True and rec["error_kind"] == "upstream_stream_broken"
        assert rec["completion_tokens"] == len(contents) > 0
        # prompt estimate at $1/1M + one token per content chunk at $2/1M, halves up
        expect = int(
            (Decimal(rec["prompt_tokens"]) * 1 + Decimal(len(contents)) * 2).quantize(
                Decimal(1), ROUND_HALF_UP
            )
        )
        assert rec["cost_micro_usd"] == expect <= rec["reserved_micro_usd"]
        alice = settled_balance(gw, 500_000 - expect)
        charges = [e for e in ledger_of(gw, alice["id"]) if e["kind"] == "charge"]
        assert [(c["request_id"], c["amount_micro_usd"]) for c in charges] == [
            (raw.headers["x-request-id"], -expect)
        ]  # nothing for the request that failed before its first byte
        # Failed over: only the attempt that answered carries a cost.
        ids = [
            client.chat.completions.with_raw_response.create(
                model="flaky-model", messages=MSG, max_tokens=5
            ).headers["x-request-id"]
            for _ in range(2)
        ]
        chained = [r for r in (wait_record(gw, i) for i in ids) if r["attempts"]]
        assert chained
        for r in chained:
            costs = {a["outcome"]: a["cost_micro_usd"] for a in r["attempts"]}
            assert costs == {"failed": 0, "won": r["cost_micro_usd"]} and r["cost_micro_usd"] > 0
        # An administrator gives the cut stream's charge back, once.
        with gw.admin() as admin:
            before = user_of(gw)["available_micro_usd"]
            cut_id = raw.headers["x-request-id"]
            refund = admin.post(f"/api/usage/{cut_id}/refund", json={"note": "cut short"})
            assert refund.status_code == 201 and refund.json()["kind"] == "refund"
            assert refund.json()["amount_micro_usd"] == expect and refund.json()["request_id"] == cut_id
            assert user_of(gw)["available_micro_usd"] == before + expect
            assert admin.post(f"/api/usage/{cut_id}/refund", json={}).status_code == 409
            assert admin.post(f"/api/usage/{rid}/refund", json={}).status_code == 404  # never charged
        entries = ledger_of(gw, alice["id"])
        assert sum(e["amount_micro_usd"] for e in entries) == user_of(gw)["balance_micro_usd"]
    finally:
        gw.stop()


def test_prices_and_group_multipliers_edited_through_the_api(sim: SimHandle, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, billing_config(sim))
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=ALICE, max_retries=0)

        def charge() -> tuple[int, Any]:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MSG, max_tokens=8
            )
            return wait_record(gw, raw.headers["x-request-id"])["cost_micro_usd"], raw.parse().usage

        with gw.admin() as admin:
            listed = {p["model"]: p for p in admin.get("/api/prices").json()}
            assert listed["gpt-4o-mini"]["source"] == "config" and listed["gpt-4o"]["source"] == "default"
            assert listed["gpt-4o"]["price"]["input"] == 2_500_000
            put = admin.put("/api/prices/gpt-4o-mini", json={"input": 10_000_000, "output": 20_000_000})
            assert put.status_code == 200 and put.json()["source"] == "api"
            cost, usage = charge()
            assert cost == round(usage.prompt_tokens * 10 + usage.completion_tokens * 20)
            group = admin.put("/api/groups/default", json={"multiplier_ppm": 500_000})
            assert group.status_code == 200 and group.json()["multiplier_ppm"] == 500_000
            half, usage = charge()
            exact = Decimal(usage.prompt_tokens * 10 + usage.completion_tokens * 20) / 2
            assert half == int(exact.quantize(Decimal(1), ROUND_HALF_UP))
            bad = admin.put("/api/prices/gpt-4o-mini", json={"input": -1})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
            assert admin.delete("/api/prices/gpt-4o").status_code == 404  # a default, not a set price
            assert admin.delete("/api/prices/gpt-4o-mini").status_code == 204
            listed = {p["model"]: p for p in admin.get("/api/prices").json()}
            assert (
                listed["gpt-4o-mini"]["source"] == "default"
                and listed["gpt-4o-mini"]["price"]["input"] == 150_000
            )
            users = admin.get("/api/users").json()
            alice = users[0]
            patched = admin.patch(
                f"/api/users/{alice['id']}", json={"balance_micro_usd": 42, "enabled": True}
            )
            assert patched.status_code == 200 and patched.json()["balance_micro_usd"] == 42
            assert patched.json()["available_micro_usd"] == 42
            kinds = [e["kind"] for e in admin.get(f"/api/users/{alice['id']}/ledger").json()["data"]]
            assert kinds[0] == "adjustment"
    finally:
        gw.stop()
