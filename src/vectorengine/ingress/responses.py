"""Responses API clients: ``POST /v1/responses``.

To an upstream with the Responses API (``openai``) the request passes through as it came and
keeps its state there (``store``, ``previous_response_id``); to any other it is translated to
a chat completion for stateless use and the answer, JSON or event stream, translated back.
"""

from __future__ import annotations

import time

import orjson

from vectorengine.errors import GatewayError
from vectorengine.ingress import Chained, json_object
from vectorengine.protocol import openai as wire
from vectorengine.protocol import responses
from vectorengine.protocol.anthropic import TranslationError
from vectorengine.upstreams.dialect import StreamObserver


class ResponsesIngress:
    """One per request: a stream's error event continues the stream's sequence numbers."""

    name = "responses"

    def __init__(self) -> None:
        self._translator: responses.ChatToResponsesStream | None = None

    def decode(self, endpoint: wire.Endpoint, raw: bytes, content_type: str | None = None) -> wire.Call:
        body = json_object(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise wire.DecodeError("Missing required parameter: 'model'.", "model")
        streamed = body.get("stream") is True
        try:
            hub = responses.responses_to_chat(body)
        except TranslationError as exc:  # only a Responses upstream can take it
            return wire.Call(
                wire.Endpoint.CHAT,
                model,
                streamed,
                streamed,
                {},
                b"",
                protocol="responses",
                native=raw,
                untranslatable=(exc.message, exc.param),
            )
        return wire.Call(
            wire.Endpoint.CHAT,
            model,
            streamed,
            streamed,
            hub,
            orjson.dumps(hub),
            protocol="responses",
            native=raw,
        )

    def error(self, err: GatewayError) -> tuple[int, bytes]:
        return err.status, err.openai_body()

    def stream_error(self, err: GatewayError) -> bytes:
        seq = self._translator.next_sequence if self._translator is not None else 0
        event = {
            "type": "error",
            "code": err.kind.value,
            "message": err.message,
            "param": err.param,
            "sequence_number": seq,
        }
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"

    def answer(self, call: wire.Call, upstream_wire: str, body: bytes | memoryview) -> bytes | memoryview:
        if upstream_wire == self.name:
            return body
        request = orjson.loads(call.native or b"{}")
        rid, created = responses.response_id(), int(time.time())
        return orjson.dumps(
            responses.chat_to_response(
                orjson.loads(body), request=request, response_id=rid, created_at=created
            )
        )

    def stream(self, call: wire.Call, upstream_wire: str, upstream: StreamObserver) -> StreamObserver:
        if upstream_wire == self.name:
            return upstream
        request = orjson.loads(call.native or b"{}")
        translator = self._translator = responses.ChatToResponsesStream(
            request=request, response_id=responses.response_id(), created_at=int(time.time())
        )
        return Chained(upstream, translator)
