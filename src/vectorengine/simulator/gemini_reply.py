"""The simulator's Gemini answers: ``GenerateContentResponse`` in JSON and as SSE chunks
(cumulative usage on the last), and ``countTokens``.

Requests are parsed and checked by :mod:`.gemini`; this module writes what the API answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from vectorengine.simulator import content
from vectorengine.simulator.cache import PromptCache
from vectorengine.simulator.chat import Choice, answer
from vectorengine.simulator.gemini import GenerateRequest, signature
from vectorengine.simulator.wire import random_id


@dataclass(slots=True)
class Reply:
    request: GenerateRequest
    id: str
    choice: Choice
    thinking: str | None
    cached: int

    @property
    def thoughts_tokens(self) -> int:
        return content.count_tokens(self.thinking) if self.thinking else 0

    @property
    def finish(self) -> str:
        return {"length": "MAX_TOKENS", "content_filter": "SAFETY"}.get(self.choice.finish_reason, "STOP")

    def usage(self, candidates: int, final: bool) -> dict[str, Any]:
        prompt = self.request.chat.prompt_tokens
        thoughts = self.thoughts_tokens if final or candidates else 0
        usage: dict[str, Any] = {"promptTokenCount": prompt}
        if candidates or final:
            usage["candidatesTokenCount"] = candidates
        usage["totalTokenCount"] = prompt + candidates + thoughts
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def _call_parts(self) -> list[dict[str, Any]]:
        parts = []
        for k, call in enumerate(self.choice.tool_calls):
            args = orjson.loads(call.arguments)
            part: dict[str, Any] = {"functionCall": {"name": call.name, "args": args}}
            if self.thinking and k == 0:
                part["thoughtSignature"] = signature(call.name, args)
            parts.append(part)
        return parts

    def _candidate(self, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {}
        if parts:
            candidate["content"] = {"parts": parts, "role": "model"}
        if finish is not None:
            candidate["finishReason"] = finish
            if finish == "SAFETY":
                candidate["safetyRatings"] = [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ]
        candidate["index"] = 0
        return candidate

    def _response(self, candidate: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.request.model,
            "responseId": self.id,
        }

    def response(self) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if self.thinking and self.request.include_thoughts:
            parts.append({"text": self.thinking, "thought": True})
        if self.choice.pieces:
            parts.append({"text": "".join(self.choice.pieces)})
        parts += self._call_parts()
        usage = self.usage(self.choice.completion_tokens, True)
        return self._response(self._candidate(parts, self.finish), usage)

    def chunks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.thinking and self.request.include_thoughts:
            for piece in _groups(content.tokenize(self.thinking), 6):
                out.append(
                    self._response(
                        self._candidate([{"text": piece, "thought": True}], None), self.usage(0, False)
                    )
                )
        pieces = list(self.choice.pieces)
        groups = _groups(pieces, 4)
        emitted = 0
        for n, group in enumerate(groups):
            emitted += len(content.tokenize(group))
            last = n == len(groups) - 1 and not self.choice.tool_calls
            candidate = self._candidate([{"text": group}], self.finish if last else None)
            out.append(self._response(candidate, self.usage(emitted, last)))
        if self.choice.tool_calls or not groups:
            candidate = self._candidate(self._call_parts(), self.finish)
            out.append(self._response(candidate, self.usage(self.choice.completion_tokens, True)))
        return out


def _groups(pieces: list[str], size: int) -> list[str]:
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def reply(request: GenerateRequest, cache: PromptCache) -> Reply:
    thinking = content.thinking_text(request.chat.messages) if request.thinking else None
    chat = request.chat
    if thinking and chat.limit is not None:
        chat = dataclasses.replace(chat, limit=max(chat.limit - content.count_tokens(thinking), 1))
    cached = cache.longest_hit(request.segments)
    cache.remember(request.segments)
    choice = answer(chat).choices[0]
    return Reply(request, random_id("", 22), choice, thinking, cached)


def count_tokens(request: GenerateRequest) -> dict[str, Any]:
    tokens = request.chat.prompt_tokens
    return {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
