"""OpenAI chat completion request → Gemini ``GenerateContentRequest`` (protocols.md I.3)."""

from __future__ import annotations

from typing import Any

import orjson

THOUGHT_MARK = "__thought__"  # a Gemini thoughtSignature rides on the tool-call id (I.5.3)
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 2048, "high": 4096}
_DROPPED_KEYS = frozenset(
    {"additionalProperties", "$schema", "$id", "default", "exclusiveMinimum", "exclusiveMaximum", "examples",
     "const", "$comment", "strict"}
)  # fmt: skip
_FORMATS = {"string": {"enum", "date-time"}, "number": {"float", "double"}, "integer": {"int32", "int64"}}
_PARAMS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("seed", "seed"),
    ("n", "candidateCount"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
         ".gif": "image/gif", ".pdf": "application/pdf"}  # fmt: skip


class TranslationError(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """(the id, the thoughtSignature it carries, if any)."""
    base, mark, signature = call_id.partition(THOUGHT_MARK)
    return (base, signature) if mark and signature else (call_id, None)


def clean_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON schema without the keywords Gemini rejects; local ``$ref``s inlined."""
    if not isinstance(schema, dict) or depth > 20:
        return schema
    defs = {**(defs or {}), **(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        return clean_schema(defs[ref.rsplit("/", 1)[-1]], defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS or key in ("$defs", "definitions", "$ref"):
            continue
        if key == "format" and value not in _FORMATS.get(str(schema.get("type")), set()):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: clean_schema(sub, defs, depth + 1) for name, sub in value.items()}
        elif key == "items":
            out[key] = clean_schema(value, defs, depth + 1)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out["anyOf" if key != "allOf" else key] = [clean_schema(v, defs, depth + 1) for v in value]
        else:
            out[key] = value
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _image(url: Any, param: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise TranslationError("image_url.url is required.", param)
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        return {"inlineData": {"mimeType": head[5:].split(";")[0], "data": data}}
    ext = "." + url.rsplit(".", 1)[-1].lower().split("?")[0] if "." in url.rsplit("/", 1)[-1] else ""
    if url.startswith("gs://") or (url.startswith("https://") and ext in _MIME):
        return {"fileData": {"mimeType": _MIME.get(ext, "application/octet-stream"), "fileUri": url}}
    raise TranslationError(
        "Gemini takes images as data URLs, gs:// URIs or https URLs of image files.", param
    )


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content or []):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and part.get("text"):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            spec = part.get("image_url")
            parts.append(_image(spec.get("url") if isinstance(spec, dict) else spec, f"{param}[{j}]"))
        elif kind != "text":
            raise TranslationError(
                f"Content parts of type {kind!r} cannot be sent to Gemini.", f"{param}[{j}]"
            )
    return parts


def chat_to_generate(body: dict[str, Any]) -> dict[str, Any]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, m in enumerate(body.get("messages") or []):
        role = m.get("role") if isinstance(m, dict) else None
        if role in ("system", "developer"):
            if _text(m.get("content")):
                system.append({"text": _text(m.get("content"))})
            continue
        if role == "user":
            who, parts = "user", _user_parts(m.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            who, parts = "model", ([{"text": _text(m.get("content"))}] if _text(m.get("content")) else [])
            for j, call in enumerate(m.get("tool_calls") or []):
                fn = call.get("function") or {}
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    raise TranslationError(
                        "Tool call arguments must be JSON.",
                        f"messages[{i}].tool_calls[{j}].function.arguments",
                    ) from None
                names[str(call.get("id"))] = str(fn.get("name"))
                part: dict[str, Any] = {"functionCall": {"name": fn.get("name"), "args": args}}
                signature = split_call_id(str(call.get("id") or ""))[1]
                if signature:
                    part["thoughtSignature"] = signature
                parts.append(part)
        elif role == "tool":
            call_id = str(m.get("tool_call_id") or "")
            if call_id not in names:
                raise TranslationError(
                    "A tool message must answer an earlier tool call.", f"messages[{i}].tool_call_id"
                )
            text = _text(m.get("content"))
            try:
                result = orjson.loads(text)
            except orjson.JSONDecodeError:
                result = None
            response = result if isinstance(result, dict) else {"content": text}
            who, parts = "user", [{"functionResponse": {"name": names[call_id], "response": response}}]
        else:
            raise TranslationError(f"Unsupported message role {role!r} for Gemini.", f"messages[{i}].role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == who:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": who, "parts": parts})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    tools: list[dict[str, Any]] = [
        t["function"]
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if tools:
        declarations = []
        for fn in tools:
            decl: dict[str, Any] = {"name": fn.get("name")}
            if fn.get("description"):
                decl["description"] = fn["description"]
            if fn.get("parameters"):
                decl["parameters"] = clean_schema(fn["parameters"])
            declarations.append(decl)
        out["tools"] = [{"functionDeclarations": declarations}]
        mode = _tool_mode(body.get("tool_choice"))
        if mode:
            out["toolConfig"] = {"functionCallingConfig": mode}
    return out


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in _PARAMS:
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            config["responseSchema"] = clean_schema(schema)
    effort = body.get("reasoning_effort")
    if effort in _BUDGETS:
        config["thinkingConfig"] = {"thinkingBudget": _BUDGETS[effort], "includeThoughts": effort != "none"}
    return config


def _tool_mode(choice: Any) -> dict[str, Any] | None:
    if choice in (None, "auto"):
        return {"mode": "AUTO"} if choice else None
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    raise TranslationError("tool_choice must be auto, none, required or a named function.", "tool_choice")
