"""OpenAI chat → Anthropic Messages and back: requests, answers, streams, errors (protocols.md I)."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.support.openapi import specs_dir
from vectorengine.protocol import anthropic as a
from vectorengine.protocol.usage import Usage

FIXTURES = specs_dir() / "fixtures" / "anthropic"


def _chunks(sse: bytes) -> list[ChatCompletionChunk]:
    """Every ``data:`` event but ``[DONE]``, validated by the openai SDK's own model."""
    events = [e for e in sse.split(b"\n\n") if e.strip()]
    assert events[-1] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events)
    return [ChatCompletionChunk.model_validate(orjson.loads(e[6:])) for e in events[:-1]]


def _accumulate(chunks: list[ChatCompletionChunk]) -> tuple[str, dict[int, dict[str, str]], str | None]:
    text, calls, finish = "", {}, None
    for c in chunks:
        for ch in c.choices:
            text += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                if tc.id:
                    assert not slot["id"], "only the first fragment of a call carries its id (I.5.2)"
                    slot["id"] = tc.id
                if tc.function:
                    slot["name"] += tc.function.name or ""
                    slot["args"] += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    return text, calls, finish


# -- streams ------------------------------------------------------------------------------------------


def test_the_recorded_tool_use_stream() -> None:
    t = a.MessagesToChatStream(include_usage=True)
    chunks = _chunks(t.feed((FIXTURES / "tool_use_response.txt").read_bytes()) + t.tail())
    text, calls, finish = _accumulate(chunks)
    assert text == "I'll check the current weather in Paris for you."
    assert list(calls) == [0]  # the tool call is index 0 although it is content block 1 (I.5.1)
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("toolu_")
    assert orjson.loads(calls[0]["args"]) == {"location": "Paris"}
    assert finish == "tool_calls"
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None  # the usage chunk, as OpenAI sends it
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (t.usage.prompt_tokens, 65)  # type: ignore[union-attr]
    assert t.done and t.error is None and t.content_seen


@pytest.mark.parametrize(
    ("name", "finish"), [("basic_response", "stop"), ("refusal_response", "content_filter")]
)
def test_recorded_streams_finish_reasons(name: str, finish: str) -> None:
    t = a.MessagesToChatStream(include_usage=False)
    chunks = _chunks(t.feed((FIXTURES / f"{name}.txt").read_bytes()) + t.tail())
    assert _accumulate(chunks)[2] == finish
    assert all(c.choices for c in chunks)  # no usage chunk the client did not ask for (I.5.6)
    assert t.usage is not None and t.usage.prompt_tokens > 0


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def anthropic_stream(
    texts: list[str], tools: list[tuple[str, dict[str, Any], list[int]]], cache_read: int
) -> bytes:
    """A stream as Anthropic sends it: text blocks, then tool_use blocks whose input arrives in
    fragments cut at the given offsets."""
    ev: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": 3,
                  "output_tokens": 1}}}, {"type": "ping"}]  # fmt: skip
    index = 0
    for text in texts:
        ev.append(
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        )
        for piece in re.findall(r".{1,3}", text, re.S):
            ev.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
            )
        ev.append({"type": "content_block_stop", "index": index})
        index += 1
    for name, args, cuts in tools:
        use = {"type": "tool_use", "id": f"toolu_{index}", "name": name, "input": {}}
        ev.append({"type": "content_block_start", "index": index, "content_block": use})
        raw = orjson.dumps(args).decode()
        points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
        for lo, hi in pairwise(points):
            ev.append({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": raw[lo:hi]}})  # fmt: skip
        ev.append({"type": "content_block_stop", "index": index})
        index += 1
    stop = "tool_use" if tools else "end_turn"
    ev.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
               "usage": {"output_tokens": 42}})  # fmt: skip
    ev.append({"type": "message_stop"})
    return b"".join(_sse(e) for e in ev)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
tool_specs = st.lists(
    st.tuples(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=4),
        st.lists(st.integers(0, 200), max_size=5),
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1, max_size=20), max_size=3),
    tools=tool_specs,
    cuts=st.lists(st.integers(0, 100_000), max_size=10),
    cache_read=st.integers(0, 500),
)
def test_any_stream_split_anywhere_keeps_text_tools_and_usage(
    texts: list[str], tools: list[tuple[str, dict[str, Any], list[int]]], cuts: list[int], cache_read: int
) -> None:
    raw = anthropic_stream(texts, tools, cache_read)
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    t = a.MessagesToChatStream(include_usage=True)
    out = b"".join(t.feed(raw[lo:hi]) for lo, hi in pairwise(points)) + t.tail()
    text, calls, finish = _accumulate(_chunks(out))
    assert text == "".join(texts)
    assert sorted(calls) == list(range(len(tools)))  # ordinals 0..n-1 (I.5.1)
    for k, (name, args, _) in enumerate(tools):
        assert calls[k]["name"] == name and orjson.loads(calls[k]["args"] or "{}") == args
    assert finish == ("tool_calls" if tools else "stop")
    # Cached tokens are inside prompt_tokens once, not added again (I.5.4)
    assert t.usage == Usage(prompt_tokens=10 + cache_read + 3, completion_tokens=42, cached_tokens=cache_read,
                            cache_write_tokens=3)  # fmt: skip


def test_an_error_event_becomes_an_openai_error_event() -> None:
    t = a.MessagesToChatStream(include_usage=False)
    start = anthropic_stream(["hi"], [], 0).split(b"event: message_delta")[0]
    err = _sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    out = t.feed(start + err)
    assert orjson.loads(out.split(b"\n\n")[-2][6:]) == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": "overloaded"}
    }
    assert t.error is not None and not t.done
    assert a.leading_error(err) == t.error
    assert a.leading_error(start) is None


# -- JSON answers and errors ----------------------------------------------------------------------------


def test_a_message_becomes_a_chat_completion() -> None:
    message = {
        "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7,
                  "output_tokens": 20},
    }  # fmt: skip
    chat = a.message_to_chat(message)
    parsed = ChatCompletion.model_validate(chat)
    msg = parsed.choices[0].message
    assert msg.content == "Checking." and parsed.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls is not None and orjson.loads(msg.tool_calls[0].function.arguments) == {
        "city": "Paris"
    }  # type: ignore[union-attr]
    assert chat["choices"][0]["message"]["reasoning_content"] == "Let me see."
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 112 and parsed.usage.total_tokens == 132
    assert parsed.usage.prompt_tokens_details.cached_tokens == 100  # type: ignore[union-attr]


TOO_LONG = "prompt is too long: 210000 tokens > 200000 maximum"


@pytest.mark.parametrize(
    ("status", "error", "client_status", "code"),
    [
        (529, {"type": "overloaded_error", "message": "Overloaded"}, 503, "overloaded"),
        (429, {"type": "rate_limit_error", "message": "slow down"}, 429, "rate_limit_exceeded"),
        (400, {"type": "invalid_request_error", "message": TOO_LONG}, 400, "context_length_exceeded"),
        (401, {"type": "authentication_error", "message": "invalid x-api-key"}, 401, "invalid_api_key"),
    ],
)  # fmt: skip
def test_error_envelopes(status: int, error: dict[str, str], client_status: int, code: str) -> None:
    raw = orjson.dumps({"type": "error", "error": error, "request_id": "req_1"})
    got_status, envelope = a.openai_error_from_anthropic(status, raw)
    assert got_status == client_status
    expected = {"message": error["message"], "type": error["type"], "param": None, "code": code}
    assert orjson.loads(envelope)["error"] == expected
    assert a.openai_error_from_anthropic(502, b"<html>")[0] == 502


# -- requests -------------------------------------------------------------------------------------------


def test_system_roles_merging_and_parallel_tool_results_in_one_user_turn() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Thanks."}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "functions.get_weather:0", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
            ]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "21C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "25C"},
        ],
    }  # fmt: skip
    out = a.chat_to_messages(body, "claude-x", stream=False)
    assert out["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}]
    assert [t["role"] for t in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Weather in Paris and Rome?"},
        {"type": "text", "text": "Thanks."},  # the empty text part is dropped
    ]
    uses, results = out["messages"][1]["content"], out["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result"]  # one user turn (I.5.7)
    for use, result in zip(uses, results, strict=True):
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", use["id"])  # sanitised (I.5.8) …
        assert result["tool_use_id"] == use["id"]  # … the same way on both sides
    assert uses[0]["input"] == {"city": "Paris"} and out["max_tokens"] == 4096


def test_tools_choice_stop_images_and_reasoning() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}],
        "tools": [{"type": "function",
                   "function": {"name": "look", "description": "Look", "parameters": {}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "parallel_tool_calls": False,
        "stop": "END",
        "max_tokens": 100,
        "temperature": 0.2,
    }  # fmt: skip
    out = a.chat_to_messages(body, "claude-x", stream=True)
    blocks = out["messages"][0]["content"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    assert out["tools"] == [
        {"name": "look", "description": "Look", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "look", "disable_parallel_tool_use": True}
    assert out["stop_sequences"] == ["END"] and out["stream"] is True and out["temperature"] == 0.2
    thinking = a.chat_to_messages({**body, "reasoning_effort": "high"}, "claude-x", stream=False)
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert thinking["max_tokens"] > 4096 and "temperature" not in thinking
    assert thinking["tool_choice"]["type"] == "auto"  # a forced tool cannot think


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "messages[0].content[0]"),
    ],
)  # fmt: skip
def test_what_cannot_be_expressed_is_a_clear_error(change: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(a.TranslationError) as err:
        a.chat_to_messages(body, "claude-x", stream=False)
    assert err.value.param == param


@settings(max_examples=100, deadline=None)
@given(raw=st.text(min_size=1, max_size=40))
def test_tool_ids_are_always_valid_and_stable(raw: str) -> None:
    safe = a.tool_id(raw)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", safe) and a.tool_id(raw) == safe
    if re.fullmatch(r"[a-zA-Z0-9_-]+", raw):
        assert safe == raw
