"""The official openai SDK, sync and async, stream and non-stream, against gateway + simulator.

Every JSON body and every SSE chunk the client receives is validated against the official
OpenAPI spec.
"""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import orjson
import pytest

from tests.gateway.conftest import FULL_KEY, LIMITED_KEY
from tests.support.gateway import GatewayProcess
from tests.support.openapi import validate

MSG = [{"role": "user", "content": "Tell me about routing"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=FULL_KEY, max_retries=0)


@pytest.fixture
def aclient(gateway: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=FULL_KEY, max_retries=0)


def sse_payloads(text: str) -> list[str]:
    """The data payloads of an SSE body, checking the framing on the way."""
    assert text.endswith("\n\n")
    payloads = []
    for event in text[:-2].split("\n\n"):
        lines = event.split("\n")
        assert len(lines) == 1 and lines[0].startswith("data: "), event
        payloads.append(lines[0][6:])
    return payloads


def test_chat_sync(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    assert raw.headers["x-request-id"].startswith("req_")
    body = orjson.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    reply = raw.parse()
    assert reply.model == "gpt-4o-mini-2024-07-18"  # mapped upstream name passes through faithfully
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert (
        reply.usage is not None
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )


async def test_chat_async(aclient: openai.AsyncOpenAI) -> None:
    reply = await aclient.chat.completions.create(model="gpt-4o", messages=MSG, n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.model == "gpt-4o"


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_sync(client: openai.OpenAI, include_usage: bool) -> None:
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True, **kwargs)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1].choices == [] and chunks[-1].usage is not None
    else:
        assert usage_chunks == []
    assert chunks[-1 if not include_usage else -2].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_raw_framing_and_schema(gateway: GatewayProcess, include_usage: bool) -> None:
    body: dict = {"model": "gpt-4o-mini", "messages": MSG, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {FULL_KEY}"},
        timeout=10,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(r.text)
    assert payloads[-1] == "[DONE]"
    objs = [orjson.loads(p) for p in payloads[:-1]]
    for obj in objs:
        validate(obj, "CreateChatCompletionStreamResponse")
        # Usage was requested upstream either way; the client sees it only if it asked.
        assert ("usage" in obj) is include_usage
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    if include_usage:
        assert objs[-1]["choices"] == [] and objs[-1]["usage"]["total_tokens"] > 0


async def test_chat_stream_async(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text


def test_tool_call_json(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG, tools=[WEATHER_TOOL])
    validate(orjson.loads(raw.content), "CreateChatCompletionResponse")
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in orjson.loads(call.function.arguments)


async def test_tool_call_streamed_arguments(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model="gpt-4o", messages=MSG, tools=[WEATHER_TOOL], stream=True
    )
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    async for c in stream:
        for choice in c.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
                if tc.function.name:
                    names[tc.index] = tc.function.name
    assert finish == "tool_calls" and names[0] == "get_weather"
    assert "city" in orjson.loads(args[0])


def test_completions_sync_and_stream(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    validate(orjson.loads(raw.content), "CreateCompletionResponse")
    assert raw.parse().choices[0].text
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)


async def test_completions_async_stream_with_usage(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=["a", "b"], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_embeddings_base64_default_and_float(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    # The SDK asks for base64 by default and decodes it.
    emb = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"], dimensions=64)
    assert [len(d.embedding) for d in emb.data] == [64, 64]
    r = httpx.post(
        gateway.base_url + "/embeddings",
        headers={"Authorization": f"Bearer {FULL_KEY}"},
        json={"model": "text-embedding-3-small", "input": "hello", "encoding_format": "float"},
        timeout=10,
    )
    body = r.json()
    validate(body, "CreateEmbeddingResponse")
    floats = body["data"][0]["embedding"]
    r64 = httpx.post(
        gateway.base_url + "/embeddings",
        headers={"Authorization": f"Bearer {FULL_KEY}"},
        json={"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"},
        timeout=10,
    )
    packed = base64.b64decode(r64.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert decoded == pytest.approx(floats, rel=1e-6)


async def test_embeddings_async(aclient: openai.AsyncOpenAI) -> None:
    emb = await aclient.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert emb.usage.prompt_tokens > 0 and len(emb.data[0].embedding) > 0


def test_models_are_filtered_per_token(gateway: GatewayProcess, client: openai.OpenAI) -> None:
    listing = client.models.with_raw_response.list()
    validate(orjson.loads(listing.content), "ListModelsResponse")
    ids = {m.id for m in listing.parse()}
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= ids
    limited = openai.OpenAI(base_url=gateway.base_url, api_key=LIMITED_KEY, max_retries=0)
    assert [m.id for m in limited.models.list()] == ["gpt-4o-mini"]
    one = limited.models.with_raw_response.retrieve("gpt-4o-mini")
    validate(orjson.loads(one.content), "Model")
    with pytest.raises(openai.NotFoundError) as info:
        limited.models.retrieve("gpt-4o")  # exists, but not for this token
    assert info.value.code == "model_not_found"


async def test_models_async(aclient: openai.AsyncOpenAI) -> None:
    page = await aclient.models.list()
    assert any(m.id == "gpt-4o" for m in page.data)
    model = await aclient.models.retrieve("gpt-4o")
    assert model.id == "gpt-4o" and model.object == "model"


def test_unknown_request_fields_pass_through(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o", messages=MSG, extra_body={"vendor_specific": {"x": 1}}, metadata={"k": "v"}
    )
    assert reply.choices[0].message.content
