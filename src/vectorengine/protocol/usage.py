"""Token usage in one canonical shape."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0  # includes cached (read) and cache-write tokens
    completion_tokens: int = 0  # includes reasoning tokens
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # prompt tokens written to the cache (Anthropic bills them apart)
