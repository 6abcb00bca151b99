"""Responses API (``POST /v1/responses``) ↔ OpenAI chat (the hub): requests, answers, streams.

See protocols.md B; every event and Response is checked with the openai SDK's own models.
"""

from __future__ import annotations

import random
import re
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from vectorengine.protocol import responses as r
from vectorengine.protocol.anthropic.request import TranslationError

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
REQUEST: dict[str, Any] = {"model": "gpt-test", "input": "Hi", "stream": True}

# -- helpers ------------------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    """A chat.completion.chunk event as OpenAI sends it when usage was asked for."""
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741476542,
        "model": "gpt-test-2025",
        "choices": [choice],
        "usage": None,
        **extra,
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _usage_chunk(prompt: int = 12, completion: int = 7, cached: int = 4, reasoning: int = 2) -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741476542,
        "model": "gpt-test-2025",
        "choices": [],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def _call(
    index: int, *, arguments: str, call_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """A tool-call fragment: only the first one of a call carries its id, type and name."""
    if call_id is None:
        return {"index": index, "function": {"arguments": arguments}}
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _stream(request: dict[str, Any] | None = None) -> r.ChatToResponsesStream:
    return r.ChatToResponsesStream(
        request=request or REQUEST, response_id=r.response_id(), created_at=1741476542
    )


def _events(raw: bytes) -> list[dict[str, Any]]:
    """Every event's payload, each checked for framing, name = type, and the SDK's own model."""
    assert raw.endswith(b"\n\n") and b"[DONE]" not in raw
    payloads = []
    for event in raw[:-2].split(b"\n\n"):
        kind, data = event.split(b"\n")
        assert kind.startswith(b"event: ") and data.startswith(b"data: ")
        payload = orjson.loads(data[6:])
        assert payload["type"] == kind[7:].decode()
        EVENTS.validate_python(payload)
        payloads.append(payload)
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    return payloads


def _feed(t: r.ChatToResponsesStream, raw: bytes, cuts: list[int]) -> bytes:
    bounds = [0, *sorted(cuts), len(raw)]
    return b"".join(t.feed(memoryview(raw)[a:b]) for a, b in pairwise(bounds)) + t.tail()


def _digest(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must not depend on how the input was split (ids and clocks left out)."""
    keys = ("output_index", "content_index", "summary_index", "delta", "text", "arguments", "name")
    return [(e["type"], e["sequence_number"], *(e.get(k) for k in keys)) for e in events]


def _final(events: list[dict[str, Any]]) -> Response:
    return Response.model_validate(events[-1]["response"])


TEXT_STREAM = (
    _chunk({"role": "assistant", "content": "", "refusal": None})
    + _chunk({"content": "Hel"})
    + _chunk({"content": "lo, "})
    + _chunk({"content": "wörld ☃"})
    + _chunk({}, "stop")
    + _usage_chunk()
    + DONE
)
TOOL_STREAM = (
    _chunk({"role": "assistant", "content": None})
    + _chunk({"tool_calls": [_call(0, call_id="call_aaa", name="get_weather", arguments="")]})
    + _chunk({"tool_calls": [_call(0, arguments='{"ci')]})
    + _chunk({"tool_calls": [_call(0, arguments='ty": "Paris"}')]})
    + _chunk({"tool_calls": [_call(1, call_id="call_bbb", name="get_time", arguments='{"tz"')]})
    + _chunk({"tool_calls": [_call(1, arguments=': "CET"}')]})
    + _chunk({}, "tool_calls")
    + _usage_chunk()
    + DONE
)
TEXT_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]

# -- requests -----------------------------------------------------------------------------------------


def test_string_input_and_instructions() -> None:
    chat = r.responses_to_chat({"model": "m", "instructions": "Be brief.", "input": "Hi"})
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


def test_message_items_and_parts() -> None:
    image = {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"}
    chat = r.responses_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "Rules."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "What is "}, image],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "A cat.", "annotations": []}],
                },
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
                },
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is "},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "ab"},
    ]


def test_function_calls_merge_into_one_assistant_turn() -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'}
    chat = r.responses_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                call,
                {**call, "call_id": "call_2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "one"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "tw"}, {"type": "input_text", "text": "o"}],
                },
                {"role": "assistant", "content": "Let me check."},
                {**call, "call_id": "call_3"},
            ],
        }
    )
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    assert chat["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
    ]


def test_settings_are_mapped() -> None:
    chat = r.responses_to_chat(
        {
            "model": "m",
            "input": "x",
            "max_output_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "parallel_tool_calls": False,
            "user": "u1",
            "metadata": {"k": "v"},
            "store": True,
            "stream": True,
            "reasoning": {"effort": "high", "summary": "auto"},
            "truncation": "auto",
            "include": ["x"],
        }
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "user": "u1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "reasoning_effort": "high",
    }


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (
            {"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": True},
            {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": True},
            },
        ),
        ({"type": "json_object"}, {"type": "json_object"}),
        ({"type": "text"}, None),
    ],
)
def test_text_format(fmt: dict[str, Any], expected: dict[str, Any] | None) -> None:
    chat = r.responses_to_chat({"model": "m", "input": "x", "text": {"format": fmt}})
    assert chat.get("response_format") == expected


def test_tools_and_tool_choice() -> None:
    tool = {
        "type": "function",
        "name": "f",
        "description": "d",
        "parameters": {"type": "object"},
        "strict": True,
    }
    nested = {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
    for choice, expected in [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ]:
        chat = r.responses_to_chat({"model": "m", "input": "x", "tools": [tool], "tool_choice": choice})
        assert chat["tools"] == [nested]
        assert chat["tool_choice"] == expected


FAILURES = [
    ({"model": None}, "model"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": None}, "input"),
    ({"input": []}, "input"),
    ({"input": 3}, "input"),
    ({"instructions": ["x"]}, "instructions"),
    ({"input": ["hi"]}, "input[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
        "input[0].content[0].type",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
        "input[0].content[0].image_url",
    ),
    (
        {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
        "input[0].content[0].type",
    ),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
    (
        {"input": [{"role": "user", "content": "a"}, {"type": "item_reference", "id": "msg_1"}]},
        "input[1].type",
    ),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name"),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
        "input[0].arguments",
    ),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    (
        {
            "input": [
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": "u"}],
                }
            ]
        },
        "input[0].output[0].type",
    ),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}, "tools[1].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
]


@pytest.mark.parametrize(("change", "param"), FAILURES)
def test_untranslatable_requests_name_the_field(change: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        r.responses_to_chat({"model": "m", "input": "x", **change})
    assert info.value.param == param
    assert isinstance(info.value, ValueError) and info.value.message


@pytest.mark.parametrize(
    "change", [{"previous_response_id": "resp_1"}, {"conversation": {"id": "c"}}, {"background": True}]
)
def test_stateful_features_say_the_channel_is_stateless(change: dict[str, Any]) -> None:
    with pytest.raises(TranslationError, match="stateless"):
        r.responses_to_chat({"model": "m", "input": "x", **change})


# -- JSON answers -------------------------------------------------------------------------------------

CHAT_USAGE = {
    "prompt_tokens": 36,
    "completion_tokens": 87,
    "total_tokens": 123,
    "prompt_tokens_details": {"cached_tokens": 6},
    "completion_tokens_details": {"reasoning_tokens": 20},
}


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1741476542,
        "model": "gpt-test-2025",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": CHAT_USAGE,
    }


def test_text_answer_is_a_valid_response() -> None:
    request = {
        "model": "gpt-test",
        "input": "Hi",
        "instructions": "Be brief.",
        "temperature": 0.5,
        "metadata": {"k": "v"},
        "text": {"format": {"type": "json_object"}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    }
    rid = r.response_id()
    out = r.chat_to_response(
        _completion({"content": "Hi there!"}),
        request=request,
        response_id=rid,
        created_at=1741476542,
        completed_at=1741476550,
    )
    resp = Response.model_validate(out)
    assert resp.output_text == "Hi there!"
    assert (resp.id, resp.status, resp.model, resp.created_at, resp.completed_at) == (
        rid,
        "completed",
        "gpt-test",
        1741476542,
        1741476550,
    )
    assert (out["error"], out["incomplete_details"], out["previous_response_id"]) == (None, None, None)
    assert (out["instructions"], out["temperature"], out["top_p"], out["metadata"]) == (
        "Be brief.",
        0.5,
        1.0,
        {"k": "v"},
    )
    assert out["text"] == {"format": {"type": "json_object"}} and out["tool_choice"] == "auto"
    assert out["tools"] == [
        {
            "type": "function",
            "name": "f",
            "description": None,
            "parameters": {"type": "object"},
            "strict": False,
        }
    ]
    assert (out["store"], out["truncation"], out["parallel_tool_calls"]) == (False, "disabled", True)
    message = out["output"][0]
    assert message["id"].startswith("msg_") and message["status"] == "completed"
    assert message["content"] == [
        {"type": "output_text", "text": "Hi there!", "annotations": [], "logprobs": []}
    ]
    assert out["usage"] == {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 123,
    }


def test_reasoning_and_tool_calls_become_items() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    message = {"content": None, "reasoning_content": "Think.", "tool_calls": calls}
    out = r.chat_to_response(
        _completion(message, "tool_calls"), request=REQUEST, response_id="resp_1", created_at=1
    )
    resp = Response.model_validate(out)
    assert [i.type for i in resp.output] == ["reasoning", "function_call", "function_call"]
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "Think."}]
    assert out["output"][0]["id"].startswith("rs_")
    fcs = out["output"][1:]
    assert [(f["call_id"], f["name"], f["arguments"], f["status"]) for f in fcs] == [
        ("call_1", "f", '{"a":1}', "completed"),
        ("call_2", "g", "{}", "completed"),
    ]
    assert all(f["id"].startswith("fc_") for f in fcs) and resp.output_text == ""


def test_refusal_is_a_refusal_part() -> None:
    out = r.chat_to_response(
        _completion({"content": None, "refusal": "No."}), request=REQUEST, response_id="resp_1", created_at=1
    )
    Response.model_validate(out)
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_cut_answers_are_incomplete(finish: str, reason: str) -> None:
    out = r.chat_to_response(
        _completion({"content": "Hal"}, finish), request=REQUEST, response_id="resp_1", created_at=1
    )
    resp = Response.model_validate(out)
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == reason
    assert out["completed_at"] is None and out["output"][0]["status"] == "incomplete"


def test_response_id_shape() -> None:
    ids = {r.response_id() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"resp_[0-9a-f]{48}", i) for i in ids)


# -- streams ------------------------------------------------------------------------------------------


def test_text_stream_split_at_every_byte() -> None:
    reference = _events(_feed(_stream(), TEXT_STREAM, []))
    assert [e["type"] for e in reference] == TEXT_TYPES
    for cut in range(1, len(TEXT_STREAM)):
        t = _stream()
        assert _digest(_events(_feed(t, TEXT_STREAM, [cut]))) == _digest(reference), cut
        assert t.done and t.content_seen and t.error is None
    t = _stream()
    one_byte = _events(_feed(t, TEXT_STREAM.replace(b"\n", b"\r\n"), list(range(1, len(TEXT_STREAM)))))
    assert _digest(one_byte) == _digest(reference)
    created, in_progress = reference[0]["response"], reference[1]["response"]
    assert created["status"] == in_progress["status"] == "in_progress" and created["output"] == []
    item = reference[2]["item"]
    assert (item["type"], item["status"], item["content"], reference[2]["output_index"]) == (
        "message",
        "in_progress",
        [],
        0,
    )
    assert reference[3]["part"]["text"] == ""
    assert [e["delta"] for e in reference[4:7]] == ["Hel", "lo, ", "wörld ☃"]
    assert all(e["item_id"] == item["id"] and e["logprobs"] == [] for e in reference[4:8])
    assert reference[7]["text"] == reference[8]["part"]["text"] == "Hello, wörld ☃"
    assert reference[9]["item"]["status"] == "completed"
    final = _final(reference)
    assert final.status == "completed" and final.output_text == "Hello, wörld ☃" and final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (12, 7, 19)
    assert (
        final.usage.input_tokens_details.cached_tokens,
        final.usage.output_tokens_details.reasoning_tokens,
    ) == (4, 2)
    assert t.usage is not None and t.usage.prompt_tokens == 12


def test_tool_call_stream_keyed_by_index() -> None:
    reference = _events(_feed(_stream(), TOOL_STREAM, []))
    for cut in range(1, len(TOOL_STREAM)):
        assert _digest(_events(_feed(_stream(), TOOL_STREAM, [cut]))) == _digest(reference), cut
    assert [e["type"] for e in reference] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    first, second = reference[2]["item"], reference[7]["item"]
    assert (first["call_id"], first["name"], first["arguments"], reference[2]["output_index"]) == (
        "call_aaa",
        "get_weather",
        "",
        0,
    )
    assert (second["call_id"], second["name"], reference[7]["output_index"]) == ("call_bbb", "get_time", 1)
    assert reference[5] | {"sequence_number": 0} == {
        "type": "response.function_call_arguments.done",
        "sequence_number": 0,
        "item_id": first["id"],
        "output_index": 0,
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert reference[10]["arguments"] == '{"tz": "CET"}' and reference[10]["item_id"] == second["id"]
    final = _final(reference)
    assert [(o.type, getattr(o, "arguments", None)) for o in final.output] == [
        ("function_call", '{"city": "Paris"}'),
        ("function_call", '{"tz": "CET"}'),
    ]


def test_reasoning_item_closes_before_the_message() -> None:
    raw = (
        _chunk({"role": "assistant", "content": ""})
        + _chunk({"reasoning_content": "Hmm, "})
        + _chunk({"reasoning_content": "yes."})
        + _chunk({"content": "Yes."})
        + _chunk({}, "stop")
        + DONE
    )
    events = _events(_feed(_stream(), raw, []))
    assert [e["type"] for e in events[2:10]] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert events[6]["text"] == events[7]["part"]["text"] == "Hmm, yes."
    assert events[8]["item"]["summary"] == [{"type": "summary_text", "text": "Hmm, yes."}]
    assert (events[8]["output_index"], events[9]["output_index"], events[9]["item"]["type"]) == (
        0,
        1,
        "message",
    )
    final = _final(events)
    assert [o.type for o in final.output] == ["reasoning", "message"] and final.output_text == "Yes."
    assert final.usage is None  # the upstream sent none


def test_error_mid_stream_fails_the_response() -> None:
    error = {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}
    t = _stream()
    raw = (
        _chunk({"role": "assistant", "content": "Par"}) + b"data: " + orjson.dumps({"error": error}) + b"\n\n"
    )
    events = _events(t.feed(raw) + t.tail())
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2] | {"sequence_number": 0} == {
        "type": "error",
        "code": "overloaded",
        "message": "Overloaded",
        "param": None,
        "sequence_number": 0,
    }
    final = _final(events)
    assert final.status == "failed" and final.error is not None
    assert (final.error.code, final.error.message) == ("server_error", "Overloaded")
    assert final.output_text == "Par" and events[-1]["response"]["output"][0]["status"] == "incomplete"
    assert t.error == error and not t.done


def test_stream_without_done_still_completes() -> None:
    t = _stream()
    events = _events(_feed(t, TEXT_STREAM[: -len(DONE)], []))
    assert [e["type"] for e in events] == TEXT_TYPES and not t.done
    assert _final(events).output_text == "Hello, wörld ☃"


def test_stream_cut_before_its_finish_fails() -> None:
    t = _stream()
    events = _events(_feed(t, _chunk({"content": "Hel"}) + b'data: {"choices":[{"ind', []))
    assert [e["type"] for e in events] == [
        *TEXT_TYPES[:5],
        "response.failed",
    ]  # no error event: the relay sends one
    final = _final(events)
    assert final.status == "failed" and final.error is not None and final.error.code == "server_error"
    assert final.output_text == "Hel" and not t.done and t.error is None


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_cut_stream_ends_incomplete(finish: str, reason: str) -> None:
    raw = _chunk({"content": "Hal"}) + _chunk({}, finish) + _usage_chunk() + DONE
    events = _events(_feed(_stream(), raw, []))
    assert events[-1]["type"] == "response.incomplete" and events[-2]["item"]["status"] == "incomplete"
    final = _final(events)
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == reason and final.usage is not None


def test_other_choices_and_empty_deltas_are_ignored() -> None:
    other = {"index": 1, "delta": {"content": "B"}, "finish_reason": None}
    raw = _chunk({"content": "A"}) + _chunk({"content": ""}) + _chunk({}, None, choices=[other]) + DONE
    t = _stream()
    events = _events(t.feed(raw))
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["A"]
    assert t.feed(_chunk({"content": "late"})) == b"" and t.tail() == b""


def test_nothing_before_content_means_no_content_seen() -> None:
    t = _stream()
    out = t.feed(_chunk({"role": "assistant", "content": ""}))
    assert [e["type"] for e in _events(out)] == ["response.created", "response.in_progress"]
    assert not t.content_seen
    t.feed(_chunk({"content": "x"}))
    assert t.content_seen


# -- properties ---------------------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
ARGS = st.dictionaries(st.text(max_size=8), JSON, max_size=4)


@settings(max_examples=150, deadline=None)
@given(text=st.text(), calls=st.lists(st.tuples(NAMES, ARGS), max_size=4), as_parts=st.booleans())
def test_requests_keep_text_and_tool_calls(
    text: str, calls: list[tuple[str, dict[str, Any]]], as_parts: bool
) -> None:
    content: Any = [{"type": "input_text", "text": text}] if as_parts else text
    items: list[dict[str, Any]] = [{"role": "user", "content": content}]
    items += [
        {
            "type": "function_call",
            "call_id": f"call_{i}",
            "name": name,
            "arguments": orjson.dumps(args).decode(),
        }
        for i, (name, args) in enumerate(calls)
    ]
    tools = [{"type": "function", "name": name, "parameters": {"type": "object"}} for name, _ in calls]
    chat = r.responses_to_chat({"model": "m", "input": items, "tools": tools})
    assert chat["messages"][0] == {"role": "user", "content": text}
    sent = chat["messages"][1]["tool_calls"] if calls else []
    assert len(chat["messages"]) == (2 if calls else 1)
    assert [(c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in sent] == calls
    assert [t["function"]["name"] for t in chat.get("tools", [])] == [name for name, _ in calls]


def _pieces(data: st.DataObject, s: str) -> list[str]:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(s) - 1, 1)), max_size=6)))
    bounds = [0, *(c for c in cuts if c < len(s)), len(s)]
    return [s[a:b] for a, b in pairwise(bounds) if s[a:b]]


@settings(max_examples=120, deadline=None)
@given(text=st.text(), calls=st.lists(st.tuples(NAMES, ARGS), max_size=3), data=st.data())
def test_streams_reassemble(text: str, calls: list[tuple[str, dict[str, Any]]], data: st.DataObject) -> None:
    raw = _chunk({"role": "assistant", "content": ""})
    raw += b"".join(_chunk({"content": piece}) for piece in _pieces(data, text))
    arguments = [orjson.dumps(args).decode() for _, args in calls]
    for k, ((name, _), args) in enumerate(zip(calls, arguments, strict=True)):
        pieces = _pieces(data, args)
        raw += _chunk({"tool_calls": [_call(k, call_id=f"call_{k}", name=name, arguments=pieces[0])]})
        raw += b"".join(_chunk({"tool_calls": [_call(k, arguments=p)]}) for p in pieces[1:])
    raw += _chunk({}, "tool_calls" if calls else "stop") + _usage_chunk() + DONE
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    cuts = rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(0, 40)))
    events = _events(_feed(_stream(), raw, cuts))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == text
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == list(
        range(len(added))
    )
    fragments: dict[str, str] = {}
    for e in events:
        if e["type"] == "response.function_call_arguments.delta":
            fragments[e["item_id"]] = fragments.get(e["item_id"], "") + e["delta"]
    fcs = [i for i in added if i["type"] == "function_call"]
    assert [(i["name"], fragments[i["id"]]) for i in fcs] == [
        (n, a) for (n, _), a in zip(calls, arguments, strict=True)
    ]
    final = _final(events)
    assert final.output_text == text
    assert [(o.name, o.arguments) for o in final.output if o.type == "function_call"] == [
        (n, a) for (n, _), a in zip(calls, arguments, strict=True)
    ]
