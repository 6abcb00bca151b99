"""``/v1/responses`` through the gateway with the openai SDK: passed through to an OpenAI
channel (state kept upstream), translated for Azure, Anthropic and Gemini channels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import start_simulator, unique_key

KEY = "sk-responses-0123456789abcdef"
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
UPSTREAMS = {
    "gpt": ("openai", "/v1", "gpt-4o"),
    "az": ("azure", "", "prod-gpt4o"),
    "claude": ("anthropic", "", "claude-opus-4-7"),
    "gem": ("gemini", "", "gemini-2.0-flash"),
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    sim = start_simulator()
    channels = [
        {
            "name": name,
            "type": kind,
            "base_url": sim.root_url + path,
            "keys": [unique_key()],
            "models": [name],
            "model_map": {name: target},
        }
        for name, (kind, path, target) in UPSTREAMS.items()
    ]
    config = {"channels": channels, "tokens": [{"name": "t", "key": KEY}]}
    g = start_gateway(tmp_path_factory.mktemp("responses"), config)
    try:
        yield g
    finally:
        g.stop()
        sim.stop()


@pytest.fixture
def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize("model", list(UPSTREAMS))
def test_text_json_and_stream(sdk: openai.OpenAI, model: str) -> None:
    answer = sdk.responses.create(model=model, input="Hello there", instructions="Be brief.")
    assert answer.status == "completed" and '"Hello there"' in answer.output_text
    assert answer.usage is not None and answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
    events = list(
        sdk.responses.create(model=model, input="Hello there", instructions="Be brief.", stream=True)
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == answer.output_text
    final = events[-1].response  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens == answer.usage.output_tokens


@pytest.mark.parametrize("model", list(UPSTREAMS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_call_round_trip_without_server_state(sdk: openai.OpenAI, model: str, stream: bool) -> None:
    question = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with sdk.responses.stream(model=model, input=question, tools=TOOLS) as events:
            deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
            first = events.get_final_response()
        assert orjson.loads("".join(deltas)) == {"city": "Paris"}
    else:
        first = sdk.responses.create(model=model, input=question, tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    history = [
        *question,
        *(c.model_dump(exclude_none=True) for c in calls),
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 22C"},
    ]
    second = sdk.responses.create(model=model, input=history, tools=TOOLS)
    assert "sunny, 22C" in second.output_text


def test_openai_channel_keeps_state_upstream(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model="gpt", input="Weather in Paris?", tools=TOOLS)
    call = next(item for item in first.output if item.type == "function_call")
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    second = sdk.responses.create(model="gpt", previous_response_id=first.id, input=[output], tools=TOOLS)
    assert '"sunny"' in second.output_text
    assert sdk.responses.retrieve(second.id).output_text == second.output_text
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_unknown")


def test_stateful_request_to_a_stateless_channel_names_the_field(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="claude", previous_response_id="resp_123", input="more")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="gem", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert "web_search" in caught.value.message
