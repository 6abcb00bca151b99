"""An Anthropic Messages SSE stream → an OpenAI chat completion SSE stream (protocols.md I.2).

Event by event: ``message_start`` gives the role chunk; text, thinking and tool-use deltas
become ``content``, ``reasoning_content`` and ``tool_calls`` deltas; ``message_delta`` carries
the stop reason and the cumulative usage; ``message_stop`` ends the stream with the finish
chunk, the usage chunk (only if the client asked for it) and ``[DONE]``. A tool call's
``index`` is its ordinal among the message's tool calls, not Anthropic's content-block index
(I.5.1); only its first fragment carries the id (I.5.2).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from vectorengine.protocol.anthropic.response import (
    FINISH_REASONS,
    chat_id,
    openai_error,
    usage_from_anthropic,
)
from vectorengine.protocol.openai import ChunkWriter
from vectorengine.protocol.sse import EventSplitter, data_of
from vectorengine.protocol.usage import Usage


class MessagesToChatStream:
    """Feed it Anthropic SSE bytes split anywhere; it returns OpenAI chat SSE bytes."""

    def __init__(self, *, include_usage: bool) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.content_seen = False
        self._events = EventSplitter()
        self._out = ChunkWriter(
            id="chatcmpl-", created=int(time.time()), model=None, include_usage=include_usage
        )
        self._finish = "stop"
        self._raw_usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}  # content-block index → tool-call ordinal
        self._thinking_chars = 0

    def feed(self, chunk: bytes | memoryview) -> bytes:
        return b"".join(self._event(data_of(e)) for e in self._events.feed(chunk))

    def tail(self) -> bytes:
        return b"".join(self._event(data_of(e)) for e in self._events.rest())

    # -- one event ------------------------------------------------------------------------------

    def _event(self, payload: bytes) -> bytes:
        if not payload:
            return b""
        try:
            ev = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        kind = ev.get("type") if isinstance(ev, dict) else None
        if kind == "content_block_delta":
            return self._delta(ev)
        if kind == "message_start":
            msg = ev.get("message") or {}
            self._out.id, self._out.model = chat_id(msg.get("id")), msg.get("model")
            self._raw_usage.update(msg.get("usage") or {})
            return self._out.chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block_ = ev.get("content_block") or {}
            if block_.get("type") == "tool_use":
                k = self._tools[int(ev.get("index", 0))] = len(self._tools)
                self.content_seen = True
                call = {"index": k, "id": block_.get("id"), "type": "function",
                        "function": {"name": block_.get("name"), "arguments": ""}}  # fmt: skip
                return self._out.chunk({"tool_calls": [call]})
            if block_.get("type") == "text" and block_.get("text"):
                self.content_seen = True
                return self._out.chunk({"content": block_["text"]})
            return b""
        if kind == "message_delta":
            reason = (ev.get("delta") or {}).get("stop_reason")
            if reason:
                self._finish = FINISH_REASONS.get(reason, "stop")
            self._raw_usage.update({k: v for k, v in (ev.get("usage") or {}).items() if v is not None})
            return b""
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            self.error = openai_error(ev.get("error") or {})
            return b"data: " + orjson.dumps({"error": self.error}) + b"\n\n"
        return b""  # ping, content_block_stop, and event types added later

    def _delta(self, ev: dict[str, Any]) -> bytes:
        delta = ev.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            self.content_seen = True
            return self._out.chunk({"content": delta["text"]})
        if kind == "thinking_delta" and delta.get("thinking"):
            self.content_seen = True
            self._thinking_chars += len(delta["thinking"])
            return self._out.chunk({"reasoning_content": delta["thinking"]})
        if kind == "input_json_delta" and delta.get("partial_json"):
            k = self._tools.get(int(ev.get("index", 0)))
            if k is not None:
                return self._out.chunk(
                    {"tool_calls": [{"index": k, "function": {"arguments": delta["partial_json"]}}]}
                )
        return b""  # signature deltas and empty fragments

    def _end(self) -> bytes:
        self.done = True
        self.usage = usage = usage_from_anthropic(self._raw_usage, self._thinking_chars)
        finish = "tool_calls" if self._tools else self._finish
        out = [self._out.chunk({}, finish)]
        if self._out.include_usage:
            out.append(self._out.usage_chunk(usage))
        out.append(ChunkWriter.DONE)
        return b"".join(out)
