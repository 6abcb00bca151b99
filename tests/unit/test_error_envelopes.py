"""The one error vocabulary rendered in each client protocol's envelope."""

from __future__ import annotations

import orjson
import pytest
from anthropic.types import ErrorResponse

from vectorengine.errors import GatewayError, Kind


@pytest.mark.parametrize(
    ("kind", "status", "anthropic_type", "google_status"),
    [
        (Kind.INVALID_REQUEST, 400, "invalid_request_error", "INVALID_ARGUMENT"),
        (Kind.INVALID_API_KEY, 401, "authentication_error", "UNAUTHENTICATED"),
        (Kind.MODEL_NOT_ALLOWED, 403, "permission_error", "PERMISSION_DENIED"),
        (Kind.MODEL_NOT_FOUND, 404, "not_found_error", "NOT_FOUND"),
        (Kind.BODY_TOO_LARGE, 413, "request_too_large", "INVALID_ARGUMENT"),
        (Kind.UPSTREAM_TIMEOUT, 504, "timeout_error", "DEADLINE_EXCEEDED"),
        (Kind.UPSTREAM_UNREACHABLE, 502, "api_error", "INTERNAL"),
        (Kind.INTERNAL, 500, "api_error", "INTERNAL"),
    ],
)
def test_each_kind_in_each_envelope(kind: Kind, status: int, anthropic_type: str, google_status: str) -> None:
    err = GatewayError(kind, "what went wrong")
    assert err.status == status
    a_status, a_body = err.anthropic()
    obj = orjson.loads(a_body)
    assert a_status == status
    assert obj == {"type": "error", "error": {"type": anthropic_type, "message": "what went wrong"}}
    if anthropic_type != "request_too_large":  # documented by Anthropic (413) but not in the SDK's union
        assert ErrorResponse.model_validate(obj).error.type == anthropic_type
    g_status, g_body = err.gemini()
    assert g_status == status
    assert orjson.loads(g_body) == {
        "error": {"code": status, "message": "what went wrong", "status": google_status}
    }


def test_overload_is_529_for_anthropic_clients_and_503_for_the_others() -> None:
    err = GatewayError(Kind.OVERLOADED, "busy")
    assert err.status == 503 and orjson.loads(err.openai_body())["error"]["code"] == "overloaded"
    status, body = err.anthropic()
    assert status == 529 and orjson.loads(body)["error"]["type"] == "overloaded_error"
    assert orjson.loads(err.gemini()[1])["error"]["status"] == "UNAVAILABLE"


def test_an_upstreams_own_words_survive_the_change_of_envelope() -> None:
    passthrough = orjson.dumps(
        {
            "error": {
                "message": "Rate limit reached for gpt-4o",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        }
    )
    err = GatewayError(Kind.UPSTREAM_STATUS, "HTTP 429", status=429, passthrough=passthrough)
    assert err.openai_body() == passthrough
    status, body = err.anthropic()
    assert status == 429
    assert orjson.loads(body)["error"] == {
        "type": "rate_limit_error",
        "message": "Rate limit reached for gpt-4o",
    }
    assert orjson.loads(err.gemini()[1])["error"]["status"] == "RESOURCE_EXHAUSTED"
