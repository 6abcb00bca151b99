"""Offline prompt token estimates (``o200k_base``, the GPT-4o vocabulary) for hub calls.

Used where the gateway must know a prompt's size without asking an upstream: the
``count_tokens`` endpoints today. Other model families tokenize differently, so for them the
figure is an estimate (Claude's and Gemini's counts are typically within 10-20 %).
"""

from __future__ import annotations

import functools
from typing import Any

import bpe_openai
import orjson

MESSAGE_OVERHEAD = 3  # tokens around each message (role and separators), as OpenAI counts
REPLY_PRIMING = 3
IMAGE_TOKENS = 765  # a 1024×1024 image at high detail; low detail is 85


@functools.cache
def _encoding() -> Any:
    return bpe_openai.get_encoding("o200k_base")


def count_text(text: str) -> int:
    return len(_encoding().encode_ordinary(text)) if text else 0


def _content(content: Any) -> int:
    if isinstance(content, str):
        return count_text(content)
    total = 0
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            spec = part.get("image_url")
            low = isinstance(spec, dict) and spec.get("detail") == "low"
            total += 85 if low else IMAGE_TOKENS
        else:
            total += count_text(str(part.get("text") or ""))
    return total


def count_chat(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat completion request: messages, tool calls and tool definitions."""
    total = REPLY_PRIMING
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD + _content(message.get("content"))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += count_text(str(fn.get("name") or "")) + count_text(str(fn.get("arguments") or ""))
    tools = body.get("tools")
    if tools:
        total += count_text(orjson.dumps(tools).decode())
    return total
