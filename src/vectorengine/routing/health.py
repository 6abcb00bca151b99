"""Per-key health: circuit breaker, cooldown, disablement, and the passive scores behind them.

A key is *healthy* (in service), *cooling* (rate limited: resting until its retry-after),
*open* (its breaker tripped on repeated failures or a high error rate) or *disabled* (its
credentials or billing failed). A key out of service comes back only through a successful
probe (:mod:`vectorengine.routing.probe`) or an admin reset — with one exception: when a
request has no other capacity left it may wait for a cooling key and use it directly.

The hot path asks :meth:`HealthBoard.usable`, a set lookup; healthy keys have no entry in
that set. State is per worker process.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vectorengine.protocol.openai import Endpoint
from vectorengine.routing.policy import Effect
from vectorengine.settings import HealthConfig

KeyId = tuple[int, int]  # (channel id, key index)


class State(enum.StrEnum):
    HEALTHY = "healthy"
    COOLING = "cooling"
    OPEN = "open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class CallShape:
    """What a probe of the key should look like: the endpoint and stream mode of real traffic."""

    endpoint: Endpoint
    stream: bool
    upstream_model: str


@dataclass(slots=True)
class KeyHealth:
    channel_id: int
    key_index: int
    state: State = State.HEALTHY
    reason: str | None = None
    since_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    retry_at: float = 0.0  # monotonic: when the next probe may go
    consecutive_failures: int = 0
    error_rate: float = 0.0  # exponentially weighted
    samples: int = 0
    latency_ms: float | None = None  # exponentially weighted time to first byte
    open_cycles: int = 0  # failed probes of an open breaker in a row (for the backoff)
    probing: bool = False
    shape: CallShape | None = None
    last_probe_ms: int | None = None
    last_probe_ok: bool | None = None


_P95_WINDOW = 100


class HealthBoard:
    def __init__(self, config: HealthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._alpha = 2.0 / (config.window + 1)
        self._keys: dict[KeyId, KeyHealth] = {}
        self.out: set[KeyId] = set()  # keys not in service
        self._ttfb: dict[int, deque[float]] = {}  # channel id → recent times to first byte
        self._p95: dict[int, tuple[float, int]] = {}  # channel id → (p95, samples seen then)
        self._channel_latency: dict[int, float] = {}
        self._ttfb_seen: dict[int, int] = {}
        self._seen_keys: dict[int, tuple[str, ...]] = {}

    # -- the hot path -----------------------------------------------------------------------

    def usable(self, channel_id: int, key_index: int) -> bool:
        return (channel_id, key_index) not in self.out

    def success(self, channel_id: int, key_index: int, ttfb_ms: float | None, shape: CallShape) -> None:
        h = self._get(channel_id, key_index)
        h.consecutive_failures = 0
        h.samples += 1
        h.error_rate -= self._alpha * h.error_rate
        h.shape = shape
        if ttfb_ms is not None:
            h.latency_ms = (
                ttfb_ms if h.latency_ms is None else h.latency_ms + self._alpha * (ttfb_ms - h.latency_ms)
            )
            self._note_ttfb(channel_id, ttfb_ms)
        if h.state is not State.HEALTHY:
            self._restore(h)

    def failure(
        self,
        channel_id: int,
        key_index: int,
        effect: Effect,
        reason: str,
        retry_after_s: float | None,
        shape: CallShape,
    ) -> None:
        h = self._get(channel_id, key_index)
        h.shape = shape
        if effect is Effect.NONE:
            return
        h.samples += 1
        h.error_rate += self._alpha * (1.0 - h.error_rate)
        h.consecutive_failures += 1
        self._apply(h, effect, reason, retry_after_s)

    # -- probes and capacity waits --------------------------------------------------------------

    def due(self) -> list[KeyHealth]:
        """Keys out of service whose next probe is due and not already running."""
        now = self._clock()
        return [h for k in self.out if not (h := self._keys[k]).probing and h.retry_at <= now]

    def probe_result(
        self, h: KeyHealth, ok: bool, effect: Effect, reason: str, retry_after_s: float | None
    ) -> None:
        h.probing = False
        h.last_probe_ms = time.time_ns() // 1_000_000
        h.last_probe_ok = ok
        if ok:
            self._restore(h)
            return
        if effect is Effect.NONE:  # e.g. a 400 from the probe itself: not the key's fault; retry later
            effect = Effect.FAILURE if h.state is State.OPEN else Effect.COOLDOWN
        self._apply(h, effect, reason, retry_after_s, probe=True)

    def cooling_until(self, channel_id: int, key_index: int) -> float | None:
        """When a cooling key's rest ends (monotonic), None if it is not cooling."""
        h = self._keys.get((channel_id, key_index))
        return h.retry_at if h is not None and h.state is State.COOLING else None

    def reset(self, channel_id: int, key_index: int) -> KeyHealth:
        """An admin puts the key back in service."""
        h = self._get(channel_id, key_index)
        self._restore(h, reason="reset by an admin")
        return h

    def get(self, channel_id: int, key_index: int) -> KeyHealth | None:
        return self._keys.get((channel_id, key_index))

    def channel_latency(self, channel_id: int) -> float | None:
        """Exponentially weighted time to first byte of the channel's successful calls."""
        return self._channel_latency.get(channel_id)

    def ttfb_p95(self, channel_id: int) -> float | None:
        """The 95th percentile of the channel's recent times to first byte (None under 20
        samples). Computed when asked, at most once per ten new samples: only hedging with
        ``p95`` and the health API read it, so the hot path does not sort."""
        seen = self._ttfb_seen.get(channel_id, 0)
        if seen < 20:
            return None
        hit = self._p95.get(channel_id)
        if hit is not None and seen - hit[1] < 10:
            return hit[0]
        ordered = sorted(self._ttfb[channel_id])
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        self._p95[channel_id] = (p95, seen)
        return p95

    def sync(self, keys_by_channel: dict[int, tuple[str, ...]]) -> None:
        """Forget the state of channels that are gone or whose key list changed (state is
        kept by key index, which then means another key)."""
        stale = {cid for cid, keys in self._seen_keys.items() if keys_by_channel.get(cid) != keys}
        self._seen_keys = dict(keys_by_channel)
        if not stale:
            return
        for k in [k for k in self._keys if k[0] in stale]:
            del self._keys[k]
            self.out.discard(k)

    def __iter__(self) -> Iterator[KeyHealth]:
        return iter(self._keys.values())

    def view(self, channel_id: int, key_count: int) -> list[dict[str, Any]]:
        """The health endpoint's per-key rows."""
        now = self._clock()
        rows = []
        for i in range(key_count):
            h = self._keys.get((channel_id, i)) or KeyHealth(channel_id, i)
            out = h.state is not State.HEALTHY
            rows.append(
                {
                    "key_index": i,
                    "state": h.state.value,
                    "reason": h.reason,
                    "since": h.since_ms,
                    "error_rate": round(h.error_rate, 4),
                    "samples": h.samples,
                    "consecutive_failures": h.consecutive_failures,
                    "latency_ms": round(h.latency_ms, 3) if h.latency_ms is not None else None,
                    "next_probe_in_s": round(max(0.0, h.retry_at - now), 3) if out else None,
                    "last_probe": h.last_probe_ms,
                    "last_probe_ok": h.last_probe_ok,
                }
            )
        return rows

    # -- internals ----------------------------------------------------------------------------

    def _get(self, channel_id: int, key_index: int) -> KeyHealth:
        key = (channel_id, key_index)
        h = self._keys.get(key)
        if h is None:
            h = self._keys[key] = KeyHealth(channel_id, key_index)
        return h

    def _apply(
        self, h: KeyHealth, effect: Effect, reason: str, retry_after_s: float | None, probe: bool = False
    ) -> None:
        cfg, now = self.config, self._clock()
        if effect is Effect.DISABLE:
            self._leave(h, State.DISABLED, reason, now + cfg.disabled_probe_s)
        elif effect is Effect.COOLDOWN:
            wait = retry_after_s if retry_after_s is not None else cfg.cooldown_s
            self._leave(h, State.COOLING, reason, now + wait)
        elif h.state is State.OPEN and probe:
            h.open_cycles += 1
            h.reason = reason
            h.retry_at = now + min(cfg.open_s * 2**h.open_cycles, cfg.max_open_s)
        elif h.state is not State.HEALTHY:
            h.reason = reason  # already out (cooling or disabled): keep its schedule
            if h.state is State.COOLING and probe:
                h.retry_at = now + (retry_after_s if retry_after_s is not None else cfg.cooldown_s)
        elif h.consecutive_failures >= cfg.failures_to_open or (
            h.samples >= cfg.min_samples and h.error_rate >= cfg.error_rate_to_open
        ):
            why = (
                f"{h.consecutive_failures} failures in a row"
                if h.consecutive_failures >= cfg.failures_to_open
                else f"error rate {h.error_rate:.0%}"
            )
            self._leave(h, State.OPEN, f"{why}; last: {reason}", now + cfg.open_s)

    def _leave(self, h: KeyHealth, state: State, reason: str, retry_at: float) -> None:
        if h.state is not state:
            h.since_ms = time.time_ns() // 1_000_000
        h.state, h.reason, h.retry_at = state, reason, retry_at
        self.out.add((h.channel_id, h.key_index))

    def _restore(self, h: KeyHealth, reason: str | None = None) -> None:
        h.state, h.reason = State.HEALTHY, reason
        h.since_ms = time.time_ns() // 1_000_000
        h.consecutive_failures = h.open_cycles = 0
        h.error_rate = 0.0
        h.samples = 0
        self.out.discard((h.channel_id, h.key_index))

    def _note_ttfb(self, channel_id: int, ttfb_ms: float) -> None:
        ring = self._ttfb.get(channel_id)
        if ring is None:
            ring = self._ttfb[channel_id] = deque(maxlen=_P95_WINDOW)
        ring.append(ttfb_ms)
        prev = self._channel_latency.get(channel_id)
        self._channel_latency[channel_id] = ttfb_ms if prev is None else prev + self._alpha * (ttfb_ms - prev)
        self._ttfb_seen[channel_id] = self._ttfb_seen.get(channel_id, 0) + 1
