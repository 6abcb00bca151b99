"""Reading providers' rate-limit headers: ``retry-after``, ``retry-after-ms`` and ``x-ratelimit-*``.

OpenAI sends ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset as a
duration such as ``1s``, ``6m0s`` or ``120ms``; ``retry-after`` is seconds or an HTTP date.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

HeaderGetter = Callable[[str], str | None]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """``"6m0s"`` → 360.0, ``"120ms"`` → 0.12, ``"2"`` → 2.0; None if it is not a duration."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def retry_after_s(header: HeaderGetter) -> float | None:
    """How long the provider asks us to wait, from ``retry-after-ms``, then ``retry-after``."""
    ms = header("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = header("retry-after")
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class Budget:
    """One dimension (requests or tokens) of a provider's rate limit, as last reported."""

    limit: int
    remaining: int
    reset_s: float | None  # until the budget is whole again


def budgets(header: HeaderGetter) -> tuple[Budget | None, Budget | None]:
    """The (requests, tokens) budgets the response reports, each None if absent."""
    return _budget(header, "requests"), _budget(header, "tokens")


def _budget(header: HeaderGetter, what: str) -> Budget | None:
    limit, remaining = header("x-ratelimit-limit-" + what), header("x-ratelimit-remaining-" + what)
    if limit is None or remaining is None:
        return None
    try:
        lim, rem = int(float(limit)), int(float(remaining))
    except ValueError:
        return None
    if lim <= 0:
        return None
    reset = header("x-ratelimit-reset-" + what)
    return Budget(lim, max(0, min(rem, lim)), parse_duration(reset) if reset is not None else None)
