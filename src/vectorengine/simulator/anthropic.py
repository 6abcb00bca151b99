"""The Anthropic Messages API as the simulator speaks it: ``POST /v1/messages`` and
``POST /v1/messages/count_tokens``.

Requests are checked the way the API checks them (required fields, unknown fields, block
shapes, tool-use/tool-result pairing, tool-id charset, image data against its media type,
thinking rules and signatures, prompt caching by ``cache_control`` breakpoints); the answer
is planned by :mod:`.chat` and written in Anthropic's JSON and SSE shapes: ``event:`` lines,
``ping``, cumulative ``message_delta`` usage, no ``[DONE]``.
"""

from __future__ import annotations

import base64
import binascii
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

VERSION = "2023-06-01"
CONTEXT_TOKENS = 200_000
SSE_TYPE = "text/event-stream; charset=utf-8"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "output_config",
    }
)
_MEDIA_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_SIGNING_KEY = b"vectorengine-simulator-thinking"
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
IMAGE_TOKENS = 1600  # Claude bills about (width × height) / 750 tokens; a typical photo


def bad(message: str, status: int = 400) -> ApiError:
    return ApiError(status, message)


# --------------------------------------------------------------------------- errors


def error_body(error: ApiError, request_id: str) -> tuple[int, bytes]:
    """The Anthropic envelope (and status) of an error the simulator raised in OpenAI terms."""
    status, message = error.status, error.message
    if status == 503:
        status, message = 529, "Overloaded"
    elif error.code == "insufficient_quota":
        status = 400
        message = (
            "Your credit balance is too low to access the Anthropic API. "
            "Please go to Plans & Billing to upgrade or purchase credits."
        )
    elif error.code == "invalid_api_key":
        message = "invalid x-api-key"
    elif error.code == "rate_limit_exceeded":
        message = (
            "This request would exceed the rate limit for your organization of requests per minute. "
            "For details, refer to: https://docs.claude.com/en/api/rate-limits."
        )
    elif status == 500:
        message = "Internal server error"
    etype = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}
    return status, orjson.dumps(body)


def stream_error_event() -> bytes:
    return event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def context_too_long(prompt_tokens: int) -> ApiError:
    tokens = max(prompt_tokens, CONTEXT_TOKENS + 1)
    return ApiError(400, f"prompt is too long: {tokens} tokens > {CONTEXT_TOKENS} maximum")


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    model: str
    max_tokens: int
    stream: bool
    chat: ChatRequest  # the conversation as the answer planner reads it
    thinking: bool
    prompt_tokens: int
    segments: tuple[Segment, ...]  # tools, system, message blocks in cache order
    breakpoints: tuple[int, ...]  # segment counts that end at a cache_control block


def signature(thinking: str) -> str:
    """The signature the simulator puts on (and expects back with) a thinking block."""
    return base64.b64encode(hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()).decode()


def parse(body: dict[str, Any], *, count_only: bool = False) -> MessagesRequest:
    for name in body:
        if name not in _FIELDS:
            raise bad(f"{name}: Extra inputs are not permitted")
    for name in ("model", "messages") if count_only else ("model", "max_tokens", "messages"):
        if body.get(name) is None:
            raise bad(f"{name}: Field required")
    model = body["model"]
    if not isinstance(model, str):
        raise bad("model: Input should be a valid string")
    max_tokens = body.get("max_tokens", 4096)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise bad("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise bad("max_tokens: Input should be greater than or equal to 1")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 1):
        raise bad("temperature: Input should be less than or equal to 1")
    thinking = _thinking(body.get("thinking"), max_tokens)
    segments: list[Segment] = []
    breakpoints: list[int] = []
    tools = _tools(body.get("tools"), segments, breakpoints)
    choice, forced, parallel = _tool_choice(body.get("tool_choice"), tools)
    if thinking and forced:
        raise bad("Thinking may not be enabled when tool_choice forces tool use.")
    system_text = _system(body.get("system"), segments, breakpoints)
    chat_messages = _messages(body["messages"], thinking, segments, breakpoints)
    if system_text:
        chat_messages.insert(0, {"role": "system", "content": system_text})
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop_sequences: Input should be a valid list of strings")
    prompt_tokens = sum(tokens for _, tokens in segments)
    last_is_result = bool(chat_messages) and chat_messages[-1]["role"] == "tool"
    usable = [] if choice == "none" or (last_is_result and not forced) else tools
    chat = ChatRequest(
        model=model,
        messages=chat_messages,
        stream=body.get("stream") is True,
        include_usage=False,
        obfuscation=False,
        n=1,
        limit=max_tokens,
        stop=stops,
        tools=usable,
        forced=forced,
        parallel=parallel,
        response_format=None,
        prompt_tokens=prompt_tokens,
    )
    return MessagesRequest(
        model, max_tokens, chat.stream, chat, thinking, prompt_tokens, tuple(segments), tuple(breakpoints)
    )


def _thinking(spec: Any, max_tokens: int) -> bool:
    if spec is None:
        return False
    if not isinstance(spec, dict) or spec.get("type") not in ("enabled", "disabled", "adaptive"):
        raise bad(
            "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
        )
    if spec["type"] != "enabled":
        return bool(spec["type"] == "adaptive")
    budget = spec.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise bad("thinking.enabled.budget_tokens: Field required")
    if budget < 1024:
        raise bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if max_tokens <= budget:
        raise bad(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
            f"{_THINKING_DOCS}#max-tokens-and-context-window-size"
        )
    return True


def _tools(raw: Any, segments: list[Segment], breakpoints: list[int]) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad("tools: Input should be a valid list")
    functions: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise bad(f"tools.{i}: Input should be a valid dictionary")
        kind = tool.get("type", "custom")
        if kind == "custom":
            name = tool.get("name")
            if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,128}", name):
                raise bad(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise bad(f"tools.{i}.custom.input_schema: Field required")
            if schema.get("type") != "object":
                raise bad(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
            functions.append({"name": name, "parameters": schema})
        _segment(segments, breakpoints, tool, content.count_tokens(orjson.dumps(tool).decode()))
    return functions


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[str, bool, bool]:
    if choice is None:
        return "auto", False, True
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise bad(
            "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
        )
    parallel = choice.get("disable_parallel_tool_use") is not True
    if choice["type"] == "tool":
        picked = [t for t in tools if t["name"] == choice.get("name")]
        if not picked:
            raise bad(f"Tool '{choice.get('name')}' not found in provided tools")
        tools[:] = picked
    return choice["type"], choice["type"] in ("any", "tool"), parallel


def _system(raw: Any, segments: list[Segment], breakpoints: list[int]) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        if raw:
            _segment(segments, breakpoints, {"system": raw}, content.count_tokens(raw))
        return raw
    if not isinstance(raw, list):
        raise bad("system: Input should be a valid string or list")
    texts = []
    for j, block in enumerate(raw):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            raise bad(f"system.{j}: Input should be a valid text block")
        if not block["text"]:
            raise bad(f"system.{j}.text: text content blocks must be non-empty")
        texts.append(block["text"])
        _segment(segments, breakpoints, block, content.count_tokens(block["text"]))
    return "\n".join(texts)


def _segment(segments: list[Segment], breakpoints: list[int], block: dict[str, Any], tokens: int) -> None:
    value = {k: v for k, v in block.items() if k != "cache_control"}
    segments.append((value, tokens))
    if isinstance(block.get("cache_control"), dict):
        breakpoints.append(len(segments))


def _messages(
    raw: Any, thinking: bool, segments: list[Segment], breakpoints: list[int]
) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise bad("messages: Input should be a valid list")
    turns = _merged(raw)
    chat: list[dict[str, Any]] = []
    pending: set[str] = set()  # tool_use ids the next user turn must answer
    for i, (role, blocks) in enumerate(turns):
        answered: set[str] = set()
        texts: list[str] = []
        for j, block in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            tokens = _check_block(block, role, where, thinking)
            _segment(segments, breakpoints, {"role": role, **block}, tokens + (3 if j == 0 else 0))
            kind = block["type"]
            if kind == "text":
                texts.append(block["text"])
            elif kind == "tool_result":
                tool_use_id = block["tool_use_id"]
                if tool_use_id not in pending:
                    raise bad(
                        f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the "
                        "previous message."
                    )
                answered.add(tool_use_id)
                chat.append({"role": "tool", "content": _result_text(block.get("content"))})
        if pending - answered:
            raise bad(
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(sorted(pending - answered))}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
        pending = set(uses)
        loop = i == len(turns) - 2  # the assistant turn the tool loop continues from
        if uses and thinking and loop and blocks[0]["type"] not in ("thinking", "redacted_thinking"):
            raise bad(
                f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{blocks[0]['type']}`. When `thinking` is enabled, a final `assistant` message must "
                "start with a thinking block (preceeding the lastmost set of `tool_use` and "
                "`tool_result` blocks). We recommend you include thinking blocks from previous turns. "
                f"To avoid this requirement, disable `thinking`. Please consult our documentation at "
                f"{_THINKING_DOCS}"
            )
        if texts or role == "assistant":
            chat.append({"role": role, "content": " ".join(texts)})
    return chat


def _merged(raw: list[Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive turns of one role combined, as the API does; string content as a text block."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise bad(f"messages.{i}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        body = message.get("content")
        if body is None:
            raise bad(f"messages.{i}.content: Field required")
        if isinstance(body, str):
            if not body and not (role == "assistant" and i == len(raw) - 1):
                raise bad(f"messages.{i}.content: text content blocks must be non-empty")
            blocks = [{"type": "text", "text": body}] if body else []
        elif isinstance(body, list):
            blocks = body
        else:
            raise bad(f"messages.{i}.content: Input should be a valid string or list")
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))
    if not turns:
        raise bad("messages: at least one message is required")
    return turns


def _check_block(block: Any, role: str, where: str, thinking: bool) -> int:
    """Check one content block; its prompt tokens."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise bad(f"{where}: Input should be a valid dictionary with a `type`")
    kind = block["type"]
    allowed = {
        "user": ("text", "image", "document", "tool_result", "search_result"),
        "assistant": ("text", "tool_use", "thinking", "redacted_thinking", "server_tool_use"),
    }[role]
    if kind not in allowed:
        raise bad(f"{where}.type: Input tag '{kind}' found using 'type' is not allowed in {role} messages")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise bad(f"{where}.text: Field required")
        if not text:
            raise bad(f"{where}.text: text content blocks must be non-empty")
        return content.count_tokens(text)
    if kind == "image":
        _check_image(block.get("source"), f"{where}.image.source")
        return IMAGE_TOKENS
    if kind == "tool_use":
        if not isinstance(block.get("id"), str) or not _TOOL_ID.match(block["id"]):
            raise bad(f"{where}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if not isinstance(block.get("input"), dict):
            raise bad(f"{where}.tool_use.input: Input should be a valid dictionary")
        return content.count_tokens(str(block.get("name"))) + content.count_tokens(
            orjson.dumps(block["input"]).decode()
        )
    if kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str) or not _TOOL_ID.match(block["tool_use_id"]):
            raise bad(f"{where}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        return content.count_tokens(_result_text(block.get("content")))
    if kind == "thinking":
        text, sig = block.get("thinking"), block.get("signature")
        if not isinstance(text, str) or not isinstance(sig, str):
            raise bad(f"{where}.thinking.signature: Field required")
        if not hmac.compare_digest(sig, signature(text)):
            raise bad(f"{where}: Invalid `signature` in `thinking` block")
        return 0  # earlier turns' thinking is not counted as input
    return content.count_tokens(orjson.dumps(block).decode())


def _check_image(source: Any, where: str) -> None:
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url", "file"):
        raise bad(f"{where}: Input tag does not match any of the expected tags: 'base64', 'url', 'file'")
    if source["type"] == "url":
        if not isinstance(source.get("url"), str) or not source["url"].startswith(("https://", "http://")):
            raise bad(f"{where}.url.url: Input should be a valid URL")
        return
    if source["type"] != "base64":
        return
    media = source.get("media_type")
    if media not in _MEDIA_MAGIC:
        raise bad(
            f"{where}.base64.media_type: Input should be "
            "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        )
    try:
        data = base64.b64decode(str(source.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"{where}.base64.data: The image data is not valid base64.") from None
    if not data.startswith(_MEDIA_MAGIC[media]):
        raise bad(f"{where}.base64.data: Image does not match the provided media type {media}")


def _result_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return " ".join(
            str(b.get("text", "")) for b in raw if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


# --------------------------------------------------------------------------- caching
