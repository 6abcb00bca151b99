"""Anthropic clients: ``POST /v1/messages`` in, Messages JSON and SSE out."""

from __future__ import annotations

import orjson

from vectorengine.errors import GatewayError
from vectorengine.ingress import Chained, json_object
from vectorengine.protocol import anthropic
from vectorengine.protocol import openai as wire
from vectorengine.upstreams.dialect import StreamObserver


class AnthropicIngress:
    """``POST /v1/messages`` for Anthropic clients (Claude Code, the anthropic SDK …)."""

    name = "anthropic"

    def decode(self, endpoint: wire.Endpoint, raw: bytes, content_type: str | None = None) -> wire.Call:
        body = json_object(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise wire.DecodeError("model: Field required", "model")
        if not isinstance(body.get("messages"), list):
            raise wire.DecodeError("messages: Field required", "messages")
        if not isinstance(body.get("max_tokens"), int) or isinstance(body.get("max_tokens"), bool):
            raise wire.DecodeError("max_tokens: Field required", "max_tokens")
        try:
            hub = anthropic.messages_to_chat(body)
        except anthropic.TranslationError as exc:
            raise wire.DecodeError(exc.message, exc.param) from None
        streamed = body.get("stream") is True
        return wire.Call(
            wire.Endpoint.CHAT,
            model,
            streamed,
            streamed,
            hub,
            orjson.dumps(hub),
            protocol="anthropic",
            native=raw,
        )

    def error(self, err: GatewayError) -> tuple[int, bytes]:
        return err.anthropic()

    def stream_error(self, err: GatewayError) -> bytes:
        return b"event: error\ndata: " + err.anthropic()[1] + b"\n\n"

    def answer(self, call: wire.Call, upstream_wire: str, body: bytes | memoryview) -> bytes | memoryview:
        if upstream_wire == self.name:
            return body
        return orjson.dumps(anthropic.chat_to_message(orjson.loads(body), model=call.model))

    def stream(self, call: wire.Call, upstream_wire: str, upstream: StreamObserver) -> StreamObserver:
        if upstream_wire == self.name:
            return upstream
        return Chained(
            upstream, anthropic.ChatToMessagesStream(model=call.model, message_id=anthropic.message_id())
        )


ANTHROPIC = AnthropicIngress()
