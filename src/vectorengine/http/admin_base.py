"""The admin API's plumbing: request and reply shapes, the route record, body decoding."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from vectorengine.errors import GatewayError, Kind

if TYPE_CHECKING:
    from vectorengine.http.admin_api import AdminAPI

_ENCODER = msgspec.json.Encoder()
_T = TypeVar("_T")


@dataclass(slots=True)
class AdminRequest:
    method: str
    path_params: dict[str, str]
    query: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None  # a msgspec struct / JSON-able object; None with 204
    content_type: str | None = None  # set: ``body`` is bytes of this type, sent as they are


Handler = Callable[["AdminAPI", AdminRequest], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # with {param} placeholders
    handler: Handler
    summary: str
    request: type | None = None
    response: type | None = None
    status: int = 200
    query: tuple[tuple[str, str, str], ...] = ()  # (name, json type, description)

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


def send_reply(protocol: Any, reply: Reply, headers: list[tuple[str, str]]) -> None:
    if reply.body is None:
        protocol.response_empty(reply.status, headers)
        return
    if reply.content_type is not None:
        protocol.response_bytes(reply.status, [*headers, ("content-type", reply.content_type)], reply.body)
        return
    protocol.response_bytes(
        reply.status, [*headers, ("content-type", "application/json")], _ENCODER.encode(reply.body)
    )


def decode_body(body: bytes, typ: type[_T]) -> _T:
    try:
        return msgspec.json.decode(body or b"{}", type=typ)
    except msgspec.ValidationError as exc:
        message = str(exc)
        m = re.search(r"at `\$\.?([^`]*)`", message)
        raise GatewayError(Kind.INVALID_REQUEST, message, param=m.group(1) if m else None) from None
    except msgspec.DecodeError as exc:
        raise GatewayError(Kind.INVALID_JSON, f"The request body is not valid JSON: {exc}") from None


def int_param(req: AdminRequest, name: str, value: str | None = None) -> int:
    raw = value if value is not None else req.path_params.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise GatewayError(Kind.INVALID_REQUEST, f"`{name}` must be an integer.", param=name) from None


def set_fields(patch: msgspec.Struct) -> dict[str, Any]:
    return {f: v for f in patch.__struct_fields__ if (v := getattr(patch, f)) is not msgspec.UNSET}


def time_param(name: str, value: str | None) -> int | None:
    """Unix seconds (int or float) or an ISO 8601 time → unix ms."""
    if value is None:
        return None
    try:
        return int(float(value) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GatewayError(
            Kind.INVALID_REQUEST, f"`{name}` must be unix seconds or an ISO 8601 time.", param=name
        ) from None
    return int(dt.timestamp() * 1000)


def page_limit(req: AdminRequest) -> int:
    """The ``limit`` of a paged list: 1-1000, default 100."""
    limit = int_param(req, "limit", req.query.get("limit", "100"))
    if not 1 <= limit <= 1000:
        raise GatewayError(Kind.INVALID_REQUEST, "`limit` must be between 1 and 1000.", param="limit")
    return limit
