"""Anthropic clients: Messages requests → the hub, and hub answers → Messages (JSON and SSE)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from vectorengine.protocol import anthropic as a
from vectorengine.protocol.usage import Usage

EVENT = TypeAdapter(RawMessageStreamEvent)
names = st.from_regex(r"[a-z_]{1,10}", fullmatch=True)
args = st.dictionaries(
    st.text(min_size=1, max_size=5), st.integers(-(2**53), 2**53) | st.text(max_size=6), max_size=3
)


def openai_stream(pieces: list[str], calls: list[tuple[str, dict[str, Any]]], cuts: list[int]) -> bytes:
    """What an OpenAI upstream streams (include_usage on): role chunk, text, tool-call fragments
    keyed by index (only the first carries id and name), finish, usage, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in pieces]
    for k, (name, arguments) in enumerate(calls):
        raw = orjson.dumps(arguments).decode()
        points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
        first = True
        for lo, hi in pairwise(points):
            call: dict[str, Any] = {"index": k, "function": {"arguments": raw[lo:hi]}}
            if first:
                call |= {"id": f"call_{k}", "type": "function"}
                call["function"]["name"] = name
                first = False
            out.append(chunk({"tool_calls": [call]}))
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    usage = {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59,
             "prompt_tokens_details": {"cached_tokens": 20}}  # fmt: skip
    out.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                "usage": usage})  # fmt: skip
    return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in out) + b"data: [DONE]\n\n"


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=1, max_size=10), max_size=4),
    calls=st.lists(st.tuples(names, args), max_size=3),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_openai_stream_becomes_a_valid_anthropic_event_sequence(
    pieces: list[str], calls: list[tuple[str, dict[str, Any]]], cuts: list[int]
) -> None:
    raw = openai_stream(pieces, calls, cuts)
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    t = a.ChatToMessagesStream(model="claude-x", message_id="msg_1")
    out = b"".join(t.feed(raw[lo:hi]) for lo, hi in pairwise(points)) + t.tail()
    events, pings = [], 0
    for block in out.split(b"\n\n")[:-1]:
        head, data = block.split(b"\n")
        payload = orjson.loads(data[6:])
        assert head == b"event: " + payload["type"].encode()  # event: line matches the payload
        if payload == {"type": "ping"}:  # not in the SDK's union: the SDK skips pings itself
            pings += 1
            continue
        events.append(EVENT.validate_python(payload))  # the SDK's own event models
    kinds = [e.type for e in events]
    assert pings == 1 and kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e.index for e in events if e.type == "content_block_start"]
    stops = [e.index for e in events if e.type == "content_block_stop"]
    assert starts == list(range(len(starts))) == stops  # consecutive indexes, each closed
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "".join(pieces)
    uses = {e.index: [e.content_block.name, ""] for e in events
            if e.type == "content_block_start" and e.content_block.type == "tool_use"}  # fmt: skip
    for e in events:
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta":
            uses[e.index][1] += e.delta.partial_json
    assert [(n, orjson.loads(j or "{}")) for n, j in uses.values()] == calls
    final = events[-2]
    assert final.type == "message_delta"
    assert final.delta.stop_reason == ("tool_use" if calls else "end_turn")
    # 50 prompt tokens of which 20 cached: Anthropic counts them apart, once (I.5.4)
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (
        30,
        20,
        9,
    )
    assert t.done and t.usage == Usage(prompt_tokens=50, completion_tokens=9, cached_tokens=20)


@settings(max_examples=100, deadline=None)
@given(
    turns=st.lists(
        st.one_of(
            st.tuples(st.just("text"), st.text(min_size=1, max_size=12)),
            st.tuples(st.just("tool"), st.tuples(names, args)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_a_conversation_survives_openai_to_anthropic_and_back(turns: list[tuple[str, Any]]) -> None:
    messages: list[dict[str, Any]] = []
    for i, (kind, value) in enumerate(turns):
        if kind == "text":
            messages.append({"role": "user", "content": value})
            continue
        name, arguments = value
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}  # fmt: skip
        messages += [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "done"},
        ]
    anthropic_body = a.chat_to_messages({"model": "m", "messages": messages}, "claude-x", stream=False)
    back = a.messages_to_chat(anthropic_body)
    users = [m["content"] for m in messages if m["role"] == "user"]
    # consecutive user turns merge on the way to Anthropic; the text, in order, survives
    assert "".join(m["content"] for m in back["messages"] if m["role"] == "user") == "".join(users)
    sent = [(c["function"]["name"], orjson.loads(c["function"]["arguments"]))
            for m in messages for c in m.get("tool_calls") or []]  # fmt: skip
    got = [(c["function"]["name"], orjson.loads(c["function"]["arguments"]))
           for m in back["messages"] for c in m.get("tool_calls") or []]  # fmt: skip
    assert got == sent
    results = [m for m in back["messages"] if m["role"] == "tool"]
    calls = [c for m in back["messages"] for c in m.get("tool_calls") or []]
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls]  # ids still pair up


def test_a_chat_completion_becomes_a_message() -> None:
    chat = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48,
                  "prompt_tokens_details": {"cached_tokens": 32}},
    }  # fmt: skip
    msg = Message.model_validate(a.chat_to_message(chat, model="claude-alias"))
    assert msg.model == "claude-alias" and msg.stop_reason == "tool_use"
    assert msg.content[0].type == "text" and msg.content[0].text == "Let me look."
    assert msg.content[1].type == "tool_use" and msg.content[1].input == {"city": "Paris"}
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (8, 32, 8)


def test_anthropic_request_fields_map_to_the_hub() -> None:
    body = {
        "model": "claude-x", "max_tokens": 300, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}],
        "stop_sequences": ["END"], "tools": [{"name": "look", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 2048}, "stream": True,
    }  # fmt: skip
    hub = a.messages_to_chat(body)
    assert hub["messages"][0] == {"role": "system", "content": "Be brief."}
    assert hub["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    assert hub["stop"] == ["END"] and hub["tool_choice"] == "required" and hub["parallel_tool_calls"] is False
    assert hub["reasoning_effort"] == "medium" and hub["max_tokens"] == 300
    assert hub["stream"] is True and hub["stream_options"] == {"include_usage": True}
