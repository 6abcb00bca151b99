"""The Anthropic dialect: the Messages API (``POST /v1/messages``).

Hub calls are translated: OpenAI chat → Messages on the way out, Messages JSON and SSE →
OpenAI chat completions on the way back (``protocol/anthropic``). A call from an Anthropic
client goes through as the client sent it (only the model name is mapped), and its answers
come back untouched, watched for usage: thinking signatures, cache_control and betas survive.
"""

from __future__ import annotations

from typing import Any

import orjson

from vectorengine.protocol import anthropic
from vectorengine.protocol import openai as wire
from vectorengine.protocol.usage import Usage
from vectorengine.store.records import Channel
from vectorengine.upstreams.dialect import (
    StreamObserver,
    UpstreamError,
    UpstreamRequest,
    Watching,
    base_url,
    request_headers,
)
from vectorengine.upstreams.registry import UPSTREAM_TYPES

DEFAULT_MAX_TOKENS = 4096  # Messages requires max_tokens; OpenAI clients often leave it out


class AnthropicDialect:
    def supports(self, endpoint: wire.Endpoint) -> bool:
        return endpoint is wire.Endpoint.CHAT

    def request(
        self, channel: Channel, key_index: int, call: wire.Call, upstream_model: str
    ) -> UpstreamRequest:
        utype = UPSTREAM_TYPES[channel.type]
        headers = request_headers(utype, channel.keys[key_index], call.stream)
        if call.protocol == "anthropic" and call.native is not None:
            body = call.native
            if upstream_model != call.model:
                body = orjson.dumps({**orjson.loads(body), "model": upstream_model})
            return UpstreamRequest(base_url(channel, utype) + "/v1/messages", headers, body)
        call.translatable()
        try:
            translated = anthropic.chat_to_messages(
                call.body,
                upstream_model,
                stream=call.stream,
                default_max_tokens=DEFAULT_MAX_TOKENS,
                auto_cache=call.protocol == "gemini",
            )
        except anthropic.TranslationError as exc:
            raise wire.DecodeError(exc.message, exc.param) from None
        body = orjson.dumps(translated)
        return UpstreamRequest(base_url(channel, utype) + "/v1/messages", headers, body)

    def answer(
        self, call: wire.Call, raw: bytes | memoryview
    ) -> tuple[bytes | memoryview, Usage | None] | None:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or obj.get("type") != "message":
            return None
        thinking = [
            b for b in obj.get("content") or () if isinstance(b, dict) and b.get("type") == "thinking"
        ]
        chars = sum(len(str(b.get("thinking") or "")) for b in thinking)
        usage = anthropic.usage_from_anthropic(obj.get("usage") or {}, chars)
        if call.protocol == "anthropic":
            return raw, usage
        return orjson.dumps(anthropic.message_to_chat(obj)), usage

    def observer(self, call: wire.Call, channel: Channel) -> StreamObserver:
        translator = anthropic.MessagesToChatStream(include_usage=call.include_usage)
        return Watching(translator) if call.protocol == "anthropic" else translator

    def leading_error(self, first: bytes | memoryview) -> dict[str, Any] | None:
        return anthropic.leading_error(first)

    def error(self, status: int, raw: bytes | memoryview) -> UpstreamError:
        client_status, envelope = anthropic.openai_error_from_anthropic(status, bytes(raw))
        try:
            obj = orjson.loads(envelope)
        except orjson.JSONDecodeError:
            return UpstreamError(client_status, None, None)
        error = obj.get("error") if isinstance(obj, dict) else None
        return UpstreamError(client_status, error if isinstance(error, dict) else None, envelope)
