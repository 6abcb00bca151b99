"""Legacy ``/v1/completions``, ``/v1/embeddings`` and ``/v1/models`` bodies."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from vectorengine.simulator import content
from vectorengine.simulator.chat import fingerprint
from vectorengine.simulator.wire import (
    ApiError,
    check_stop,
    include_usage,
    invalid_type,
    invalid_value,
    missing,
    optional_bool,
    optional_int,
    random_id,
    require_str,
    sse,
)

LEGACY_DEFAULT_MAX_TOKENS = 16  # the legacy API's default when max_tokens is absent
MAX_EMBEDDING_INPUTS = 2048
LEGACY_CONTEXT_TOKENS = 4097  # the context windows named by the context-length fault
EMBEDDING_CONTEXT_TOKENS = 8192

# --------------------------------------------------------------------------- legacy completions


@dataclass(frozen=True, slots=True)
class _Text:
    index: int
    pieces: tuple[str, ...]  # as streamed; the echoed prompt, if any, comes first
    finish_reason: str
    tokens: int  # completion tokens (the echoed prompt is not counted)


@dataclass(frozen=True, slots=True)
class CompletionAnswer:
    model: str
    include_usage: bool
    texts: tuple[_Text, ...]
    prompt_tokens: int
    max_tokens: int
    id: str
    created: int

    def usage(self) -> dict[str, Any]:
        completion = sum(t.tokens for t in self.texts)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": fingerprint(self.model),
            "choices": choices,
        }

    def completion(self) -> dict[str, Any]:
        choices = [
            {"text": "".join(t.pieces), "index": t.index, "logprobs": None, "finish_reason": t.finish_reason}
            for t in self.texts
        ]
        return {**self._object(choices), "usage": self.usage()}

    def events(self) -> list[bytes]:
        events: list[bytes] = []
        for t in self.texts:
            for piece, finish in [*((p, None) for p in t.pieces), ("", t.finish_reason)]:
                choice = {"text": piece, "index": t.index, "logprobs": None, "finish_reason": finish}
                events.append(sse(self._object([choice])))
        if self.include_usage:
            events.append(sse({**self._object([]), "usage": self.usage()}))
        return events


def _prompts(body: dict[str, Any]) -> list[tuple[str, int]]:
    """Each prompt as (text, token count); token-id prompts are shown as their numbers."""
    if body.get("prompt") is None:
        raise missing("prompt")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [(prompt, content.count_tokens(prompt))]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [(p, content.count_tokens(p)) for p in prompt]
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [(" ".join(map(str, prompt)), len(prompt))]
        if all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt):
            return [(" ".join(map(str, p)), len(p)) for p in prompt]
    raise invalid_type("prompt", "a string, an array of strings or an array of token arrays", prompt)


def completion_answer(body: dict[str, Any]) -> tuple[CompletionAnswer, bool]:
    """The legacy completion for ``body``, and whether it is to be streamed."""
    model = require_str(body, "model")
    prompts = _prompts(body)
    n = optional_int(body, "n", 1, 128) or 1
    limit = optional_int(body, "max_tokens", 0)
    limit = LEGACY_DEFAULT_MAX_TOKENS if limit is None else limit
    stop = check_stop(body)
    echo = optional_bool(body, "echo")
    stream = optional_bool(body, "stream")
    texts: list[_Text] = []
    for p, (prompt, _) in enumerate(prompts):
        for i in range(n):
            text, _ = content.truncate_at_stop(content.completion_text(prompt, i), stop)
            pieces = content.tokenize(text)
            finish = "stop"
            if len(pieces) > limit:
                pieces, finish = pieces[:limit], "length"
            shown = (prompt, *pieces) if echo else tuple(pieces)
            texts.append(_Text(p * n + i, shown, finish, len(pieces)))
    answer = CompletionAnswer(
        model=model,
        include_usage=stream and include_usage(body),
        texts=tuple(texts),
        prompt_tokens=sum(tokens for _, tokens in prompts),
        max_tokens=limit,
        id=random_id("cmpl-"),
        created=int(time.time()),
    )
    return answer, stream


def _legacy_too_long(window: int, prompt: int, completion: int) -> ApiError:
    """The legacy wording (completions, embeddings): no ``param``, no ``code``."""
    prompt = max(prompt, window + 1 - completion)
    return ApiError(
        400,
        f"This model's maximum context length is {window} tokens, however you requested "
        f"{prompt + completion} tokens ({prompt} in your prompt; {completion} for the completion). "
        "Please reduce your prompt; or completion length.",
    )


def completion_too_long(answer: CompletionAnswer) -> ApiError:
    """The legacy API's 400 for a prompt over the context window (fault ``context-length``)."""
    return _legacy_too_long(LEGACY_CONTEXT_TOKENS, answer.prompt_tokens, answer.max_tokens)


def embeddings_too_long(tokens: int) -> ApiError:
    """The embeddings API's 400 for an input over the context window (fault ``context-length``)."""
    return _legacy_too_long(EMBEDDING_CONTEXT_TOKENS, tokens, 0)


# --------------------------------------------------------------------------- embeddings

_NATIVE_DIMENSIONS = {
    "text-embedding-3-large": 3072,
    "text-embedding-3-small": 1536,
    "text-embedding-ada-002": 1536,
}


def _bad_input() -> ApiError:
    return ApiError(
        400,
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
    )


def _embedding_inputs(body: dict[str, Any]) -> list[tuple[str, int]]:
    """Each input as (seed text, token count)."""
    if body.get("input") is None:
        raise missing("input")
    value = body["input"]
    if isinstance(value, str):
        if not value:
            raise _bad_input()
        return [(value, content.count_tokens(value))]
    if not isinstance(value, list) or not value or len(value) > MAX_EMBEDDING_INPUTS:
        raise _bad_input()
    if all(isinstance(v, str) and v for v in value):
        return [(v, content.count_tokens(v)) for v in value]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [("tokens:" + ",".join(map(str, value)), len(value))]
    if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return [("tokens:" + ",".join(map(str, v)), len(v)) for v in value]
    raise _bad_input()


def embeddings_body(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The ``CreateEmbeddingResponse`` for ``body``, and its prompt tokens."""
    model = require_str(body, "model")
    inputs = _embedding_inputs(body)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid_value(
            "encoding_format",
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
        )
    native = _NATIVE_DIMENSIONS.get(model, 1536)
    dimensions = optional_int(body, "dimensions", 1) or native
    if dimensions > native and model in _NATIVE_DIMENSIONS:
        raise invalid_value(
            "dimensions", f"Invalid value for 'dimensions' = {dimensions}. Must be <= {native}."
        )
    data = []
    for index, (seed, _) in enumerate(inputs):
        vector = content.embedding(f"{model}\n{seed}", dimensions)
        shown: Any = content.embedding_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": shown})
    tokens = sum(t for _, t in inputs)
    response = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return response, tokens


# --------------------------------------------------------------------------- models


def model_object(model: str) -> dict[str, Any]:
    created = 1_680_000_000 + int.from_bytes(hashlib.sha1(model.encode()).digest()[:4], "big") % 60_000_000
    return {"id": model, "object": "model", "created": created, "owned_by": "system"}


def models_body(models: tuple[str, ...]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m) for m in models]}


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )
