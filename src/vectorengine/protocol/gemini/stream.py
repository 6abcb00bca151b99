"""A Gemini ``streamGenerateContent?alt=sse`` stream → an OpenAI chat completion SSE stream.

Each Gemini chunk is a whole ``GenerateContentResponse``: its text parts become ``content``
deltas, thought parts ``reasoning_content``, function calls whole tool calls (with minted ids
and an ``index`` — I.5.1, I.5.9). ``usageMetadata`` is cumulative: the last one counts, never
the sum (I.5.5). Gemini ends a stream by closing it, so the finish chunk, the usage chunk (when
asked for) and ``[DONE]`` are written by ``tail`` once a finish reason has been seen.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from vectorengine.protocol.gemini.response import (
    finish_reason,
    openai_error,
    split_parts,
    usage_from_gemini,
)
from vectorengine.protocol.openai import ChunkWriter
from vectorengine.protocol.sse import EventSplitter, data_of
from vectorengine.protocol.usage import Usage


class GenerateToChatStream:
    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.content_seen = False
        self._out = ChunkWriter(
            id="chatcmpl-" + secrets.token_hex(12),
            created=int(time.time()),
            model=model,
            include_usage=include_usage,
        )
        self._events = EventSplitter()
        self._started = False
        self._tools = 0
        self._finish: str | None = None

    def feed(self, chunk: bytes | memoryview) -> bytes:
        return b"".join(self._event(data_of(e)) for e in self._events.feed(chunk))

    def tail(self) -> bytes:
        out = b"".join(self._event(data_of(e)) for e in self._events.rest())
        if self._finish is None or self.error is not None:
            return out  # cut off before a finish reason: the relay reports a broken stream
        self.done = True
        finish = "tool_calls" if self._tools else self._finish
        out += self._out.chunk({}, finish)
        if self._out.include_usage:
            out += self._out.usage_chunk(self.usage or Usage())
        return out + ChunkWriter.DONE

    def _event(self, payload: bytes) -> bytes:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        if isinstance(obj.get("error"), dict):
            self.error = openai_error(obj["error"])
            return b"data: " + orjson.dumps({"error": self.error}) + b"\n\n"
        if isinstance(obj.get("usageMetadata"), dict):
            self.usage = usage_from_gemini(obj["usageMetadata"])
        if obj.get("modelVersion"):
            self._out.model = obj["modelVersion"]
        out = []
        if not self._started:
            self._started = True
            out.append(self._out.chunk({"role": "assistant", "content": ""}))
        for cand in obj.get("candidates") or []:
            text, thoughts, calls = split_parts((cand.get("content") or {}).get("parts") or [])
            if thoughts:
                out.append(self._out.chunk({"reasoning_content": thoughts}))
            if text:
                out.append(self._out.chunk({"content": text}))
            if calls:
                indexed = [{"index": self._tools + k, **c} for k, c in enumerate(calls)]
                self._tools += len(calls)
                out.append(self._out.chunk({"tool_calls": indexed}))
            self.content_seen = self.content_seen or bool(thoughts or text or calls)
            self._finish = finish_reason(cand.get("finishReason")) or self._finish
        if not obj.get("candidates") and (obj.get("promptFeedback") or {}).get("blockReason"):
            self._finish = "content_filter"
        return b"".join(out)
