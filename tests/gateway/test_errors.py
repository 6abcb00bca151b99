"""Authentication, authorization and bad input: every error is an OpenAI envelope with the right status."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.conftest import DISABLED_KEY, EXPIRED_KEY, FULL_KEY, LIMITED_KEY
from tests.support.gateway import GatewayProcess

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def envelope(r: httpx.Response, status: int, code: str | None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"]
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text
    assert err["code"] == code
    return err


def post(gw: GatewayProcess, path: str, key: str | None, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gw.base_url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "missing_api_key"),
        ("sk-unknown-0123456789abcdef", "invalid_api_key"),
        (DISABLED_KEY, "api_key_disabled"),
        (EXPIRED_KEY, "api_key_expired"),
    ],
)
def test_401(gateway: GatewayProcess, key: str | None, code: str) -> None:
    envelope(post(gateway, "/chat/completions", key, json=CHAT), 401, code)


def test_401_through_the_sdk(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-nope-0123456789abcdef", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(**CHAT)
    assert info.value.code == "invalid_api_key" and info.value.request_id


def test_403_model_not_allowed(gateway: GatewayProcess) -> None:
    err = envelope(
        post(gateway, "/chat/completions", LIMITED_KEY, json={**CHAT, "model": "gpt-4o"}),
        403,
        "model_not_allowed",
    )
    assert err["param"] == "model"
    client = openai.OpenAI(base_url=gateway.base_url, api_key=LIMITED_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(**{**CHAT, "model": "gpt-4o"})


def test_404_model_not_found(gateway: GatewayProcess) -> None:
    err = envelope(
        post(gateway, "/chat/completions", FULL_KEY, json={**CHAT, "model": "no-such-model"}),
        404,
        "model_not_found",
    )
    assert "no-such-model" in err["message"] and err["type"] == "invalid_request_error"


def test_413_body_too_large(gateway: GatewayProcess) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    envelope(post(gateway, "/chat/completions", FULL_KEY, json=big), 413, "request_too_large")


def test_413_without_content_length(gateway: GatewayProcess) -> None:
    def chunks():  # chunked transfer encoding: no Content-Length to check up front
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(
        gateway.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {FULL_KEY}"},
        content=chunks(),
        timeout=10,
    )
    envelope(r, 413, "request_too_large")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[]", "invalid_json", None),
        (b'{"messages": []}', "invalid_value", "model"),
        (b'{"model": "gpt-4o-mini"}', "invalid_value", "messages"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "invalid_value", "messages"),
    ],
)
def test_400_bad_input(gateway: GatewayProcess, body: bytes, code: str, param: str | None) -> None:
    err = envelope(post(gateway, "/chat/completions", FULL_KEY, content=body), 400, code)
    assert err["param"] == param


def test_400_missing_fields_other_endpoints(gateway: GatewayProcess) -> None:
    assert (
        envelope(
            post(gateway, "/embeddings", FULL_KEY, json={"model": "text-embedding-3-small"}),
            400,
            "invalid_value",
        )["param"]
        == "input"
    )
    assert (
        envelope(
            post(gateway, "/completions", FULL_KEY, json={"model": "gpt-3.5-turbo-instruct"}),
            400,
            "invalid_value",
        )["param"]
        == "prompt"
    )


def test_unknown_route_and_wrong_method(gateway: GatewayProcess) -> None:
    envelope(httpx.get(gateway.url + "/v1/nothing-here", timeout=5), 404, "unknown_url")
    envelope(httpx.get(gateway.base_url + "/chat/completions", timeout=5), 405, "method_not_allowed")
    envelope(httpx.post(gateway.base_url + "/models", timeout=5), 405, "method_not_allowed")


def test_unreachable_upstream_is_a_502_envelope(gateway: GatewayProcess) -> None:
    err = envelope(
        post(gateway, "/chat/completions", FULL_KEY, json={**CHAT, "model": "unreachable-model"}),
        502,
        "upstream_unreachable",
    )
    assert err["type"] == "upstream_error"


def test_models_need_a_valid_key(gateway: GatewayProcess) -> None:
    envelope(httpx.get(gateway.base_url + "/models", timeout=5), 401, "missing_api_key")


def test_every_response_carries_a_request_id(gateway: GatewayProcess) -> None:
    responses = [
        httpx.get(gateway.url + "/health", timeout=5),
        httpx.get(gateway.url + "/api/openapi.json", timeout=5),
        httpx.get(gateway.url + "/api/tokens", timeout=5),
        httpx.get(gateway.base_url + "/models", headers={"Authorization": f"Bearer {FULL_KEY}"}, timeout=5),
        post(gateway, "/chat/completions", FULL_KEY, json=CHAT),
        httpx.get(gateway.url + "/nope", timeout=5),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(i and i.startswith("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)
