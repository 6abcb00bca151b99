"""Gemini clients' ``GenerateContentRequest`` → an OpenAI chat completion request (the hub).

Field names arrive in camelCase or snake_case (the proto JSON parser takes both). Function
responses carry only a name (ids are optional in Gemini), so each is matched to the earliest
unanswered call of that name in the turn before. What has no chat form (built-in tools, cached
contents, non-image files) is refused with the field it came from.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import orjson

from vectorengine.protocol.gemini.request import THOUGHT_MARK, TranslationError

_SNAKE = re.compile(r"_([a-z])")
_OPAQUE = frozenset({"args", "response", "parametersJsonSchema", "responseJsonSchema", "properties"})
_PARAMS = (
    ("temperature", "temperature"),
    ("topP", "top_p"),
    ("seed", "seed"),
    ("candidateCount", "n"),
    ("presencePenalty", "presence_penalty"),
    ("frequencyPenalty", "frequency_penalty"),
    ("maxOutputTokens", "max_tokens"),
)
_LEVELS = {"MINIMAL": "minimal", "LOW": "low", "MEDIUM": "medium", "HIGH": "high"}


def camel(obj: Any, parent: str = "") -> Any:
    """``obj`` with every field name in camelCase (user payloads such as ``args`` untouched)."""
    if isinstance(obj, list):
        return [camel(v, parent) for v in obj]
    if not isinstance(obj, dict) or parent in _OPAQUE:
        return obj
    out = {}
    for key, value in obj.items():
        name = _SNAKE.sub(lambda m: m.group(1).upper(), key) if isinstance(key, str) else key
        out[name] = camel(value, name)
    return out


def generate_to_chat(raw_body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    body = camel(raw_body)
    if body.get("cachedContent"):
        raise TranslationError("cachedContent needs a Gemini upstream; this model's channel is not one.",
                               "cachedContent")  # fmt: skip
    messages: list[dict[str, Any]] = []
    system = body.get("systemInstruction")
    if system is not None:
        text = _texts((system.get("parts") if isinstance(system, dict) else None) or [], "systemInstruction")
        if text:
            messages.append({"role": "system", "content": text})
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise TranslationError("contents is not specified", "contents")
    messages += _contents(contents)
    out: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("toolConfig"))
        if choice is not None:
            out["tool_choice"] = choice
    _generation(body.get("generationConfig"), out)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _texts(parts: list[Any], param: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise TranslationError("Only text parts can be sent here.", f"{param}.parts[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def _contents(contents: list[Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    unanswered: dict[str, deque[str]] = {}  # function name → ids of calls awaiting a response
    minted = 0
    for i, turn in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(turn, dict) or not isinstance(turn.get("parts"), list):
            raise TranslationError("Each content needs a list of parts.", f"{where}.parts")
        role = turn.get("role") or "user"
        if role not in ("user", "model"):
            raise TranslationError("Please use a valid role: user, model.", f"{where}.role")
        if role == "model":
            message, calls = _model_turn(turn["parts"], where, minted)
            minted += len(calls)
            unanswered = {}
            for name, call_id in calls:
                unanswered.setdefault(name, deque()).append(call_id)
            messages.append(message)
            continue
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(turn["parts"]):
            at = f"{where}.parts[{j}]"
            if not isinstance(part, dict):
                raise TranslationError("A part must be an object.", at)
            if "functionResponse" in part:
                messages.append(_tool_result(part["functionResponse"], unanswered, at))
            elif isinstance(part.get("text"), str):
                if part["text"]:
                    parts.append({"type": "text", "text": part["text"]})
            elif "inlineData" in part or "fileData" in part:
                parts.append(_media(part, at))
            else:
                raise TranslationError("This kind of part cannot be sent to this model.", at)
        if parts:
            simple = all(p["type"] == "text" for p in parts)
            text = "".join(p["text"] for p in parts) if simple and len(parts) == 1 else None
            messages.append({"role": "user", "content": text if text is not None else parts})
    return messages


def _model_turn(parts: list[Any], where: str, minted: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    calls: list[tuple[str, str]] = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("thought"):
            continue  # earlier thoughts are not sent back to other models
        if "functionCall" in part:
            fc = part["functionCall"]
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str):
                raise TranslationError("A function call needs a name.", f"{where}.parts[{j}].functionCall")
            call_id = str(fc.get("id") or f"call_gemini_{minted + len(calls)}")
            if part.get("thoughtSignature"):
                call_id += THOUGHT_MARK + str(part["thoughtSignature"])
            calls.append((fc["name"], call_id))
            arguments = orjson.dumps(fc.get("args") or {}).decode()
            tool_calls.append({"id": call_id, "type": "function",
                               "function": {"name": fc["name"], "arguments": arguments}})  # fmt: skip
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message, calls


def _tool_result(fr: Any, unanswered: dict[str, deque[str]], at: str) -> dict[str, Any]:
    if not isinstance(fr, dict) or not isinstance(fr.get("name"), str):
        raise TranslationError("A function response needs a name.", f"{at}.functionResponse.name")
    waiting = unanswered.get(fr["name"])
    if fr.get("id"):
        call_id = next((c for c in waiting or () if c.split(THOUGHT_MARK)[0] == fr["id"]), str(fr["id"]))
        if waiting and call_id in waiting:
            waiting.remove(call_id)
    elif waiting:
        call_id = waiting.popleft()
    else:
        raise TranslationError(
            f"The function response for {fr['name']!r} answers no function call of the previous turn.",
            f"{at}.functionResponse",
        )
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": orjson.dumps(fr.get("response") or {}).decode(),
    }


def _media(part: dict[str, Any], at: str) -> dict[str, Any]:
    inline = part.get("inlineData")
    if isinstance(inline, dict):
        mime = str(inline.get("mimeType") or "")
        if not mime.startswith("image/"):
            raise TranslationError(f"Inline {mime or 'data'} cannot be sent to this model; images can.", at)
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{inline.get('data', '')}"}}
    file = part.get("fileData") or {}
    uri = file.get("fileUri") if isinstance(file, dict) else None
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        raise TranslationError("Only image files at http(s) URLs can be sent to this model.", at)
    return {"type": "image_url", "image_url": {"url": uri}}


def _tools(raw: Any) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(raw or ()):
        if not isinstance(tool, dict):
            raise TranslationError("A tool must be an object.", f"tools[{i}]")
        for key in tool:
            if key != "functionDeclarations":
                raise TranslationError(
                    f"The built-in tool {key!r} needs a Gemini upstream.", f"tools[{i}].{key}"
                )
        for j, decl in enumerate(tool.get("functionDeclarations") or ()):
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                raise TranslationError(
                    "A function declaration needs a name.", f"tools[{i}].functionDeclarations[{j}]"
                )
            schema = (
                decl.get("parametersJsonSchema") or _json_schema(decl.get("parameters")) or {"type": "object"}
            )
            fn: dict[str, Any] = {"name": decl["name"], "parameters": schema}
            if decl.get("description"):
                fn["description"] = decl["description"]
            tools.append({"type": "function", "function": fn})
    return tools


def _json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-subset ``Schema`` as JSON Schema: lower-case types, ``nullable`` as a type."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _json_schema(value)
        elif key not in ("nullable", "propertyOrdering", "example"):
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _tool_choice(config: Any) -> Any:
    fcc = config.get("functionCallingConfig") if isinstance(config, dict) else None
    if not isinstance(fcc, dict):
        return None
    mode = fcc.get("mode", "AUTO")
    names = fcc.get("allowedFunctionNames") or []
    if mode == "NONE":
        return "none"
    if mode in ("ANY", "VALIDATED"):
        if len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        return "required" if mode == "ANY" else "auto"
    return "auto"


def _generation(config: Any, out: dict[str, Any]) -> None:
    if not isinstance(config, dict):
        return
    for source, target in _PARAMS:
        if config.get(source) is not None:
            out[target] = config[source]
    if config.get("stopSequences"):
        out["stop"] = config["stopSequences"]
    schema = config.get("responseJsonSchema") or _json_schema(config.get("responseSchema"))
    if config.get("responseMimeType") == "application/json":
        out["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
            if schema
            else {"type": "json_object"}
        )
    thinking = config.get("thinkingConfig")
    if isinstance(thinking, dict):
        level = _LEVELS.get(str(thinking.get("thinkingLevel", "")).upper())
        budget = thinking.get("thinkingBudget")
        if level is not None:
            out["reasoning_effort"] = level
        elif isinstance(budget, int) and budget > 0:  # 0 turns thinking off: nothing to ask for
            out["reasoning_effort"] = "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"
