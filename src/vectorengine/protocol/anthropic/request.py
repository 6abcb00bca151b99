"""OpenAI chat completion request → Anthropic Messages request (protocols.md I.1)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_THINKING_BUDGET = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}


class TranslationError(ValueError):
    """The client's request cannot be expressed for this upstream."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def tool_id(raw: str) -> str:
    """A tool-call id Anthropic accepts (``^[a-zA-Z0-9_-]+$``), the same for the same input."""
    safe = _ID_UNSAFE.sub("_", raw)
    if safe == raw and raw:
        return raw
    return (safe or "toolu") + "_" + hashlib.sha256(raw.encode()).hexdigest()[:8]


def chat_to_messages(
    body: dict[str, Any],
    upstream_model: str,
    *,
    stream: bool,
    default_max_tokens: int = 4096,
    auto_cache: bool = False,
) -> dict[str, Any]:
    """``auto_cache`` marks the system prompt as a cache breakpoint, for clients whose own
    provider caches long prefixes without being asked (Gemini's implicit caching)."""
    n = body.get("n")
    if n not in (None, 1):
        raise TranslationError("Anthropic models return one choice: `n` must be 1.", "n")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            raise TranslationError("Each message must be an object.", f"messages[{i}]")
        role = message.get("role")
        if role in ("system", "developer"):
            system += _system_blocks(message.get("content"), f"messages[{i}].content")
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, i)]
        else:
            raise TranslationError(
                f"Unsupported message role {role!r} for Anthropic models.", f"messages[{i}].role"
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:  # consecutive turns of one role become one
            merged = turns[-1]["content"] + blocks
            # tool results lead their user turn, as Anthropic requires
            merged.sort(key=lambda b: b.get("type") != "tool_result")
            turns[-1]["content"] = merged
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise TranslationError("At least one user or assistant message is required.", "messages")
    if turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "."}]})
    out: dict[str, Any] = {"model": upstream_model, "messages": turns}
    if system:
        if auto_cache and not any("cache_control" in b for b in system):
            system[-1]["cache_control"] = {"type": "ephemeral"}
        out["system"] = system
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [s for s in stop if isinstance(s, str)]
    user = body.get("user") or (body.get("metadata") or {}).get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    tools = body.get("tools")
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if isinstance(tools, list) and tools and choice != {"type": "none"}:
        out["tools"] = [_tool(t, j) for j, t in enumerate(tools)]
        if choice is not None:
            out["tool_choice"] = choice
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in _THINKING_BUDGET:
        budget = _THINKING_BUDGET[effort]
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        max_tokens = max(max_tokens, budget + 1024)  # the budget must stay below max_tokens
        out.pop("temperature", None)
        out.pop("top_k", None)
        if out.get("tool_choice", {}).get("type") in ("any", "tool"):  # forcing a tool excludes thinking
            out["tool_choice"] = {**out["tool_choice"], "type": "auto"}
            out["tool_choice"].pop("name", None)
    out["max_tokens"] = max_tokens
    if stream:
        out["stream"] = True
    return out


def _text_of(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    raise TranslationError("Message content must be a string or a list of parts.", param)


def _cached(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """The block with the part's ``cache_control`` (an extension OpenAI clients use for Claude)."""
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _system_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """System text as blocks: one per text part, so cache breakpoints stay where they were."""
    if isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content):
        return [
            _cached({"type": "text", "text": p["text"]}, p)
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and p.get("text")
        ]
    text = _text_of(content, param)
    return [{"type": "text", "text": text}] if text else []


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError("Message content must be a string or a list of parts.", param)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append(_cached({"type": "text", "text": part["text"]}, part))
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{param}[{j}].image_url"))
        else:
            raise TranslationError(
                f"Content parts of type {kind!r} cannot be sent to Anthropic models.", f"{param}[{j}]"
            )
    return blocks


def _image(spec: Any, param: str) -> dict[str, Any]:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise TranslationError("image_url.url is required.", param)
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media = head[5:].split(";")[0]
        if ";base64" not in head or not media:
            raise TranslationError("Image data URLs must be base64: data:<mime>;base64,<data>.", param)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError("Images must be http(s) URLs or base64 data URLs.", param)


def _assistant_blocks(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    text = _text_of(message.get("content"), f"messages[{i}].content")
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for j, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise TranslationError("A tool call needs function.name.", f"messages[{i}].tool_calls[{j}]")
        raw = fn.get("arguments") or "{}"
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TranslationError(
                "Tool call arguments must be a JSON object.",
                f"messages[{i}].tool_calls[{j}].function.arguments",
            ) from None
        if not isinstance(args, dict):
            raise TranslationError(
                "Tool call arguments must be a JSON object.",
                f"messages[{i}].tool_calls[{j}].function.arguments",
            )
        call_id = tool_id(str(call.get("id") or f"call_{j}"))
        blocks.append({"type": "tool_use", "id": call_id, "name": fn["name"], "input": args})
    return blocks


def _tool_result(message: dict[str, Any], i: int) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError("A tool message needs tool_call_id.", f"messages[{i}].tool_call_id")
    return {
        "type": "tool_result",
        "tool_use_id": tool_id(call_id),
        "content": _text_of(message.get("content"), f"messages[{i}].content"),
    }


def _tool(tool: Any, j: int) -> dict[str, Any]:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise TranslationError("Each tool needs function.name.", f"tools[{j}].function")
    schema = fn.get("parameters")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = {"type": "object", "properties": {}, **(schema if isinstance(schema, dict) else {})}
        schema["type"] = "object"
    out = {"name": fn["name"], "input_schema": schema}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise TranslationError("tool_choice must be auto, none, required or a named function.", "tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out
