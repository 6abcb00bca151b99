"""Anthropic Messages answers → OpenAI chat completion answers (protocols.md I.2, I.4)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from vectorengine.protocol.usage import Usage, to_openai

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic error type → the OpenAI code a client (and our retry policy) recognises.
_CODES = {
    "rate_limit_error": "rate_limit_exceeded",
    "overloaded_error": "overloaded",
    "authentication_error": "invalid_api_key",
    "permission_error": "permission_denied",
    "not_found_error": "model_not_found",
    "billing_error": "insufficient_quota",
}


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def usage_from_anthropic(u: dict[str, Any], thinking_chars: int = 0) -> Usage:
    """Anthropic's ``input_tokens`` exclude cache reads and writes; OpenAI's prompt tokens include
    them (I.5.4: count each token once).

    Output tokens include thinking; Anthropic reports it apart only in ``output_tokens_details``.
    Without that, the reasoning share is estimated from the thinking text (about 4 characters a
    token), so OpenAI clients see that the answer reasoned; the total billed is Anthropic's own.
    """
    read, write = _int(u.get("cache_read_input_tokens")), _int(u.get("cache_creation_input_tokens"))
    output = _int(u.get("output_tokens"))
    details = u.get("output_tokens_details")
    reasoning = _int(details.get("reasoning_tokens")) if isinstance(details, dict) else 0
    if not reasoning and thinking_chars:
        reasoning = min(output, -(-thinking_chars // 4))
    return Usage(
        prompt_tokens=_int(u.get("input_tokens")) + read + write,
        completion_tokens=output,
        cached_tokens=read,
        reasoning_tokens=reasoning,
        cache_write_tokens=write,
    )


def chat_id(message_id: Any) -> str:
    return "chatcmpl-" + str(message_id or "").removeprefix("msg_")


def message_to_chat(obj: dict[str, Any]) -> dict[str, Any]:
    text, reasoning, calls = [], [], []
    for block in obj.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    finish = "tool_calls" if calls else FINISH_REASONS.get(str(obj.get("stop_reason")), "stop")
    return {
        "id": chat_id(obj.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": obj.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": to_openai(usage_from_anthropic(obj.get("usage") or {}, sum(map(len, reasoning)))),
    }


def openai_error(error: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic error object as an OpenAI one (``message``, ``type``, ``param``, ``code``)."""
    etype = str(error.get("type") or "api_error")
    message = str(error.get("message") or "The upstream provider failed.")
    code = _CODES.get(etype)
    if etype == "invalid_request_error" and "prompt is too long" in message:
        code = "context_length_exceeded"
    return {"message": message, "type": etype, "param": None, "code": code}


def openai_error_from_anthropic(status: int, raw: bytes) -> tuple[int, bytes]:
    """(status for an OpenAI client, OpenAI envelope). 529 overloaded becomes 503 (I.4)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    error = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(error, dict):
        error = {"type": "api_error", "message": f"The upstream provider returned HTTP {status}."}
    return (503 if status == 529 else status), orjson.dumps({"error": openai_error(error)})


def leading_error(chunk: bytes | memoryview) -> dict[str, Any] | None:
    """The OpenAI-shaped error when a stream's first event is Anthropic's ``event: error``."""
    head = bytes(chunk).lstrip()
    if not head.startswith(b"event: error") and not head.startswith(b"event:error"):
        return None
    for line in head.split(b"\n\n", 1)[0].splitlines():
        if line.startswith(b"data:"):
            try:
                obj = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                break
            if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
                return openai_error(obj["error"])
    return {"message": "The upstream stream began with an error event.", "type": "api_error"}
