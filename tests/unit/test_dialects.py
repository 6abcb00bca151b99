"""Upstream dialects and the registry of upstream types: URLs, authentication, pass-through."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.unit.fakes import make_channel
from vectorengine.protocol import openai as wire
from vectorengine.store.records import Channel
from vectorengine.upstreams.registry import UPSTREAM_TYPES
from vectorengine.upstreams.wires import dialect_for

CHAT = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def channel(type_: str, base_url: str = "https://host.example/v1", **extra: Any) -> Channel:
    return make_channel(type=type_, base_url=base_url, keys=("key-0", "key-1"), **extra)


def test_every_registered_type_has_a_dialect_and_a_usable_default() -> None:
    for name, utype in UPSTREAM_TYPES.items():
        dialect_for(channel(name))  # raises KeyError for a wire format without a dialect
        if utype.urls != "azure":  # an Azure resource has no default address
            assert utype.default_base_url is not None and utype.default_base_url.startswith("http"), name


@pytest.mark.parametrize(
    "type_", [t for t, u in UPSTREAM_TYPES.items() if u.wire == "openai" and u.urls == "v1"]
)
def test_openai_compatible_hosts_are_bearer_and_base_url_plus_path(type_: str) -> None:
    ch = channel(type_)
    up = dialect_for(ch).request(ch, 1, wire.decode(wire.Endpoint.CHAT, CHAT), "m")
    assert up.url == "https://host.example/v1/chat/completions"
    assert ("authorization", "Bearer key-1") in up.headers
    assert up.body == CHAT  # nothing to change: the client's bytes go on


def test_azure_deployment_urls_api_version_and_api_key_header() -> None:
    ch = channel("azure", "https://res.openai.azure.com/")
    call = wire.decode(
        wire.Endpoint.CHAT, b'{"model":"gpt 4o","messages":[{"role":"user","content":"hi"}],"stream":true}'
    )
    up = dialect_for(ch).request(ch, 0, call, "prod gpt-4o")
    assert up.url == (
        "https://res.openai.azure.com/openai/deployments/prod%20gpt-4o/chat/completions?api-version=2024-10-21"
    )
    assert ("api-key", "key-0") in up.headers
    assert not any(h == "authorization" for h, _ in up.headers)
    assert orjson.loads(up.body)["stream_options"] == {"include_usage": True}  # usage for the records
    pinned = channel("azure", "https://res.openai.azure.com", api_version="2025-04-01-preview")
    emb = wire.decode(wire.Endpoint.EMBEDDINGS, b'{"model":"e","input":"x"}')
    assert (
        dialect_for(pinned)
        .request(pinned, 0, emb, "emb")
        .url.endswith("/openai/deployments/emb/embeddings?api-version=2025-04-01-preview")
    )


def test_openai_error_envelopes_pass_on_and_others_do_not() -> None:
    d = dialect_for(channel("openai"))
    env = b'{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}'
    info = d.error(429, env)
    assert info.status == 429 and info.envelope == env and info.error is not None
    assert info.error["code"] == "rate_limit_exceeded"
    html = d.error(502, b"<html>bad gateway</html>")
    assert html.error is None and html.envelope is None
    call = wire.decode(wire.Endpoint.CHAT, CHAT)
    assert d.answer(call, b"{not json") is None
