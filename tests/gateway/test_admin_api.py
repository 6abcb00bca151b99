"""The admin API: channels, tokens, usage filters and keyset pagination, OpenAPI document."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.procs import SimHandle


def check(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """Validate a reply against the gateway's own OpenAPI document."""
    op = doc["paths"][path][method.lower()]
    resp = op["responses"][str(status)]
    schema = resp["content"]["application/json"]["schema"]
    resolved = _inline(schema, doc["components"]["schemas"])
    jsonschema.Draft202012Validator(resolved).validate(body)


def _inline(schema: Any, comps: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(comps[schema["$ref"].rsplit("/", 1)[1]], comps)
        return {k: _inline(v, comps) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, comps) for v in schema]
    return schema


@pytest.fixture(scope="module")
def doc(gateway: GatewayProcess) -> dict[str, Any]:
    r = httpx.get(gateway.url + "/api/openapi.json", timeout=5)
    assert r.status_code == 200
    return dict(r.json())


def test_openapi_document_lists_every_route(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops >= {
        ("GET", "/api/channels"),
        ("POST", "/api/channels"),
        ("GET", "/api/channels/{id}"),
        ("PATCH", "/api/channels/{id}"),
        ("DELETE", "/api/channels/{id}"),
        ("GET", "/api/tokens"),
        ("POST", "/api/tokens"),
        ("PATCH", "/api/tokens/{id}"),
        ("DELETE", "/api/tokens/{id}"),
        ("GET", "/api/usage"),
    }
    for comp in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(comp)


def test_admin_auth(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/api/channels", timeout=5).status_code == 401
    r = httpx.get(gateway.url + "/api/channels", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_channel_lifecycle(gateway: GatewayProcess, sim: SimHandle, doc: dict[str, Any]) -> None:
    with gateway.admin() as admin:
        listed = admin.get("/api/channels")
        check(doc, "GET", "/api/channels", 200, listed.json())
        assert all("key-a" not in str(c["keys"]) or "…" in str(c["keys"]) for c in listed.json())
        body = {
            "name": "extra",
            "base_url": sim.base_url,
            "keys": ["extra-key-1"],
            "models": ["extra-model"],
            "model_map": {"extra-model": "gpt-4o"},
            "priority": 3,
            "weight": 2,
        }
        created = admin.post("/api/channels", json=body)
        assert created.status_code == 201, created.text
        check(doc, "POST", "/api/channels", 201, created.json())
        ch = created.json()
        assert ch["key_count"] == 1 and "extra-key-1" not in created.text and ch["managed_by"] == "api"
        assert admin.post("/api/channels", json=body).status_code == 409
        # The new route works at once (the snapshot was reloaded, no restart).
        client = openai.OpenAI(
            base_url=gateway.base_url, api_key="sk-test-full-0123456789abcdef", max_retries=0
        )
        assert (
            client.chat.completions.create(
                model="extra-model", messages=[{"role": "user", "content": "x"}]
            ).model
            == "gpt-4o"
        )
        got = admin.get(f"/api/channels/{ch['id']}")
        check(doc, "GET", "/api/channels/{id}", 200, got.json())
        patched = admin.patch(f"/api/channels/{ch['id']}", json={"enabled": False, "weight": 5})
        assert (
            patched.status_code == 200
            and patched.json()["enabled"] is False
            and patched.json()["weight"] == 5
        )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="extra-model", messages=[{"role": "user", "content": "x"}])
        bad = admin.patch(f"/api/channels/{ch['id']}", json={"weight": -1})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "weight"
        assert admin.patch(f"/api/channels/{ch['id']}", json={"bogus": 1}).status_code == 400
        assert admin.delete(f"/api/channels/{ch['id']}").status_code == 204
        assert admin.get(f"/api/channels/{ch['id']}").status_code == 404
        assert admin.delete(f"/api/channels/{ch['id']}").status_code == 404
        assert admin.get("/api/channels/abc").status_code == 400


def test_token_lifecycle(gateway: GatewayProcess, doc: dict[str, Any]) -> None:
    with gateway.admin() as admin:
        created = admin.post("/api/tokens", json={"name": "ci-token", "models": ["gpt-4o-mini"]})
        assert created.status_code == 201
        check(doc, "POST", "/api/tokens", 201, created.json())
        tok = created.json()
        key = tok["key"]
        client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
        assert client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        listed = admin.get("/api/tokens").json()
        check(doc, "GET", "/api/tokens", 200, listed)
        assert key not in str(listed) and any(t["id"] == tok["id"] for t in listed)
        disabled = admin.patch(f"/api/tokens/{tok['id']}", json={"enabled": False})
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        fixed = admin.post("/api/tokens", json={"name": "fixed", "key": "sk-fixed-key-0123456789"})
        assert fixed.json()["key"] == "sk-fixed-key-0123456789"
        assert (
            admin.post("/api/tokens", json={"name": "dup", "key": "sk-fixed-key-0123456789"}).status_code
            == 409
        )
        assert admin.delete(f"/api/tokens/{tok['id']}").status_code == 204
        assert admin.patch(f"/api/tokens/{tok['id']}", json={"enabled": True}).status_code == 404


def test_usage_filters_and_pagination(gateway: GatewayProcess, doc: dict[str, Any]) -> None:
    with gateway.admin() as admin:
        tok = admin.post("/api/tokens", json={"name": "usage-probe"}).json()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tok["key"], max_retries=0)
    start = time.time()
    ids = []
    for i in range(7):
        model = "gpt-4o" if i % 2 else "gpt-4o-mini"
        ids.append(
            client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "x"}]
            ).headers["x-request-id"]
        )
    bad = httpx.post(
        gateway.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {tok['key']}"},
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        timeout=5,
    )
    ids.append(bad.headers["x-request-id"])
    with gateway.admin() as admin:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page = admin.get("/api/usage", params={"token": tok["id"]}).json()
            if len(page["data"]) == 8:
                break
            time.sleep(0.05)
        check(doc, "GET", "/api/usage", 200, page)
        assert [r["request_id"] for r in page["data"]] == ids[::-1]  # newest first
        walked: list[str] = []
        params: dict[str, Any] = {"token": tok["id"], "limit": 3}
        while True:
            p = admin.get("/api/usage", params=params).json()
            walked += [r["request_id"] for r in p["data"]]
            if not p["has_more"]:
                assert p["next_after"] is None
                break
            params["after"] = p["next_after"]
        assert walked == ids[::-1]
        minis = admin.get("/api/usage", params={"token": tok["id"], "model": "gpt-4o-mini"}).json()["data"]
        assert len(minis) == 4 and {r["model"] for r in minis} == {"gpt-4o-mini"}
        errors = admin.get("/api/usage", params={"token": tok["id"], "status": 404}).json()["data"]
        assert [r["request_id"] for r in errors] == [ids[-1]]
        chan = minis[0]["channel_id"]
        assert len(admin.get("/api/usage", params={"token": tok["id"], "channel": chan}).json()["data"]) == 7
        since = admin.get("/api/usage", params={"token": tok["id"], "since": start - 1}).json()["data"]
        assert len(since) == 8
        future = admin.get("/api/usage", params={"token": tok["id"], "since": "2999-01-01T00:00:00Z"}).json()
        assert future["data"] == []
        until = admin.get("/api/usage", params={"token": tok["id"], "until": start - 1}).json()["data"]
        assert until == []
        for bad_params in ({"limit": 0}, {"limit": "x"}, {"since": "yesterday"}, {"colour": "red"}):
            r = admin.get("/api/usage", params=bad_params)
            assert r.status_code == 400 and r.json()["error"]["param"] in bad_params
