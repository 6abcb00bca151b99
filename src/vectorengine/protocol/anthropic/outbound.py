"""OpenAI chat completion answers (the hub) → Anthropic Messages answers for Anthropic clients.

The stream keeps Anthropic's full event sequence: ``message_start``, ``ping``, one
``content_block_start`` / ``_delta`` / ``_stop`` run per block with consecutive indexes,
``message_delta`` with the stop reason and the real usage, ``message_stop``.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from vectorengine.protocol.openai import usage_from
from vectorengine.protocol.sse import EventSplitter, data_of, json_object
from vectorengine.protocol.usage import Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def usage_to_anthropic(u: Usage) -> dict[str, int]:
    """OpenAI prompt tokens include cached ones; Anthropic's input tokens do not (I.2)."""
    return {
        "input_tokens": max(u.prompt_tokens - u.cached_tokens - u.cache_write_tokens, 0),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    }


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _input(arguments: Any) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def chat_to_message(obj: dict[str, Any], *, model: str) -> dict[str, Any]:
    choice = (obj.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": _input(fn.get("arguments"))})  # fmt: skip
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_to_anthropic(usage_from(obj) or Usage()),
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class ChatToMessagesStream:
    """Feed it OpenAI chat SSE bytes (split anywhere); it returns Anthropic SSE events."""

    def __init__(self, *, model: str, message_id: str) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.content_seen = False
        self._model = model
        self._id = message_id
        self._events = EventSplitter()
        self._started = False
        self._block: tuple[str, int] | None = None  # (kind, index) of the open block
        self._blocks = 0
        self._tools: dict[int, int] = {}  # OpenAI tool-call index → block index
        self._stop = "end_turn"

    def feed(self, chunk: bytes | memoryview) -> bytes:
        return b"".join(self._line(data_of(e)) for e in self._events.feed(chunk))

    def tail(self) -> bytes:
        return b"".join(self._line(data_of(e)) for e in self._events.rest())

    def _line(self, payload: bytes) -> bytes:
        if payload == b"[DONE]":
            return self._finish()
        obj = json_object(payload)
        if obj is None:
            return b""
        if isinstance(obj.get("error"), dict):
            self.error = obj["error"]
            error = {
                "type": str(obj["error"].get("type") or "api_error"),
                "message": str(obj["error"].get("message")),
            }
            return self._start() + _event("error", {"error": error})
        out = [self._start()]
        usage = usage_from(obj)
        if usage is not None:
            self.usage = usage
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out.append(self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
                out.append(self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]}))
            if delta.get("content"):
                out.append(self._open("text", {"type": "text", "text": ""}))
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                out.append(self._tool(call))
            if choice.get("finish_reason"):
                self._stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return b"".join(out)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_to_anthropic(Usage()),
        }
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        if self._block is not None and self._block[0] == kind and kind != "tool_use":
            return b""
        out = self._close()
        self._block = (kind, self._blocks)
        self._blocks += 1
        self.content_seen = True
        return out + _event("content_block_start", {"index": self._block[1], "content_block": block})

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block = self._block[1], None
        return _event("content_block_stop", {"index": index})

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        assert self._block is not None
        at = self._block[1] if index is None else index
        return _event("content_block_delta", {"index": at, "delta": delta})

    def _tool(self, call: dict[str, Any]) -> bytes:
        k = call.get("index", 0)
        fn = call.get("function") or {}
        out = b""
        if k not in self._tools:  # keyed by index: only the first fragment carries the id (I.5.2)
            call_id = call.get("id") or f"toolu_{secrets.token_hex(8)}"
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id,
                "name": fn.get("name") or "",
                "input": {},
            }
            out = self._open("tool_use", block)
            assert self._block is not None
            self._tools[k] = self._block[1]
        if fn.get("arguments"):
            out += self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]}, self._tools[k])
        return out

    def _finish(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        usage = usage_to_anthropic(self.usage or Usage())
        delta = {"delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": usage}
        return self._start() + self._close() + _event("message_delta", delta) + _event("message_stop", {})
