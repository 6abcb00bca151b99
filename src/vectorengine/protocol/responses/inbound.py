"""A Responses API request (``POST /v1/responses``) → an OpenAI chat completion request (the hub).

The translated path is stateless: items map onto chat messages (``message`` items,
``function_call`` items onto the assistant's ``tool_calls``, ``function_call_output`` onto
tool messages; ``reasoning`` items are dropped). Whatever needs state the gateway does not keep
(``previous_response_id``, ``conversation``, ``background``, stored ``prompt`` templates),
OpenAI's built-in tools, or files it does not hold is refused with the path of the field.
"""

from __future__ import annotations

from typing import Any

from vectorengine.protocol.anthropic.request import TranslationError

_COPIED = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
)
_STATELESS = "; this model's channel is stateless. Send the whole conversation as input instead."
_STATEFUL = {
    "previous_response_id": "previous_response_id needs an upstream that stores responses" + _STATELESS,
    "conversation": "conversation needs an upstream that stores conversations" + _STATELESS,
    "prompt": "prompt templates are stored by OpenAI; this model's channel cannot read them.",
}
_TEXT_PARTS = ("input_text", "output_text", "text")
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request for ``body``; raises :class:`TranslationError` naming the offending field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("you must provide a model parameter", "model")
    for name, message in _STATEFUL.items():
        if body.get(name) is not None:
            raise TranslationError(message, name)
    if body.get("background") is True:
        raise TranslationError(
            "background responses need an upstream that stores responses" + _STATELESS, "background"
        )
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            messages.append({"role": "system", "content": instructions})
    elif instructions is not None:
        raise TranslationError("instructions must be a string.", "instructions")
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        _items(raw, messages)
    elif raw is None:
        raise TranslationError("Missing required parameter: 'input'.", "input")
    else:
        raise TranslationError("input must be a string or a list of items.", "input")
    if not messages:
        raise TranslationError("input must hold at least one message.", "input")
    out: dict[str, Any] = {"model": model, "messages": messages}
    for name in _COPIED:
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if isinstance(text, dict):
        _text_config(text, out)
    tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(body.get("tools") or ())]
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        out["tool_choice"] = _tool_choice(choice)
    return out


def _items(items: list[Any], messages: list[dict[str, Any]]) -> None:
    for i, item in enumerate(items):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError("Each input item must be an object.", at)
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(str(item.get("role")))
            if role is None:
                raise TranslationError(
                    "role must be one of 'user', 'assistant', 'system' or 'developer'.", f"{at}.role"
                )
            messages.append({"role": role, "content": _content(item.get("content"), role, f"{at}.content")})
        elif kind == "function_call":
            _function_call(item, at, messages)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise TranslationError("Missing required parameter: 'call_id'.", f"{at}.call_id")
            output = _content(item.get("output"), "tool", f"{at}.output")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            continue  # the model's own (often encrypted) thoughts: chat has no way to take them back
        elif kind == "item_reference":
            raise TranslationError(
                "item_reference needs an upstream that stores items" + _STATELESS, f"{at}.type"
            )
        else:
            raise TranslationError(
                f"Input items of type {kind!r} need an upstream with the Responses API.", f"{at}.type"
            )


def _function_call(item: dict[str, Any], at: str, messages: list[dict[str, Any]]) -> None:
    for name in ("call_id", "name"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise TranslationError(f"Missing required parameter: '{name}'.", f"{at}.{name}")
    arguments = item.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        raise TranslationError("arguments must be a JSON string.", f"{at}.arguments")
    call = {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":  # the turn just before (reasoning is dropped)
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _content(content: Any, role: str, at: str) -> Any:
    """Chat content: a string, or for a user turn with images, a list of parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts.", at)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image" and role == "user":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise TranslationError(
                    "Images must be given by image_url; file_id needs an upstream that stores files.",
                    f"{at}[{j}].image_url",
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            raise TranslationError(
                "Files (input_file) cannot be sent to this model's channel.", f"{at}[{j}].type"
            )
        else:
            where = "a tool output" if role == "tool" else f"{role} messages"
            raise TranslationError(
                f"Content parts of type {kind!r} cannot be sent in {where}.", f"{at}[{j}].type"
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _text_config(text: dict[str, Any], out: dict[str, Any]) -> None:
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        spec = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt is not None and kind != "text":
        raise TranslationError(f"Unknown text format {kind!r}.", "text.format.type")
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]


def _tool(tool: Any, at: str) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise TranslationError(
            f"The built-in tool {kind!r} needs an upstream with the Responses API; "
            "this model's channel takes function tools only.",
            f"{at}.type",
        )
    assert isinstance(tool, dict)
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise TranslationError("Missing required parameter: 'name'.", f"{at}.name")
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "function":
        raise TranslationError("Missing required parameter: 'name'.", "tool_choice.name")
    if kind is not None:
        raise TranslationError(
            f"tool_choice {kind!r} needs an upstream with the Responses API.", "tool_choice.type"
        )
    raise TranslationError("tool_choice must be 'none', 'auto', 'required' or a function.", "tool_choice")
