"""``POST /v1/chat/completions``: request checks, the planned answer, its JSON and SSE forms."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from vectorengine.simulator import content
from vectorengine.simulator.wire import (
    ApiError,
    check_stop,
    include_usage,
    invalid_type,
    invalid_value,
    missing,
    optional_bool,
    optional_int,
    random_id,
    require_str,
    sse,
)

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CHAT_CONTEXT_TOKENS = 128_000  # the context window named by the context-length fault


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    obfuscation: bool
    n: int
    limit: int | None
    stop: Any
    tools: list[dict[str, Any]]  # the function tools the model may call now
    forced: bool  # tool_choice "required" or a named function
    parallel: bool
    response_format: dict[str, Any] | None
    prompt_tokens: int
    reasoning_tokens: int = 0  # thought before answering (reasoning models), billed as completion
    cached_tokens: int = 0  # prompt tokens read from the prompt cache


def parse_chat(body: dict[str, Any]) -> ChatRequest:
    model = require_str(body, "model")
    messages = _check_messages(body)
    tools, forced = _usable_tools(body)
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise invalid_type("response_format", "an object", response_format)
    stream = optional_bool(body, "stream")
    limit = optional_int(body, "max_completion_tokens", 1)
    if limit is None:
        limit = optional_int(body, "max_tokens", 1)
    options = body.get("stream_options")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=stream and include_usage(body),
        obfuscation=stream and isinstance(options, dict) and options.get("include_obfuscation") is True,
        n=optional_int(body, "n", 1, 128) or 1,
        limit=limit,
        stop=check_stop(body),
        tools=tools,
        forced=forced,
        parallel=body.get("parallel_tool_calls") is not False,
        response_format=response_format,
        prompt_tokens=content.count_chat_prompt(messages, body.get("tools") or None),
        reasoning_tokens=_reasoning_tokens(model, body.get("reasoning_effort")),
    )


REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")
_EFFORT_TOKENS = {"minimal": 0, "none": 0, "low": 64, "medium": 192, "high": 512, "xhigh": 1024}


def _reasoning_tokens(model: str, effort: Any) -> int:
    """Reasoning models think before they answer (``medium`` effort unless told otherwise)."""
    if not model.startswith(REASONING_MODELS):
        return 0
    if effort is not None and effort not in _EFFORT_TOKENS:
        raise invalid_value(
            "reasoning_effort",
            f"Invalid value: '{effort}'. Supported values are: 'minimal', 'low', 'medium', and 'high'.",
        )
    return _EFFORT_TOKENS[effort or "medium"]


def cache_segments(request: ChatRequest) -> list[tuple[object, int]]:
    """The prompt as prefix segments for OpenAI's automatic prompt caching: tools, then messages."""
    segments: list[tuple[object, int]] = [(request.tools, 0)] if request.tools else []
    total = content.REPLY_PRIMING
    for message in request.messages:
        tokens = content.count_chat_prompt([message], None) - content.REPLY_PRIMING
        segments.append((message, tokens + (total if not segments else 0)))
        total = 0
    return segments


def cached_share(hit: int) -> int:
    """OpenAI reports cached tokens in steps of 128 once 1,024 are cached."""
    return hit - hit % 128 if hit >= 1024 else 0


def context_length_exceeded(request: ChatRequest) -> ApiError:
    """OpenAI's 400 for a conversation over the context window (fault ``context-length``).

    The prompt is shown as at least big enough to overflow the window, whatever its real size.
    """
    window = CHAT_CONTEXT_TOKENS
    if request.limit is None:
        tokens = max(request.prompt_tokens, window + 1)
        detail = f"your messages resulted in {tokens} tokens. Please reduce the length of the messages."
    else:
        prompt = max(request.prompt_tokens, window + 1 - request.limit)
        detail = (
            f"you requested {prompt + request.limit} tokens ({prompt} in the messages, {request.limit} in "
            "the completion). Please reduce the length of the messages or completion."
        )
    return ApiError(
        400,
        f"This model's maximum context length is {window} tokens. However, {detail}",
        param="messages",
        code="context_length_exceeded",
    )


def _check_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    if body.get("messages") is None:
        raise missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid_type(where, "an object", message)
        if message.get("role") is None:
            raise missing(f"{where}.role")
        if message["role"] not in _ROLES:
            raise invalid_value(
                f"{where}.role",
                f"Invalid value: '{message['role']}'. Supported values are: 'system', 'assistant', "
                "'user', 'function', 'tool', and 'developer'.",
            )
        if message["role"] in ("user", "system", "developer", "tool") and message.get("content") is None:
            raise missing(f"{where}.content")
        if message["role"] == "tool" and message.get("tool_call_id") is None:
            raise missing(f"{where}.tool_call_id")
    return messages


def _usable_tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The function tools the model will call in this turn, and whether it is forced to."""
    raw = body.get("tools")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise invalid_type("tools", "an array", raw)
    functions: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise invalid_type(f"tools[{i}]", "an object", tool)
        if tool.get("type", "function") != "function":
            continue  # custom tools are accepted but never called
        fn = tool.get("function")
        if not isinstance(fn, dict) or fn.get("name") is None:
            raise missing(f"tools[{i}].function.name" if isinstance(fn, dict) else f"tools[{i}].function")
        functions.append(fn)
    choice = body.get("tool_choice")
    forced = choice == "required"
    if choice == "none" or not functions:
        return [], False
    if isinstance(choice, dict):
        names = _chosen_names(choice)
        picked = [fn for fn in functions if fn["name"] in names]
        if not picked:
            raise invalid_value(
                "tool_choice", f"Tool choice '{', '.join(names)}' not found in 'tools' parameter."
            )
        forced = choice.get("type") == "function" or _allowed_mode(choice) == "required"
        functions = picked
    elif choice not in (None, "auto", "required"):
        raise invalid_value(
            "tool_choice",
            f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
        )
    last = body["messages"][-1] if body.get("messages") else {}
    if not forced and isinstance(last, dict) and last.get("role") == "tool":
        return [], False
    return functions, forced


def _chosen_names(choice: dict[str, Any]) -> list[str]:
    if choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        tools = allowed.get("tools") if isinstance(allowed, dict) else None
        return [
            str((t.get("function") or {}).get("name", t.get("name")))
            for t in tools or ()
            if isinstance(t, dict)
        ]
    fn = choice.get("function")
    return [str(fn.get("name"))] if isinstance(fn, dict) else []


def _allowed_mode(choice: dict[str, Any]) -> Any:
    allowed = choice.get("allowed_tools")
    return allowed.get("mode") if isinstance(allowed, dict) else None


# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    pieces: tuple[str, ...]  # the reply, one token per piece
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    completion_tokens: int
    stop_sequence: str | None = None  # the stop sequence the reply was cut at

    @property
    def content(self) -> str | None:
        return None if self.tool_calls else "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    request: ChatRequest
    choices: tuple[Choice, ...]
    id: str
    created: int
    fingerprint: str

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)

    def usage(self) -> dict[str, Any]:
        prompt, completion = (
            self.request.prompt_tokens,
            self.completion_tokens + self.request.reasoning_tokens,
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": self.request.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.request.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def completion(self) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "choices": [
                {"index": c.index, "message": _message(c), "logprobs": None, "finish_reason": c.finish_reason}
                for c in self.choices
            ],
            "usage": self.usage(),
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }

    def events(self) -> list[bytes]:
        """The SSE events of the streamed answer, ``[DONE]`` excluded."""
        per_choice = [self._choice_deltas(c) for c in self.choices]
        events: list[bytes] = []
        for step in range(max(len(d) for d in per_choice)):
            for choice, deltas in zip(self.choices, per_choice, strict=True):
                if step < len(deltas):
                    delta, finish = deltas[step]
                    choice_obj = {
                        "index": choice.index,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                    events.append(sse(self._chunk([choice_obj], None)))
        if self.request.include_usage:
            events.append(sse(self._chunk([], self.usage())))
        return events

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }
        if self.request.include_usage:
            chunk["usage"] = usage
        if self.request.obfuscation:
            chunk["obfuscation"] = "x" * (4 + len(choices) % 7)
        return chunk

    def _choice_deltas(self, choice: Choice) -> list[tuple[dict[str, Any], str | None]]:
        if not choice.tool_calls:
            first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
            deltas: list[tuple[dict[str, Any], str | None]] = [(first, None)]
            deltas += [({"content": piece}, None) for piece in choice.pieces]
            return [*deltas, ({}, choice.finish_reason)]
        deltas = []
        for k, call in enumerate(choice.tool_calls):
            start = {
                "index": k,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if k == 0:
                deltas.append(
                    ({"role": "assistant", "content": None, "tool_calls": [start], "refusal": None}, None)
                )
            else:
                deltas.append(({"tool_calls": [start]}, None))
            deltas += [
                ({"tool_calls": [{"index": k, "function": {"arguments": part}}]}, None)
                for part in split_arguments(call.arguments)
            ]
        return [*deltas, ({}, choice.finish_reason)]


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content,
        "refusal": None,
        "annotations": [],
    }
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
    return message


def split_arguments(arguments: str) -> list[str]:
    """The JSON string in several fragments (two toy tokens each), as the model streams it."""
    tokens = content.tokenize(arguments)
    return ["".join(tokens[i : i + 2]) for i in range(0, len(tokens), 2)] or [arguments]


def fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha1(model.encode()).hexdigest()[:10]


def answer(request: ChatRequest) -> ChatAnswer:
    choices = tuple(_choice(request, i) for i in range(request.n))
    return ChatAnswer(request, choices, random_id("chatcmpl-"), int(time.time()), fingerprint(request.model))


def _topic(request: ChatRequest) -> str:
    user: dict[str, Any] = next((m for m in reversed(request.messages) if m.get("role") == "user"), {})
    return " ".join(content.text_of(user.get("content")).split()[:6])


def _choice(request: ChatRequest, index: int) -> Choice:
    if request.tools and not content.refuses(request.messages):
        picked = request.tools[: 2 if request.parallel else 1]
        topic = _topic(request)
        calls = tuple(
            ToolCall(
                random_id("call_", 24),
                str(fn["name"]),
                orjson.dumps(content.sample_arguments(fn.get("parameters"), topic)).decode(),
            )
            for fn in picked
        )
        tokens = sum(content.count_tokens(c.name) + content.count_tokens(c.arguments) + 3 for c in calls)
        return Choice(index, (), calls, "tool_calls", tokens)
    if content.refuses(request.messages):
        return Choice(index, (), (), "content_filter", 0)
    text = _reply_text(request, index)
    text, matched = content.truncate_at_stop(text, request.stop)
    pieces = content.tokenize(text)
    finish = "stop"
    if request.limit is not None and len(pieces) > request.limit:
        pieces, finish, matched = pieces[: request.limit], "length", None
    return Choice(index, tuple(pieces), (), finish, len(pieces), matched)


def _reply_text(request: ChatRequest, index: int) -> str:
    text = content.chat_reply(request.messages, request.model, index)
    kind = (request.response_format or {}).get("type")
    if kind == "json_object":
        return orjson.dumps({"reply": text}).decode()
    if kind == "json_schema":
        spec = (request.response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(content.sample_json(schema or {}, _topic(request))).decode()
    return text
