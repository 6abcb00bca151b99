"""What each API key does: its fault (runtime override, configuration or key name), the origin
of its fault counter, and its rate-limit buckets.

Overrides (``PUT``/``DELETE /_sim/keys/{key}``) take precedence over the configured faults,
which take precedence over the ``fault-…`` name. Whenever a key's override changes, its fault
counter starts again (so ``p50`` fails the next call, then every other one) and its
rate-limit buckets are full again. Like the counters, this state lives in the worker process.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from vectorengine.simulator.config import FaultSpec, SimulatorConfig
from vectorengine.simulator.faults import (
    FaultKeyError,
    format_fault,
    parse_fault_key,
    strikes,
    strikes_in_window,
)
from vectorengine.simulator.ratelimit import Clock, KeyRateLimit

Source = Literal["override", "config", "key", "none"]


class KeyFaults:
    """The fault of every key, with the runtime overrides and the rate limiters."""

    def __init__(self, config: SimulatorConfig, clock: Clock = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self.origin = clock()  # w-windows are aligned to this instant (monotonic seconds)
        self._overrides: dict[str, FaultSpec | None] = {}
        self._origins: dict[str, int] = {}  # key -> its call count when the override last changed
        self._limiters: dict[str, tuple[FaultSpec, KeyRateLimit]] = {}

    def lookup(self, key: str) -> tuple[FaultSpec | None, Source]:
        """The fault that applies to ``key`` and where it comes from; :class:`FaultKeyError` when
        the key is a malformed ``fault-…`` name and nothing overrides it."""
        if key in self._overrides:
            return self._overrides[key], "override"
        configured = self._config.faults.get(key)
        if configured is not None:
            return configured, "config"
        named = parse_fault_key(key)
        return named, "key" if named is not None else "none"

    def fault_for(self, key: str) -> FaultSpec | None:
        return self.lookup(key)[0]

    def strikes(self, key: str, fault: FaultSpec, call_number: int, arrived: float) -> bool:
        """Whether the fault strikes the key's ``call_number``-th call, which arrived at ``arrived``
        (monotonic seconds)."""
        if fault.window_ms is not None:
            return strikes_in_window(fault.percent, fault.window_ms, (arrived - self.origin) * 1000)
        return strikes(fault.percent, call_number - self._origins.get(key, 0))

    def limiter(self, key: str, fault: FaultSpec) -> KeyRateLimit:
        """The buckets of a ``ratelimit`` key (new ones when its limits changed)."""
        current = self._limiters.get(key)
        if current is None or current[0] != fault:
            tpm = fault.tpm_limit if fault.tpm_limit is not None else self._config.tpm_limit
            current = (fault, KeyRateLimit(fault.rpm_limit, tpm, self._clock))
            self._limiters[key] = current
        return current[1]

    def override(self, key: str, fault: FaultSpec | None, calls_so_far: int) -> None:
        """Make ``key`` behave as ``fault`` (``None``: a healthy key), whatever its name says."""
        self._overrides[key] = fault
        self._restart(key, calls_so_far)

    def clear(self, key: str, calls_so_far: int) -> None:
        """Drop the override of ``key``: back to its configured fault or its name."""
        self._overrides.pop(key, None)
        self._restart(key, calls_so_far)

    def reset(self) -> None:
        self._overrides.clear()
        self._origins.clear()
        self._limiters.clear()

    def _restart(self, key: str, calls_so_far: int) -> None:
        self._origins[key] = calls_so_far
        self._limiters.pop(key, None)

    def overrides(self) -> dict[str, str | None]:
        return {key: format_fault(f) if f else None for key, f in self._overrides.items()}

    def state(self, key: str) -> dict[str, Any]:
        """``{"key", "source", "fault", "settings"}`` (+ ``"error"`` for a malformed key name)."""
        try:
            fault, source = self.lookup(key)
        except FaultKeyError as exc:
            return {"key": key, "source": "key", "fault": None, "settings": None, "error": str(exc)}
        return {
            "key": key,
            "source": source,
            "fault": format_fault(fault) if fault else None,
            "settings": msgspec.to_builtins(fault) if fault else None,
        }
