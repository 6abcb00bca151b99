"""An Anthropic client's Messages request → an OpenAI chat completion request (the hub)."""

from __future__ import annotations

from typing import Any

import orjson

from vectorengine.protocol.anthropic.request import TranslationError


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": body.get("model"), "messages": [], "max_tokens": body.get("max_tokens")}
    messages: list[dict[str, Any]] = out["messages"]
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        text = "\n\n".join(
            str(b.get("text") or "") for b in system if isinstance(b, dict) and b.get("type") == "text"
        )
        if text:
            messages.append({"role": "system", "content": text})
    for i, turn in enumerate(body.get("messages") or []):
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise TranslationError("Each message needs role user or assistant.", f"messages.{i}.role")
        content = turn.get("content")
        if isinstance(content, str):
            messages.append({"role": turn["role"], "content": content})
        elif isinstance(content, list):
            messages.extend(_user(content, i) if turn["role"] == "user" else [_assistant(content)])
        else:
            raise TranslationError("content must be a string or a list of blocks.", f"messages.{i}.content")
    stop = body.get("stop_sequences")
    if isinstance(stop, list) and stop:
        out["stop"] = stop
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user
    tools = [_tool(t, j) for j, t in enumerate(body.get("tools") or [])]
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice") or {}
        kind = choice.get("type")
        if kind in ("auto", "any", "none"):
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens") or 0
        out["reasoning_effort"] = "low" if budget <= 1024 else "medium" if budget <= 2048 else "high"
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text") or "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _user(blocks: list[Any], i: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            src = block.get("source") or {}
            if src.get("type") == "base64":
                url = f"data:{src.get('media_type')};base64,{src.get('data')}"
            elif src.get("type") == "url":
                url = str(src.get("url"))
            else:
                raise TranslationError("Images must be base64 or URL sources.", f"messages.{i}.content.{j}")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_result":
            text = _text(block.get("content"))
            if block.get("is_error"):
                text = "Error: " + text
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        else:
            raise TranslationError(
                f"Blocks of type {kind!r} cannot be sent to this model.", f"messages.{i}.content.{j}"
            )
    out = list(results)  # a tool result answers the assistant turn just before it
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def _assistant(blocks: list[Any]) -> dict[str, Any]:
    text, calls = [], []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})  # fmt: skip
        # thinking blocks are the model's own; an OpenAI-compatible model cannot take them back
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool(tool: Any, j: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise TranslationError("Each tool needs a name.", f"tools.{j}")
    if tool.get("type") not in (None, "custom"):
        raise TranslationError(f"Server tools ({tool.get('type')}) need an Anthropic model.", f"tools.{j}")
    fn: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}
