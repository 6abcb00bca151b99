"""The closed error vocabulary, and its one mapping to HTTP statuses and client envelopes.

Every failure the gateway reports is a :class:`GatewayError` carrying one :class:`Kind`.
A kind belongs to exactly one :class:`Fault` (who is to blame) and maps to exactly one
HTTP status and OpenAI ``type``/``code`` pair in :data:`_TABLE`. Nothing else in the code
base picks statuses or writes error envelopes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import orjson


class Fault(enum.StrEnum):
    CALLER = "caller"  # the request itself is wrong
    POLICY = "policy"  # the request is fine but this key may not do it
    UPSTREAM = "upstream"  # the provider failed or refused
    GATEWAY = "gateway"  # we failed


class Kind(enum.StrEnum):
    # caller
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    BODY_TOO_LARGE = "body_too_large"
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    # policy
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    KEY_DISABLED = "key_disabled"
    KEY_EXPIRED = "key_expired"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    ACCOUNT_DISABLED = "account_disabled"
    IP_NOT_ALLOWED = "ip_not_allowed"
    MODEL_NOT_PRICED = "model_not_priced"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    SPEND_CAP_REACHED = "spend_cap_reached"  # a daily or monthly cap, or a token's quota
    RATE_LIMITED = "rate_limited"  # the token's or user's own rpm, tpm or concurrency limit
    # upstream
    UPSTREAM_STATUS = "upstream_status"  # the provider answered with an error status
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_BAD_RESPONSE = "upstream_bad_response"
    UPSTREAM_STREAM_BROKEN = "upstream_stream_broken"
    NO_CAPACITY = "no_capacity"
    # gateway
    CLIENT_ABORTED = "client_aborted"  # not sent to anyone; recorded
    OVERLOADED = "overloaded"  # the usage log is too far behind to take more requests
    STATE_UNAVAILABLE = "state_unavailable"  # Redis (shared balances and limits) cannot be reached
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class _Row:
    fault: Fault
    status: int
    type: str
    code: str | None


_TABLE: dict[Kind, _Row] = {
    Kind.INVALID_JSON: _Row(Fault.CALLER, 400, "invalid_request_error", "invalid_json"),
    Kind.INVALID_REQUEST: _Row(Fault.CALLER, 400, "invalid_request_error", "invalid_value"),
    Kind.BODY_TOO_LARGE: _Row(Fault.CALLER, 413, "invalid_request_error", "request_too_large"),
    Kind.ROUTE_NOT_FOUND: _Row(Fault.CALLER, 404, "invalid_request_error", "unknown_url"),
    Kind.METHOD_NOT_ALLOWED: _Row(Fault.CALLER, 405, "invalid_request_error", "method_not_allowed"),
    Kind.MODEL_NOT_FOUND: _Row(Fault.CALLER, 404, "invalid_request_error", "model_not_found"),
    Kind.NOT_FOUND: _Row(Fault.CALLER, 404, "invalid_request_error", "not_found"),
    Kind.CONFLICT: _Row(Fault.CALLER, 409, "invalid_request_error", "conflict"),
    Kind.MISSING_API_KEY: _Row(Fault.POLICY, 401, "invalid_request_error", "missing_api_key"),
    Kind.INVALID_API_KEY: _Row(Fault.POLICY, 401, "invalid_request_error", "invalid_api_key"),
    Kind.KEY_DISABLED: _Row(Fault.POLICY, 401, "invalid_request_error", "api_key_disabled"),
    Kind.KEY_EXPIRED: _Row(Fault.POLICY, 401, "invalid_request_error", "api_key_expired"),
    Kind.MODEL_NOT_ALLOWED: _Row(Fault.POLICY, 403, "permission_error", "model_not_allowed"),
    Kind.ACCOUNT_DISABLED: _Row(Fault.POLICY, 403, "permission_error", "account_disabled"),
    Kind.IP_NOT_ALLOWED: _Row(Fault.POLICY, 403, "permission_error", "ip_not_allowed"),
    Kind.MODEL_NOT_PRICED: _Row(Fault.POLICY, 403, "permission_error", "model_not_priced"),
    Kind.INSUFFICIENT_BALANCE: _Row(Fault.POLICY, 402, "insufficient_quota", "insufficient_balance"),
    Kind.SPEND_CAP_REACHED: _Row(Fault.POLICY, 402, "insufficient_quota", "spend_cap_reached"),
    Kind.RATE_LIMITED: _Row(Fault.POLICY, 429, "requests", "rate_limit_exceeded"),
    Kind.UPSTREAM_STATUS: _Row(Fault.UPSTREAM, 502, "upstream_error", "upstream_error"),
    Kind.UPSTREAM_TIMEOUT: _Row(Fault.UPSTREAM, 504, "upstream_error", "upstream_timeout"),
    Kind.UPSTREAM_UNREACHABLE: _Row(Fault.UPSTREAM, 502, "upstream_error", "upstream_unreachable"),
    Kind.UPSTREAM_BAD_RESPONSE: _Row(Fault.UPSTREAM, 502, "upstream_error", "upstream_bad_response"),
    Kind.UPSTREAM_STREAM_BROKEN: _Row(Fault.UPSTREAM, 502, "upstream_error", "upstream_stream_broken"),
    Kind.NO_CAPACITY: _Row(Fault.UPSTREAM, 503, "server_error", "no_capacity"),
    Kind.CLIENT_ABORTED: _Row(Fault.CALLER, 499, "invalid_request_error", "client_aborted"),
    Kind.INTERNAL: _Row(Fault.GATEWAY, 500, "server_error", "internal_error"),
    Kind.OVERLOADED: _Row(Fault.GATEWAY, 503, "server_error", "overloaded"),
    Kind.STATE_UNAVAILABLE: _Row(Fault.GATEWAY, 503, "server_error", "state_unavailable"),
}


class GatewayError(Exception):
    """A failure with a kind from the closed vocabulary.

    ``status`` overrides the table's status only for :attr:`Kind.UPSTREAM_STATUS`, where the
    provider's own status is passed on; ``headers`` carries e.g. ``retry-after``.
    """

    def __init__(
        self,
        kind: Kind,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        passthrough: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.status = status if status is not None else _TABLE[kind].status
        self.headers = headers
        # An upstream's own OpenAI error envelope, passed on byte for byte to OpenAI clients.
        self.passthrough = passthrough

    @property
    def fault(self) -> Fault:
        return _TABLE[self.kind].fault

    def openai_body(self) -> bytes:
        """The OpenAI error envelope ``{"error": {message, type, param, code}}``."""
        if self.passthrough is not None:
            return self.passthrough
        row = _TABLE[self.kind]
        return orjson.dumps(
            {"error": {"message": self.message, "type": row.type, "param": self.param, "code": row.code}}
        )

    def anthropic(self) -> tuple[int, bytes]:
        """Status and body for an Anthropic client: ``{"type":"error","error":{type, message}}``.

        An overloaded or unavailable upstream is 529 ``overloaded_error``, as Anthropic says it.
        """
        status = 529 if self.status == 503 else self.status
        message = self._upstream_message() or self.message
        body = {"type": "error", "error": {"type": _anthropic_type(status), "message": message}}
        return status, orjson.dumps(body)

    def gemini(self) -> tuple[int, bytes]:
        """Status and body for a Gemini client: ``{"error":{code, message, status}}``."""
        message = self._upstream_message() or self.message
        body = {"error": {"code": self.status, "message": message, "status": _google_status(self.status)}}
        return self.status, orjson.dumps(body)

    def _upstream_message(self) -> str | None:
        """The message of a passed-on OpenAI envelope (the provider's own words)."""
        if self.passthrough is None:
            return None
        try:
            obj = orjson.loads(self.passthrough)
        except orjson.JSONDecodeError:
            return None
        error = obj.get("error") if isinstance(obj, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return message if isinstance(message, str) and message else None


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def _google_status(status: int) -> str:
    return _GOOGLE_STATUSES.get(status, "FAILED_PRECONDITION" if status < 500 else "INTERNAL")
