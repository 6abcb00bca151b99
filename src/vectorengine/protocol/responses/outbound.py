"""OpenAI chat completion answers (the hub) → Responses API answers for Responses clients.

A chat ``message`` becomes output items in this order: a ``reasoning`` item (its
``reasoning_content`` as a summary), a ``message`` item (``output_text`` and ``refusal``
parts), one ``function_call`` item per tool call. The stream keeps the Responses event
sequence: ``response.created``, ``response.in_progress``, per item ``output_item.added`` …
``output_item.done`` (one item open at a time, consecutive output indexes), then
``response.completed`` / ``response.incomplete`` / ``response.failed``; ``event:`` and
``data:`` lines, a ``sequence_number`` on each event, no ``[DONE]``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from vectorengine.protocol.openai import usage_from
from vectorengine.protocol.sse import EventSplitter, data_of, json_object
from vectorengine.protocol.usage import Usage

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
_FAILED_CODES = ("rate_limit_exceeded", "server_error")  # the ones a chat upstream's error can carry

Event = tuple[str, dict[str, Any]]


def response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _id(prefix: str) -> str:
    return prefix + "_" + secrets.token_hex(24)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def usage_to_responses(u: Usage) -> dict[str, Any]:
    """The Responses ``usage`` object (input tokens include cached ones, as in chat)."""
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def _message_item(status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "id": _id("msg"), "role": "assistant", "status": status, "content": content}


def _reasoning_item(summary: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "reasoning", "id": _id("rs"), "summary": summary}


def _call_item(call_id: Any, name: Any, arguments: str, status: str) -> dict[str, Any]:
    call_id = call_id if isinstance(call_id, str) and call_id else _id("call")
    return {"type": "function_call", "id": _id("fc"), "call_id": call_id, "name": _str(name),
            "arguments": arguments, "status": status}  # fmt: skip


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "description", "parameters")
    return {"type": "function", **{k: tool.get(k) for k in keys}, "strict": tool.get("strict") is True}


def response_object(
    request: dict[str, Any],
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A Response object; the request's settings are echoed, with the API's defaults."""
    reasoning = _obj(request.get("reasoning"))
    instructions = request.get("instructions")
    tools = request.get("tools") if isinstance(request.get("tools"), list) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at if status == "completed" else None,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request.get("model"),
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, **_obj(request.get("text"))},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in tools or () if _obj(t).get("type") == "function"],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage_to_responses(usage) if usage is not None else None,
        "metadata": _obj(request.get("metadata")),
    }


def chat_to_response(
    obj: dict[str, Any],
    *,
    request: dict[str, Any],
    response_id: str,
    created_at: int,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The Response for a chat.completion object; ``request`` is the client's Responses request."""
    choices = obj.get("choices")
    choice = _obj(choices[0]) if isinstance(choices, list) and choices else {}
    msg = _obj(choice.get("message"))
    incomplete = INCOMPLETE_REASONS.get(_str(choice.get("finish_reason")))
    output: list[dict[str, Any]] = []
    if _str(msg.get("reasoning_content")):
        output.append(_reasoning_item([{"type": "summary_text", "text": msg["reasoning_content"]}]))
    parts = [_text_part(msg["content"])] if _str(msg.get("content")) else []
    if _str(msg.get("refusal")):
        parts.append(_refusal_part(msg["refusal"]))
    if parts:
        output.append(_message_item("completed", parts))
    for call in msg.get("tool_calls") or ():
        fn = _obj(_obj(call).get("function"))
        output.append(
            _call_item(_obj(call).get("id"), fn.get("name"), _str(fn.get("arguments")), "completed")
        )
    if incomplete and output:
        output[-1]["status"] = "incomplete"  # the item the model was cut off in
    return response_object(
        request,
        response_id=response_id,
        created_at=created_at,
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=usage_from(obj),
        incomplete=incomplete,
        completed_at=int(time.time()) if completed_at is None else completed_at,
    )


class ChatToResponsesStream:
    """Feed it OpenAI chat SSE bytes (split anywhere); it returns Responses SSE events."""

    def __init__(self, *, request: dict[str, Any], response_id: str, created_at: int) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.content_seen = False
        self._request = request
        self._id = response_id
        self._created_at = created_at
        self._events = EventSplitter()
        self._seq = 0
        self._started = False
        self._finished = False  # the terminal event has been sent
        self._output: list[dict[str, Any]] = []  # closed items
        self._item: dict[str, Any] | None = None  # the open item
        self._part: dict[str, Any] | None = None  # the open content part of a message item
        self._buf: list[str] = []  # text of the open part, summary or arguments
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index → its function_call item
        self._finish_reason: str | None = None

    @property
    def next_sequence(self) -> int:
        """The ``sequence_number`` the next event gets (for an error the relay adds)."""
        return self._seq

    def feed(self, chunk: bytes | memoryview) -> bytes:
        return b"".join(self._line(data_of(e)) for e in self._events.feed(chunk))

    def tail(self) -> bytes:
        """Flush at end of input. Without ``[DONE]`` a stream that got its finish reason still
        completes; one cut before it ends as ``response.failed`` (no ``error`` event of its own)."""
        out = b"".join(self._line(data_of(e)) for e in self._events.rest())
        if self._finished:
            return out
        if self._finish_reason is not None:
            return out + self._finish()
        cut = {
            "code": "server_error",
            "message": "The upstream stream ended before the response was complete.",
        }
        return out + self._fail(cut, announce=False)

    def _line(self, payload: bytes) -> bytes:
        if payload == b"[DONE]":
            self.done = True
            return self._finish()
        if self._finished:
            return b""
        obj = json_object(payload)
        if obj is None:
            return b""
        if isinstance(obj.get("error"), dict):
            self.error = obj["error"]
            return self._fail(obj["error"])
        out = [self._start()]
        self.usage = usage_from(obj) or self.usage
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1: a Response holds one answer
            delta = _obj(choice.get("delta"))
            if _str(delta.get("reasoning_content")):
                out.append(self._reasoning(delta["reasoning_content"]))
            if _str(delta.get("content")):
                out.append(self._message("output_text", delta["content"]))
            if _str(delta.get("refusal")):
                out.append(self._message("refusal", delta["refusal"]))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.append(self._tool(call))
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])
        return b"".join(out)

    def _emit(self, kind: str, data: dict[str, Any]) -> bytes:
        payload = orjson.dumps({"type": kind, **data, "sequence_number": self._seq})
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"

    def _send(self, events: list[Event]) -> bytes:
        return b"".join(self._emit(kind, data) for kind, data in events)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(
            self._request,
            response_id=self._id,
            created_at=self._created_at,
            status=status,
            output=list(self._output),
            usage=self.usage if status != "in_progress" else None,
            completed_at=int(time.time()),
            **extra,
        )

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = self._response("in_progress")
        return self._send([("response.created", {"response": response}),
                           ("response.in_progress", {"response": response})])  # fmt: skip

    def _at(self) -> dict[str, Any]:
        assert self._item is not None
        return {"item_id": self._item["id"], "output_index": len(self._output)}

    def _open(self, item: dict[str, Any]) -> bytes:
        out = self._close("completed")
        self._item = item
        self.content_seen = True
        return out + self._emit(
            "response.output_item.added", {"output_index": len(self._output), "item": item}
        )

    def _close(self, status: str, *, quiet: bool = False) -> bytes:
        """Close the open item; ``quiet`` only records it (a failed stream sends no done events)."""
        item = self._item
        if item is None:
            return b""
        at = self._at()
        events = self._end_part()
        if item["type"] == "reasoning":
            part = {"type": "summary_text", "text": "".join(self._buf)}
            item["summary"] = [part]
            events.append(
                ("response.reasoning_summary_text.done", {**at, "summary_index": 0, "text": part["text"]})
            )
            events.append(("response.reasoning_summary_part.done", {**at, "summary_index": 0, "part": part}))
        else:
            item["status"] = status
        if item["type"] == "function_call":
            item["arguments"] = "".join(self._buf)
            done = {**at, "name": item["name"], "arguments": item["arguments"]}
            events.append(("response.function_call_arguments.done", done))
        events.append(("response.output_item.done", {"output_index": at["output_index"], "item": item}))
        self._output.append(item)
        self._item, self._buf = None, []
        return b"" if quiet else self._send(events)

    def _end_part(self) -> list[Event]:
        """Close the open content part of the message item."""
        part, item = self._part, self._item
        if part is None or item is None:
            return []
        at = {**self._at(), "content_index": len(item["content"])}
        text = "".join(self._buf)
        self._part, self._buf = None, []
        item["content"].append(part)
        if part["type"] == "output_text":
            part["text"] = text
            done: Event = ("response.output_text.done", {**at, "text": text, "logprobs": []})
        else:
            part["refusal"] = text
            done = ("response.refusal.done", {**at, "refusal": text})
        return [done, ("response.content_part.done", {**at, "part": part})]

    def _reasoning(self, delta: str) -> bytes:
        out = b""
        if self._item is None or self._item["type"] != "reasoning":
            out = self._open(_reasoning_item([]))
            added = {**self._at(), "summary_index": 0, "part": {"type": "summary_text", "text": ""}}
            out += self._emit("response.reasoning_summary_part.added", added)
        self._buf.append(delta)
        at = {**self._at(), "summary_index": 0, "delta": delta}
        return out + self._emit("response.reasoning_summary_text.delta", at)

    def _message(self, kind: str, delta: str) -> bytes:
        out = b""
        if self._item is None or self._item["type"] != "message":
            out = self._open(_message_item("in_progress", []))
        assert self._item is not None
        if self._part is None or self._part["type"] != kind:
            out += self._send(self._end_part())
            self._part = _text_part("") if kind == "output_text" else _refusal_part("")
            at = {**self._at(), "content_index": len(self._item["content"])}
            out += self._emit("response.content_part.added", {**at, "part": self._part})
        self._buf.append(delta)
        at = {**self._at(), "content_index": len(self._item["content"]), "delta": delta}
        if kind == "output_text":
            return out + self._emit("response.output_text.delta", {**at, "logprobs": []})
        return out + self._emit("response.refusal.delta", at)

    def _tool(self, call: dict[str, Any]) -> bytes:
        index = call.get("index")
        k = index if isinstance(index, int) else 0
        fn = _obj(call.get("function"))
        item = self._calls.get(k)
        out = b""
        if item is None:  # keyed by index: only a call's first fragment carries its id and name
            item = self._calls[k] = _call_item(call.get("id"), fn.get("name"), "", "in_progress")
            out = self._open(item)
        elif not item["name"] and _str(fn.get("name")):
            item["name"] = fn["name"]
        arguments = _str(fn.get("arguments"))
        if not arguments:
            return out
        if item is not self._item:  # a late fragment of a call already closed: kept for the final response
            item["arguments"] += arguments
            return out
        self._buf.append(arguments)
        return out + self._emit("response.function_call_arguments.delta", {**self._at(), "delta": arguments})

    def _finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        incomplete = INCOMPLETE_REASONS.get(self._finish_reason or "")
        status = "incomplete" if incomplete else "completed"
        out = self._start() + self._close(status)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._emit(kind, {"response": self._response(status, incomplete=incomplete)})

    def _fail(self, error: dict[str, Any], *, announce: bool = True) -> bytes:
        """An ``error`` event (if ``announce``), then ``response.failed`` with the output so far."""
        if self._finished:
            return b""
        self._finished = True
        out = self._start()
        code, param = error.get("code") or error.get("type"), error.get("param")
        message = str(error.get("message") or "The upstream model failed.")
        if announce:
            code_s, param_s = (None if v is None else str(v) for v in (code, param))
            out += self._emit("error", {"code": code_s, "message": message, "param": param_s})
        self._close("incomplete", quiet=True)
        failed = {"code": code if code in _FAILED_CODES else "server_error", "message": message}
        return out + self._emit("response.failed", {"response": self._response("failed", error=failed)})
