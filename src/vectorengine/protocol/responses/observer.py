"""Watching a Responses API event stream passed through as it is: usage, its end, errors."""

from __future__ import annotations

from typing import Any

import orjson

from vectorengine.protocol.openai import usage_from
from vectorengine.protocol.sse import EventSplitter, data_of
from vectorengine.protocol.usage import Usage

_CONTENT = (b'"response.output_', b'"response.function_call')
_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"', b'"type":"error"')


class ResponsesObserver:
    """The bytes go on untouched; only the terminal events (and errors) are parsed."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.content_seen = False
        self._events = EventSplitter()

    def feed(self, chunk: bytes | memoryview) -> bytes:
        for event in self._events.feed(chunk):
            self._watch(data_of(event))
        return bytes(chunk)

    def tail(self) -> bytes:
        for event in self._events.rest():
            self._watch(data_of(event))
        return b""

    def _watch(self, payload: bytes) -> None:
        if not self.content_seen and (
            b'"response.output_' in payload or b'"response.function_call' in payload
        ):
            self.content_seen = True
        if not any(marker in payload for marker in _TERMINAL):
            return  # a delta: not parsed
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "error":
            self.error = {"message": obj.get("message"), "code": obj.get("code")}
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = obj.get("response") or {}
            self.usage = usage_from(response)
            self.done = kind != "response.failed"
            if kind == "response.failed":
                self.error = response.get("error") or {"message": "The response failed."}
