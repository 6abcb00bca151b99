"""Alerts to a local webhook receiver (signed, retried), redemption codes, CSV export, rollups."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.test_billing import ALICE, MSG, billing_config, ledger_of, user_of
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import SimHandle

SECRET = "whsec-test-0123456789abcdef"


class Receiver:
    """A webhook endpoint that refuses the first ``fail_first`` deliveries of each alert with 500."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.attempts: list[tuple[dict[str, str], bytes]] = []
        self.tries: dict[int, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.attempts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    alert_id = json.loads(body)["id"]
                    receiver.tries[alert_id] = receiver.tries.get(alert_id, 0) + 1
                    failing = receiver.tries[alert_id] <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered(self) -> list[dict[str, Any]]:
        """Alerts the receiver accepted, each checked against its signature."""
        out = []
        seen: dict[int, int] = {}
        with self.lock:
            attempts = list(self.attempts)
        for headers, body in attempts:
            fields = dict(part.split("=", 1) for part in headers["x-vectorengine-signature"].split(","))
            expect = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(fields["v1"], expect), "bad signature"
            assert abs(int(fields["t"]) - time.time()) < 300
            alert = json.loads(body)
            seen[alert["id"]] = seen.get(alert["id"], 0) + 1
            if seen[alert["id"]] > self.fail_first:
                out.append(alert)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def wait_for(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def ask(gw: GatewayProcess, key: str = ALICE, **kw: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 5, **kw}
    auth = {"Authorization": f"Bearer {key}"}
    return httpx.post(gw.base_url + "/chat/completions", json=body, headers=auth, timeout=10)


def test_alerts_reach_the_webhook_signed_and_retried(
    sim: SimHandle, tmp_path: Path, receiver: Receiver
) -> None:
    alerts = {
        "webhooks": [{"url": receiver.url, "secret": SECRET}],
        "retry_base_s": 0.05,
        "cap_thresholds": [0.25, 0.5],
        "balance_below_usd": 0.49999,
        "auth_failures_per_minute": 10,
        "anomaly_factor": 2,
        "anomaly_min_requests": 6,
        "anomaly_min_spend_usd": 1,
    }
    config = billing_config(sim, token={"daily_cap_usd": 0.00003}, alerts=alerts)
    config["tokens"].append(
        {"name": "bot", "key": "sk-bot-0123456789abcdef", "suspend_on_anomaly": True, "rpm": 1000}
    )
    config["channels"].append(
        {
            "name": "paid",
            "base_url": sim.base_url,
            "keys": ["fault-insufficient-quota_a", "key-p"],
            "models": ["paid-model"],
        }
    )
    config["prices"]["paid-model"] = {"input": 1, "output": 1}
    gw = start_gateway(tmp_path, config)
    try:
        statuses = [ask(gw).status_code for _ in range(10)]
        assert statuses[0] == 200 and statuses[-1] == 402  # the 30 micro-USD daily cap ran out
        bad = [ask(gw, key="sk-wrong-key-0000000000000") for _ in range(12)]
        assert all(r.status_code == 401 for r in bad)
        assert [ask(gw, key="sk-bot-0123456789abcdef", model="paid-model").status_code for _ in range(2)] == [
            200,
            200,
        ]  # the key whose provider balance ran out is taken out of service, invisibly
        bot = [ask(gw, key="sk-bot-0123456789abcdef").status_code for _ in range(20)]
        assert bot[0] == 200 and bot[-1] == 401  # suspended by the anomaly alert

        def kinds() -> list[str]:
            return sorted(a["kind"] for a in receiver.delivered())

        want = [
            "anomaly",
            "auth_failures",
            "balance_low",
            "cap_threshold",
            "cap_threshold",
            "token_suspended",
            "upstream_key_disabled",
        ]
        assert wait_for(lambda: kinds() == want), kinds()
        got = {(a["kind"], a["data"].get("threshold")): a for a in receiver.delivered()}
        assert got[("cap_threshold", 0.25)]["subject"].startswith("token:")
        assert "daily spend cap" in got[("cap_threshold", 0.5)]["message"]
        assert got[("balance_low", None)]["data"]["threshold_micro_usd"] == 499_990
        assert got[("auth_failures", None)]["subject"] == "ip:127.0.0.1"
        upstream = got[("upstream_key_disabled", None)]
        assert upstream["subject"].endswith("#0") and "channel 'paid'" in upstream["message"]
        assert upstream["data"]["reason"].startswith("billing")
        with gw.admin() as admin:
            listed = admin.get("/api/alerts").json()["data"]
            assert sorted(a["kind"] for a in listed) == want
            # each: refused twice with 500, retried with backoff, then accepted
            assert all(a["delivered"] is True and a["delivery_attempts"] == 3 for a in listed)
            assert admin.get("/api/alerts", params={"kind": "anomaly"}).json()["data"][0]["kind"] == "anomaly"
            bot_token = next(t for t in admin.get("/api/tokens").json() if t["name"] == "bot")
            assert bot_token["enabled"] is False
    finally:
        gw.stop()


def test_redemption_codes_csv_export_and_rollups(sim: SimHandle, tmp_path: Path) -> None:
    config = billing_config(sim)
    config["tokens"].append({"name": "nobody", "key": "sk-nobody-0123456789ab"})
    gw = start_gateway(tmp_path, config)
    try:
        with gw.admin() as admin:
            made = admin.post(
                "/api/redemption-codes", json={"count": 3, "value_micro_usd": 250_000, "batch": "promo"}
            )
            assert made.status_code == 201
            codes = made.json()["codes"]
            assert len(set(codes)) == 3 and all(len(c) > 30 for c in codes)
            past = admin.post(
                "/api/redemption-codes",
                json={"count": 1, "value_micro_usd": 1, "batch": "old", "expires_at": int(time.time()) - 10},
            ).json()["codes"][0]

        def redeem(code: str, key: str = ALICE) -> httpx.Response:
            return httpx.post(
                gw.url + "/api/redeem", json={"code": code}, headers={"Authorization": f"Bearer {key}"}
            )

        ok = redeem(codes[0])
        assert (
            ok.status_code == 201
            and ok.json()["kind"] == "redemption"
            and ok.json()["amount_micro_usd"] == 250_000
        )
        again = redeem(codes[0])
        assert again.status_code == 409 and "already been redeemed" in again.json()["error"]["message"]
        assert redeem("ve-redeem-nonexistent-code").status_code == 404
        expired = redeem(past)
        assert expired.status_code == 409 and "expired" in expired.json()["error"]["message"]
        assert redeem(codes[1], key="sk-nobody-0123456789ab").status_code == 400
        assert redeem(codes[1], key="sk-wrong-0000000000000").status_code == 401
        alice = user_of(gw)
        assert alice["balance_micro_usd"] == 750_000 == alice["available_micro_usd"]
        with gw.admin() as admin:
            listed = admin.get("/api/redemption-codes", params={"batch": "promo"}).json()
            assert [c["redeemed_by"] for c in listed] == [alice["id"], None, None]
            assert all(
                "code_hash" not in c and c["code_hint"].endswith(codes[i][-4:]) for i, c in enumerate(listed)
            )

        t0 = time.time() - 1
        answers = [ask(gw) for _ in range(5)] + [ask(gw, key="sk-nobody-0123456789ab")]
        assert all(r.status_code == 200 for r in answers)

        def charges() -> list[dict[str, Any]]:
            return [e for e in ledger_of(gw, alice["id"]) if e["kind"] == "charge"]

        assert wait_for(lambda: len(charges()) == 5)
        charged = -sum(e["amount_micro_usd"] for e in charges())
        with gw.admin() as admin:
            export = admin.get("/api/usage.csv", params={"since": t0, "until": time.time() + 1})
            assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(export.text)))
            assert [r["request_id"] for r in rows] == [a.headers["x-request-id"] for a in answers]
            billed = [r for r in rows if r["user_id"] == str(alice["id"])]
            assert sum(int(r["cost_micro_usd"]) for r in billed) == charged > 0
            assert all(
                r["input_per_1m_micro_usd"] == "150000" and r["multiplier_ppm"] == "1000000" for r in rows
            )
            assert (
                rows[-1]["user_id"] == "" and int(rows[-1]["cost_micro_usd"]) > 0
            )  # priced, billed to nobody
            missing = admin.get("/api/usage.csv", params={"since": t0})
            assert missing.status_code == 400
            today = time.strftime("%Y%m%d", time.gmtime())
            roll = admin.get("/api/rollups/daily", params={"since": today, "until": today}).json()
            mine = [r for r in roll if r["user_id"] == alice["id"]]
            assert sum(r["requests"] for r in mine) == 5 and sum(r["cost_micro_usd"] for r in mine) == charged
            bad_day = admin.get("/api/rollups/daily", params={"since": "2026-12-01"})
            assert bad_day.status_code == 400 and bad_day.json()["error"]["param"] == "since"
    finally:
        gw.stop()


@pytest.mark.postgres
def test_workers_sharing_redis_raise_each_alert_once_and_add_up_auth_failures(
    sim: SimHandle, tmp_path: Path, receiver: Receiver
) -> None:
    """Three workers watch the same caps and see the same failures: each threshold is raised
    once (the first worker to store its key wins), and failures spread over the workers add up
    to the per-address limit."""
    from tests.gateway.test_ledger import wait_workers
    from tests.support.databases import postgres_database, redis_url

    alerts = {
        "webhooks": [{"url": receiver.url, "secret": SECRET}],
        "retry_base_s": 0.05,
        "cap_thresholds": [0.25, 0.5],
        "auth_failures_per_minute": 9,
    }
    with postgres_database() as url:
        config = billing_config(
            sim, token={"daily_cap_usd": 0.0003}, alerts=alerts, database=url, redis=redis_url(), workers=3
        )
        gw = start_gateway(tmp_path, config, wait=60)
        try:
            wait_workers(gw, 3)
            # Each request on a new connection: the kernel spreads them over the workers. Go on
            # until the cap runs out; every worker must have served paid requests by then.
            answers = [ask(gw)]
            while answers[-1].status_code == 200 and len(answers) < 300:
                answers.append(ask(gw))
            assert answers[0].status_code == 200 and answers[-1].status_code == 402
            paid_by = {r.headers["x-request-id"][:14] for r in answers if r.status_code == 200}
            assert len(paid_by) == 3  # all workers took part, each seeing the caps fill up
            bad = [ask(gw, key="sk-wrong-key-0000000000000") for _ in range(9)]
            assert {r.status_code for r in bad} == {401}
            assert len({r.headers["x-request-id"][:14] for r in bad}) > 1  # spread over workers

            def kinds() -> list[str]:
                return sorted(a["kind"] for a in receiver.delivered())

            want = ["auth_failures", "cap_threshold", "cap_threshold"]
            assert wait_for(lambda: kinds() == want), kinds()
            time.sleep(1.0)  # time for a duplicate to show up, were one on its way
            assert kinds() == want
            thresholds = sorted(
                a["data"]["threshold"] for a in receiver.delivered() if a["kind"] == "cap_threshold"
            )
            assert thresholds == [0.25, 0.5]
            with gw.admin() as admin:
                assert sorted(a["kind"] for a in admin.get("/api/alerts").json()["data"]) == want
        finally:
            gw.stop()
