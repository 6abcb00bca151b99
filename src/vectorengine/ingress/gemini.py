"""Gemini clients: ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``.

The model and the method are in the path, so each request gets its own ingress. A stream asked
for without ``alt=sse`` is answered as Google does then: one JSON array (of one response here).
"""

from __future__ import annotations

import orjson

from vectorengine.errors import GatewayError
from vectorengine.ingress import Chained, json_object
from vectorengine.protocol import gemini
from vectorengine.protocol import openai as wire
from vectorengine.upstreams.dialect import StreamObserver

METHODS = ("generateContent", "streamGenerateContent")


class GeminiIngress:
    name = "gemini"

    __slots__ = ("array", "model", "streamed")

    def __init__(self, model: str, method: str, sse: bool) -> None:
        self.model = model
        self.streamed = method == "streamGenerateContent" and sse
        self.array = method == "streamGenerateContent" and not sse

    def decode(self, endpoint: wire.Endpoint, raw: bytes, content_type: str | None = None) -> wire.Call:
        body = json_object(raw)
        if not self.model:
            raise wire.DecodeError(
                "The model is named in the path: /v1beta/models/{model}:generateContent", "model"
            )
        try:
            hub = gemini.generate_to_chat(body, self.model, stream=self.streamed)
        except gemini.TranslationError as exc:
            raise wire.DecodeError(exc.message, exc.param) from None
        return wire.Call(
            wire.Endpoint.CHAT,
            self.model,
            self.streamed,
            self.streamed,
            hub,
            orjson.dumps(hub),
            protocol="gemini",
            native=raw,
        )

    def error(self, err: GatewayError) -> tuple[int, bytes]:
        return err.gemini()

    def stream_error(self, err: GatewayError) -> bytes:
        return b"data: " + err.gemini()[1] + b"\r\n\r\n"

    def answer(self, call: wire.Call, upstream_wire: str, body: bytes | memoryview) -> bytes | memoryview:
        if upstream_wire != self.name:
            body = orjson.dumps(gemini.chat_to_generate_response(orjson.loads(body), model=call.model))
        return b"[" + bytes(body) + b"]" if self.array else body

    def stream(self, call: wire.Call, upstream_wire: str, upstream: StreamObserver) -> StreamObserver:
        if upstream_wire == self.name:
            return upstream
        return Chained(upstream, gemini.ChatToGenerateStream(model=call.model))
