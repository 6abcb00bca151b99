"""Per-key call counters (``/_sim/stats``) and the numbers behind the ``x-ratelimit-*`` headers.

Counters live in the worker process: with several workers each one counts its own calls.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from vectorengine.simulator.wire import Headers, duration

NO_KEY = "<none>"
CALL_TIMES_KEPT = 1000  # per key, for ``calls_at``


class CallStats:
    """Counts calls per API key and per path, and the requests/tokens of the current minute.

    Also per key: the response statuses, the requests the client abandoned (and when the last
    abandonment was noticed, wall clock in ms) and the wall-clock ms of the latest calls.
    """

    def __init__(self, rpm_limit: int, tpm_limit: int) -> None:
        self._rpm = rpm_limit
        self._tpm = tpm_limit
        self.reset()

    def reset(self) -> None:
        self._calls: dict[str, int] = {}
        self._faults: dict[str, int] = {}
        self._by_path: dict[str, int] = {}
        self._total = 0
        self._minute: dict[str, tuple[int, int, int]] = {}  # key -> (minute, requests, tokens)
        self._statuses: dict[str, dict[str, int]] = {}
        self._aborted: dict[str, int] = {}
        self._last_abort_ms: dict[str, float] = {}
        self._calls_at: dict[str, deque[float]] = {}

    def record(self, key: str, path: str) -> int:
        """Count one call; returns its number among the key's calls (1-based)."""
        n = self._calls.get(key, 0) + 1
        self._calls[key] = n
        times = self._calls_at.get(key)
        if times is None:
            times = self._calls_at[key] = deque(maxlen=CALL_TIMES_KEPT)
        times.append(time.time() * 1000)
        self._by_path[path] = self._by_path.get(path, 0) + 1
        self._total += 1
        minute = int(time.time() // 60)
        start, requests, tokens = self._minute.get(key, (minute, 0, 0))
        self._minute[key] = (minute, requests + 1, tokens) if start == minute else (minute, 1, 0)
        return n

    def record_fault(self, key: str) -> None:
        self._faults[key] = self._faults.get(key, 0) + 1

    def record_status(self, key: str, status: int) -> None:
        counts = self._statuses.setdefault(key, {})
        counts[str(status)] = counts.get(str(status), 0) + 1

    def record_abort(self, key: str) -> None:
        """The client of one of ``key``'s requests went away before the response was complete."""
        self._aborted[key] = self._aborted.get(key, 0) + 1
        self._last_abort_ms[key] = time.time() * 1000

    def calls(self, key: str) -> int:
        return self._calls.get(key, 0)

    def add_tokens(self, key: str, tokens: int) -> None:
        minute, requests, used = self._minute.get(key, (int(time.time() // 60), 0, 0))
        self._minute[key] = (minute, requests, used + tokens)

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": dict(self._calls),
            "faults": dict(self._faults),
            "by_path": dict(self._by_path),
            "total": self._total,
            "statuses": {key: dict(counts) for key, counts in self._statuses.items()},
            "aborted": dict(self._aborted),
            "last_abort_ms": dict(self._last_abort_ms),
            "calls_at": {key: list(times) for key, times in self._calls_at.items()},
        }

    def rate_limit_headers(self, key: str, exhausted: bool = False) -> Headers:
        minute, requests, tokens = self._minute.get(key, (0, 0, 0))
        if minute != int(time.time() // 60):
            requests = tokens = 0
        requests = self._rpm if exhausted else min(requests, self._rpm)
        tokens = min(tokens, self._tpm)
        return [
            ("x-ratelimit-limit-requests", str(self._rpm)),
            ("x-ratelimit-limit-tokens", str(self._tpm)),
            ("x-ratelimit-remaining-requests", str(self._rpm - requests)),
            ("x-ratelimit-remaining-tokens", str(self._tpm - tokens)),
            ("x-ratelimit-reset-requests", duration(60.0 * requests / self._rpm)),
            ("x-ratelimit-reset-tokens", duration(60.0 * tokens / self._tpm)),
        ]
