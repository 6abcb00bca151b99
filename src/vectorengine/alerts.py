"""Alerts: thresholds and anomalies seen in the usage records, stored and sent to webhooks.

The relay hands every usage record to :meth:`AlertWatch.put` (a deque append, nothing more); a
background task reads them and checks:

* spend caps (daily, monthly, a token's quota) crossing each of ``cap_thresholds``, once per
  cap, period and threshold;
* a user's live balance falling below ``balance_below_usd`` (again only after it rose above);
* anomalies: a token's requests or spend in the last five minutes above ``anomaly_factor`` ×
  its average over the hour before (with floors, so a quiet key's first requests are not
  anomalies); a token with ``suspend_on_anomaly`` is disabled at once;
* bursts of authentication failures from one address;
* an upstream key taken out of service for its credentials or billing (the provider says the
  key is invalid, or its balance or quota is exhausted).

The provider balance poller (:mod:`vectorengine.routing.balance`) raises ``upstream_balance_low``
through :meth:`AlertWatch.raise_alert`.

Each alert is a row in the ``alerts`` table, then a POST to every webhook with an HMAC-SHA256
signature, retried with exponential backoff until it is delivered or ``max_attempts`` is spent.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import orjson

from vectorengine.billing.accountant import Periods, quota_key, spend_keys
from vectorengine.billing.meter import Meter
from vectorengine.billing.money import to_micro, usd
from vectorengine.routing.health import HealthBoard, State
from vectorengine.settings import AlertsConfig
from vectorengine.store.records import Token, UsageRecord, User
from vectorengine.store.repository import Store
from vectorengine.store.snapshot import SnapshotHolder
from vectorengine.upstreams.transport import Transport

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-vectorengine-signature"  # "t=<unix seconds>,v1=<hex HMAC-SHA256 of 't.body'>"
_AUTH_FAILURES = {"invalid_api_key", "missing_api_key", "key_disabled", "key_expired"}
_MINUTE = 60
UPSTREAM_CHECK_S = 2.0  # how often upstream keys' health is looked at
# Queued records are checked on a tick, not on a wake-up per record: at a few hundred requests
# per second a wake-up each would cost every request an event-loop round of its own.
TICK_S = 0.2


class Alert(msgspec.Struct, kw_only=True):
    id: int = 0
    created_at: int
    kind: str  # cap_threshold | balance_low | anomaly | auth_failures | token_suspended | upstream_…
    subject: str  # token:7, user:3, ip:192.0.2.1
    message: str
    data: dict[str, Any]
    delivered: bool = False
    delivery_attempts: int = 0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class _Rate:
    """Per-minute counts over the last hour (requests and spend) of one token, with running
    totals, so comparing the last five minutes with the rest costs a handful of operations."""

    __slots__ = ("minutes", "requests", "spend")

    def __init__(self) -> None:
        self.minutes: collections.deque[list[int]] = collections.deque()  # [minute, requests, spend]
        self.requests = self.spend = 0  # over the whole deque

    def add(self, minute: int, requests: int, spend: int) -> None:
        if self.minutes and self.minutes[-1][0] == minute:
            self.minutes[-1][1] += requests
            self.minutes[-1][2] += spend
        else:
            self.minutes.append([minute, requests, spend])
        self.requests += requests
        self.spend += spend
        while self.minutes[0][0] <= minute - 60:
            _, r, sp = self.minutes.popleft()
            self.requests -= r
            self.spend -= sp

    def windows(self, minute: int) -> tuple[int, int, float, float]:
        """Requests and spend in the last 5 minutes; the average per 5 minutes of the 55 before."""
        recent_r = recent_s = 0
        for m, r, sp in reversed(self.minutes):
            if m <= minute - 5:
                break
            recent_r, recent_s = recent_r + r, recent_s + sp
        return recent_r, recent_s, (self.requests - recent_r) / 11, (self.spend - recent_s) / 11


class AlertWatch:
    def __init__(
        self,
        cfg: AlertsConfig,
        store: Store,
        snapshots: SnapshotHolder,
        meter: Meter,
        transport: Transport,
        timezone: str,
        health: HealthBoard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._health = health
        self.cfg = cfg
        self._balance_below = to_micro(cfg.balance_below_usd) if cfg.balance_below_usd is not None else None
        self._min_spend = to_micro(cfg.anomaly_min_spend_usd)
        self._store = store
        self._snapshots = snapshots
        self._meter = meter
        self._transport = transport
        self._periods = Periods(timezone)
        self._clock = clock
        self._queue: collections.deque[UsageRecord] = collections.deque()
        self._fired: set[str] = set()  # dedupe keys of alerts already raised
        self._low: set[int] = set()  # users whose balance is below the threshold (alerted)
        self._rates: dict[int, _Rate] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        self._started_ms = int(clock() * 1000)  # older undelivered alerts are sent again (resume)

    def put(self, rec: UsageRecord) -> None:
        self._queue.append(rec)

    async def resume(self) -> None:
        """Take over from a stopped process: the alerts already raised (not raised again) and
        those it left undelivered (sent again). Only those from before this watch started: one
        raised since (by the balance poller, which starts beside it) is on its way already,
        and would otherwise be sent twice."""
        self._fired |= await self._store.alerts.dedupe_keys()
        for row in await self._store.alerts.undelivered(self._started_ms):
            self._deliver(msgspec.convert(row, Alert))

    async def run(self) -> None:
        await self.resume()
        loop = asyncio.get_running_loop()
        upstream_due = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            if loop.time() >= upstream_due:
                upstream_due = loop.time() + UPSTREAM_CHECK_S
                try:
                    await self._upstream_keys()
                except Exception:  # the database may be down for a moment: the next round retries
                    log.exception("checking upstream keys for alerts failed")
            await self._check_queued()

    async def drain(self) -> None:
        """Check everything queued and wait for deliveries in flight (tests, shutdown)."""
        await self._check_queued()
        if self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    # -- rules -----------------------------------------------------------------------------------

    async def _check_queued(self) -> None:
        """The records queued since the last tick: counted per token first, then each rule runs
        once per token (and user) that had records, against the state after all of them."""
        now = self._clock()
        minute = int(now // _MINUTE)
        snap = self._snapshots.current
        counts: dict[int, list[int]] = {}  # token id → [requests, spend]
        paying: set[int] = set()  # tokens that spent something
        users: set[int] = set()  # users who spent something
        queue = self._queue
        while queue:
            rec = queue.popleft()
            if rec.error_kind in _AUTH_FAILURES:
                if rec.client_ip:
                    await self._guarded(self._auth_failure(rec.client_ip, minute), rec.request_id)
                continue
            if rec.token_id is None:
                continue
            count = counts.get(rec.token_id)
            if count is None:
                count = counts[rec.token_id] = [0, 0]
            count[0] += 1
            if rec.cost_micro_usd > 0:
                count[1] += rec.cost_micro_usd
                paying.add(rec.token_id)
                if rec.user_id is not None:
                    users.add(rec.user_id)
        for token_id, (requests, spend) in counts.items():
            token = snap.tokens_by_id.get(token_id)
            if token is None:
                continue
            rate = self._rates.get(token_id)
            if rate is None:
                rate = self._rates[token_id] = _Rate()
            rate.add(minute, requests, spend)
            await self._guarded(self._anomaly(token, rate, minute), f"token {token_id}")
        if not paying:
            return
        p = self._periods.at(now)
        for token_id in paying:
            token = snap.tokens_by_id.get(token_id)
            if token is not None:
                await self._guarded(self._token_caps(token, p.day, p.month), f"token {token_id}")
        for user_id in users:
            user = snap.users.get(user_id)
            if user is not None:
                await self._guarded(self._user_money(user, p.day, p.month, minute), f"user {user_id}")

    async def _guarded(self, check: Awaitable[None], subject: str) -> None:
        try:
            await check
        except asyncio.CancelledError:
            raise
        except Exception:  # the meter or the database may be down for a moment
            log.exception("alert checks failed for %s", subject)

    async def _token_caps(self, token: Token, day: str, month: str) -> None:
        tl = token.limits
        if tl.daily_cap_micro_usd or tl.monthly_cap_micro_usd or token.quota_micro_usd:
            t_day, t_month = spend_keys("t", token.id, day, month)
            await self._caps(f"token:{token.id}", f"token '{token.name}'", (
                ("daily spend cap", t_day, tl.daily_cap_micro_usd),
                ("monthly spend cap", t_month, tl.monthly_cap_micro_usd),
                ("quota", quota_key(token.id), token.quota_micro_usd),
            ))  # fmt: skip

    async def _user_money(self, user: User, day: str, month: str, minute: int) -> None:
        u_day, u_month = spend_keys("u", user.id, day, month)
        if user.limits.daily_cap_micro_usd or user.limits.monthly_cap_micro_usd:
            await self._caps(
                f"user:{user.id}",
                f"user '{user.name}'",
                (
                    ("daily spend cap", u_day, user.limits.daily_cap_micro_usd),
                    ("monthly spend cap", u_month, user.limits.monthly_cap_micro_usd),
                ),
            )
        threshold = self._balance_below
        if threshold is None:
            return
        balance = await self._meter.balance(user.id)
        if balance is not None and balance < threshold and user.id not in self._low:
            self._low.add(user.id)
            await self._raise(
                "balance_low",
                f"user:{user.id}",
                f"The balance of user '{user.name}' is ${usd(balance)}, below ${usd(threshold)}.",
                {
                    "user_id": user.id,
                    "balance_micro_usd": balance,
                    "threshold_micro_usd": threshold,
                    # each worker sees the crossing: one alert per user and hour for all
                    "dedupe": f"balance:{user.id}:{minute // 60}",
                },
            )
        elif balance is not None and balance >= threshold:
            self._low.discard(user.id)

    async def _caps(self, subject: str, name: str, caps: tuple[tuple[str, str, int | None], ...]) -> None:
        for label, key, cap in caps:
            if not cap:
                continue
            spent = await self._meter.spent(key)
            for fraction in sorted(self.cfg.cap_thresholds):
                if spent < cap * fraction:
                    break
                dedupe = f"cap:{key}:{fraction:g}"
                if dedupe in self._fired:
                    continue
                self._fired.add(dedupe)
                await self._raise(
                    "cap_threshold",
                    subject,
                    f"{name} has used {spent / cap:.0%} of its {label} (${usd(spent)} of ${usd(cap)}).",
                    {
                        "cap": label,
                        "spent_micro_usd": spent,
                        "cap_micro_usd": cap,
                        "threshold": fraction,
                        "dedupe": dedupe,
                    },
                )

    async def _anomaly(self, token: Token, rate: _Rate, minute: int) -> None:
        recent_r, recent_s, base_r, base_s = rate.windows(minute)
        k = self.cfg.anomaly_factor
        too_many = recent_r > k * max(base_r, self.cfg.anomaly_min_requests)
        too_dear = recent_s > k * max(base_s, self._min_spend)
        if not (too_many or too_dear):
            return
        dedupe = f"anomaly:{token.id}:{minute // 60}"  # at most once an hour per token
        if dedupe in self._fired:
            return
        self._fired.add(dedupe)
        what = "requests" if too_many else "spend"
        data = {
            "token_id": token.id,
            "requests_5m": recent_r,
            "spend_5m_micro_usd": recent_s,
            "baseline_requests_5m": round(base_r, 2),
            "baseline_spend_5m_micro_usd": round(base_s, 2),
            "dedupe": dedupe,
        }
        raised = await self._raise(
            "anomaly",
            f"token:{token.id}",
            f"Token '{token.name}': {what} in the last 5 minutes are above {k:g}× its hourly baseline "
            f"({recent_r} requests, ${usd(recent_s)}).",
            data,
        )
        if raised and token.limits.suspend_on_anomaly and token.enabled:
            await self._store.update_token(token.id, {"enabled": False})
            await self._snapshots.load()
            await self._raise(
                "token_suspended",
                f"token:{token.id}",
                f"Token '{token.name}' was disabled automatically after an anomaly; re-enable it with "
                f"PATCH /api/tokens/{token.id}.",
                {"token_id": token.id},
            )

    async def _upstream_keys(self) -> None:
        if self._health is None:
            return
        channels = self._snapshots.current.channels
        for h in list(self._health):
            if h.state is not State.DISABLED:
                continue
            # Each worker disables a failing key on its own: one alert per key and hour for all.
            dedupe = f"upstream:{h.channel_id}:{h.key_index}:{h.since_ms // 3_600_000}"
            if dedupe in self._fired:
                continue
            self._fired.add(dedupe)
            ch = channels.get(h.channel_id)
            name = ch.name if ch is not None else str(h.channel_id)
            await self._raise(
                "upstream_key_disabled",
                f"channel:{h.channel_id}#{h.key_index}",
                f"Key #{h.key_index} of channel '{name}' is out of service until a probe succeeds or an "
                f"admin resets it: {h.reason}",
                {"channel_id": h.channel_id, "key_index": h.key_index, "reason": h.reason, "dedupe": dedupe},
            )

    async def _auth_failure(self, ip: str, minute: int) -> None:
        # Counted in the meter, so failures spread over several workers add up (Redis).
        failures = await self._meter.bump(f"authfail:{ip}:{minute}", 2 * _MINUTE)
        if failures < self.cfg.auth_failures_per_minute:
            return
        dedupe = f"auth:{ip}:{minute // 10}"  # at most once per 10 minutes per address
        if dedupe in self._fired:
            return
        self._fired.add(dedupe)
        await self._raise(
            "auth_failures",
            f"ip:{ip}",
            f"{failures} requests with a bad or missing API key from {ip} within a minute.",
            {"ip": ip, "failures": failures, "dedupe": dedupe},
        )

    # -- storage and delivery ----------------------------------------------------------------------

    async def raise_alert(self, kind: str, subject: str, message: str, data: dict[str, Any]) -> None:
        """Store and deliver an alert a watcher outside the usage records found (the provider
        balance poller, :mod:`vectorengine.routing.balance`); it decides when one is due."""
        await self._raise(kind, subject, message, data)

    async def _raise(self, kind: str, subject: str, message: str, data: dict[str, Any]) -> bool:
        """Store and deliver an alert; False when its ``dedupe`` key is already stored: every
        worker (and instance) watches the same shared state, and only the first raises it."""
        alert = Alert(
            created_at=int(self._clock() * 1000), kind=kind, subject=subject, message=message, data=data
        )
        row = msgspec.to_builtins(alert)
        del row["id"]
        row["dedupe"] = data.get("dedupe")
        new_id = await self._store.alerts.insert(row)
        if new_id is None:
            log.debug("alert %s already raised elsewhere: %s", kind, row["dedupe"])
            return False
        alert.id = new_id
        log.warning("alert %s: %s", kind, message)
        self._deliver(alert)
        return True

    def _deliver(self, alert: Alert) -> None:
        if not self.cfg.webhooks:
            return
        task = asyncio.get_running_loop().create_task(self._send(alert))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _send(self, alert: Alert) -> None:
        body = orjson.dumps(msgspec.to_builtins(alert))
        pending = list(self.cfg.webhooks)
        attempts = alert.delivery_attempts
        while pending and attempts < self.cfg.max_attempts:
            if attempts:
                await asyncio.sleep(self.cfg.retry_base_s * 2 ** (attempts - 1))
            attempts += 1
            failed = []
            for hook in pending:
                ts = int(self._clock())
                headers = [
                    ("content-type", "application/json"),
                    (SIGNATURE_HEADER, sign(hook.secret, ts, body)),
                ]
                try:
                    resp = await self._transport.send(
                        "POST", hook.url, headers, body, connect_s=5, total_s=10
                    )
                    ok = 200 <= resp.status < 300
                except Exception as exc:  # unreachable, timed out: retried
                    log.info("alert %d to %s failed: %s", alert.id, hook.url, exc)
                    ok = False
                if not ok:
                    failed.append(hook)
            pending = failed
            await self._store.alerts.mark(alert.id, delivered=not pending, attempts=attempts)
        if pending:
            log.error("alert %d could not be delivered after %d attempts", alert.id, attempts)
