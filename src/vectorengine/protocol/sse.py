"""Server-sent events: cutting a byte stream into whole events, and reading an event's data."""

from __future__ import annotations

from typing import Any

import orjson


class EventSplitter:
    """Whole SSE events out of bytes that arrive split anywhere (``\\r\\n`` framing accepted)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes | memoryview) -> list[bytes]:
        data = self._buf + bytes(chunk)
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buf = data
            return []
        self._buf = data[end + 2 :]
        return [event for event in data[:end].split(b"\n\n") if event.strip()]

    def rest(self) -> list[bytes]:
        """An unterminated last event, if the stream ended inside one."""
        rest, self._buf = self._buf, b""
        return [rest] if rest.strip() else []


def data_of(event: bytes) -> bytes:
    """The event's ``data:`` lines, joined."""
    return b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))


def json_object(payload: bytes) -> dict[str, Any] | None:
    """An event's data as a JSON object, or None when it is not one."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
