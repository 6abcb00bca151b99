"""The Gemini dialect: ``/v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``.

Gemini clients' requests pass through as they came (only observed). Hub calls are translated:
OpenAI chat → GenerateContentRequest on the way out, Gemini JSON and SSE → OpenAI chat
completions on the way back (``protocol/gemini``). The model is named in the URL; the key
travels as ``x-goog-api-key``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from vectorengine.protocol import gemini
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


class GeminiDialect:
    def supports(self, endpoint: wire.Endpoint) -> bool:
        return endpoint is wire.Endpoint.CHAT

    def request(
        self, channel: Channel, key_index: int, call: wire.Call, upstream_model: str
    ) -> UpstreamRequest:
        utype = UPSTREAM_TYPES[channel.type]
        headers = request_headers(utype, channel.keys[key_index], call.stream)
        model = quote(upstream_model.removeprefix("models/"), safe="")
        url = base_url(channel, utype) + f"/v1beta/models/{model}:"
        url += "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        if call.protocol == "gemini" and call.native is not None:
            return UpstreamRequest(url, headers, call.native)  # the model is in the URL, not the body
        call.translatable()
        try:
            body = orjson.dumps(gemini.chat_to_generate(call.body))
        except gemini.TranslationError as exc:
            raise wire.DecodeError(exc.message, exc.param) from None
        return UpstreamRequest(url, headers, body)

    def answer(
        self, call: wire.Call, raw: bytes | memoryview
    ) -> tuple[bytes | memoryview, Usage | None] | None:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or not ("candidates" in obj or "promptFeedback" in obj):
            return None
        meta = obj.get("usageMetadata")
        usage = gemini.usage_from_gemini(meta) if isinstance(meta, dict) else None
        if call.protocol == "gemini":
            return raw, usage
        return orjson.dumps(gemini.generate_response_to_chat(obj, model=call.model)), usage

    def observer(self, call: wire.Call, channel: Channel) -> StreamObserver:
        translator = gemini.GenerateToChatStream(model=call.model, include_usage=call.include_usage)
        return Watching(translator) if call.protocol == "gemini" else translator

    def leading_error(self, first: bytes | memoryview) -> dict[str, Any] | None:
        return gemini.leading_error(first)

    def error(self, status: int, raw: bytes | memoryview) -> UpstreamError:
        client_status, envelope, retry = gemini.openai_error_from_gemini(status, bytes(raw))
        try:
            obj = orjson.loads(envelope)
        except orjson.JSONDecodeError:
            return UpstreamError(client_status, None, None, retry)
        error = obj.get("error") if isinstance(obj, dict) else None
        return UpstreamError(client_status, error if isinstance(error, dict) else None, envelope, retry)
