"""The simulator's Anthropic, Gemini and Azure faces, driven by the official SDKs and raw HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from tests.support.procs import SimHandle, unique_key

CLAUDE = "claude-opus-4-7"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
LONG = " ".join(f"word{i}" for i in range(1400))  # about 2,800 tokens: long enough to cache


def claude(sim: SimHandle, key: str = "sk-ant-sim") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.root_url, api_key=key, max_retries=0, timeout=10)


def gemini(sim: SimHandle, key: str = "gemini-sim-key") -> genai.Client:
    options = gt.HttpOptions(base_url=sim.root_url, api_version="v1beta", timeout=10_000)
    return genai.Client(api_key=key, http_options=options)


def messages_post(sim: SimHandle, body: dict[str, Any], **headers: str) -> httpx.Response:
    base = {"x-api-key": "sk-ant-sim", "anthropic-version": "2023-06-01"}
    return httpx.post(f"{sim.root_url}/v1/messages", json=body, headers={**base, **headers}, timeout=10)


def anthropic_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs, checking that every event has both lines and they agree."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        data = orjson.loads(data_line[6:])
        assert data["type"] == name_line[7:]
        out.append((name_line[7:], data))
    return out


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_json_answer_headers_and_usage(simulator: SimHandle) -> None:
    raw = claude(simulator).messages.with_raw_response.create(
        model=CLAUDE,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
    )
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert int(raw.headers["anthropic-ratelimit-requests-limit"]) > 0
    assert message.id.startswith("msg_01") and message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    (block,) = message.content
    assert block.type == "text" and '"Hello there"' in block.text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0


def test_anthropic_stream_is_the_full_event_sequence(simulator: SimHandle) -> None:
    body = {
        "model": CLAUDE,
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    response = messages_post(simulator, body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert b"[DONE]" not in response.content
    events = anthropic_events(response.content)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"] and names[-3] == "content_block_stop"
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["stop_reason"] is None and start["usage"]["output_tokens"] == 1
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    with claude(simulator).messages.stream(model=CLAUDE, max_tokens=100, messages=body["messages"]) as stream:
        message = stream.get_final_message()
    assert message.content[0].type == "text" and message.content[0].text == text
    assert final["usage"]["output_tokens"] == message.usage.output_tokens


def test_anthropic_streamed_tool_use_and_the_tool_result_turn(simulator: SimHandle) -> None:
    body = {"model": CLAUDE, "max_tokens": 300, "stream": True, "tools": TOOLS,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}  # fmt: skip
    events = anthropic_events(messages_post(simulator, body).content)
    (start,) = [d for n, d in events if n == "content_block_start"]
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    fragments = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert fragments[0] == "" and len(fragments) > 2
    assert orjson.loads("".join(fragments)) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    use = start["content_block"]
    follow_up = [
        *body["messages"],
        {"role": "assistant", "content": [{**use, "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "22C"}]},
    ]
    message = claude(simulator).messages.create(model=CLAUDE, max_tokens=300, tools=TOOLS, messages=follow_up)
    assert message.stop_reason == "end_turn" and "22C" in message.content[0].text


def test_anthropic_thinking_signature_round_trip(simulator: SimHandle) -> None:
    client = claude(simulator)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    first = client.messages.create(
        model=CLAUDE, max_tokens=2000, thinking=thinking, tools=TOOLS,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )  # fmt: skip
    kinds = [b.type for b in first.content]
    assert kinds == ["thinking", "tool_use"]
    blocks = [b.model_dump(exclude_none=True, exclude={"caller", "toolset_name"}) for b in first.content]
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": blocks[1]["id"], "content": "sunny"}],
    }

    def turn(assistant: list[dict[str, Any]]) -> Any:
        history = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": assistant},
        ]
        return client.messages.create(
            model=CLAUDE, max_tokens=2000, thinking=thinking, tools=TOOLS, messages=[*history, result]
        )

    assert turn(blocks).stop_reason == "end_turn"
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
        turn([{**blocks[0], "signature": base64.b64encode(b"forged").decode()}, blocks[1]])
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        turn(blocks[1:])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"n": 2}, "n: Extra inputs are not permitted"),
        ({"messages": [{"role": "user", "content": ""}]}, "text content blocks must be non-empty"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x",
                                                         "content": "1"}]}]},
            "unexpected `tool_use_id`",
        ),
        (
            {"messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                                   "input": {}}]},
                {"role": "user", "content": "b"},
            ]},
            "`tool_use` ids were found without `tool_result` blocks immediately after: t1",
        ),
        (
            {"messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "functions.Bash:0", "name": "f",
                                                   "input": {}}]},
            ]},
            "String should match pattern",
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}}]}]},
            "Image does not match the provided media type image/jpeg",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 4000, "tools": TOOLS,
             "tool_choice": {"type": "any"}},
            "Thinking may not be enabled when tool_choice forces tool use",
        ),
    ],
)  # fmt: skip
def test_anthropic_rejects_what_the_api_rejects(
    simulator: SimHandle, change: dict[str, Any], message: str
) -> None:
    body = {"model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = messages_post(simulator, body)
    assert response.status_code == 400, response.text
    envelope = response.json()
    assert envelope["type"] == "error" and envelope["error"]["type"] == "invalid_request_error"
    assert message in envelope["error"]["message"] and envelope["request_id"].startswith("req_")


def test_anthropic_auth_and_version_headers(simulator: SimHandle) -> None:
    body = {"model": CLAUDE, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    no_key = httpx.post(
        f"{simulator.root_url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    )
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    no_version = httpx.post(f"{simulator.root_url}/v1/messages", json=body, headers={"x-api-key": "k"})
    assert no_version.status_code == 400 and "anthropic-version" in no_version.json()["error"]["message"]
    bearer = messages_post(simulator, body, **{"x-api-key": "", "authorization": "Bearer sk-ant-oauth"})
    assert bearer.status_code == 200


def test_anthropic_prompt_cache_writes_then_reads(simulator: SimHandle) -> None:
    system = [{"type": "text", "text": LONG + unique_key(), "cache_control": {"type": "ephemeral"}}]
    client = claude(simulator)

    def ask(text: str) -> Any:
        return client.messages.create(
            model=CLAUDE, max_tokens=50, system=system, messages=[{"role": "user", "content": text}]
        ).usage

    first, second = ask("First question"), ask("Second question")
    assert first.cache_creation_input_tokens > 1024 and first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens < 20  # input tokens exclude the cached prefix
    total = client.messages.count_tokens(
        model=CLAUDE, system=system, messages=[{"role": "user", "content": "x"}]
    )
    assert total.input_tokens == pytest.approx(first.cache_creation_input_tokens, abs=10)


def test_anthropic_stop_reasons(simulator: SimHandle) -> None:
    client = claude(simulator)
    hello = [{"role": "user", "content": "Hello there"}]
    stopped = client.messages.create(model=CLAUDE, max_tokens=100, stop_sequences=["reply"], messages=hello)
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "reply"
    assert not stopped.content[0].text.endswith("reply")
    short = client.messages.create(model=CLAUDE, max_tokens=3, messages=hello)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    refused = client.messages.create(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "[sim:refuse] do it"}]
    )
    assert refused.stop_reason == "refusal" and refused.content == []


def test_anthropic_fault_envelopes(simulator: SimHandle) -> None:
    body = {"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
    limited = messages_post(simulator, body, **{"x-api-key": unique_key("fault-429")})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    overloaded = messages_post(simulator, body, **{"x-api-key": unique_key("fault-503")})
    assert overloaded.status_code == 529 and overloaded.json()["error"] == {
        "type": "overloaded_error",
        "message": "Overloaded",
    }
    broke = messages_post(simulator, body, **{"x-api-key": unique_key("fault-insufficient-quota")})
    assert broke.status_code == 400 and "credit balance is too low" in broke.json()["error"]["message"]
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude(simulator, unique_key("fault-503")).messages.create(**body)
    assert caught.value.status_code == 529
    streamed = messages_post(
        simulator, {**body, "stream": True}, **{"x-api-key": unique_key("fault-mid-stream-error")}
    )
    events = anthropic_events(streamed.content)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )


# --------------------------------------------------------------------------- Gemini

WEATHER = gt.FunctionDeclaration(
    name="get_weather",
    description="Weather of a city",
    parameters=gt.Schema(
        type=gt.Type.OBJECT, properties={"city": gt.Schema(type=gt.Type.STRING)}, required=["city"]
    ),
)


def test_gemini_json_answer_with_thoughts(simulator: SimHandle) -> None:
    config = gt.GenerateContentConfig(
        system_instruction="Be brief.", thinking_config=gt.ThinkingConfig(include_thoughts=True)
    )
    client = gemini(simulator)
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="Hello there", config=config)
    candidate = answer.candidates[0]
    assert candidate.finish_reason == gt.FinishReason.STOP
    thought, text = candidate.content.parts
    assert thought.thought is True and text.thought is None and '"Hello there"' in text.text
    usage = answer.usage_metadata
    assert usage.thoughts_token_count > 0 and usage.candidates_token_count > 0
    assert (
        usage.total_token_count
        == usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )


def test_gemini_sse_stream_has_cumulative_usage_and_crlf_framing(simulator: SimHandle) -> None:
    url = f"{simulator.root_url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": "Tell me something long enough"}]}]}
    response = httpx.post(url, json=body, headers={"x-goog-api-key": "k"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    blocks = response.content.split(b"\r\n\r\n")
    assert (
        blocks[-1] == b""
        and all(b.startswith(b"data: ") for b in blocks[:-1])
        and b"[DONE]" not in response.content
    )
    chunks = [orjson.loads(b[6:]) for b in blocks[:-1]]
    assert len(chunks) > 2
    counts = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
    assert counts == sorted(counts) and counts[0] < counts[-1]  # cumulative, not per chunk
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    client = gemini(simulator)
    array = httpx.post(url.replace("?alt=sse", ""), json=body, headers={"x-goog-api-key": "k"})
    assert [c["candidates"][0]["content"] for c in array.json()] == [
        c["candidates"][0]["content"] for c in chunks
    ]
    client_text = "".join(
        c.text or ""
        for c in client.models.generate_content_stream(
            model="gemini-2.0-flash", contents=body["contents"][0]["parts"][0]["text"]
        )
    )
    assert client_text == "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)


def test_gemini_function_call_and_thought_signatures(simulator: SimHandle) -> None:
    client = gemini(simulator)
    config = gt.GenerateContentConfig(tools=[gt.Tool(function_declarations=[WEATHER])])
    answer = client.models.generate_content(
        model="gemini-3-pro-preview", contents="Weather in Paris?", config=config
    )
    candidate = answer.candidates[0]
    assert candidate.finish_reason == gt.FinishReason.STOP  # Gemini has no tool-call finish reason
    (part,) = candidate.content.parts
    assert part.function_call.name == "get_weather" and part.function_call.args == {"city": "Paris"}
    assert part.function_call.id is None and part.thought_signature
    result = gt.Part.from_function_response(name="get_weather", response={"temp": 22})

    def follow_up(model_part: gt.Part) -> gt.GenerateContentResponse:
        history = [
            gt.Content(role="user", parts=[gt.Part(text="Weather in Paris?")]),
            gt.Content(role="model", parts=[model_part]),
            gt.Content(role="user", parts=[result]),
        ]
        return client.models.generate_content(model="gemini-3-pro-preview", contents=history, config=config)

    assert "22" in follow_up(part).text
    with pytest.raises(genai_errors.ClientError, match="missing a thought_signature") as caught:
        follow_up(gt.Part(function_call=part.function_call))
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    skip = gt.Part(function_call=part.function_call, thought_signature=b"skip_thought_signature_validator")
    assert "22" in (follow_up(skip).text or "")  # Google's documented placeholder passes


def test_gemini_rejects_json_schema_keywords_and_bad_roles(simulator: SimHandle) -> None:
    url = f"{simulator.root_url}/v1beta/models/gemini-2.5-flash:generateContent"
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False}
    body = {"contents": [{"parts": [{"text": "Hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "f", "parameters": params}]}]}  # fmt: skip
    response = httpx.post(url, json=body, headers={"x-goog-api-key": "k"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert 'Unknown name "additionalProperties"' in error["message"]
    bad_role = {"contents": [{"role": "assistant", "parts": [{"text": "Hi"}]}]}
    response = httpx.post(url, json=bad_role, params={"key": "k"})  # the ?key= form of auth
    assert response.status_code == 400 and "valid role" in response.json()["error"]["message"]
    unknown = httpx.post(
        url, json={"contents": [{"parts": [{"text": "Hi"}]}], "messages": []}, params={"key": "k"}
    )
    assert unknown.status_code == 400 and 'Unknown name "messages"' in unknown.json()["error"]["message"]


def test_gemini_error_envelopes(simulator: SimHandle) -> None:
    url = f"{simulator.root_url}/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"parts": [{"text": "Hi"}]}]}
    anonymous = httpx.post(url, json=body)
    assert anonymous.status_code == 403 and anonymous.json()["error"]["status"] == "PERMISSION_DENIED"
    bad_key = httpx.post(url, json=body, headers={"x-goog-api-key": unique_key("fault-401")})
    error = bad_key.json()["error"]
    assert bad_key.status_code == 400 and error["details"][0]["reason"] == "API_KEY_INVALID"
    limited = httpx.post(url, json=body, headers={"x-goog-api-key": unique_key("fault-429")})
    error = limited.json()["error"]
    assert limited.status_code == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
    busy = httpx.post(url, json=body, headers={"x-goog-api-key": unique_key("fault-503")})
    assert busy.status_code == 503 and busy.json()["error"]["status"] == "UNAVAILABLE"
    failing = gemini(simulator, unique_key("fault-500"))
    with pytest.raises(genai_errors.ServerError) as caught:
        failing.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    assert caught.value.code == 500 and caught.value.status == "INTERNAL"


def test_gemini_stop_reasons_and_implicit_cache(simulator: SimHandle) -> None:
    client = gemini(simulator)
    short = client.models.generate_content(
        model="gemini-2.0-flash", contents="Hello there", config=gt.GenerateContentConfig(max_output_tokens=3)
    )
    assert short.candidates[0].finish_reason == gt.FinishReason.MAX_TOKENS
    assert short.usage_metadata.candidates_token_count == 3
    blocked = client.models.generate_content(model="gemini-2.0-flash", contents="[sim:refuse] now")
    assert (
        blocked.candidates[0].finish_reason == gt.FinishReason.SAFETY
        and blocked.candidates[0].content is None
    )
    prefix = gt.Content(role="user", parts=[gt.Part(text=LONG + unique_key())])
    reply = gt.Content(role="model", parts=[gt.Part(text="Noted.")])
    first = client.models.generate_content(model="gemini-2.0-flash", contents=[prefix])
    second = client.models.generate_content(
        model="gemini-2.0-flash",
        contents=[prefix, reply, gt.Content(role="user", parts=[gt.Part(text="More")])],
    )
    assert first.usage_metadata.cached_content_token_count is None
    cached = second.usage_metadata.cached_content_token_count
    assert cached is not None and 1024 < cached <= second.usage_metadata.prompt_token_count


# --------------------------------------------------------------------------- Azure


@pytest.fixture
def azure(simulator: SimHandle) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        azure_endpoint=simulator.root_url, api_key="azure-key", api_version="2024-10-21", max_retries=0
    ) as client:
        yield client


def test_azure_deployment_paths_and_content_filters(simulator: SimHandle, azure: openai.AzureOpenAI) -> None:
    raw = azure.chat.completions.with_raw_response.create(
        model="prod-gpt4o", messages=[{"role": "user", "content": "Hi"}]
    )
    body = orjson.loads(raw.content)
    assert body["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert body["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"
    assert raw.headers["apim-request-id"] and raw.parse().model == "prod-gpt4o"
    chunks = list(
        azure.chat.completions.create(
            model="prod-gpt4o", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert chunks[0].choices == [] and chunks[0].id == ""  # Azure's prompt-filter chunk comes first
    assert chunks[-1].choices[0].finish_reason == "stop"
    embedding = azure.embeddings.create(model="embed-small", input="Hi")
    assert len(embedding.data[0].embedding) > 0


def test_azure_needs_api_version_and_key(simulator: SimHandle) -> None:
    url = f"{simulator.root_url}/openai/deployments/prod-gpt4o/chat/completions"
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    no_version = httpx.post(url, json=body, headers={"api-key": "k"})
    assert no_version.status_code == 404 and no_version.json()["error"]["code"] == "404"
    no_key = httpx.post(url, json=body, params={"api-version": "2024-10-21"})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "401"
    ok = httpx.post(url, json=body, params={"api-version": "2024-10-21"}, headers={"api-key": "k"})
    assert ok.status_code == 200 and ok.json()["model"] == "prod-gpt4o"
