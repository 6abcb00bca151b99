"""What a failed attempt means: its error class, and the one retry policy table on those classes.

The relay never decides about retries itself: it classifies the failure here and does what
:data:`POLICY` says for that class.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from vectorengine.errors import Kind


class ErrorClass(enum.StrEnum):
    BAD_REQUEST = "bad_request"  # 400, 413, 422 …: the request itself; the caller must change it
    CONTEXT_LENGTH = "context_length"  # 400 context_length_exceeded
    AUTH = "auth"  # 401, 403: the key's credentials or permissions
    BILLING = "billing"  # 402, 429 insufficient_quota
    RATE_LIMITED = "rate_limited"  # 429
    NOT_FOUND = "not_found"  # 404: this channel does not serve the model after all
    SERVER = "server"  # 5xx, 408, 409
    TIMEOUT = "timeout"  # no first byte in time, or a stream went idle
    CONNECTION = "connection"  # could not connect, or the connection broke before the first byte
    BAD_RESPONSE = "bad_response"  # not a valid answer (bad JSON, an empty stream, an in-band error)


class Retry(enum.Enum):
    NEVER = "never"  # hand the upstream's answer to the caller as it is
    ELSEWHERE = "elsewhere"  # another key or channel, this one excluded for the request
    CONTEXT_FALLBACK = "context_fallback"  # only on a configured larger-context model


class Exclude(enum.Enum):
    KEY = "key"  # this key is not tried again for the request; the channel's other keys are
    CHANNEL = "channel"  # no key of this channel is tried again for the request


class Effect(enum.Enum):
    NONE = "none"
    FAILURE = "failure"  # counts towards the key's circuit breaker
    COOLDOWN = "cooldown"  # the key rests until its retry-after / rate-limit reset
    DISABLE = "disable"  # the key is out until a probe succeeds or an admin re-enables it


@dataclass(frozen=True, slots=True)
class Rule:
    retry: Retry
    exclude: Exclude
    effect: Effect


POLICY: dict[ErrorClass, Rule] = {
    ErrorClass.BAD_REQUEST: Rule(Retry.NEVER, Exclude.KEY, Effect.NONE),
    ErrorClass.CONTEXT_LENGTH: Rule(Retry.CONTEXT_FALLBACK, Exclude.KEY, Effect.NONE),
    ErrorClass.AUTH: Rule(Retry.ELSEWHERE, Exclude.KEY, Effect.DISABLE),
    ErrorClass.BILLING: Rule(Retry.ELSEWHERE, Exclude.KEY, Effect.DISABLE),
    ErrorClass.RATE_LIMITED: Rule(Retry.ELSEWHERE, Exclude.KEY, Effect.COOLDOWN),
    ErrorClass.NOT_FOUND: Rule(Retry.ELSEWHERE, Exclude.CHANNEL, Effect.NONE),
    ErrorClass.SERVER: Rule(Retry.ELSEWHERE, Exclude.KEY, Effect.FAILURE),
    ErrorClass.TIMEOUT: Rule(Retry.ELSEWHERE, Exclude.CHANNEL, Effect.FAILURE),
    ErrorClass.CONNECTION: Rule(Retry.ELSEWHERE, Exclude.CHANNEL, Effect.FAILURE),
    ErrorClass.BAD_RESPONSE: Rule(Retry.ELSEWHERE, Exclude.KEY, Effect.FAILURE),
}

_RETRYABLE_4XX = frozenset({408, 409})
_BY_KIND: dict[Kind, ErrorClass] = {
    Kind.UPSTREAM_TIMEOUT: ErrorClass.TIMEOUT,
    Kind.UPSTREAM_UNREACHABLE: ErrorClass.CONNECTION,
    Kind.UPSTREAM_STREAM_BROKEN: ErrorClass.CONNECTION,
    Kind.UPSTREAM_BAD_RESPONSE: ErrorClass.BAD_RESPONSE,
}


def classify_transport(kind: Kind) -> ErrorClass:
    """A failure without an HTTP status (timeouts, connection errors, unreadable answers)."""
    return _BY_KIND.get(kind, ErrorClass.CONNECTION)


def classify_status(status: int, error: dict[str, Any] | None) -> ErrorClass:
    """An upstream error status, with the ``error`` object of its envelope when it had one."""
    code = _text(error, "code")
    etype = _text(error, "type")
    if status == 429:
        return ErrorClass.BILLING if "insufficient_quota" in (code, etype) else ErrorClass.RATE_LIMITED
    if status in (401, 403):
        return ErrorClass.AUTH
    if status == 402:
        return ErrorClass.BILLING
    if status == 404:
        return ErrorClass.NOT_FOUND
    if status >= 500 or status in _RETRYABLE_4XX:
        return ErrorClass.SERVER
    if code == "context_length_exceeded" or "maximum context length" in _text(error, "message"):
        return ErrorClass.CONTEXT_LENGTH
    return ErrorClass.BAD_REQUEST


def classify_event(error: dict[str, Any]) -> ErrorClass:
    """An in-band ``{"error": …}`` event that arrived before any content."""
    code, etype = _text(error, "code"), _text(error, "type")
    if "insufficient_quota" in (code, etype):
        return ErrorClass.BILLING
    if "rate_limit" in code or etype in ("requests", "tokens", "rate_limit_error"):
        return ErrorClass.RATE_LIMITED
    return ErrorClass.BAD_RESPONSE


def _text(error: dict[str, Any] | None, name: str) -> str:
    value = error.get(name) if error else None
    return value if isinstance(value, str) else ""
