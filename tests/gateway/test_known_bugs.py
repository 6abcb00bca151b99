"""End-to-end regressions for the translation bugs other gateways shipped (protocols.md I.5).

The simulator enforces what the real APIs enforce (Anthropic's tool-id pattern and tool-result
placement, Gemini 3's thought signatures), so each of these fails if the gateway regresses.
The rest of I.5 is covered by the conformance matrix and the translator unit tests, named there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import start_simulator, unique_key

KEY = "sk-known-bugs-0123456789abcdef"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
    }
    for name in ("get_weather", "get_time")
]

WEATHER = TOOLS[:1]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    sim = start_simulator()
    channels = [
        {
            "name": "claude",
            "type": "anthropic",
            "base_url": sim.root_url,
            "keys": [unique_key()],
            "models": ["claude"],
            "model_map": {"claude": "claude-opus-4-7"},
        },
        {
            "name": "gemini3",
            "type": "gemini",
            "base_url": sim.root_url,
            "keys": [unique_key()],
            "models": ["gemini3"],
            "model_map": {"gemini3": "gemini-3-pro-preview"},
        },
    ]
    g = start_gateway(
        tmp_path_factory.mktemp("known-bugs"), {"channels": channels, "tokens": [{"name": "t", "key": KEY}]}
    )
    try:
        yield g
    finally:
        g.stop()
        sim.stop()


def _sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=20)


def _streamed_calls(
    gw: GatewayProcess, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] = TOOLS
) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for chunk in _sdk(gw).chat.completions.create(model=model, messages=messages, tools=tools, stream=True):
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or []:
                slot = calls.setdefault(fragment.index, {"ids": [], "name": "", "arguments": ""})
                if fragment.id:
                    slot["ids"].append(fragment.id)
                if fragment.function is not None:
                    slot["name"] += fragment.function.name or ""
                    slot["arguments"] += fragment.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def test_parallel_streamed_tool_calls_keep_their_index_and_one_id(gw: GatewayProcess) -> None:
    """I.5.1 and I.5.2: Anthropic's content-block indexes become call ordinals 0, 1; the id rides
    only on each call's first fragment, and the arguments still assemble by index."""
    calls = _streamed_calls(gw, "claude", [{"role": "user", "content": "Weather and time in Paris?"}])
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert all(len(c["ids"]) == 1 for c in calls)
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Paris"}]


def test_parallel_tool_results_go_back_in_one_user_turn(gw: GatewayProcess) -> None:
    """I.5.7: two tool messages become two tool_result blocks of one user message (the simulator
    answers 400 otherwise, as Claude does)."""
    first = _sdk(gw).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Weather and time in Paris?"}], tools=TOOLS
    )
    message = first.choices[0].message
    assert message.tool_calls is not None and len(message.tool_calls) == 2
    results = [
        {"role": "tool", "tool_call_id": c.id, "content": f"result of {c.function.name}"}
        for c in message.tool_calls
    ]
    history = [
        {"role": "user", "content": "Weather and time in Paris?"},
        message.model_dump(exclude_none=True),
    ]
    second = _sdk(gw).chat.completions.create(model="claude", messages=[*history, *results], tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert "result of get_time" in (second.choices[0].message.content or "")


def test_foreign_tool_ids_are_sanitised_for_claude(gw: GatewayProcess) -> None:
    """I.5.8: ids minted by other providers (``functions.Bash:0``) are rewritten to Anthropic's
    pattern, the same way on the tool_use and on its tool_result."""
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "functions.get_weather:0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny, 22C"},
    ]
    answer = _sdk(gw).chat.completions.create(model="claude", messages=history, tools=TOOLS)
    assert "sunny, 22C" in (answer.choices[0].message.content or "")


def test_gemini_3_thought_signatures_survive_an_openai_client(gw: GatewayProcess) -> None:
    """I.5.3: the signature Gemini 3 puts on a function call travels in the tool-call id and is
    sent back with the call (the simulator, like Gemini 3, refuses the next turn without it);
    I.5.9: Gemini gave no call id, the gateway minted one; I.5.10: the finish is tool_calls."""
    question = [{"role": "user", "content": "Weather in Paris?"}]
    for stream in (False, True):
        if stream:
            calls = _streamed_calls(gw, "gemini3", question, WEATHER)
            call_id, name, arguments = calls[0]["ids"][0], calls[0]["name"], calls[0]["arguments"]
        else:
            first = _sdk(gw).chat.completions.create(model="gemini3", messages=question, tools=WEATHER)
            assert first.choices[0].finish_reason == "tool_calls"
            (call,) = first.choices[0].message.tool_calls or []
            call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert call_id and "__thought__" in call_id
        assistant = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            ],
        }
        result = {"role": "tool", "tool_call_id": call_id, "content": "sunny"}
        answer = _sdk(gw).chat.completions.create(
            model="gemini3", messages=[*question, assistant, result], tools=TOOLS
        )
        assert "sunny" in (answer.choices[0].message.content or "")
        stripped = {**assistant, "tool_calls": [{**assistant["tool_calls"][0], "id": "call_plain"}]}
        with pytest.raises(openai.BadRequestError, match="thought_signature"):
            _sdk(gw).chat.completions.create(
                model="gemini3",
                messages=[*question, stripped, {**result, "tool_call_id": "call_plain"}],
                tools=WEATHER,
            )
