"""Prompt caching as the providers do it: a prefix seen before is read from the cache.

Each request offers its prompt as a list of *segments* (messages, tools, system blocks in
wire order), each with its token count. The cache remembers the hash of every prefix that
ended on a segment boundary; a later request whose leading segments hash the same reads
those tokens back. Providers only cache long prefixes (:data:`MIN_CACHED_TOKENS`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import orjson

MIN_CACHED_TOKENS = 1024
_CAPACITY = 50_000  # remembered prefixes per worker (oldest forgotten first)

Segment = tuple[object, int]  # (JSON-able content, its tokens)


class PromptCache:
    """Prefix hashes → token counts, least recently used forgotten first."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def _prefixes(self, segments: Sequence[Segment]) -> list[tuple[bytes, int]]:
        digest = hashlib.sha256()
        tokens = 0
        out: list[tuple[bytes, int]] = []
        for value, count in segments:
            digest.update(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
            tokens += count
            out.append((digest.copy().digest(), tokens))
        return out

    def longest_hit(self, segments: Sequence[Segment]) -> int:
        """Tokens of the longest cached prefix of ``segments`` (0 without a hit)."""
        best = 0
        for key, tokens in self._prefixes(segments):
            if key in self._seen:
                self._seen.move_to_end(key)
                best = tokens
        return best if best >= MIN_CACHED_TOKENS else 0

    def has(self, segments: Sequence[Segment]) -> bool:
        """Whether exactly this prefix is cached."""
        prefixes = self._prefixes(segments)
        return bool(prefixes) and prefixes[-1][0] in self._seen

    def remember(self, segments: Sequence[Segment], *, every_boundary: bool = True) -> None:
        """Cache the prefixes of ``segments`` (each boundary, or only the whole) long enough to count."""
        prefixes = self._prefixes(segments)
        for key, tokens in prefixes if every_boundary else prefixes[-1:]:
            if tokens >= MIN_CACHED_TOKENS:
                self._seen[key] = tokens
                self._seen.move_to_end(key)
        while len(self._seen) > _CAPACITY:
            self._seen.popitem(last=False)

    def clear(self) -> None:
        self._seen.clear()
