"""The simulator's other faces: Anthropic, Gemini and Azure OpenAI on the same port.

The routing, the keys, the faults and the stats are the OpenAI simulator's; this module adds
what differs per provider — the paths, how the key arrives, the response headers, the error
envelope, the stream's end — and the handlers of the Anthropic and Gemini endpoints. Azure
serves the OpenAI handlers under ``/openai/deployments/{deployment}/…?api-version=…``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote

import orjson

from vectorengine.simulator import anthropic, anthropic_reply, gemini, gemini_reply
from vectorengine.simulator.wire import ApiError, Headers, RSGIScope

if TYPE_CHECKING:
    from vectorengine.simulator.exchange import Exchange

Dialect = Literal["openai", "azure", "anthropic", "gemini"]
Handler = Callable[["Exchange", bytes], Awaitable[None]]

_AZURE_PREFIX = "/openai/deployments/"
_GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")  # google-genai 3 defaults to v1
_GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
_AZURE_FILTER = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def route(path: str, openai_routes: dict[str, tuple[str, Handler]]) -> tuple[str, Handler, Dialect] | None:
    """(allowed method, handler, dialect) of a provider path other than OpenAI's own."""
    if path == "/v1/messages":
        return "POST", _messages, "anthropic"
    if path == "/v1/messages/count_tokens":
        return "POST", _count_messages, "anthropic"
    if path.startswith(_GEMINI_PREFIXES) and ":" in path:
        return "POST", _gemini, "gemini"
    if path.startswith(_AZURE_PREFIX):
        deployment, _, rest = path[len(_AZURE_PREFIX) :].partition("/")
        target = openai_routes.get("/v1/" + rest)
        if deployment and target is not None:
            return target[0], _azure(unquote(deployment), target[1]), "azure"
    return None


def api_key(dialect: Dialect, scope: RSGIScope) -> tuple[str | None, ApiError | None]:
    """The caller's key as the provider takes it, or the error for a request without one."""
    headers = scope.headers
    bearer = str(headers.get("authorization") or "")
    token = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
    if dialect == "anthropic":
        key = headers.get("x-api-key") or token
        return (
            (key, None)
            if key
            else (None, ApiError(401, "x-api-key header is required", code="invalid_api_key"))
        )
    if dialect == "gemini":
        key = headers.get("x-goog-api-key") or parse_qs(scope.query_string).get("key", [None])[0]
        if key:
            return key, None
        return None, ApiError(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )
    key = headers.get("api-key") or token
    if key:
        return key, None
    return None, ApiError(
        401,
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
        "key for an active subscription and use a correct regional API endpoint for your resource.",
        code="401",
    )


def headers(
    dialect: Dialect, content_type: str, request_id: str, elapsed_ms: int, limits: Headers
) -> Headers:
    """Response headers of Anthropic and Gemini (OpenAI's and Azure's are the simulator's own)."""
    if dialect == "anthropic":
        values = dict(limits)
        reset = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [
            ("content-type", content_type),
            ("request-id", "req_" + request_id[4:28]),
            ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000"),
            ("anthropic-ratelimit-requests-limit", values.get("x-ratelimit-limit-requests", "0")),
            ("anthropic-ratelimit-requests-remaining", values.get("x-ratelimit-remaining-requests", "0")),
            ("anthropic-ratelimit-requests-reset", reset),
            ("anthropic-ratelimit-tokens-limit", values.get("x-ratelimit-limit-tokens", "0")),
            ("anthropic-ratelimit-tokens-remaining", values.get("x-ratelimit-remaining-tokens", "0")),
            ("anthropic-ratelimit-tokens-reset", reset),
        ]
    return [
        ("content-type", content_type),
        ("vary", "Origin, X-Origin, Referer"),
        ("server-timing", f"gfet4t7; dur={elapsed_ms}"),
        ("x-content-type-options", "nosniff"),
    ]


def error(dialect: Dialect, err: ApiError, request_id: str) -> tuple[int, bytes, Headers]:
    """(status, body, extra headers) of ``err`` in the dialect's envelope."""
    if dialect == "anthropic":
        status, body = anthropic.error_body(err, "req_" + request_id[4:28])
        return status, body, [h for h in err.headers if h[0] == "retry-after"]
    if dialect == "gemini":
        status, body = gemini.error_body(err)
        return status, body, []
    if dialect == "azure" and err.code == "401":
        return 401, orjson.dumps({"error": {"code": "401", "message": err.message}}), []
    return err.status, err.body(), err.headers


def stream_error(dialect: Dialect, err: ApiError) -> bytes:
    if dialect == "anthropic":
        return anthropic.stream_error_event()
    if dialect == "gemini":
        return gemini.stream_error_event()
    return b"data: " + err.body() + b"\n\n"


def azure_json(obj: Any) -> Any:
    """Azure adds its content-filter verdicts to chat completions."""
    if isinstance(obj, dict) and obj.get("object") == "chat.completion":
        obj["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _AZURE_FILTER}]
        for choice in obj.get("choices") or ():
            choice["content_filter_results"] = _AZURE_FILTER
    return obj


AZURE_FIRST_CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _AZURE_FILTER}],
        }
    )
    + b"\n\n"
)


# --------------------------------------------------------------------------- handlers


def _json(ex: Exchange, raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if ex.dialect == "gemini":
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from None
        raise ApiError(400, f"There was an issue with your request body: invalid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received. Expected an object.")
    return body


def _anthropic_request(ex: Exchange, raw: bytes, *, count_only: bool) -> anthropic.MessagesRequest:
    if not ex.scope.headers.get("anthropic-version"):
        raise ApiError(400, "anthropic-version: header is required")
    request = anthropic.parse(_json(ex, raw), count_only=count_only)
    if ex.app.config.strict_models and request.model not in ex.app.config.models:
        raise ApiError(404, f"model: {request.model}")
    return request


async def _messages(ex: Exchange, raw: bytes) -> None:
    request = _anthropic_request(ex, raw, count_only=False)
    ex.app._admit(
        ex, request.model, request.prompt_tokens, lambda: anthropic.context_too_long(request.prompt_tokens)
    )
    reply = anthropic_reply.reply(request, ex.app.prompt_cache)
    ex.use_tokens(request.prompt_tokens + reply.output_tokens)
    if request.stream:
        await ex.send_events(reply.events())
    else:
        await ex.send_json(reply.message())


async def _count_messages(ex: Exchange, raw: bytes) -> None:
    request = _anthropic_request(ex, raw, count_only=True)
    await ex.send_json(anthropic_reply.count_tokens(request))


async def _gemini(ex: Exchange, raw: bytes) -> None:
    name, _, method = ex.scope.path.split("/models/", 1)[1].rpartition(":")
    model = unquote(name)
    if method not in _GEMINI_METHODS or not model:
        raise ApiError(404, f"Invalid URL ({ex.scope.method} {ex.scope.path})")
    if ex.app.config.strict_models and model not in ex.app.config.models:
        raise gemini.model_not_found(model, method)
    stream = method == "streamGenerateContent"
    request = gemini.parse(model, _json(ex, raw), stream=stream)
    if method == "countTokens":
        await ex.send_json(gemini_reply.count_tokens(request))
        return
    prompt = request.chat.prompt_tokens
    ex.app._admit(ex, model, prompt, lambda: gemini.context_too_long(prompt))
    reply = gemini_reply.reply(request, ex.app.prompt_cache)
    ex.use_tokens(prompt + reply.choice.completion_tokens + reply.thoughts_tokens)
    if not stream:
        await ex.send_json(reply.response())
    elif parse_qs(ex.scope.query_string).get("alt") == ["sse"]:
        await ex.send_events([b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in reply.chunks()])
    else:
        await ex.send_json(reply.chunks())


def _azure(deployment: str, handler: Handler) -> Handler:
    async def serve(ex: Exchange, raw: bytes) -> None:
        if not parse_qs(ex.scope.query_string).get("api-version"):
            raise ApiError(404, "Resource not found", code="404")
        if ex.scope.method == "POST":
            body = _json(ex, raw)
            body.setdefault("model", deployment)
            raw = orjson.dumps(body)
        await handler(ex, raw)

    return serve
