"""The simulator's Anthropic answers: prompt-cache usage, the message in JSON, and its SSE
events (``message_start`` … ``message_stop`` with ``ping`` and cumulative usage).

Requests are parsed and checked by :mod:`.anthropic`; this module writes what the API answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from vectorengine.simulator import content
from vectorengine.simulator.anthropic import MessagesRequest, event, signature
from vectorengine.simulator.cache import MIN_CACHED_TOKENS, PromptCache
from vectorengine.simulator.chat import Choice, answer, split_arguments
from vectorengine.simulator.wire import random_id


def cache_usage(request: MessagesRequest, cache: PromptCache) -> tuple[int, int]:
    """(cache read, cache write) tokens of a request: prefixes end at ``cache_control`` blocks."""
    if not request.breakpoints:
        return 0, 0
    prefixes = [request.segments[:end] for end in request.breakpoints]
    sizes = [sum(t for _, t in prefix) for prefix in prefixes]
    read = max((size for prefix, size in zip(prefixes, sizes, strict=True) if cache.has(prefix)), default=0)
    last = sizes[-1]
    write = last - read if last >= MIN_CACHED_TOKENS and last > read else 0
    for prefix in prefixes:
        cache.remember(prefix, every_boundary=False)
    return read, write


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


@dataclass(slots=True)
class Reply:
    request: MessagesRequest
    id: str
    choice: Choice
    thinking: str | None
    input_tokens: int
    cache_read: int
    cache_write: int

    @property
    def thinking_tokens(self) -> int:
        return content.count_tokens(self.thinking) if self.thinking else 0

    @property
    def output_tokens(self) -> int:
        return self.thinking_tokens + self.choice.completion_tokens

    @property
    def stop_reason(self) -> str:
        if self.choice.stop_sequence is not None:
            return "stop_sequence"
        return _STOP[self.choice.finish_reason]

    def usage(self, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": self.cache_write, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def blocks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.thinking:
            out.append({"type": "thinking", "thinking": self.thinking, "signature": signature(self.thinking)})
        if self.choice.pieces:
            out.append({"type": "text", "text": "".join(self.choice.pieces)})
        for call in self.choice.tool_calls:
            out.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": orjson.loads(call.arguments)}
            )
        return out

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.request.model,
            "content": self.blocks(),
            "stop_reason": self.stop_reason,
            "stop_sequence": self.choice.stop_sequence,
            "usage": self.usage(self.output_tokens),
        }

    def events(self) -> list[bytes]:
        start = {
            **self.message(),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self.usage(1),
        }
        out = [event("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(self.blocks()):
            out.extend(_block_events(index, block, self.choice))
            if index == 0:
                out.insert(2, event("ping", {"type": "ping"}))
        if len(out) == 1:
            out.append(event("ping", {"type": "ping"}))
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.choice.stop_sequence}
        usage = {
            k: v
            for k, v in self.usage(self.output_tokens).items()
            if k not in ("cache_creation", "service_tier")
        }
        out.append(event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out


def _block_events(index: int, block: dict[str, Any], choice: Choice) -> list[bytes]:
    kind = block["type"]
    empty = {
        "thinking": {"type": "thinking", "thinking": "", "signature": ""},
        "text": {"type": "text", "text": ""},
        "tool_use": {**block, "input": {}},
    }[kind]
    out = [
        event("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty})
    ]

    def delta(d: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})

    if kind == "thinking":
        out += [
            delta({"type": "thinking_delta", "thinking": p})
            for p in _pairs(content.tokenize(block["thinking"]))
        ]
        out.append(delta({"type": "signature_delta", "signature": block["signature"]}))
    elif kind == "text":
        out += [delta({"type": "text_delta", "text": p}) for p in _pairs(list(choice.pieces))]
    else:
        arguments = orjson.dumps(block["input"]).decode()
        out.append(delta({"type": "input_json_delta", "partial_json": ""}))
        out += [delta({"type": "input_json_delta", "partial_json": p}) for p in split_arguments(arguments)]
    out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def _pairs(pieces: list[str]) -> list[str]:
    return ["".join(pieces[i : i + 2]) for i in range(0, len(pieces), 2)]


def reply(request: MessagesRequest, cache: PromptCache) -> Reply:
    thinking = content.thinking_text(request.chat.messages) if request.thinking else None
    chat = request.chat
    if thinking:
        budget = max(request.max_tokens - content.count_tokens(thinking), 1)
        chat = dataclasses.replace(chat, limit=budget)
    read, write = cache_usage(request, cache)
    choice = answer(chat).choices[0]
    calls = tuple(c.__class__("toolu_01" + c.id[5:], c.name, c.arguments) for c in choice.tool_calls)
    choice = Choice(
        choice.index,
        choice.pieces,
        calls,
        choice.finish_reason,
        choice.completion_tokens,
        choice.stop_sequence,
    )
    input_tokens = request.prompt_tokens - read - write
    return Reply(request, random_id("msg_01", 22), choice, thinking, input_tokens, read, write)


def count_tokens(request: MessagesRequest) -> dict[str, int]:
    return {"input_tokens": request.prompt_tokens}
