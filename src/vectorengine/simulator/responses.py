"""``POST /v1/responses`` and ``GET /v1/responses/{id}`` as the simulator speaks them.

Requests are checked as the API checks them (unknown parameters, the flat function-tool shape,
item types, ``previous_response_id`` of a stored response); answers are planned by
:mod:`.chat` and written as Response objects, or as the typed event stream (``event:`` and
``data:`` lines, a ``sequence_number`` on each, no ``[DONE]``). Stored responses (``store``
defaults to true) stay in the worker's memory for retrieval and continuation.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from vectorengine.simulator import content
from vectorengine.simulator.chat import ChatRequest, Choice, _reasoning_tokens, answer, split_arguments
from vectorengine.simulator.wire import ApiError, invalid_type, missing, random_id

_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "reasoning",
        "text",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "store",
        "previous_response_id",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "metadata",
        "truncation",
        "service_tier",
        "user",
        "include",
        "background",
        "prompt_cache_key",
        "safety_identifier",
        "max_tool_calls",
        "conversation",
        "top_logprobs",
        "prompt",
    }
)
_STORE_LIMIT = 10_000


def unknown(name: str) -> ApiError:
    return ApiError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


@dataclass(slots=True)
class ResponsesRequest:
    body: dict[str, Any]
    chat: ChatRequest
    items: list[dict[str, Any]]  # the whole conversation as input items (earlier turns included)


class ResponseStore:
    """Stored responses of this worker: id → (response object, the conversation it ended)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = OrderedDict()

    def get(self, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        return self._items.get(response_id)

    def put(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        self._items[response["id"]] = (response, conversation)
        while len(self._items) > _STORE_LIMIT:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


def not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", param="response_id")


def parse(body: dict[str, Any], store: ResponseStore) -> ResponsesRequest:
    for name in body:
        if name not in _FIELDS:
            raise unknown(name)
    model = body.get("model")
    if not isinstance(model, str):
        raise missing("model")
    items: list[dict[str, Any]] = []
    previous = body.get("previous_response_id")
    if previous is not None:
        stored = store.get(str(previous))
        if stored is None:
            raise ApiError(
                400, f"Previous response with id '{previous}' not found.", param="previous_response_id"
            )
        items += stored[1]
    raw = body.get("input")
    if isinstance(raw, str):
        items.append({"type": "message", "role": "user", "content": raw})
    elif isinstance(raw, list):
        items += [_item(item, i) for i, item in enumerate(raw)]
    elif raw is not None:
        raise invalid_type("input", "a string or an array", raw)
    if not items:
        raise missing("input")
    tools = _tools(body.get("tools"))
    choice = body.get("tool_choice")
    forced = choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function")
    if isinstance(choice, dict) and choice.get("type") == "function":
        tools = [t for t in tools if t["name"] == choice.get("name")]
    if choice == "none":
        tools = []
    messages = _messages(items, body.get("instructions"))
    if messages and messages[-1]["role"] == "tool" and not forced:
        tools = []
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 16):
        raise ApiError(
            400,
            "Invalid 'max_output_tokens': integer below minimum value. "
            f"Expected a value >= 16, but got {limit} instead.",
            param="max_output_tokens",
            code="integer_below_min_value",
        )
    reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    chat = ChatRequest(
        model=model,
        messages=messages,
        stream=body.get("stream") is True,
        include_usage=False,
        obfuscation=False,
        n=1,
        limit=limit,
        stop=None,
        tools=tools,
        forced=forced,
        parallel=body.get("parallel_tool_calls") is not False,
        response_format=None,
        prompt_tokens=content.count_chat_prompt(messages, body.get("tools") or None),
        reasoning_tokens=_reasoning_tokens(model, reasoning.get("effort")),
    )
    return ResponsesRequest(body, chat, items)


def _item(item: Any, i: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid_type(f"input[{i}]", "an object", item)
    kind = item.get("type", "message")
    if kind == "message":
        if item.get("role") not in ("user", "assistant", "system", "developer"):
            raise ApiError(
                400,
                f"Invalid value: '{item.get('role')}'. "
                "Supported values are: 'assistant', 'system', 'developer', and 'user'.",
                param=f"input[{i}].role",
                code="invalid_value",
            )
        return {**item, "type": "message"}
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise missing(f"input[{i}].{name}")
        return item
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str) or "output" not in item:
            raise missing(f"input[{i}].call_id")
        return item
    if kind == "reasoning":
        return item
    raise ApiError(400, f"Invalid value: '{kind}'.", param=f"input[{i}].type", code="invalid_value")


def _tools(raw: Any) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(raw or ()):
        if not isinstance(tool, dict):
            raise invalid_type(f"tools[{i}]", "an object", tool)
        if tool.get("type") != "function":
            continue  # built-in tools are accepted, never called
        if not isinstance(tool.get("name"), str):  # chat's nested {"function": {...}} is not accepted here
            raise missing(f"tools[{i}].name")
        tools.append({"name": tool["name"], "parameters": tool.get("parameters") or {}})
    return tools


def _messages(items: list[dict[str, Any]], instructions: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if item["type"] == "message":
            body = item.get("content")
            if isinstance(body, list):
                body = [
                    {**p, "type": "image_url"} if p.get("type") == "input_image" else p
                    for p in body
                    if isinstance(p, dict)
                ]
            messages.append({"role": item["role"], "content": body})
        elif item["type"] == "function_call_output":
            output = item["output"]
            messages.append({"role": "tool", "content": output if isinstance(output, str) else str(output)})
    return messages


# --------------------------------------------------------------------------- the answer


class Reply:
    def __init__(self, request: ResponsesRequest, choice: Choice) -> None:
        self.request = request
        self.choice = choice
        self.id = random_id("resp_", 40)
        self.message_id = random_id("msg_", 40)
        self.reasoning_id = random_id("rs_", 40)
        self.created = int(time.time())

    def items(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.request.chat.reasoning_tokens:
            out.append({"id": self.reasoning_id, "type": "reasoning", "summary": []})
        if self.choice.pieces or not self.choice.tool_calls:
            text = "".join(self.choice.pieces)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            parts = [part] if text or self.choice.finish_reason != "content_filter" else []
            out.append(
                {
                    "id": self.message_id,
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": parts,
                }
            )
        for call in self.choice.tool_calls:
            out.append(
                {
                    "id": "fc_" + call.id[5:],
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.arguments,
                    "call_id": call.id,
                    "name": call.name,
                }
            )
        return out

    def usage(self) -> dict[str, Any]:
        chat = self.request.chat
        output = self.choice.completion_tokens + chat.reasoning_tokens
        return {
            "input_tokens": chat.prompt_tokens,
            "input_tokens_details": {"cached_tokens": chat.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": chat.reasoning_tokens},
            "total_tokens": chat.prompt_tokens + output,
        }

    def response(
        self, status: str = "completed", output: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        body = self.request.body
        incomplete = None
        if status == "completed" and self.choice.finish_reason in ("length", "content_filter"):
            status = "incomplete"
            reason = "max_output_tokens" if self.choice.finish_reason == "length" else "content_filter"
            incomplete = {"reason": reason}
        done = status in ("completed", "incomplete")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if done else None,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": body["model"],
            "output": self.items() if output is None else output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": None,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self.usage() if done else None,
            "metadata": body.get("metadata") or {},
        }

    def events(self) -> list[bytes]:
        out: list[bytes] = []

        def emit(kind: str, data: dict[str, Any]) -> None:
            payload = {"type": kind, **data, "sequence_number": len(out)}
            out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n")

        emit("response.created", {"response": self.response("in_progress", [])})
        emit("response.in_progress", {"response": self.response("in_progress", [])})
        for index, item in enumerate(self.items()):
            self._item_events(emit, index, item)
        final = self.response()
        emit(
            "response.completed" if final["status"] == "completed" else "response.incomplete",
            {"response": final},
        )
        return out

    def _item_events(self, emit: Any, index: int, item: dict[str, Any]) -> None:
        at = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "message":
            emit(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "status": "in_progress", "content": []}},
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            emit("response.content_part.added", {**at, "content_index": 0, "part": part})
            for piece in self.choice.pieces:
                emit("response.output_text.delta", {**at, "content_index": 0, "delta": piece, "logprobs": []})
            text = "".join(self.choice.pieces)
            emit("response.output_text.done", {**at, "content_index": 0, "text": text, "logprobs": []})
            emit("response.content_part.done", {**at, "content_index": 0, "part": {**part, "text": text}})
        elif item["type"] == "function_call":
            emit(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "status": "in_progress", "arguments": ""}},
            )
            for fragment in split_arguments(item["arguments"]):
                emit("response.function_call_arguments.delta", {**at, "delta": fragment})
            emit(
                "response.function_call_arguments.done",
                {**at, "name": item["name"], "arguments": item["arguments"]},
            )
        else:
            emit("response.output_item.added", {"output_index": index, "item": item})
        emit("response.output_item.done", {"output_index": index, "item": item})


def reply(request: ResponsesRequest, store: ResponseStore) -> Reply:
    result = Reply(request, answer(request.chat).choices[0])
    if request.body.get("store", True) is not False:
        store.put(result.response(), [*request.items, *result.items()])
    return result
