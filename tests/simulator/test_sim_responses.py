"""The simulator's Responses API: objects, typed event streams, storage and its checks."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from tests.support.openapi import validate
from tests.support.procs import SimHandle

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def test_response_object_matches_the_spec(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt-4o", input="Hello there", instructions="Be brief"
    )
    body = orjson.loads(raw.content)
    validate(body, "Response")
    assert body["status"] == "completed" and body["instructions"] == "Be brief"
    response = raw.parse()
    assert '"Hello there"' in response.output_text and response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_stream_is_typed_events_with_sequence_numbers(http: httpx.Client) -> None:
    response = http.post("/v1/responses", json={"model": "gpt-4o", "input": "Stream please", "stream": True})
    assert response.status_code == 200 and b"[DONE]" not in response.content
    events = []
    for block in response.content.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        payload = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        events.append(payload)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed" and events[-1]["response"]["usage"]["output_tokens"] > 0
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == next(e["text"] for e in events if e["type"] == "response.output_text.done")


def test_tool_call_reasoning_and_continuation(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="o3-mini", input="Weather in Paris?", tools=TOOLS, reasoning={"effort": "low"}
    )
    assert [o.type for o in first.output] == ["reasoning", "function_call"]
    assert first.usage is not None and first.usage.output_tokens_details.reasoning_tokens == 64
    call = first.output[1]
    assert call.type == "function_call" and orjson.loads(call.arguments) == {"city": "Paris"}
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    second = client.responses.create(
        model="o3-mini", previous_response_id=first.id, input=[output], tools=TOOLS
    )
    assert '"sunny"' in second.output_text
    assert client.responses.retrieve(second.id).output_text == second.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")


def test_streamed_function_call_arguments(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o", input="Weather in Paris?", tools=TOOLS) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1 and orjson.loads("".join(deltas)) == {"city": "Paris"}
    assert final.output[0].type == "function_call"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"model": "gpt-4o", "input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools[0].name",
        ),
        ({"model": "gpt-4o", "input": "x", "messages": []}, "messages"),
        ({"model": "gpt-4o", "input": "x", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"model": "gpt-4o", "input": "x", "max_output_tokens": 4}, "max_output_tokens"),
    ],
)
def test_rejects_what_the_api_rejects(http: httpx.Client, body: dict[str, object], param: str) -> None:
    response = http.post("/v1/responses", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_length_is_incomplete(client: openai.OpenAI, simulator: SimHandle) -> None:
    response = client.responses.create(model="gpt-4o", input="Hello there", max_output_tokens=16)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
