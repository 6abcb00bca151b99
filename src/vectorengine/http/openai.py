"""The relay surface (OpenAI paths, Anthropic's /v1/messages, Gemini's generateContent) and the model list."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import orjson

from vectorengine import auth, tokencount
from vectorengine.errors import GatewayError, Kind
from vectorengine.http.rsgi import RSGIResponder, client_ip, read_body, send_error, send_json
from vectorengine.ingress import OPENAI, Ingress, json_object
from vectorengine.protocol.openai import DecodeError, Endpoint
from vectorengine.relay import Inbound, Relay
from vectorengine.routing.selection import RouteTable
from vectorengine.store.snapshot import SnapshotHolder

RELAY_ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
    "/v1/images/generations": Endpoint.IMAGES,
    "/v1/images/edits": Endpoint.IMAGE_EDITS,
    "/v1/audio/speech": Endpoint.SPEECH,
    "/v1/audio/transcriptions": Endpoint.TRANSCRIPTIONS,
    "/v1/audio/translations": Endpoint.TRANSLATIONS,
    "/v1/moderations": Endpoint.MODERATIONS,
    "/v1/rerank": Endpoint.RERANK,
}


async def relay_request(
    relay: Relay,
    endpoint: Endpoint,
    scope: Any,
    protocol: Any,
    request_id: str,
    max_body: int,
    ingress: Ingress = OPENAI,
) -> None:
    """Hand a relay request over to the pipeline; ``ingress`` is the client's protocol."""
    t0 = time.perf_counter()
    try:
        body = await read_body(scope, protocol, max_body)
    except GatewayError as err:
        status, payload = ingress.error(err)
        protocol.response_bytes(
            status, [("x-request-id", request_id), ("content-type", "application/json")], payload
        )
        return
    inbound = Inbound(
        endpoint=endpoint,
        body=body,
        api_key=api_key(ingress, scope),
        request_id=request_id,
        client_ip=client_ip(scope),
        received_ms=time.time_ns() // 1_000_000,
        t0=t0,
        ingress=ingress,
        content_type=scope.headers.get("content-type") if endpoint.multipart else None,
    )
    await relay.handle(inbound, RSGIResponder(protocol))


def api_key(ingress: Ingress, scope: Any) -> str | None:
    """The caller's key where its protocol puts it: OpenAI ``Authorization: Bearer``; Anthropic
    ``x-api-key``; Gemini ``x-goog-api-key`` or ``?key=`` (each also takes a bearer token)."""
    headers = scope.headers
    key = None
    if ingress.name == "anthropic":
        key = headers.get("x-api-key")
    elif ingress.name == "gemini":
        key = headers.get("x-goog-api-key") or query_param(scope, "key")
    return key or auth.bearer(headers.get("authorization"))


def query_param(scope: Any, name: str) -> str | None:
    values = parse_qs(scope.query_string).get(name)
    return values[0] if values else None


async def count_tokens(
    snapshots: SnapshotHolder, scope: Any, protocol: Any, request_id: str, max_body: int, ingress: Ingress
) -> None:
    """``POST /v1/messages/count_tokens``: the prompt's size in the client's protocol, counted
    here with ``o200k_base`` (an estimate for other model families), no upstream call."""
    rid = [("x-request-id", request_id), ("content-type", "application/json")]
    try:
        body = json_object(await read_body(scope, protocol, max_body))
        token = auth.authenticate(snapshots.current, api_key(ingress, scope), time.time_ns() // 1_000_000)
        body.setdefault("max_tokens", 1)  # not part of a count request, required by the decoder
        try:
            call = ingress.decode(Endpoint.CHAT, orjson.dumps(body))
        except DecodeError as exc:
            kind = Kind.INVALID_JSON if exc.bad_json else Kind.INVALID_REQUEST
            raise GatewayError(kind, str(exc), param=exc.param) from None
        auth.authorize_model(token, call.model)
        if call.model not in snapshots.current.routes_for(token):
            raise GatewayError(
                Kind.MODEL_NOT_FOUND,
                f"The model `{call.model}` does not exist or you do not have access to it.",
                param="model",
            )
        protocol.response_bytes(200, rid, orjson.dumps({"input_tokens": tokencount.count_chat(call.body)}))
    except DecodeError as exc:
        status, payload = ingress.error(GatewayError(Kind.INVALID_JSON, str(exc)))
        protocol.response_bytes(status, rid, payload)
    except GatewayError as err:
        status, payload = ingress.error(err)
        protocol.response_bytes(status, rid, payload)


def models(
    snapshots: SnapshotHolder, scope: Any, protocol: Any, request_id: str, model_id: str | None
) -> None:
    """``GET /v1/models`` and ``GET /v1/models/{id}``: only what the calling token may use."""
    rid = [("x-request-id", request_id)]
    snapshot = snapshots.current
    try:
        token = auth.authenticate(
            snapshot, auth.bearer(scope.headers.get("authorization")), time.time_ns() // 1_000_000
        )
        allowed = snapshot.models_for(token)
        if model_id is None:
            routes = snapshot.routes_for(token)
            send_json(protocol, 200, {"object": "list", "data": [_model(routes, m) for m in allowed]}, rid)
            return
        if model_id not in allowed:
            raise GatewayError(
                Kind.MODEL_NOT_FOUND,
                f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model",
            )
        send_json(protocol, 200, _model(snapshot.routes_for(token), model_id), rid)
    except GatewayError as err:
        send_error(protocol, err, rid)


def _model(routes: dict[str, RouteTable], model: str) -> dict[str, Any]:
    table = routes[model]
    created = min(c.channel.created_at for tier in table.tiers for c in tier.candidates) // 1000
    return {"id": model, "object": "model", "created": created, "owned_by": "vectorengine"}
