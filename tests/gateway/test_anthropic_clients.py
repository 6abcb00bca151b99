"""Anthropic clients (the anthropic SDK, Claude Code …) on ``POST /v1/messages``, served by an
OpenAI-compatible upstream (the simulator): requests and answers translated both ways."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.gateway.conftest import FULL_KEY, fault_model
from tests.support.gateway import GatewayProcess

TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(gw: GatewayProcess, key: str = FULL_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=20)


def test_json_message(gateway: GatewayProcess) -> None:
    msg = client(gateway).messages.create(
        model="gpt-4o",
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "gpt-4o"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_streamed_message_accumulates_in_the_sdk(gateway: GatewayProcess) -> None:
    with client(gateway).messages.stream(
        model="gpt-4o", max_tokens=200, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0  # real numbers at the end


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_then_its_result(gateway: GatewayProcess, stream: bool) -> None:
    c = client(gateway)
    if stream:
        with c.messages.stream(model="gpt-4o", max_tokens=200, tools=TOOLS, messages=ASK) as s:  # type: ignore[arg-type]
            first = s.get_final_message()
    else:
        first = c.messages.create(model="gpt-4o", max_tokens=200, tools=TOOLS, messages=ASK)  # type: ignore[arg-type]
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict) and use.input.get("city")
    second = c.messages.create(
        model="gpt-4o",
        max_tokens=200,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[
            *ASK,  # type: ignore[list-item]
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text" and second.content[0].text


def test_errors_come_in_anthropics_envelope(gateway: GatewayProcess) -> None:
    with pytest.raises(anthropic.AuthenticationError) as e401:
        client(gateway, "sk-wrong").messages.create(model="gpt-4o", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    assert e401.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as e404:
        client(gateway).messages.create(model="no-such-model", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    assert e404.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as e429:
        client(gateway).messages.create(model=fault_model("429"), max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    assert e429.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    r = httpx.post(
        gateway.url + "/v1/messages",
        headers={"x-api-key": FULL_KEY, "anthropic-version": "2023-06-01"},
        json={"model": "gpt-4o", "messages": ASK},
    )
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
