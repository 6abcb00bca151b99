"""Token usage in one canonical shape, and its OpenAI form."""

from __future__ import annotations

from typing import Any

import msgspec


class Usage(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int = 0  # includes cached (read) and cache-write tokens
    completion_tokens: int = 0  # includes reasoning tokens
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # prompt tokens written to the cache (Anthropic bills them apart)


def to_openai(u: Usage) -> dict[str, Any]:
    """The ``usage`` object of an OpenAI chat completion (prompt tokens include cached ones)."""
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }
