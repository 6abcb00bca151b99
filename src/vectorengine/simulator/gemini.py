"""The Gemini API (v1beta) as the simulator speaks it: ``models/{m}:generateContent``,
``:streamGenerateContent`` (SSE with ``alt=sse``, else one JSON array) and ``:countTokens``.

Requests are checked as the API checks them (unknown fields, roles, part shapes, empty text,
function-call thought signatures on Gemini 3, the OpenAPI-subset ``Schema`` of function
parameters); answers are planned by :mod:`.chat` and written as ``GenerateContentResponse``
objects: camelCase, ``STOP`` for function calls, cumulative ``usageMetadata`` with thoughts
counted apart, errors in Google's ``{"error": {"code", "message", "status", "details"}}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

import orjson

from vectorengine.simulator import content
from vectorengine.simulator.cache import Segment
from vectorengine.simulator.chat import ChatRequest
from vectorengine.simulator.wire import ApiError

CONTEXT_TOKENS = 1_048_576
IMAGE_TOKENS = 258
SKIP_SIGNATURE = "skip_thought_signature_validator"
_SIGNING_KEY = b"vectorengine-simulator-gemini"
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "generationConfig",
        "cachedContent",
        "labels",
    }
)
_GENERATION_FIELDS = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "enableEnhancedCivicAnswers",
        "speechConfig",
        "thinkingConfig",
        "imageConfig",
        "mediaResolution",
    }
)
_SCHEMA_FIELDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "items",
        "minimum",
        "maximum",
        "default",
    }
)
_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL", "TYPE_UNSPECIFIED"})
_PART_KINDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_API = "type.googleapis.com/google.ai.generativelanguage.v1beta"
_SERVICE = "generativelanguage.googleapis.com"
_SNAKE = re.compile(r"_([a-z])")
_OPAQUE = frozenset(
    {"args", "response", "parametersJsonSchema", "responseJsonSchema", "properties", "labels"}
)


def bad(message: str, status: int = 400) -> ApiError:
    return ApiError(status, message)


def unknown_field(name: str, where: str) -> ApiError:
    at = f" at '{where}'" if where else ""
    return bad(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


# --------------------------------------------------------------------------- errors


def error_object(error: ApiError) -> tuple[int, dict[str, Any]]:
    """Google's envelope (and status) of an error the simulator raised in OpenAI terms."""
    status, message, details = error.status, error.message, list[dict[str, Any]]()
    if error.code == "invalid_api_key" or status == 401:
        status, message = 400, "API key not valid. Please pass a valid API key."
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    elif error.code == "insufficient_quota":
        message = (
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
        )
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _SERVICE + "/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    }
                ],
            }
        ]
    elif status == 429:
        retry = next((v for k, v in error.headers if k == "retry-after"), "1")
        message = "Resource has been exhausted (e.g. check quota)."
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry}s"}]
    elif status == 503:
        message = "The model is overloaded. Please try again later."
    elif status == 500:
        message = "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
    body: dict[str, Any] = {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}
    if details:
        body["details"] = details
    return status, {"error": body}


def error_body(error: ApiError) -> tuple[int, bytes]:
    status, obj = error_object(error)
    return status, orjson.dumps(obj)


def stream_error_event() -> bytes:
    _, obj = error_object(ApiError(503, ""))
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def context_too_long(prompt_tokens: int) -> ApiError:
    tokens = max(prompt_tokens, CONTEXT_TOKENS + 1)
    return bad(
        f"The input token count ({tokens}) exceeds the maximum number of tokens allowed ({CONTEXT_TOKENS})."
    )


def model_not_found(model: str, method: str) -> ApiError:
    return bad(
        f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods.",
        404,
    )


# --------------------------------------------------------------------------- the request


def camel(obj: Any, parent: str = "") -> Any:
    """Proto JSON accepts snake_case names too; the request with every field name in camelCase."""
    if isinstance(obj, list):
        return [camel(v, parent) for v in obj]
    if not isinstance(obj, dict) or parent in _OPAQUE:
        return obj
    out = {}
    for key, value in obj.items():
        name = _SNAKE.sub(lambda m: m.group(1).upper(), key) if isinstance(key, str) else key
        out[name] = camel(value, name)
    return out


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    model: str
    chat: ChatRequest
    thinking: bool
    include_thoughts: bool
    segments: tuple[Segment, ...]


def signature(name: str, args: Any) -> str:
    digest = hmac.new(
        _SIGNING_KEY, name.encode() + orjson.dumps(args, option=orjson.OPT_SORT_KEYS), hashlib.sha256
    )
    return base64.b64encode(digest.digest()).decode()


def thinks_by_default(model: str) -> bool:
    return model.startswith(("gemini-2.5", "gemini-3"))


def parse(model: str, raw_body: dict[str, Any], *, stream: bool) -> GenerateRequest:
    body = camel(raw_body)
    for name in body:
        if name not in _REQUEST_FIELDS:
            raise unknown_field(name, "")
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        raise bad("Invalid value at 'generation_config': expected an object")
    for name in config:
        if name not in _GENERATION_FIELDS:
            raise unknown_field(name, "generation_config")
    segments: list[Segment] = []
    system = _system(body.get("systemInstruction"), segments)
    messages = _contents(body.get("contents"), model, segments)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    tools = _tools(body.get("tools"), segments)
    tools, forced = _tool_config(body.get("toolConfig"), tools)
    thinking_config = config.get("thinkingConfig") or {}
    budget = thinking_config.get("thinkingBudget")
    thinking = thinks_by_default(model) and budget != 0
    limit = config.get("maxOutputTokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise bad("Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32)")
    stops = config.get("stopSequences") or []
    if len(stops) > 5:
        raise bad("The number of stop sequences must be at most 5.")
    last_is_result = bool(messages) and messages[-1]["role"] == "tool"
    chat = ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=False,
        obfuscation=False,
        n=1,
        limit=limit,
        stop=stops,
        tools=[] if last_is_result and not forced else tools,
        forced=forced,
        parallel=True,
        response_format=None,
        prompt_tokens=sum(t for _, t in segments),
    )
    return GenerateRequest(
        model, chat, thinking, thinking_config.get("includeThoughts") is True, tuple(segments)
    )


def _system(raw: Any, segments: list[Segment]) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, dict) or not isinstance(raw.get("parts"), list):
        raise bad("Invalid value at 'system_instruction': expected a Content with parts")
    texts = [str(p.get("text", "")) for p in raw["parts"] if isinstance(p, dict)]
    text = "\n".join(t for t in texts if t)
    segments.append(({"system": text}, content.count_tokens(text)))
    return text


def _contents(raw: Any, model: str, segments: list[Segment]) -> list[dict[str, Any]]:
    if not raw:
        raise bad("* GenerateContentRequest.contents: contents is not specified\n")
    if not isinstance(raw, list):
        raise bad("Invalid value at 'contents': expected a list")
    chat: list[dict[str, Any]] = []
    current = _current_turn(raw)
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict):
            raise bad(f"Invalid value at 'contents[{i}]': expected a Content object")
        role = turn.get("role", "user")
        if role not in ("user", "model"):
            raise bad("Please use a valid role: user, model.")
        parts = turn.get("parts")
        if not isinstance(parts, list) or not parts:
            raise bad(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n")
        texts: list[str] = []
        for j, part in enumerate(parts):
            tokens = _check_part(part, role, model, f"contents[{i}].parts[{j}]")
            segments.append(({"role": role, **part}, tokens + (3 if j == 0 else 0)))
            if "text" in part and not part.get("thought"):
                texts.append(part["text"])
            elif "functionResponse" in part:
                result = part["functionResponse"].get("response")
                chat.append({"role": "tool", "content": orjson.dumps(result).decode()})
        if role == "model" and i >= current and model.startswith("gemini-3"):
            _check_signature(parts, i)
        if texts or role == "model":
            chat.append({"role": "user" if role == "user" else "assistant", "content": " ".join(texts)})
    return chat


def _bytes(value: Any) -> bytes | None:
    """A proto ``bytes`` field: base64 in either alphabet (the SDK sends the URL-safe one)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_"))
    except ValueError:
        return None


def _current_turn(raw: list[Any]) -> int:
    """Where the current turn starts: after the last user turn that holds text."""
    for i in range(len(raw) - 1, -1, -1):
        turn = raw[i]
        if isinstance(turn, dict) and turn.get("role", "user") == "user":
            parts = turn.get("parts") or []
            if any(isinstance(p, dict) and "text" in p for p in parts):
                return i
    return 0


def _check_signature(parts: list[Any], i: int) -> None:
    """Gemini 3: the first function call of each step must carry its thought signature back."""
    first = next((p for p in parts if isinstance(p, dict) and "functionCall" in p), None)
    if first is None:
        return
    call = first["functionCall"]
    sent = first.get("thoughtSignature")
    expected = signature(call["name"], call.get("args") or {})
    if sent == SKIP_SIGNATURE or _bytes(sent) in (_bytes(expected), SKIP_SIGNATURE.encode()):
        return
    raise bad(
        "Function call is missing a thought_signature in functionCall parts. This is required for tools to "
        "work correctly, and missing thought_signature may lead to degraded model performance. Additional "
        f"data, function call `default_api:{call['name']}` , position {i + 1}. Please refer to "
        "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
    )


def _check_part(part: Any, role: str, model: str, where: str) -> int:
    if not isinstance(part, dict):
        raise bad(f"Invalid value at '{where}': expected a Part object")
    for name in part:
        if name not in (*_PART_KINDS, "thought", "thoughtSignature", "videoMetadata", "partMetadata"):
            raise unknown_field(name, where)
    kinds = [k for k in _PART_KINDS if k in part]
    if len(kinds) != 1:
        raise bad(f"Invalid value at '{where}': a Part must hold exactly one of {', '.join(_PART_KINDS)}")
    kind = kinds[0]
    if kind == "text":
        if not isinstance(part["text"], str):
            raise bad(f"Invalid value at '{where}.text' (TYPE_STRING)")
        if not part["text"] and not part.get("thoughtSignature"):
            raise bad(
                "Unable to submit request because it has an empty text parameter. Add a value to the "
                "parameter and try again."
            )
        return content.count_tokens(part["text"])
    if kind == "inlineData":
        data = part["inlineData"]
        if not isinstance(data, dict) or not isinstance(data.get("mimeType"), str) or "data" not in data:
            raise bad(f"Invalid value at '{where}.inline_data': mimeType and data are required")
        try:
            base64.b64decode(str(data["data"]), validate=True)
        except ValueError:
            raise bad(
                f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
            ) from None
        return IMAGE_TOKENS
    if kind == "fileData":
        return IMAGE_TOKENS
    if kind == "functionCall":
        call = part["functionCall"]
        if role != "model" or not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise bad(
                f"Invalid value at '{where}.function_call': a function call needs a name, in a model turn"
            )
        return content.count_tokens(call["name"]) + content.count_tokens(
            orjson.dumps(call.get("args")).decode()
        )
    if kind == "functionResponse":
        result = part["functionResponse"]
        if not isinstance(result, dict) or not isinstance(result.get("name"), str):
            raise bad(f"* GenerateContentRequest.{where}.function_response.name: Name cannot be empty.\n")
        if not isinstance(result.get("response"), dict):
            raise bad(
                f"Invalid value at '{where}.function_response.response' "
                "(type.googleapis.com/google.protobuf.Struct)"
            )
        return content.count_tokens(orjson.dumps(result["response"]).decode())
    return content.count_tokens(orjson.dumps(part[kind]).decode())


def _tools(raw: Any, segments: list[Segment]) -> list[dict[str, Any]]:
    functions: list[dict[str, Any]] = []
    for i, tool in enumerate(raw or ()):
        if not isinstance(tool, dict):
            raise bad(f"Invalid value at 'tools[{i}]': expected a Tool object")
        for j, decl in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{i}].function_declarations[{j}]"
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str) or not decl["name"]:
                raise bad(f"* GenerateContentRequest.{where}.name: Name cannot be empty.\n")
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}", decl["name"]):
                raise bad(
                    f"* GenerateContentRequest.{where}.name: Invalid function name. Must start with a letter "
                    "or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons "
                    "(:), or dashes (-), with a maximum length of 64.\n"
                )
            if "parameters" in decl:
                check_schema(decl["parameters"], f"{where}.parameters")
            params = decl.get("parameters") or decl.get("parametersJsonSchema") or {}
            functions.append({"name": decl["name"], "parameters": _plain_schema(params)})
        segments.append((tool, content.count_tokens(orjson.dumps(tool).decode())))
    return functions


def check_schema(schema: Any, where: str) -> None:
    """Gemini's ``Schema`` is an OpenAPI subset: other JSON Schema keywords are unknown fields."""
    if not isinstance(schema, dict):
        raise bad(f"Invalid value at '{where}': expected a Schema object")
    for name, value in schema.items():
        if name not in _SCHEMA_FIELDS:
            raise unknown_field(name, where)
        if name == "type" and (not isinstance(value, str) or value.upper() not in _TYPES):
            raise bad(f"Invalid value at '{where}.type' ({_API}.Type), {orjson.dumps(value).decode()}")
        if name == "properties" and isinstance(value, dict):
            for prop, sub in value.items():
                check_schema(sub, f"{where}.properties[{prop}].value")
        if name == "items":
            check_schema(value, f"{where}.items")
        if name == "anyOf" and isinstance(value, list):
            for k, sub in enumerate(value):
                check_schema(sub, f"{where}.any_of[{k}]")


def _plain_schema(schema: Any) -> Any:
    """The schema with lower-case types, as the answer planner reads JSON Schema."""
    if isinstance(schema, list):
        return [_plain_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _plain_schema(v) for k, v in schema.items()}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _plain_schema(v) for k, v in schema["properties"].items()}
    return out


def _tool_config(raw: Any, tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    config = (raw or {}).get("functionCallingConfig") or {} if isinstance(raw, dict) else {}
    mode = config.get("mode", "AUTO")
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise bad(
            f"Invalid value at 'tool_config.function_calling_config.mode' "
            f'(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"'
        )
    if mode == "NONE":
        return [], False
    allowed = config.get("allowedFunctionNames")
    if allowed:
        if mode not in ("ANY", "VALIDATED"):
            raise bad("allowed_function_names is only allowed when the mode is ANY or VALIDATED.")
        tools = [t for t in tools if t["name"] in allowed]
    return tools, mode == "ANY"
