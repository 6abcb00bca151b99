"""Chat completions through the official SDK, every body checked against the OpenAPI spec."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.openapi import validate
from tests.support.procs import SimHandle, unique_key
from tests.support.sse import json_chunks

USER = [{"role": "user", "content": "What is the weather like in Paris today?"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}


def raw_chat(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    body: dict[str, Any] = orjson.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    return body


def stream_raw(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = http.post("/v1/chat/completions", json={"stream": True, **body})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks = json_chunks(response.content)
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    return chunks


def test_chat_non_stream_shape(client: openai.OpenAI) -> None:
    body = raw_chat(client, model="gpt-4o-2024-08-06", messages=USER)
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["system_fingerprint"].startswith("fp_")
    assert body["service_tier"] == "default"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message == {
        "role": "assistant",
        "content": message["content"],
        "refusal": None,
        "annotations": [],
    }
    assert "Paris" in message["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 5 and usage["completion_tokens"] > 5
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"] == {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }


def test_chat_is_deterministic(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o", messages=USER)
    second = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage
    assert first.id != second.id


async def test_chat_async_client(aclient: openai.AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert completion.choices[0].message.content
    assert "weather" in completion.choices[0].message.content
    chunks = [
        c
        async for c in await aclient.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content


def test_chat_stream_without_usage(client: openai.OpenAI, http: httpx.Client) -> None:
    chunks = stream_raw(http, {"model": "gpt-4o", "messages": USER})
    assert all("usage" not in chunk for chunk in chunks)
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    middle = chunks[1:-1]
    assert len(middle) >= 5, "content should arrive in several chunks"
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # the SDK sees the same text, and no usage
    sdk_chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    assert all(c.usage is None and "usage" not in c.model_fields_set for c in sdk_chunks)
    text = "".join(c.choices[0].delta.content or "" for c in sdk_chunks)
    assert text == "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


def test_chat_stream_with_usage(client: openai.OpenAI, http: httpx.Client) -> None:
    body = {"model": "gpt-4o", "messages": USER, "stream_options": {"include_usage": True}}
    chunks = stream_raw(http, body)
    *content_chunks, usage_chunk = chunks
    assert all("usage" in c and c["usage"] is None for c in content_chunks)
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert content_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # the usage matches the non-streamed answer's
    plain = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert plain.usage is not None
    assert usage == plain.usage.model_dump(exclude_unset=True)


def test_chat_tool_call_json(client: openai.OpenAI) -> None:
    body = raw_chat(client, model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments == {"city": "Paris", "unit": "celsius"}


def test_chat_parallel_tool_calls_streamed(client: openai.OpenAI, http: httpx.Client) -> None:
    chunks = stream_raw(http, {"model": "gpt-4o", "messages": USER, "tools": [WEATHER_TOOL, TIME_TOOL]})
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    assert first["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # accumulate the SDK's view by index, as clients do
    calls: dict[int, dict[str, str]] = {}
    fragments: dict[int, int] = {}
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL, TIME_TOOL], stream=True
    ):
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            fragments[delta.index] = fragments.get(delta.index, 0) + 1
            if delta.id:
                entry["id"] = delta.id
            if delta.function and delta.function.name:
                entry["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                entry["arguments"] += delta.function.arguments
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert all(calls[i]["id"].startswith("call_") for i in (0, 1))
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert set(json.loads(calls[1]["arguments"])) == {"timezone"}
    assert min(fragments.values()) >= 3, "arguments should be split into several fragments"


def test_chat_tool_choice_variants(client: openai.OpenAI) -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    named = raw_chat(
        client,
        model="gpt-4o",
        messages=USER,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c["function"]["name"] for c in named["choices"][0]["message"]["tool_calls"]] == ["get_time"]
    single = raw_chat(client, model="gpt-4o", messages=USER, tools=tools, parallel_tool_calls=False)
    assert len(single["choices"][0]["message"]["tool_calls"]) == 1
    none = raw_chat(client, model="gpt-4o", messages=USER, tools=tools, tool_choice="none")
    assert none["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in none["choices"][0]["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert info.value.param == "tool_choice"


def test_chat_answers_tool_result(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22C and sunny"},
    ]
    body = raw_chat(client, model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "22C and sunny" in choice["message"]["content"]


def test_chat_n_choices(client: openai.OpenAI, http: httpx.Client) -> None:
    body = raw_chat(client, model="gpt-4o", messages=USER, n=2)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert texts[0] != texts[1]
    streamed = stream_raw(http, {"model": "gpt-4o", "messages": USER, "n": 2})
    content_chunks = [c for c in streamed if c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) == body["usage"]["completion_tokens"]  # one token per chunk
    assert {c["choices"][0]["index"] for c in content_chunks} == {0, 1}
    for index, text in enumerate(texts):
        pieces = [
            c["choices"][0]["delta"].get("content") or ""
            for c in streamed
            if c["choices"][0]["index"] == index
        ]
        assert "".join(pieces) == text
    finishes = [c["choices"][0]["finish_reason"] for c in streamed if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop", "stop"]


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
def test_chat_max_tokens_truncates(client: openai.OpenAI, http: httpx.Client, limit_field: str) -> None:
    body = raw_chat(client, model="gpt-4o", messages=USER, **{limit_field: 4})
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    chunks = stream_raw(http, {"model": "gpt-4o", "messages": USER, limit_field: 4})
    assert sum(bool(c["choices"][0]["delta"].get("content")) for c in chunks) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_stop_sequence(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4o", messages=USER).choices[0].message.content
    assert full is not None and "You said" in full
    cut = client.chat.completions.create(model="gpt-4o", messages=USER, stop=["You said"])
    assert cut.choices[0].message.content == full[: full.index("You said")]
    assert cut.choices[0].finish_reason == "stop"


def test_chat_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
        "required": ["city", "temperature"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}},
    )
    parsed = json.loads(completion.choices[0].message.content or "")
    assert set(parsed) == {"city", "temperature"} and isinstance(parsed["temperature"], float)


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": USER, "frobnicate": True, "metadata": {"a": "b"}},
    )
    assert response.status_code == 200
    validate(response.json(), "CreateChatCompletionResponse")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": USER}, "model", "missing_required_parameter"),
        ({"model": "gpt-4o"}, "messages", "missing_required_parameter"),
        ({"model": "gpt-4o", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "gpt-4o", "messages": []}, "messages", "empty_array"),
        (
            {"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        ({"model": "gpt-4o", "messages": USER, "n": 0}, "n", "integer_below_min_value"),
    ],
)
def test_chat_request_errors(
    client: openai.OpenAI, http: httpx.Client, body: dict[str, Any], param: str, code: str
) -> None:
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    envelope = response.json()
    validate(envelope, "ErrorResponse")
    assert envelope["error"]["type"] == "invalid_request_error"
    assert envelope["error"]["param"] == param
    assert envelope["error"]["code"] == code
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", body=body, cast_to=object)
    assert info.value.param == param and info.value.code == code


def test_bad_json_body(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions", content=b'{"model": "gpt-4o",', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    validate(response.json(), "ErrorResponse")
    assert error["type"] == "invalid_request_error" and error["param"] is None
    assert "could not parse the JSON body" in error["message"]


def test_auth_errors(simulator: SimHandle) -> None:
    url = f"{simulator.base_url}/chat/completions"
    body = {"model": "gpt-4o", "messages": USER}
    for headers in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer"}):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401, headers
        validate(response.json(), "ErrorResponse")
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.json()["error"]["type"] == "invalid_request_error"
    with (
        openai.OpenAI(base_url=simulator.base_url, api_key="fault-bogus", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        bad.chat.completions.create(model="gpt-4o", messages=USER)
    assert "unknown fault mode" in info.value.message


def test_unknown_path_and_wrong_method(http: httpx.Client) -> None:
    missing = http.post("/v1/chat/complete", json={})
    assert missing.status_code == 404
    validate(missing.json(), "ErrorResponse")
    assert missing.json()["error"]["message"] == "Invalid URL (POST /v1/chat/complete)"
    wrong = http.get("/v1/chat/completions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    validate(wrong.json(), "ErrorResponse")


def test_keys_are_counted(simulator: SimHandle) -> None:
    key = unique_key()
    with openai.OpenAI(base_url=simulator.base_url, api_key=key, max_retries=0) as sdk:
        for _ in range(3):
            sdk.chat.completions.create(model="gpt-4o", messages=USER)
    stats = simulator.stats()
    assert stats["calls"][key] == 3
    assert stats["by_path"]["/v1/chat/completions"] >= 3
    assert stats["total"] >= 3 and key not in stats["faults"]
