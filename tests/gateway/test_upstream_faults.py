"""What the client sees when the upstream fails, for each simulator fault mode.

(Failover to healthy capacity is the routing issue's job; here each fault model is served
by a single faulty key so the gateway's own error handling is what is tested.)
"""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from tests.gateway.conftest import FULL_KEY, fault_model
from tests.support.gateway import GatewayProcess, wait_record

MSG = [{"role": "user", "content": "hi"}]


def chat(gw: GatewayProcess, model: str, stream: bool = False) -> httpx.Response:
    return httpx.post(
        gw.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {FULL_KEY}"},
        json={"model": model, "messages": MSG, "stream": stream},
        timeout=15,
    )


def test_429_passes_status_envelope_and_retry_after(gateway: GatewayProcess) -> None:
    r = chat(gateway, fault_model("429"))
    assert r.status_code == 429 and "retry-after" in r.headers
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    client = openai.OpenAI(base_url=gateway.base_url, api_key=FULL_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=fault_model("429"), messages=MSG)


@pytest.mark.parametrize(("mode", "status"), [("500", 500), ("503", 503), ("400", 400)])
def test_upstream_error_status_and_envelope_pass_through(
    gateway: GatewayProcess, mode: str, status: int
) -> None:
    r = chat(gateway, fault_model(mode))
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}


def test_upstream_rejecting_the_channel_key_is_not_blamed_on_the_client(gateway: GatewayProcess) -> None:
    r = chat(gateway, fault_model("401"))
    assert r.status_code == 502  # the caller's key is fine: this is the channel's problem
    assert r.json()["error"]["code"] == "upstream_error"


def test_malformed_upstream_json_is_a_502(gateway: GatewayProcess) -> None:
    r = chat(gateway, fault_model("malformed-json"))
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_bad_response"


def _events(text: str) -> list[str]:
    return [e[6:] for e in text.split("\n\n") if e.startswith("data: ")]


def test_stream_dropped_mid_way_ends_with_an_error_event(gateway: GatewayProcess) -> None:
    r = chat(gateway, fault_model("drop-mid-stream"), stream=True)
    assert r.status_code == 200
    events = _events(r.text)
    assert "[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["code"] in ("upstream_stream_broken",)
    rec = wait_record(gateway, r.headers["x-request-id"])
    assert rec["status"] == 200 and rec["error_kind"] == "upstream_stream_broken"  # what the client got
    client = openai.OpenAI(base_url=gateway.base_url, api_key=FULL_KEY, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=fault_model("drop-mid-stream"), messages=MSG, stream=True
        ):
            pass


def test_inband_upstream_error_is_forwarded(gateway: GatewayProcess) -> None:
    r = chat(gateway, fault_model("mid-stream-error"), stream=True)
    assert r.status_code == 200
    assert any(e.startswith('{"error"') for e in _events(r.text))


def test_stream_request_to_erroring_upstream_gets_a_plain_error_response(gateway: GatewayProcess) -> None:
    r = chat(gateway, fault_model("500"), stream=True)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
