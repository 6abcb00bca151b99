"""HTTP plumbing of the simulator: RSGI types, OpenAI errors and response headers."""

from __future__ import annotations

import secrets
import string
from typing import Any, Protocol

import orjson

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
OPENAI_VERSION = "2020-10-01"
DONE = b"data: [DONE]\n\n"

Headers = list[tuple[str, str]]


class RSGIHeaders(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...


class RSGIScope(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def client(self) -> str: ...
    @property
    def headers(self) -> RSGIHeaders: ...


class RSGITransport(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...


class RSGIProtocol(Protocol):
    async def __call__(self) -> bytes: ...
    async def client_disconnect(self) -> None: ...
    def response_bytes(self, status: int, headers: Headers, body: bytes) -> None: ...
    def response_stream(self, status: int, headers: Headers) -> RSGITransport: ...


class ApiError(Exception):
    """An OpenAI error response: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers: Headers = headers or []

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


_ALNUM = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 29) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def request_id() -> str:
    return "req_" + secrets.token_hex(16)


def duration(seconds: float) -> str:
    """A Go-style duration as in OpenAI's ``x-ratelimit-reset-*`` headers: ``12ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(round(seconds * 1000), 1 if seconds > 0 else 0)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s" if hours else f"{minutes}m{rest}s"


def number_text(value: float) -> str:
    """``2`` for whole numbers, ``0.5`` otherwise (as in ``retry-after``)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def missing(param: str) -> ApiError:
    return ApiError(
        400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def below_min(param: str, minimum: int, value: Any) -> ApiError:
    return ApiError(
        400,
        f"Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, "
        f"but got {value} instead.",
        param=param,
        code="integer_below_min_value",
    )


def above_max(param: str, maximum: int, value: Any) -> ApiError:
    return ApiError(
        400,
        f"Invalid '{param}': integer above maximum value. Expected a value <= {maximum}, "
        f"but got {value} instead.",
        param=param,
        code="integer_above_max_value",
    )


def optional_int(body: dict[str, Any], name: str, minimum: int, maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(name, "an integer", value)
    if value < minimum:
        raise below_min(name, minimum, value)
    if maximum is not None and value > maximum:
        raise above_max(name, maximum, value)
    return value


def require_str(body: dict[str, Any], name: str) -> str:
    if name not in body or body[name] is None:
        raise missing(name)
    value = body[name]
    if not isinstance(value, str):
        raise invalid_type(name, "a string", value)
    return value


def optional_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid_type(name, "a boolean", value)
    return value


def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid_type("stream_options", "an object", options)
    return options.get("include_usage") is True


def check_stop(body: dict[str, Any]) -> Any:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid_type("stop", "a string or an array of strings", stop)
    if len(stop) > 4:
        raise ApiError(
            400,
            f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
            f"but got an array with length {len(stop)} instead.",
            param="stop",
            code="array_above_max_length",
        )
    return stop
