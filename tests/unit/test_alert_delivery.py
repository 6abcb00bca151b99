"""Webhook delivery of alerts around a worker's start, on the real store."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from vectorengine.alerts import AlertWatch
from vectorengine.billing.meter import MemoryMeter
from vectorengine.settings import AlertsConfig, Webhook
from vectorengine.store.repository import Store
from vectorengine.store.snapshot import SnapshotHolder

HOOK = Webhook(url="http://127.0.0.1:9/alerts", secret="s" * 16)


class _Answer:
    status = 200


class _Receiver:
    """The webhook's side of the transport: records each alert it is sent, answering once
    ``gate`` is open."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[dict[str, Any]] = []

    async def send(self, method: str, url: str, headers: Any, body: bytes, **_: Any) -> _Answer:
        self.sent.append(orjson.loads(body))
        await self.gate.wait()
        return _Answer()


async def _watch(store: Store, receiver: _Receiver) -> AlertWatch:
    snapshots = SnapshotHolder(store, 60.0, {})
    await snapshots.load()
    return AlertWatch(AlertsConfig(webhooks=[HOOK]), store, snapshots, MemoryMeter(), receiver, "UTC")  # type: ignore[arg-type]


async def test_an_alert_raised_while_the_watch_starts_is_sent_once(store: Store) -> None:
    receiver = _Receiver()
    watch = await _watch(store, receiver)
    # The balance poller starts beside the watch and may raise before the watch has read the
    # alerts left undelivered; this one's delivery is still waiting for the webhook.
    await watch.raise_alert("upstream_balance_low", "channel:1#0", "low", {"dedupe": "b:1:0"})
    await watch.resume()  # what run() does first
    receiver.gate.set()
    await watch.drain()
    assert [a["subject"] for a in receiver.sent] == ["channel:1#0"]
    rows = await store.alerts.recent(0)
    assert [(r["delivered"], r["delivery_attempts"]) for r in rows] == [(True, 1)]


async def test_an_alert_a_stopped_process_left_undelivered_is_sent_at_start(store: Store) -> None:
    now_ms = int(time.time() * 1000)
    row = {"created_at": now_ms - 60_000, "kind": "anomaly", "subject": "token:7", "message": "m",
           "data": {}, "delivered": False, "delivery_attempts": 2, "dedupe": None}  # fmt: skip
    alert_id = await store.alerts.insert(row)
    receiver = _Receiver()
    receiver.gate.set()
    watch = await _watch(store, receiver)
    await watch.resume()  # what run() does first
    await watch.drain()
    assert [(a["id"], a["subject"]) for a in receiver.sent] == [(alert_id, "token:7")]
    rows = await store.alerts.recent(0)
    assert [(r["delivered"], r["delivery_attempts"]) for r in rows] == [(True, 3)]
