"""Deterministic model output: a toy tokenizer, replies, sample tool arguments, embeddings.

Nothing here is random: the same request always yields the same text, token counts and
vectors, so tests can assert on them.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
from collections.abc import Sequence
from typing import Any

import orjson

# Roughly 4 characters of English per token, like OpenAI's BPE vocabularies.
_TOKEN_RE = re.compile(r" ?[A-Za-z]{1,6}| ?\d{1,3}| ?[^\sA-Za-z\d]|\s+")

MESSAGE_OVERHEAD = 3  # tokens per chat message (role and separators)
REPLY_PRIMING = 3  # tokens that prime the assistant's reply
IMAGE_TOKENS = 85  # a low-detail image part


def tokenize(text: str) -> list[str]:
    """Split ``text`` into pieces that concatenate back to it; one piece is one token."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def text_of(content: Any) -> str:
    """The text of a message ``content``: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(part.get("text", "")) for part in content if isinstance(part, dict)]
        return " ".join(t for t in texts if t)
    return ""


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") in ("image_url", "input_image"):
            total += IMAGE_TOKENS
        else:
            total += count_tokens(str(part.get("text", "")))
    return total


def count_chat_prompt(messages: Sequence[Any], tools: Sequence[Any] | None) -> int:
    total = REPLY_PRIMING
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
        if isinstance(message.get("name"), str):
            total += 1 + count_tokens(message["name"])
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                total += count_tokens(orjson.dumps(call.get("function", {})).decode())
    if tools:
        total += count_tokens(orjson.dumps(list(tools)).decode())
    return total


def truncate_at_stop(text: str, stop: Any) -> tuple[str, str | None]:
    """``text`` cut before the earliest stop sequence, and the sequence found there (or ``None``)."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str) and s]
    found = [(i, s) for s in stops if s and (i := text.find(s)) >= 0]
    if not found:
        return text, None
    cut, matched = min(found, key=lambda f: f[0])
    return text[:cut], matched


REFUSAL_TRIGGER = "[sim:refuse]"  # a user message holding this is refused (content filter)


def refuses(messages: Sequence[Any]) -> bool:
    """Whether the last user message asks for a refusal (:data:`REFUSAL_TRIGGER`)."""
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
    return REFUSAL_TRIGGER in text_of(user.get("content"))


def thinking_text(messages: Sequence[Any]) -> str:
    """The model's deterministic reasoning before it answers ``messages``."""
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
    topic = _quote(text_of(user.get("content")), 8) or "the conversation"
    return f"The user wrote about {topic}. I should answer briefly and check the facts first."


def _quote(text: str, max_words: int = 24) -> str:
    words = text.split()
    quoted = " ".join(words[:max_words])
    return quoted + (" ..." if len(words) > max_words else "")


def chat_reply(messages: Sequence[Any], model: str, index: int) -> str:
    """The assistant's answer: it echoes the last user words, or the last tool result."""
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        result = _quote(text_of(last.get("content")), 40)
        text = f'The tool returned: "{result}". That is the result you asked for.'
    else:
        user = next(
            (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
            {},
        )
        quoted = _quote(text_of(user.get("content")))
        if quoted:
            text = f'This is a simulated reply from {model}. You said: "{quoted}". Anything else?'
        else:
            text = f"Hello! This is a simulated reply from {model}. How can I help you today?"
    return f"Alternative {index + 1}. {text}" if index else text


def completion_text(prompt: str, index: int) -> str:
    """The legacy completion of ``prompt``."""
    quoted = _quote(prompt, 12)
    text = f" This is a simulated completion of: {quoted}." if quoted else " This is a simulated completion."
    return f" Alternative {index + 1}.{text}" if index else text


# --------------------------------------------------------------------------- tool arguments

_STRING_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("city", "location", "place", "town"), "Paris"),
    (("country",), "France"),
    (("unit", "units"), "celsius"),
    (("email",), "user@example.com"),
    (("url", "uri", "link", "website"), "https://example.com"),
    (("date", "day"), "2024-01-01"),
    (("time", "timestamp"), "2024-01-01T12:00:00Z"),
    (("name", "username", "user"), "Alice"),
    (("language", "lang", "locale"), "en"),
    (("currency",), "USD"),
    (("id", "identifier"), "id_123"),
    (("symbol", "ticker"), "AAPL"),
)


def sample_arguments(parameters: Any, topic: str) -> dict[str, Any]:
    """A JSON object satisfying a tool's ``parameters`` schema, filled with plausible values."""
    root = parameters if isinstance(parameters, dict) else {}
    value = _sample(root, "", root, topic, 0)
    return value if isinstance(value, dict) else {}


def sample_json(schema: Any, topic: str) -> Any:
    root = schema if isinstance(schema, dict) else {}
    return _sample(root, "", root, topic, 0)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    for _ in range(8):
        ref = schema.get("$ref")
        if not (isinstance(ref, str) and ref.startswith("#/")):
            break
        target: Any = root
        for part in ref[2:].split("/"):
            target = (
                target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
            )
        if not isinstance(target, dict):
            break
        schema = target
    return schema


def _sample(schema: dict[str, Any], name: str, root: dict[str, Any], topic: str, depth: int) -> Any:
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    for key in ("enum", "examples"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema[key][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or () if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return _sample(options[0], name, root, topic, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if depth > 6:
        return {} if kind == "object" else [] if kind == "array" else None
    if kind == "object":
        raw_props = schema.get("properties")
        props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
        required = [r for r in schema.get("required") or () if r in props]
        chosen = required or list(props)
        return {
            k: _sample(props[k] if isinstance(props[k], dict) else {}, k, root, topic, depth + 1)
            for k in chosen
        }
    if kind == "array":
        raw_items = schema.get("items")
        items: dict[str, Any] = raw_items if isinstance(raw_items, dict) else {}
        count = min(max(int(schema.get("minItems", 1) or 1), 1), 3)
        return [_sample(items, name, root, topic, depth + 1) for _ in range(count)]
    if kind == "integer":
        return _number(schema, 1)
    if kind == "number":
        return float(_number(schema, 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name, topic)


def _number(schema: dict[str, Any], preferred: float) -> float:
    value = preferred
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(high, int | float) and value > high:
        value = high
    return int(value) if isinstance(preferred, int) else value


def _string(schema: dict[str, Any], name: str, topic: str) -> str:
    fmt = schema.get("format")
    lowered = name.lower()
    if fmt == "date-time":
        value = "2024-01-01T12:00:00Z"
    elif fmt == "date":
        value = "2024-01-01"
    elif fmt == "email":
        value = "user@example.com"
    elif fmt in ("uri", "url"):
        value = "https://example.com"
    else:
        value = next(
            (
                v
                for hints, v in _STRING_HINTS
                if any(h == lowered or lowered.endswith("_" + h) for h in hints)
            ),
            topic or "example",
        )
    max_len = schema.get("maxLength")
    return value[:max_len] if isinstance(max_len, int) and max_len > 0 else value


# --------------------------------------------------------------------------- embeddings


def embedding(seed_text: str, dimensions: int) -> list[float]:
    """A unit vector of float32 values, a pure function of ``seed_text`` and ``dimensions``."""
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(math.fsum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embedding_base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
