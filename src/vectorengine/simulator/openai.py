"""The OpenAI simulator: an RSGI application faithful to the OpenAI REST API's wire format.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``,
``GET /v1/models``, ``GET /v1/models/{id}``; control routes ``GET /_sim/stats`` and
``POST /_sim/reset`` (both answer the counters plus ``server_pid``). Faults are chosen by API
key (see :mod:`.faults`); the headers ``x-sim-latency-ms`` and ``x-sim-chunk-delay-ms``
override the configured delays per request.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

import orjson
from granian._granian import RSGIProtocolClosed

from vectorengine.simulator import endpoints
from vectorengine.simulator.chat import answer, parse_chat
from vectorengine.simulator.config import FaultSpec, SimulatorConfig
from vectorengine.simulator.faults import FaultKeyError, abort_connection, parse_fault_key, strikes
from vectorengine.simulator.stats import NO_KEY, CallStats
from vectorengine.simulator.wire import (
    DONE,
    JSON_TYPE,
    OPENAI_VERSION,
    SSE_TYPE,
    ApiError,
    Headers,
    RSGIProtocol,
    RSGIScope,
    duration,
    number_text,
    request_id,
    sse,
)

log = logging.getLogger(__name__)

_Handler = Callable[["_Exchange", bytes], Awaitable[None]]

_NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
    "username) if you're accessing the API from your browser and are prompted for a username and "
    "password. You can obtain an API key from https://platform.openai.com/account/api-keys."
)
_BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
    "If you have trouble figuring out how to fix this, please contact us through our help center at "
    "help.openai.com.)"
)
_SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
_DROP_GRACE_S = 0.05
_IMMEDIATE = frozenset({"429", "insufficient-quota", "500", "503", "400", "401"})


def _masked(key: str) -> str:
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}" if len(key) > 8 else "***"


def _incorrect_key(key: str, detail: str = "") -> ApiError:
    return ApiError(
        401,
        f"Incorrect API key provided: {_masked(key)}. {detail}"
        "You can find your API key at https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def _server_error() -> ApiError:
    return ApiError(500, _SERVER_ERROR_MESSAGE, type="server_error")


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, _BAD_JSON_MESSAGE) from None
    if not isinstance(body, dict):
        raise ApiError(400, _BAD_JSON_MESSAGE)
    return body


def _bearer(header: Any) -> tuple[str | None, ApiError | None]:
    """The bearer key of an ``authorization`` header, or the 401 to answer instead."""
    if header is None:
        return None, ApiError(401, _NO_KEY_MESSAGE, code="invalid_api_key")
    scheme, _, token = str(header).strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return token or None, _incorrect_key(token or str(header))
    return token, None


def _delay_ms(scope: RSGIScope, header: str, default: float) -> float:
    raw = scope.headers.get(header)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ApiError(400, f"Invalid value for header '{header}': expected milliseconds >= 0, got {raw!r}.")
    return value


class _Exchange:
    """One request being answered: its key, timing and response helpers."""

    def __init__(self, app: OpenAISimulator, scope: RSGIScope, protocol: RSGIProtocol) -> None:
        self.app = app
        self.scope = scope
        self.protocol = protocol
        self.key = NO_KEY
        self.fault: FaultSpec | None = None
        self.chunk_delay_ms = app.config.chunk_delay_ms
        self.request_id = request_id()
        self.started = time.perf_counter()
        self.responded = False  # the status line is on its way; errors can no longer be sent

    def headers(
        self, content_type: str, extra: Sequence[tuple[str, str]] = (), exhausted: bool = False
    ) -> Headers:
        """OpenAI's response headers; ``extra`` ones replace those of the same name."""
        elapsed = round((time.perf_counter() - self.started) * 1000)
        base = [
            ("content-type", content_type),
            ("x-request-id", self.request_id),
            ("openai-organization", self.app.config.organization),
            ("openai-processing-ms", str(elapsed)),
            ("openai-version", OPENAI_VERSION),
            *self.app.stats.rate_limit_headers(self.key, exhausted),
        ]
        replaced = {name for name, _ in extra}
        return [*(h for h in base if h[0] not in replaced), *extra]

    def send_error(self, error: ApiError) -> None:
        self.responded = True
        exhausted = error.code == "rate_limit_exceeded"
        self.protocol.response_bytes(
            error.status, self.headers(JSON_TYPE, error.headers, exhausted), error.body()
        )

    async def send_json(self, obj: dict[str, Any]) -> None:
        body = orjson.dumps(obj)
        mode = self.fault.mode if self.fault else None
        self.responded = mode != "mid-stream-error"
        if mode == "malformed-json":
            self.protocol.response_bytes(200, self.headers(JSON_TYPE), body[: max(len(body) // 2, 1)])
        elif mode == "drop-mid-stream":
            headers = self.headers(JSON_TYPE, [("content-length", str(len(body)))])
            transport = self.protocol.response_stream(200, headers)
            await transport.send_bytes(body[: len(body) // 2])
            await self._drop()
        elif mode == "mid-stream-error":
            self.send_error(_server_error())
        else:
            self.protocol.response_bytes(200, self.headers(JSON_TYPE), body)

    async def send_events(self, events: list[bytes]) -> None:
        """Stream SSE ``events`` then ``[DONE]``, applying a stream fault if one strikes."""
        self.responded = True
        transport = self.protocol.response_stream(
            200, self.headers(SSE_TYPE, [("cache-control", "no-cache")])
        )
        strike_at = min(self.fault.after_chunks, len(events)) if self.fault else -1
        delay = self.chunk_delay_ms / 1000
        for i, event in enumerate([*events, DONE]):
            if i and delay:
                await asyncio.sleep(delay)
            if i == strike_at and self.fault is not None:
                if self.fault.mode == "drop-mid-stream":
                    await self._drop()
                    return
                if self.fault.mode == "mid-stream-error":
                    await transport.send_bytes(sse(_server_error().envelope()))
                    return
                if self.fault.mode == "malformed-json":
                    await transport.send_bytes(event[: len(event) // 2].rstrip(b"\n") + b"\n\n")
                    continue
            await transport.send_bytes(event)

    async def _drop(self) -> None:
        await asyncio.sleep(_DROP_GRACE_S)  # let Granian flush what was sent
        if not abort_connection(self.scope.client):
            log.warning(
                "drop-mid-stream: no socket found for peer %s; the response ends early instead",
                self.scope.client,
            )


class OpenAISimulator:
    """A fake OpenAI upstream as an RSGI application (``__rsgi__``)."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.stats = CallStats(self.config.rpm_limit, self.config.tpm_limit)
        self._routes: dict[str, tuple[str, _Handler]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
            "/v1/models": ("GET", self._list_models),
        }

    def __rsgi_init__(self, loop: Any) -> None:
        """Called by Granian once the worker's event loop exists; nothing to prepare."""

    def __rsgi_del__(self, loop: Any) -> None:
        """Called by Granian when the worker stops; nothing to release."""

    async def __rsgi__(self, scope: RSGIScope, protocol: RSGIProtocol) -> None:
        exchange = _Exchange(self, scope, protocol)
        try:
            if scope.path.startswith("/_sim/"):
                self._control(exchange)
            else:
                await self._serve(exchange)
        except ApiError as error:
            exchange.send_error(error)
        except RSGIProtocolClosed:
            pass  # the client went away mid-response
        except Exception:
            log.exception("simulator failure on %s %s", scope.method, scope.path)
            if not exchange.responded:
                exchange.send_error(_server_error())

    # ------------------------------------------------------------------ pipeline

    def _route(self, method: str, path: str) -> _Handler:
        handler: _Handler
        if path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            allowed, handler = "GET", self._retrieve_model
        elif path in self._routes:
            allowed, handler = self._routes[path]
        else:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        if method != allowed:
            raise ApiError(405, f"Invalid method for URL ({method} {path})", headers=[("allow", allowed)])
        return handler

    async def _serve(self, ex: _Exchange) -> None:
        scope = ex.scope
        handler = self._route(scope.method, scope.path)
        key, problem = _bearer(scope.headers.get("authorization"))
        ex.key = key or NO_KEY
        call_number = self.stats.record(ex.key, scope.path)
        if problem is not None:
            raise problem
        assert key is not None
        fault = self._fault_for(key)
        latency = _delay_ms(scope, "x-sim-latency-ms", self.config.latency_ms)
        ex.chunk_delay_ms = _delay_ms(scope, "x-sim-chunk-delay-ms", self.config.chunk_delay_ms)
        raw = await ex.protocol() if scope.method == "POST" else b""
        if latency:
            await asyncio.sleep(latency / 1000)
        if fault is not None and strikes(fault.percent, call_number):
            self.stats.record_fault(key)
            if fault.mode == "hang":
                await ex.protocol.client_disconnect()
                return
            if fault.mode == "slow-first-byte":
                await asyncio.sleep(fault.delay_ms / 1000)
            elif fault.mode in _IMMEDIATE:
                raise self._fault_error(fault, key, raw)
            else:
                ex.fault = fault
        await handler(ex, raw)

    def _fault_for(self, key: str) -> FaultSpec | None:
        configured = self.config.faults.get(key)
        if configured is not None:
            return configured
        try:
            return parse_fault_key(key)
        except FaultKeyError as exc:
            raise _incorrect_key(key, f"(Simulator: {exc}.) ") from None

    def _fault_error(self, fault: FaultSpec, key: str, raw: bytes) -> ApiError:
        retry = [
            ("retry-after", number_text(fault.retry_after_s)),
            ("retry-after-ms", str(round(fault.retry_after_s * 1000))),
        ]
        if fault.mode == "429":
            model = _model_of(raw)
            limit = self.config.rpm_limit
            message = (
                f"Rate limit reached for {model} in organization org-simulator on requests per min (RPM): "
                f"Limit {limit}, Used {limit}, Requested 1. "
                f"Please try again in {duration(fault.retry_after_s)}. "
                "Visit https://platform.openai.com/account/rate-limits to learn more."
            )
            reset = [("x-ratelimit-reset-requests", duration(fault.retry_after_s))]
            return ApiError(429, message, type="requests", code="rate_limit_exceeded", headers=retry + reset)
        if fault.mode == "insufficient-quota":
            return ApiError(
                429,
                "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                type="insufficient_quota",
                code="insufficient_quota",
            )
        if fault.mode == "503":
            return ApiError(
                503, "The server is overloaded or not ready yet.", type="server_error", headers=retry
            )
        if fault.mode == "400":
            return ApiError(
                400,
                "Invalid value: the simulator rejected this request (fault '400').",
                code="invalid_value",
            )
        if fault.mode == "401":
            return _incorrect_key(key)
        return _server_error()

    def _check_model(self, model: str) -> None:
        if self.config.strict_models and model not in self.config.models:
            raise endpoints.model_not_found(model)

    # ------------------------------------------------------------------ handlers

    async def _chat(self, ex: _Exchange, raw: bytes) -> None:
        request = parse_chat(_parse_json(raw))
        self._check_model(request.model)
        result = answer(request)
        self.stats.add_tokens(ex.key, request.prompt_tokens + result.completion_tokens)
        if request.stream:
            await ex.send_events(result.events())
        else:
            await ex.send_json(result.completion())

    async def _completions(self, ex: _Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        result, stream = endpoints.completion_answer(body)
        self._check_model(result.model)
        self.stats.add_tokens(ex.key, result.usage()["total_tokens"])
        if stream:
            await ex.send_events(result.events())
        else:
            await ex.send_json(result.completion())

    async def _embeddings(self, ex: _Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        response, tokens = endpoints.embeddings_body(body)
        self._check_model(response["model"])
        self.stats.add_tokens(ex.key, tokens)
        await ex.send_json(response)

    async def _list_models(self, ex: _Exchange, raw: bytes) -> None:
        await ex.send_json(endpoints.models_body(self.config.models))

    async def _retrieve_model(self, ex: _Exchange, raw: bytes) -> None:
        model = unquote(ex.scope.path[len("/v1/models/") :])
        if model not in self.config.models:
            raise endpoints.model_not_found(model)
        await ex.send_json(endpoints.model_object(model))

    # ------------------------------------------------------------------ control

    def _control(self, ex: _Exchange) -> None:
        method, path = ex.scope.method, ex.scope.path
        allowed = {"/_sim/stats": "GET", "/_sim/reset": "POST"}.get(path)
        if allowed is None:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        if method != allowed:
            raise ApiError(405, f"Invalid method for URL ({method} {path})", headers=[("allow", allowed)])
        if path == "/_sim/reset":
            self.stats.reset()
        ex.responded = True
        body = orjson.dumps({**self.stats.snapshot(), "server_pid": _server_pid()})
        ex.protocol.response_bytes(200, [("content-type", JSON_TYPE)], body)


def _server_pid() -> int:
    """The PID of the Granian main process (this one, or the parent of this worker process).

    Granian binds with SO_REUSEPORT, so a second server on a busy port starts without error and
    shares the traffic; a launcher compares this PID with the one it started to detect that.
    """
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getpid()


def _model_of(raw: bytes) -> str:
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else "gpt-4o"
