"""Gemini clients' translators: GenerateContentRequest → hub, hub answers and streams → Gemini."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from google.genai import types as gt
from hypothesis import given, settings
from hypothesis import strategies as st

from vectorengine.protocol import gemini

NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
# Struct numbers are doubles in Gemini: integers stay within 2**53
ARGS = st.dictionaries(
    st.text(min_size=1, max_size=8), st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=10)), max_size=3
)


@settings(max_examples=80, deadline=None)
@given(text=st.text(min_size=1, max_size=80), calls=st.lists(st.tuples(NAMES, ARGS), max_size=3))
def test_request_keeps_text_tool_names_and_arguments(
    text: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    contents: list[dict[str, Any]] = [{"role": "user", "parts": [{"text": text}]}]
    if calls:
        contents.append(
            {"role": "model", "parts": [{"functionCall": {"name": n, "args": a}} for n, a in calls]}
        )
        contents.append(
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": n, "response": {"ok": i}}} for i, (n, _) in enumerate(calls)
                ],
            }
        )
    hub = gemini.generate_to_chat({"contents": contents}, "m", stream=False)
    assert hub["messages"][0] == {"role": "user", "content": text}
    if calls:
        tool_calls = hub["messages"][1]["tool_calls"]
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tool_calls] == calls
        results = hub["messages"][2:]
        assert [r["tool_call_id"] for r in results] == [
            c["id"] for c in tool_calls
        ]  # matched by name, in order


def test_snake_case_fields_schema_and_config() -> None:
    body = {
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"parts": [{"text": "Hi"}, {"inline_data": {"mime_type": "image/png", "data": "AAAA"}}]}
        ],
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "f",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"x": {"type": "STRING", "nullable": True}},
                        },
                    }
                ]
            }
        ],
        "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}},
        "generation_config": {
            "max_output_tokens": 5,
            "stop_sequences": ["END"],
            "thinking_config": {"thinking_budget": 0},
        },
    }
    hub = gemini.generate_to_chat(body, "m", stream=True)
    assert hub["messages"][0] == {"role": "system", "content": "Be brief."}
    assert hub["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    params = hub["tools"][0]["function"]["parameters"]
    assert params == {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}
    assert hub["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert (hub["max_tokens"], hub["stop"]) == (5, ["END"]) and "reasoning_effort" not in hub
    assert hub["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]},
            "tools[0].googleSearch",
        ),
        ({"contents": [{"parts": [{"text": "x"}]}], "cachedContent": "cachedContents/1"}, "cachedContent"),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA"}}]}]},
            "contents[0].parts[0]",
        ),
        (
            {"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
            "contents[0].parts[0].functionResponse",
        ),
        ({"contents": []}, "contents"),
    ],
)
def test_untranslatable_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(gemini.TranslationError) as caught:
        gemini.generate_to_chat(body, "m", stream=False)
    assert caught.value.param == param


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=1, max_size=12), max_size=6),
    calls=st.lists(st.tuples(NAMES, ARGS), max_size=2),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
def test_stream_reassembles(
    pieces: list[str], calls: list[tuple[str, dict[str, Any]]], cuts: list[int]
) -> None:
    raw = _chunk({"role": "assistant", "content": ""}) + b"".join(_chunk({"content": p}) for p in pieces)
    for k, (name, args) in enumerate(calls):
        text = json.dumps(args)
        raw += _chunk(
            {
                "tool_calls": [
                    {
                        "index": k,
                        "id": f"call_{k}",
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        for i in range(0, len(text), 3):  # later fragments carry no id (I.5.2)
            raw += _chunk({"tool_calls": [{"index": k, "function": {"arguments": text[i : i + 3]}}]})
    raw += _chunk({}, "tool_calls" if calls else "stop")
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    raw += b"data: " + orjson.dumps({"id": "c", "choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n"
    stream = gemini.ChatToGenerateStream(model="m")
    out, at = b"", 0
    for cut in cuts:
        out += stream.feed(raw[at : at + cut])
        at += cut
    out += stream.feed(raw[at:]) + stream.tail()
    assert stream.done and out.endswith(b"\r\n\r\n") and b"[DONE]" not in out
    events = [
        gt.GenerateContentResponse.model_validate(orjson.loads(e[6:])) for e in out.split(b"\r\n\r\n") if e
    ]
    parts = [
        p for e in events for c in e.candidates or [] for p in (c.content.parts if c.content else None) or []
    ]
    assert "".join(p.text or "" for p in parts) == "".join(pieces)
    assert [(p.function_call.name, p.function_call.args) for p in parts if p.function_call] == calls
    last = events[-1]
    assert last.candidates[0].finish_reason == gt.FinishReason.STOP
    assert last.usage_metadata.total_token_count == 12 and last.usage_metadata.candidates_token_count == 5


def test_json_answer() -> None:
    obj = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 9,
            "total_tokens": 12,
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    answer = gt.GenerateContentResponse.model_validate(gemini.chat_to_generate_response(obj, model="m"))
    parts = answer.candidates[0].content.parts
    assert [(p.thought, p.text) for p in parts[:2]] == [(True, "hmm"), (None, "Hi")]
    assert parts[2].function_call.id == "call_1" and parts[2].function_call.args == {"a": 1}
    assert answer.candidates[0].finish_reason == gt.FinishReason.MAX_TOKENS
    usage = answer.usage_metadata
    assert (usage.candidates_token_count, usage.thoughts_token_count, usage.total_token_count) == (5, 4, 12)
