"""The OpenAI dialect: OpenAI itself, Azure OpenAI and every OpenAI-compatible host.

The hub format is OpenAI's, so requests and answers pass through; only the URL and the
authentication differ between hosts (see the registry), and a streamed answer is observed
for its usage on the way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from vectorengine.protocol import openai as wire
from vectorengine.protocol.responses import ResponsesObserver
from vectorengine.protocol.usage import Usage
from vectorengine.store.records import Channel
from vectorengine.upstreams.dialect import (
    StreamObserver,
    UpstreamError,
    UpstreamRequest,
    base_url,
    request_headers,
)
from vectorengine.upstreams.registry import UPSTREAM_TYPES


class OpenAIDialect:
    def supports(self, endpoint: wire.Endpoint) -> bool:
        return True

    def request(
        self, channel: Channel, key_index: int, call: wire.Call, upstream_model: str
    ) -> UpstreamRequest:
        utype = UPSTREAM_TYPES[channel.type]
        headers = request_headers(utype, channel.keys[key_index], call.stream)
        base = base_url(channel, utype)
        if call.protocol == "responses" and utype.responses and call.native is not None:
            body = call.native
            if upstream_model != call.model:
                body = orjson.dumps({**orjson.loads(body), "model": upstream_model})
            return UpstreamRequest(base + "/responses", headers, body)
        call.translatable()
        if utype.urls == "azure":
            version = channel.api_version or utype.api_version
            url = f"{base}/openai/deployments/{quote(upstream_model, safe='')}{call.endpoint.suffix}"
            url += f"?api-version={version}"
        else:
            url = base + call.endpoint.suffix
        if call.content_type is not None:  # a multipart form goes on with its own boundary
            headers = [("content-type", call.content_type), *headers[1:]]
        return UpstreamRequest(url, headers, wire.encode_upstream(call, upstream_model))

    def answer(
        self, call: wire.Call, raw: bytes | memoryview
    ) -> tuple[bytes | memoryview, Usage | None] | None:
        obj, usage = wire.usage_from_body(raw)
        if obj is None:  # audio, or a transcript asked for as text: passed on as it is
            return None if call.endpoint.json_answer else (raw, None)
        return raw, usage

    def observer(self, call: wire.Call, channel: Channel) -> StreamObserver:
        if call.protocol == "responses" and UPSTREAM_TYPES[channel.type].responses:
            return ResponsesObserver()
        return wire.StreamObserver(strip_usage=not call.include_usage)

    def leading_error(self, first: bytes | memoryview) -> dict[str, Any] | None:
        return wire.leading_error(first)

    def error(self, status: int, raw: bytes | memoryview) -> UpstreamError:
        obj: Any = wire.usage_from_body(raw)[0] if raw else None
        if wire.error_envelope(obj):
            return UpstreamError(status, obj["error"], bytes(raw))
        return UpstreamError(status, None, None)
