"""One small adapter per client protocol, each driving its official SDK against the gateway.

The scenarios speak a neutral language (a prompt, options, an :class:`Outcome`); each adapter
says it in its own SDK's terms and reads the answer back, finish reasons and usage included.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol

import anthropic
import openai
from google import genai
from google.genai import types as gt

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(32))).decode()
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@dataclass
class Usage:
    prompt: int
    completion: int
    cached: int
    reasoning: int | None  # None: the protocol does not report it apart


@dataclass
class Outcome:
    text: str
    finish: str  # stop | length | tool_calls | content_filter
    usage: Usage | None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, arguments)
    reasoning: str = ""
    native: Any = None  # the SDK's own answer, for the next turn


@dataclass
class Ask:
    prompt: str = "Hello there"
    stream: bool = False
    max_tokens: int | None = None
    stop: list[str] | None = None
    tools: bool = False
    image: bool = False
    reasoning: bool = False
    cache_prefix: str | None = None  # a long system text marked for caching where the protocol can


class Client(Protocol):
    name: str

    def ask(self, model: str, ask: Ask) -> Outcome: ...

    def tool_round_trip(self, model: str, stream: bool) -> tuple[Outcome, Outcome]:
        """Ask for the weather tool, answer the call, return both outcomes."""
        ...

    def error_of(self, exc: Exception) -> tuple[int, str]:
        """(HTTP status, message) of an SDK exception, checking it is the protocol's envelope."""
        ...


# --------------------------------------------------------------------------- OpenAI


class OpenAIClient:
    name = "openai"
    errors = (openai.APIStatusError,)

    def __init__(self, base_url: str, key: str) -> None:
        self.sdk = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)

    def _messages(self, ask: Ask) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if ask.cache_prefix:
            part = {"type": "text", "text": ask.cache_prefix, "cache_control": {"type": "ephemeral"}}
            messages.append({"role": "system", "content": [part]})
        content: Any = ask.prompt
        if ask.image:
            content = [
                {"type": "text", "text": ask.prompt},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ]
        messages.append({"role": "user", "content": content})
        return messages

    def _options(self, ask: Ask) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if ask.max_tokens:
            options["max_tokens"] = ask.max_tokens
        if ask.stop:
            options["stop"] = ask.stop
        if ask.tools:
            options["tools"] = [
                {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
            ]
        if ask.reasoning:
            options["reasoning_effort"] = "low"
        return options

    def _complete(self, model: str, messages: list[dict[str, Any]], stream: bool, **options: Any) -> Outcome:
        if not stream:
            r = self.sdk.chat.completions.create(model=model, messages=messages, **options)
            choice = r.choices[0]
            calls = [(c.function.name, _json(c.function.arguments)) for c in choice.message.tool_calls or []]
            extra = choice.message.model_extra or {}
            return Outcome(
                choice.message.content or "",
                choice.finish_reason,
                _openai_usage(r.usage),
                calls,
                str(extra.get("reasoning_content") or ""),
                choice.message,
            )
        text, reasoning, finish, usage = [], [], "", None
        fragments: dict[int, dict[str, Any]] = {}
        for chunk in self.sdk.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **options
        ):
            if chunk.usage is not None:
                usage = _openai_usage(chunk.usage)
            for choice in chunk.choices:
                delta = choice.delta
                text.append(delta.content or "")
                reasoning.append(str((delta.model_extra or {}).get("reasoning_content") or ""))
                for call in delta.tool_calls or []:
                    assert call.index is not None  # I.5.1: every fragment has its index
                    slot = fragments.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                    slot["id"] = slot["id"] or call.id
                    if call.function is not None:
                        slot["name"] += call.function.name or ""
                        slot["arguments"] += call.function.arguments or ""
                finish = choice.finish_reason or finish
        calls = [(f["name"], _json(f["arguments"])) for _, f in sorted(fragments.items())]
        message = {"role": "assistant", "content": "".join(text) or None}
        if fragments:
            message["tool_calls"] = [
                {
                    "id": f["id"],
                    "type": "function",
                    "function": {"name": f["name"], "arguments": f["arguments"]},
                }
                for _, f in sorted(fragments.items())
            ]
        return Outcome("".join(text), finish, usage, calls, "".join(reasoning), message)

    def ask(self, model: str, ask: Ask) -> Outcome:
        return self._complete(model, self._messages(ask), ask.stream, **self._options(ask))

    def tool_round_trip(self, model: str, stream: bool) -> tuple[Outcome, Outcome]:
        ask = Ask(prompt="What is the weather in Paris?", tools=True)
        messages = self._messages(ask)
        first = self._complete(model, messages, stream, **self._options(ask))
        message = (
            first.native if isinstance(first.native, dict) else first.native.model_dump(exclude_none=True)
        )
        results = [
            {"role": "tool", "tool_call_id": c["id"], "content": "22 degrees and sunny"}
            for c in message["tool_calls"]
        ]
        second = self._complete(model, [*messages, message, *results], stream, **self._options(ask))
        return first, second

    def error_of(self, exc: Exception) -> tuple[int, str]:
        assert isinstance(exc, openai.APIStatusError), exc
        body = exc.response.json()
        assert set(body["error"]) >= {"message", "type", "param", "code"}, body
        return exc.status_code, str(body["error"]["message"])


def _openai_usage(u: Any) -> Usage | None:
    if u is None:
        return None
    cached = (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
    reasoning = (u.completion_tokens_details.reasoning_tokens or 0) if u.completion_tokens_details else 0
    return Usage(u.prompt_tokens, u.completion_tokens, cached, reasoning)


def _json(raw: str) -> dict[str, Any]:
    import json

    value = json.loads(raw or "{}")
    assert isinstance(value, dict)
    return value


# --------------------------------------------------------------------------- Anthropic

_ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicClient:
    name = "anthropic"

    def __init__(self, root_url: str, key: str) -> None:
        self.sdk = anthropic.Anthropic(base_url=root_url, api_key=key, max_retries=0, timeout=30)

    def _request(self, ask: Ask) -> dict[str, Any]:
        content: Any = ask.prompt
        if ask.image:
            content = [
                {"type": "text", "text": ask.prompt},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ]
        request: dict[str, Any] = {
            "messages": [{"role": "user", "content": content}],
            "max_tokens": ask.max_tokens or 1024,
        }
        if ask.cache_prefix:
            request["system"] = [
                {"type": "text", "text": ask.cache_prefix, "cache_control": {"type": "ephemeral"}}
            ]
        if ask.stop:
            request["stop_sequences"] = ask.stop
        if ask.tools:
            request["tools"] = [
                {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}
            ]
        if ask.reasoning:
            request["thinking"] = {"type": "enabled", "budget_tokens": 1024}
            request["max_tokens"] = 4096
        return request

    def _send(self, model: str, request: dict[str, Any], stream: bool) -> Outcome:
        if stream:
            with self.sdk.messages.stream(model=model, **request) as s:
                message = s.get_final_message()
        else:
            message = self.sdk.messages.create(model=model, **request)
        text = "".join(b.text for b in message.content if b.type == "text")
        thinking = "".join(b.thinking for b in message.content if b.type == "thinking")
        calls = [(b.name, dict(b.input)) for b in message.content if b.type == "tool_use"]
        u = message.usage
        cache_read = u.cache_read_input_tokens or 0
        prompt = u.input_tokens + cache_read + (u.cache_creation_input_tokens or 0)
        usage = Usage(prompt, u.output_tokens, cache_read, None)
        return Outcome(text, _ANTHROPIC_FINISH[str(message.stop_reason)], usage, calls, thinking, message)

    def ask(self, model: str, ask: Ask) -> Outcome:
        return self._send(model, self._request(ask), ask.stream)

    def tool_round_trip(self, model: str, stream: bool) -> tuple[Outcome, Outcome]:
        request = self._request(Ask(prompt="What is the weather in Paris?", tools=True))
        first = self._send(model, request, stream)
        blocks = [
            b.model_dump(exclude_none=True, exclude={"caller", "toolset_name", "citations"})
            for b in first.native.content
        ]
        results = [
            {"type": "tool_result", "tool_use_id": b["id"], "content": "22 degrees and sunny"}
            for b in blocks
            if b["type"] == "tool_use"
        ]
        request["messages"] = [
            *request["messages"],
            {"role": "assistant", "content": blocks},
            {"role": "user", "content": results},
        ]
        return first, self._send(model, request, stream)

    def error_of(self, exc: Exception) -> tuple[int, str]:
        assert isinstance(exc, anthropic.APIStatusError), exc
        body = exc.response.json()
        assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}, body
        return exc.status_code, str(body["error"]["message"])


# --------------------------------------------------------------------------- Gemini

_GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}


class GeminiClient:
    name = "gemini"

    def __init__(self, root_url: str, key: str, api_version: str = "v1beta") -> None:
        options = gt.HttpOptions(base_url=root_url, api_version=api_version, timeout=30_000)
        self.sdk = genai.Client(api_key=key, http_options=options)

    def _config(self, ask: Ask) -> gt.GenerateContentConfig:
        config = gt.GenerateContentConfig()
        if ask.cache_prefix:
            config.system_instruction = ask.cache_prefix  # Gemini caches long prefixes by itself
        if ask.max_tokens:
            config.max_output_tokens = ask.max_tokens
        if ask.stop:
            config.stop_sequences = ask.stop
        if ask.tools:
            fn = gt.FunctionDeclaration(
                name="get_weather", description="Weather", parameters_json_schema=WEATHER_SCHEMA
            )
            config.tools = [gt.Tool(function_declarations=[fn])]
            config.automatic_function_calling = gt.AutomaticFunctionCallingConfig(disable=True)
        if ask.reasoning:
            config.thinking_config = gt.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
        return config

    def _contents(self, ask: Ask) -> list[gt.Content]:
        parts = [gt.Part(text=ask.prompt)]
        if ask.image:
            parts.append(gt.Part.from_bytes(data=base64.b64decode(PNG), mime_type="image/png"))
        return [gt.Content(role="user", parts=parts)]

    def _send(
        self, model: str, contents: list[gt.Content], config: gt.GenerateContentConfig, stream: bool
    ) -> Outcome:
        if stream:
            responses = list(
                self.sdk.models.generate_content_stream(model=model, contents=contents, config=config)
            )
        else:
            responses = [self.sdk.models.generate_content(model=model, contents=contents, config=config)]
        text, thoughts, finish = [], [], ""
        model_parts: list[gt.Part] = []
        calls: list[tuple[str, dict[str, Any]]] = []
        for r in responses:
            for candidate in r.candidates or []:
                for part in (candidate.content.parts if candidate.content else None) or []:
                    if part.function_call is not None:
                        calls.append((str(part.function_call.name), dict(part.function_call.args or {})))
                        model_parts.append(part)
                    elif part.thought:
                        thoughts.append(part.text or "")
                    elif part.text:
                        text.append(part.text)
                        model_parts.append(part)
                if candidate.finish_reason is not None:
                    finish = _GEMINI_FINISH.get(candidate.finish_reason.value, "other")
        meta = responses[-1].usage_metadata
        usage = None
        if meta is not None and meta.prompt_token_count is not None:
            thoughts_count = meta.thoughts_token_count or 0
            usage = Usage(
                meta.prompt_token_count,
                (meta.candidates_token_count or 0) + thoughts_count,
                meta.cached_content_token_count or 0,
                thoughts_count,
            )
        if calls and finish == "stop":
            finish = "tool_calls"  # Gemini says STOP for a function-call turn
        return Outcome("".join(text), finish, usage, calls, "".join(thoughts), model_parts)

    def ask(self, model: str, ask: Ask) -> Outcome:
        return self._send(model, self._contents(ask), self._config(ask), ask.stream)

    def tool_round_trip(self, model: str, stream: bool) -> tuple[Outcome, Outcome]:
        ask = Ask(prompt="What is the weather in Paris?", tools=True)
        contents, config = self._contents(ask), self._config(ask)
        first = self._send(model, contents, config, stream)
        results = [
            gt.Part.from_function_response(name=name, response={"result": "22 degrees and sunny"})
            for name, _ in first.calls
        ]
        contents = [
            *contents,
            gt.Content(role="model", parts=first.native),
            gt.Content(role="user", parts=results),
        ]
        return first, self._send(model, contents, config, stream)

    def error_of(self, exc: Exception) -> tuple[int, str]:
        from google.genai import errors

        assert isinstance(exc, errors.APIError), exc
        assert exc.status and exc.status.isupper(), exc.details  # Google's canonical status name
        return int(exc.code), str(exc.message)
