"""OpenAI chat completion answers (the hub) → Gemini ``GenerateContentResponse`` for Gemini clients.

Streams become ``data:`` events framed as Google frames them (CRLF, no ``[DONE]``): text and
thoughts as they arrive, each function call whole once its arguments are complete, and a last
event with the finish reason and the usage. Thoughts are counted apart from candidates, as
Gemini counts them.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from vectorengine.protocol.openai import usage_from
from vectorengine.protocol.sse import EventSplitter, data_of, json_object
from vectorengine.protocol.usage import Usage

FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}


def usage_to_gemini(u: Usage) -> dict[str, Any]:
    candidates = max(u.completion_tokens - u.reasoning_tokens, 0)
    meta: dict[str, Any] = {
        "promptTokenCount": u.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": u.prompt_tokens + u.completion_tokens,
    }
    if u.cached_tokens:
        meta["cachedContentTokenCount"] = u.cached_tokens
    if u.reasoning_tokens:
        meta["thoughtsTokenCount"] = u.reasoning_tokens
    return meta


def response_id() -> str:
    return secrets.token_urlsafe(16)


def _args(arguments: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _call_part(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    fc: dict[str, Any] = {"name": fn.get("name"), "args": _args(fn.get("arguments"))}
    if call.get("id"):
        fc["id"] = call["id"]
    return {"functionCall": fc}


def chat_to_generate_response(obj: dict[str, Any], *, model: str) -> dict[str, Any]:
    candidates = []
    for i, choice in enumerate(obj.get("choices") or []):
        message = choice.get("message") or {}
        parts: list[dict[str, Any]] = []
        if message.get("reasoning_content"):
            parts.append({"text": message["reasoning_content"], "thought": True})
        if message.get("content"):
            parts.append({"text": message["content"]})
        parts += [_call_part(c) for c in message.get("tool_calls") or []]
        candidate: dict[str, Any] = {}
        if parts:
            candidate["content"] = {"parts": parts, "role": "model"}
        candidate["finishReason"] = FINISH_REASONS.get(choice.get("finish_reason") or "stop", "OTHER")
        candidate["index"] = choice.get("index", i)
        candidates.append(candidate)
    return {
        "candidates": candidates,
        "usageMetadata": usage_to_gemini(usage_from(obj) or Usage()),
        "modelVersion": model,
        "responseId": response_id(),
    }


def error_event(error: dict[str, Any]) -> bytes:
    """An upstream error after the stream started, as Google sends one: ``{"error": {...}}``."""
    body = {"code": 500, "message": str(error.get("message") or "upstream error"), "status": "INTERNAL"}
    return b"data: " + orjson.dumps({"error": body}) + b"\r\n\r\n"


class ChatToGenerateStream:
    """Feed it OpenAI chat SSE bytes (split anywhere); it returns Gemini SSE events."""

    def __init__(self, *, model: str) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.content_seen = False
        self._model = model
        self._id = response_id()
        self._events = EventSplitter()
        self._calls: dict[int, dict[str, Any]] = {}  # tool-call index → id, name, arguments so far
        self._finish: str | None = None

    def feed(self, chunk: bytes | memoryview) -> bytes:
        return b"".join(self._line(data_of(e)) for e in self._events.feed(chunk))

    def tail(self) -> bytes:
        return b"".join(self._line(data_of(e)) for e in self._events.rest())

    def _event(self, parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if finish is not None:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        obj: dict[str, Any] = {"candidates": [candidate]}
        if finish is not None:
            obj["usageMetadata"] = usage_to_gemini(self.usage or Usage())
        obj["modelVersion"] = self._model
        obj["responseId"] = self._id
        return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"

    def _line(self, payload: bytes) -> bytes:
        if payload == b"[DONE]":
            return self._end()
        obj = json_object(payload)
        if obj is None:
            return b""
        if isinstance(obj.get("error"), dict):
            self.error = obj["error"]
            return error_event(obj["error"])
        usage = usage_from(obj)
        if usage is not None:
            self.usage = usage
        out = []
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out.append(self._event([{"text": delta["reasoning_content"], "thought": True}]))
            if delta.get("content"):
                out.append(self._event([{"text": delta["content"]}]))
            for call in delta.get("tool_calls") or []:
                slot = self._calls.setdefault(call.get("index", 0), {"id": None, "name": "", "arguments": ""})
                fn = call.get("function") or {}
                slot["id"] = slot["id"] or call.get("id")
                slot["name"] = slot["name"] or fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        self.content_seen = self.content_seen or bool(out or self._calls)
        return b"".join(out)

    def _end(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        calls = [self._calls[k] for k in sorted(self._calls)]
        parts = [
            _call_part({"id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}})
            for c in calls
        ]
        return self._event(parts or [{"text": ""}], FINISH_REASONS.get(self._finish or "stop", "OTHER"))
