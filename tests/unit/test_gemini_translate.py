"""OpenAI chat → Gemini generateContent and back: requests, answers, streams, errors (protocols.md I.3)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from google.genai import types as gtypes
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from vectorengine.protocol import gemini as g
from vectorengine.protocol.usage import Usage

names = st.from_regex(r"[a-z_]{1,10}", fullmatch=True)
args = st.dictionaries(
    st.text(min_size=1, max_size=5), st.integers(-1000, 1000) | st.text(max_size=6), max_size=3
)


def gemini_stream(steps: list[tuple[str, Any]], thoughts_per_chunk: int) -> tuple[bytes, dict[str, int]]:
    """A streamGenerateContent?alt=sse body: one chunk per step, usage cumulative on each."""
    out, prompt, cand, thoughts = [], 17, 0, 0
    for i, (kind, value) in enumerate(steps):
        if kind == "text":
            parts: list[dict[str, Any]] = [{"text": value}]
            cand += 2
        elif kind == "thought":
            parts = [{"text": value, "thought": True}]
            thoughts += thoughts_per_chunk
        else:
            name, arguments, with_id = value
            fc: dict[str, Any] = {"name": name, "args": arguments}
            if with_id:
                fc["id"] = f"fc_{i}"
            parts = [{"functionCall": fc, "thoughtSignature": f"sig{i}"}]
            cand += 5
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if i == len(steps) - 1:
            candidate["finishReason"] = "STOP"
        meta = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": cand,
            "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + cand + thoughts,
        }
        chunk = {
            "candidates": [candidate],
            "usageMetadata": meta,
            "modelVersion": "gemini-x",
            "responseId": "r1",
        }
        gtypes.GenerateContentResponse.model_validate(chunk)  # the shape the google-genai SDK reads
        out.append(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n")
    return b"".join(out), {"prompt": prompt, "cand": cand, "thoughts": thoughts}


step = st.one_of(
    st.tuples(st.just("text"), st.text(min_size=1, max_size=10)),
    st.tuples(st.just("thought"), st.text(min_size=1, max_size=10)),
    st.tuples(st.just("call"), st.tuples(names, args, st.booleans())),
)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    per=st.integers(0, 9),
)
def test_any_stream_split_anywhere(steps: list[tuple[str, Any]], cuts: list[int], per: int) -> None:
    raw, totals = gemini_stream(steps, per)
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    t = g.GenerateToChatStream(model="gemini-alias", include_usage=True)
    out = b"".join(t.feed(raw[lo:hi]) for lo, hi in pairwise(points)) + t.tail()
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(e[6:])) for e in events[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(v for k, v in steps if k == "text")
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    expected = [v for k, v in steps if k == "call"]
    assert [tc.index for tc in calls] == list(range(len(expected)))  # every call has its index (I.5.1)
    for tc, (name, arguments, _) in zip(calls, expected, strict=True):
        assert tc.id and tc.function is not None and tc.function.name == name  # ids minted (I.5.9)
        assert orjson.loads(tc.function.arguments or "{}") == arguments
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls" if expected else "stop"]  # derived from content (I.5.10)
    # usage is the last chunk's, not the sum; thoughts count as output (I.5.5)
    assert t.usage == Usage(
        prompt_tokens=totals["prompt"],
        completion_tokens=totals["cand"] + totals["thoughts"],
        reasoning_tokens=totals["thoughts"],
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == totals["prompt"]
    assert t.done


def test_a_stream_cut_before_its_finish_reason_is_not_done() -> None:
    raw, _ = gemini_stream([("text", "a"), ("text", "b")], 0)
    t = g.GenerateToChatStream(model="m", include_usage=False)
    t.feed(raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert t.tail() == b"" and not t.done


def test_the_thought_signature_survives_an_openai_client_round_trip() -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                            "thoughtSignature": "c2ln",
                        }
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
    }
    chat = ChatCompletion.model_validate(g.generate_response_to_chat(answer, model="gemini-3-pro"))
    call = chat.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert chat.choices[0].finish_reason == "tool_calls"
    request = g.chat_to_generate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "21 C"},
            ],
        }
    )
    model_turn, result_turn = request["contents"][1], request["contents"][2]
    assert model_turn["parts"][0]["thoughtSignature"] == "c2ln"  # echoed back (I.5.3)
    assert model_turn["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert result_turn == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "21 C"}}}],
    }


def test_request_mapping_and_schema_cleaning() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "mail": {"type": "string", "format": "email"},
            "loc": {"$ref": "#/$defs/Loc"},
        },
        "$defs": {"Loc": {"type": "object", "properties": {"lat": {"type": "number", "default": 0}}}},
    }
    body = {
        "model": "m",
        "temperature": 0.3,
        "max_tokens": 50,
        "stop": "END",
        "n": 1,
        "reasoning_effort": "low",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
    }
    out = g.chat_to_generate(body)
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": "AA"}}]}
    ]
    assert out["generationConfig"] == {
        "temperature": 0.3,
        "candidateCount": 1,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
    }
    assert out["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "mail": {"type": "string"},
            "loc": {"type": "object", "properties": {"lat": {"type": "number"}}},
        },
    }
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}


TOO_LONG = "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)."


@pytest.mark.parametrize(
    ("status", "error", "client_status", "code", "retry"),
    [
        (
            400,
            {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "message": "API key not valid.",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
                ],
            },
            401,
            "invalid_api_key",
            None,
        ),
        (
            429,
            {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "Quota exceeded.",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
            },
            429,
            "rate_limit_exceeded",
            2.0,
        ),
        (
            400,
            {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "message": TOO_LONG,
            },
            400,
            "context_length_exceeded",
            None,
        ),
    ],
)
def test_error_envelopes(
    status: int, error: dict[str, Any], client_status: int, code: str, retry: float | None
) -> None:
    got_status, envelope, wait = g.openai_error_from_gemini(status, orjson.dumps({"error": error}))
    assert (got_status, orjson.loads(envelope)["error"]["code"], wait) == (client_status, code, retry)
    assert orjson.loads(envelope)["error"]["message"] == error["message"]


def test_a_blocked_prompt_is_content_filter() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}
    chat = ChatCompletion.model_validate(g.generate_response_to_chat(blocked, model="m"))
    assert chat.choices[0].finish_reason == "content_filter" and chat.choices[0].message.content is None
