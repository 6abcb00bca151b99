"""Gemini answers → OpenAI chat completion answers (protocols.md I.3, I.4, I.5)."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import orjson

from vectorengine.protocol.gemini.request import THOUGHT_MARK
from vectorengine.protocol.usage import Usage, to_openai

_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
     "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE"}
)  # fmt: skip
_STATUS_TYPES = {
    "INVALID_ARGUMENT": ("invalid_request_error", None),
    "FAILED_PRECONDITION": ("invalid_request_error", None),
    "UNAUTHENTICATED": ("authentication_error", "invalid_api_key"),
    "PERMISSION_DENIED": ("permission_error", None),
    "NOT_FOUND": ("invalid_request_error", "model_not_found"),
    "RESOURCE_EXHAUSTED": ("rate_limit_error", "rate_limit_exceeded"),
    "UNAVAILABLE": ("server_error", None),
    "INTERNAL": ("server_error", None),
    "DEADLINE_EXCEEDED": ("server_error", None),
}


def finish_reason(reason: Any) -> str | None:
    if reason in (None, "", "FINISH_REASON_UNSPECIFIED"):
        return None
    if reason == "MAX_TOKENS":
        return "length"
    return "content_filter" if reason in _FILTERED else "stop"


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def usage_from_gemini(meta: dict[str, Any]) -> Usage:
    """Thoughts are output the caller pays for: completion = candidates + thoughts (I.5.5)."""
    thoughts = _int(meta.get("thoughtsTokenCount"))
    return Usage(
        prompt_tokens=_int(meta.get("promptTokenCount")),
        completion_tokens=_int(meta.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_int(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def tool_call(part: dict[str, Any]) -> dict[str, Any]:
    """A functionCall part as an OpenAI tool call; Gemini may leave out the id: mint one (I.5.9)."""
    fc = part.get("functionCall") or {}
    call_id = str(fc.get("id") or "call_" + secrets.token_hex(12))
    if part.get("thoughtSignature"):
        call_id += THOUGHT_MARK + str(part["thoughtSignature"])
    arguments = orjson.dumps(fc.get("args") or {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": fc.get("name"), "arguments": arguments}}


def split_parts(parts: list[Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(text, thoughts, tool calls) of a candidate's parts."""
    text, thoughts, calls = [], [], []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if "functionCall" in part:
            calls.append(tool_call(part))
        elif part.get("thought"):
            thoughts.append(str(part.get("text") or ""))
        elif part.get("text"):
            text.append(str(part["text"]))
    return "".join(text), "".join(thoughts), calls


def generate_response_to_chat(obj: dict[str, Any], *, model: str) -> dict[str, Any]:
    choices = []
    for i, cand in enumerate(obj.get("candidates") or []):
        text, thoughts, calls = split_parts((cand.get("content") or {}).get("parts") or [])
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = thoughts
        # a function-call turn is tool_calls whatever Gemini says (I.5.10)
        finish = "tool_calls" if calls else finish_reason(cand.get("finishReason")) or "stop"
        choices.append(
            {"index": cand.get("index", i), "message": message, "logprobs": None, "finish_reason": finish}
        )
    if not choices:  # the prompt itself was blocked
        message = {"role": "assistant", "content": None, "refusal": None}
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"})
    return {
        "id": "chatcmpl-" + str(obj.get("responseId") or secrets.token_hex(12)),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": obj.get("modelVersion") or model,
        "choices": choices,
        "usage": to_openai(usage_from_gemini(obj.get("usageMetadata") or {})),
    }


def _retry_delay(error: dict[str, Any]) -> float | None:
    for detail in error.get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and (m := re.fullmatch(r"(\d+(?:\.\d+)?)s", delay)):
            return float(m.group(1))
    return None


def openai_error(error: dict[str, Any]) -> dict[str, Any]:
    status = str(error.get("status") or "")
    etype, code = _STATUS_TYPES.get(status, ("server_error", None))
    message = str(error.get("message") or "The upstream provider failed.")
    reasons = {d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)}
    if "API_KEY_INVALID" in reasons:
        etype, code = "authentication_error", "invalid_api_key"
    elif "input token count" in message and "exceeds the maximum" in message:
        code = "context_length_exceeded"
    return {"message": message, "type": etype, "param": None, "code": code}


def openai_error_from_gemini(status: int, raw: bytes) -> tuple[int, bytes, float | None]:
    """(status for an OpenAI client, OpenAI envelope, retry-after seconds). An invalid key comes
    as 400 API_KEY_INVALID and leaves as 401 (I.3)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, list) and obj:  # the JSON-array streaming form wraps errors too
        obj = obj[0]
    error = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(error, dict):
        error = {"message": f"The upstream provider returned HTTP {status}.", "status": ""}
    converted = openai_error(error)
    client_status = 401 if converted["code"] == "invalid_api_key" else status
    return client_status, orjson.dumps({"error": converted}), _retry_delay(error)


def leading_error(chunk: bytes | memoryview) -> dict[str, Any] | None:
    head = bytes(chunk).lstrip()
    if not head.startswith(b"data:") or b'"error"' not in head[:64]:
        return None
    try:
        obj = orjson.loads(head.split(b"\n", 1)[0][5:])
    except orjson.JSONDecodeError:
        return {"message": "The upstream stream began with an error event.", "type": "server_error"}
    error = obj.get("error") if isinstance(obj, dict) else None
    return openai_error(error) if isinstance(error, dict) else None
