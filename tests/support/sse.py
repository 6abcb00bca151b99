"""Strict reading of OpenAI-style SSE bodies (``data:`` lines only, blank-line separated)."""

from __future__ import annotations

from typing import Any

import orjson


class FramingError(AssertionError):
    """The body is not framed like OpenAI's chat/completions SSE."""


def data_payloads(raw: bytes) -> list[str]:
    """The ``data:`` payloads of ``raw``, checking OpenAI's framing on the way.

    Every event must be exactly one ``data: <payload>`` line followed by a blank line: no
    ``event:``/``id:`` lines, no comments, LF line endings, nothing after the last event.
    """
    text = raw.decode()
    if not text.endswith("\n\n"):
        raise FramingError(f"body does not end with a blank line: {text[-80:]!r}")
    if "\r" in text:
        raise FramingError("CR found; OpenAI frames SSE with LF only")
    payloads = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        if len(lines) != 1 or not lines[0].startswith("data: "):
            raise FramingError(f"event is not a single 'data: ' line: {block[:120]!r}")
        payloads.append(lines[0][len("data: ") :])
    return payloads


def json_chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a complete stream; asserts ``[DONE]`` is the last event and only there."""
    payloads = data_payloads(raw)
    if not payloads or payloads[-1] != "[DONE]":
        raise FramingError(f"stream does not end with data: [DONE] (last: {payloads[-1:]!r})")
    if "[DONE]" in payloads[:-1]:
        raise FramingError("[DONE] before the end of the stream")
    return [orjson.loads(p) for p in payloads[:-1]]
