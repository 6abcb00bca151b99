"""The OpenAI simulator: an RSGI application faithful to the OpenAI REST API's wire format.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``,
``POST /v1/responses`` and ``GET /v1/responses/{id}`` (:mod:`.responses`), images, audio,
moderations and rerank (:mod:`.media`), ``GET /v1/models``, ``GET /v1/models/{id}``. Control
routes: ``GET /_sim/stats`` and ``POST /_sim/reset`` (both answer the counters plus
``server_pid``; reset also drops the overrides), and ``GET``/``PUT``/``DELETE
/_sim/keys/{key}`` to read, override or restore a key's fault at runtime. The same port also
speaks Anthropic (``/v1/messages``), Gemini (``/v1beta/models/{m}:generateContent`` …) and
Azure OpenAI (``/openai/deployments/{d}/…``); :mod:`.dialects` holds what differs. The balance
endpoints of DeepSeek, Moonshot, OpenRouter and SiliconFlow are :mod:`.balance`'s, with the
control route ``GET``/``PUT``/``DELETE /_sim/balances/{key}``. Faults are
chosen by API key (see :mod:`.faults` and :mod:`.keys`); the headers ``x-sim-latency-ms`` and
``x-sim-chunk-delay-ms`` override the configured delays per request.

Every wait before or between parts of a response races Granian's ``client_disconnect()``, so
a client that goes away is noticed at once and counted in the stats (``aborted``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import orjson
from granian._granian import RSGIProtocolClosed

from vectorengine.simulator import balance, dialects, endpoints, media, responses
from vectorengine.simulator.cache import PromptCache
from vectorengine.simulator.chat import (
    answer,
    cache_segments,
    cached_share,
    context_length_exceeded,
    parse_chat,
)
from vectorengine.simulator.config import FaultSpec, SimulatorConfig
from vectorengine.simulator.dialects import Dialect
from vectorengine.simulator.exchange import ClientGone, Exchange, server_error
from vectorengine.simulator.faults import SPEC_HELP, FaultKeyError, parse_fault_spec
from vectorengine.simulator.keys import KeyFaults
from vectorengine.simulator.ratelimit import Rejection
from vectorengine.simulator.responses import ResponseStore
from vectorengine.simulator.stats import NO_KEY, CallStats
from vectorengine.simulator.wire import (
    JSON_TYPE,
    ApiError,
    RSGIProtocol,
    RSGIScope,
    duration,
    number_text,
)

log = logging.getLogger(__name__)

_Handler = Callable[["Exchange", bytes], Awaitable[None]]
_TooLong = Callable[[], ApiError]

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
_RATE_LIMITS_URL = "https://platform.openai.com/account/rate-limits"
_ORGANIZATION_ID = "org-simulator"  # as named in rate-limit messages
_IMMEDIATE = frozenset({"429", "insufficient-quota", "500", "503", "400", "401"})
_KEYS_PATH = "/_sim/keys/"


def _masked(key: str) -> str:
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}" if len(key) > 8 else "***"


def _incorrect_key(key: str, detail: str = "") -> ApiError:
    return ApiError(
        401,
        f"Incorrect API key provided: {_masked(key)}. {detail}"
        "You can find your API key at https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


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


class OpenAISimulator:
    """A fake OpenAI upstream as an RSGI application (``__rsgi__``)."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.stats = CallStats(self.config.rpm_limit, self.config.tpm_limit)
        self.keys = KeyFaults(self.config)
        self.prompt_cache = PromptCache()  # prompt prefixes seen, for Anthropic and Gemini caching
        self.responses = ResponseStore()  # stored Responses API answers
        self.balances = balance.KeyBalances(self.config)  # what the balance endpoints report
        self._routes: dict[str, tuple[str, _Handler]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
            "/v1/models": ("GET", self._list_models),
            "/v1/responses": ("POST", self._responses),
            "/v1/images/generations": ("POST", self._images),
            "/v1/images/edits": ("POST", self._image_edits),
            "/v1/audio/speech": ("POST", self._speech),
            "/v1/audio/transcriptions": ("POST", self._transcriptions),
            "/v1/audio/translations": ("POST", self._translations),
            "/v1/moderations": ("POST", self._moderations),
            "/v1/rerank": ("POST", self._rerank),
        }

    def __rsgi_init__(self, loop: Any) -> None:
        """Called by Granian once the worker's event loop exists; nothing to prepare."""

    def __rsgi_del__(self, loop: Any) -> None:
        """Called by Granian when the worker stops; nothing to release."""

    async def __rsgi__(self, scope: RSGIScope, protocol: RSGIProtocol) -> None:
        exchange = Exchange(self, scope, protocol)
        try:
            if scope.path.startswith("/_sim/"):
                await self._control(exchange)
            elif scope.path in balance.PATHS:
                await balance.serve(exchange)
            else:
                await self._serve(exchange)
        except ApiError as error:
            exchange.send_error(error)
        except (ClientGone, RSGIProtocolClosed):  # the client went away before the end
            if exchange.counted:
                self.stats.record_abort(exchange.key)
        except Exception:
            log.exception("simulator failure on %s %s", scope.method, scope.path)
            if not exchange.responded:
                exchange.send_error(server_error())
        finally:
            exchange.close()

    # ------------------------------------------------------------------ pipeline

    def _route(self, method: str, path: str) -> tuple[_Handler, Dialect]:
        handler: _Handler
        dialect: Dialect = "openai"
        other = dialects.route(path, self._routes)
        if other is not None:
            allowed, handler, dialect = other
        elif path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            allowed, handler = "GET", self._retrieve_model
        elif path.startswith("/v1/responses/") and len(path) > len("/v1/responses/"):
            allowed, handler = "GET", self._retrieve_response
        elif path in self._routes:
            allowed, handler = self._routes[path]
        else:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        if method != allowed:
            raise ApiError(405, f"Invalid method for URL ({method} {path})", headers=[("allow", allowed)])
        return handler, dialect

    async def _serve(self, ex: Exchange) -> None:
        scope = ex.scope
        handler, ex.dialect = self._route(scope.method, scope.path)
        if ex.dialect == "openai":
            key, problem = _bearer(scope.headers.get("authorization"))
        else:
            key, problem = dialects.api_key(ex.dialect, scope)
        ex.key = key or NO_KEY
        call_number = self.stats.record(ex.key, scope.path)
        ex.counted = True
        if problem is not None:
            raise problem
        assert key is not None
        fault = self._fault_for(key)
        if fault is not None and fault.mode == "ratelimit":
            ex.limiter = self.keys.limiter(key, fault)  # its headers on every answer; see _admit
        latency = _delay_ms(scope, "x-sim-latency-ms", self.config.latency_ms)
        ex.chunk_delay_ms = _delay_ms(scope, "x-sim-chunk-delay-ms", self.config.chunk_delay_ms)
        raw = await ex.protocol() if scope.method == "POST" else b""
        if latency:
            await ex.pause(latency / 1000)
        if fault is not None and fault.mode != "ratelimit":
            await self._strike(ex, fault, call_number, raw)
        await handler(ex, raw)

    async def _strike(self, ex: Exchange, fault: FaultSpec, call_number: int, raw: bytes) -> None:
        """Apply ``fault`` if it strikes this call: wait, raise its error, or leave it to the
        handler (stream faults, ``context-length``)."""
        if not self.keys.strikes(ex.key, fault, call_number, ex.arrived):
            return
        if fault.mode != "context-length":  # counted where it applies (not to the models routes)
            self.stats.record_fault(ex.key)
        if fault.mode == "hang":
            await ex.pause(None)  # until the client gives up: ClientGone
        elif fault.mode == "slow-first-byte":
            await ex.pause(fault.delay_ms / 1000)
        elif fault.mode in _IMMEDIATE:
            raise self._fault_error(fault, ex.key, raw)
        else:
            ex.fault = fault

    def _fault_for(self, key: str) -> FaultSpec | None:
        try:
            return self.keys.fault_for(key)
        except FaultKeyError as exc:
            raise _incorrect_key(key, f"(Simulator: {exc}.) ") from None

    def _admit(self, ex: Exchange, model: str, prompt_tokens: int, too_long: _TooLong | None = None) -> None:
        """The faults that need the parsed request: ``context-length`` (``too_long`` builds its
        error; ``None`` where it does not apply) and the buckets of a ``ratelimit`` key."""
        if too_long is not None and ex.fault is not None and ex.fault.mode == "context-length":
            self.stats.record_fault(ex.key)
            raise too_long()
        if ex.limiter is not None:
            rejection = ex.limiter.admit(prompt_tokens)
            if rejection is not None:
                self.stats.record_fault(ex.key)
                raise _rate_limited(rejection, model)

    def _fault_error(self, fault: FaultSpec, key: str, raw: bytes) -> ApiError:
        retry = [
            ("retry-after", number_text(fault.retry_after_s)),
            ("retry-after-ms", str(round(fault.retry_after_s * 1000))),
        ]
        if fault.mode == "429":
            model = _model_of(raw)
            limit = self.config.rpm_limit
            message = (
                f"Rate limit reached for {model} in organization {_ORGANIZATION_ID} on requests per min "
                f"(RPM): Limit {limit}, Used {limit}, Requested 1. "
                f"Please try again in {duration(fault.retry_after_s)}. "
                f"Visit {_RATE_LIMITS_URL} to learn more."
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
        return server_error()

    def _check_model(self, model: str) -> None:
        if self.config.strict_models and model not in self.config.models:
            raise endpoints.model_not_found(model)

    # ------------------------------------------------------------------ handlers

    async def _chat(self, ex: Exchange, raw: bytes) -> None:
        request = parse_chat(_parse_json(raw))
        self._check_model(request.model)
        self._admit(ex, request.model, request.prompt_tokens, lambda: context_length_exceeded(request))
        segments = cache_segments(request)
        cached = cached_share(self.prompt_cache.longest_hit(segments))
        self.prompt_cache.remember(segments)
        result = answer(dataclasses.replace(request, cached_tokens=cached))
        ex.use_tokens(request.prompt_tokens + result.completion_tokens)
        if request.stream:
            await ex.send_events(result.events())
        else:
            await ex.send_json(result.completion())

    async def _completions(self, ex: Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        result, stream = endpoints.completion_answer(body)
        self._check_model(result.model)
        self._admit(ex, result.model, result.prompt_tokens, lambda: endpoints.completion_too_long(result))
        ex.use_tokens(result.usage()["total_tokens"])
        if stream:
            await ex.send_events(result.events())
        else:
            await ex.send_json(result.completion())

    async def _embeddings(self, ex: Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        response, tokens = endpoints.embeddings_body(body)
        self._check_model(response["model"])
        self._admit(ex, response["model"], tokens, lambda: endpoints.embeddings_too_long(tokens))
        ex.use_tokens(tokens)
        await ex.send_json(response)

    async def _list_models(self, ex: Exchange, raw: bytes) -> None:
        self._admit(ex, self.config.models[0] if self.config.models else "gpt-4o", 0)
        await ex.send_json(endpoints.models_body(self.config.models))

    async def _retrieve_model(self, ex: Exchange, raw: bytes) -> None:
        model = unquote(ex.scope.path[len("/v1/models/") :])
        self._admit(ex, model, 0)
        if model not in self.config.models:
            raise endpoints.model_not_found(model)
        await ex.send_json(endpoints.model_object(model))

    # ------------------------------------------------------------------ media

    def _form(self, ex: Exchange, raw: bytes) -> media.Form:
        return media.parse_form(raw, ex.scope.headers.get("content-type"))

    async def _images(self, ex: Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        self._check_model(str(body.get("model") or "dall-e-2"))
        self._admit(ex, str(body.get("model") or "dall-e-2"), 0)
        answer, tokens = media.images(body)
        ex.use_tokens(tokens)
        await ex.send_json(answer)

    async def _image_edits(self, ex: Exchange, raw: bytes) -> None:
        form = self._form(ex, raw)
        self._admit(ex, form.fields.get("model") or "dall-e-2", 0)
        answer, tokens = media.image_edit(form)
        ex.use_tokens(tokens)
        await ex.send_json(answer)

    async def _speech(self, ex: Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        self._admit(ex, str(body.get("model") or "tts-1"), 0)
        content_type, audio, units = media.speech(body)
        ex.use_tokens(units)
        ex.send_body(content_type, audio)

    async def _transcriptions(self, ex: Exchange, raw: bytes, translate: bool = False) -> None:
        form = self._form(ex, raw)
        self._admit(ex, form.fields.get("model") or "whisper-1", 0)
        content_type, body, tokens = media.transcription(form, translate=translate)
        ex.use_tokens(tokens)
        ex.send_body(content_type, body)

    async def _translations(self, ex: Exchange, raw: bytes) -> None:
        await self._transcriptions(ex, raw, translate=True)

    async def _moderations(self, ex: Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        self._admit(ex, str(body.get("model") or "omni-moderation-latest"), 0)
        await ex.send_json(media.moderation(body))

    async def _rerank(self, ex: Exchange, raw: bytes) -> None:
        body = _parse_json(raw)
        self._admit(ex, str(body.get("model") or "rerank"), 0)
        answer, tokens = media.rerank(body)
        ex.use_tokens(tokens)
        await ex.send_json(answer)

    # ------------------------------------------------------------------ responses

    async def _responses(self, ex: Exchange, raw: bytes) -> None:
        request = responses.parse(_parse_json(raw), self.responses)
        chat = request.chat
        self._check_model(chat.model)
        self._admit(ex, chat.model, chat.prompt_tokens, lambda: context_length_exceeded(chat))
        segments = cache_segments(chat)
        cached = cached_share(self.prompt_cache.longest_hit(segments))
        self.prompt_cache.remember(segments)
        request.chat = dataclasses.replace(chat, cached_tokens=cached)
        result = responses.reply(request, self.responses)
        ex.use_tokens(chat.prompt_tokens + result.usage()["output_tokens"])
        if chat.stream:
            await ex.send_events(result.events(), done=False)  # typed events end the stream
        else:
            await ex.send_json(result.response())

    async def _retrieve_response(self, ex: Exchange, raw: bytes) -> None:
        response_id = unquote(ex.scope.path[len("/v1/responses/") :])
        stored = self.responses.get(response_id)
        if stored is None:
            raise responses.not_found(response_id)
        await ex.send_json(stored[0])

    # ------------------------------------------------------------------ control

    async def _control(self, ex: Exchange) -> None:
        method, path = ex.scope.method, ex.scope.path
        if any(path.startswith(p) and len(path) > len(p) for p in (_KEYS_PATH, balance.CONTROL_PREFIX)):
            allowed = "GET, PUT, DELETE"
        else:
            allowed = {"/_sim/stats": "GET", "/_sim/reset": "POST"}.get(path, "")
        if not allowed:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        if method not in allowed.split(", "):
            raise ApiError(405, f"Invalid method for URL ({method} {path})", headers=[("allow", allowed)])
        if path.startswith(balance.CONTROL_PREFIX):
            balance.control(ex, await ex.protocol() if method == "PUT" else b"")
            return
        if path.startswith(_KEYS_PATH):
            key = unquote(path[len(_KEYS_PATH) :])
            if method == "PUT":
                self.keys.override(key, _override_of(await ex.protocol()), self.stats.calls(key))
            elif method == "DELETE":
                self.keys.clear(key, self.stats.calls(key))
            answer_body: dict[str, Any] = self.keys.state(key)
        else:
            if path == "/_sim/reset":
                self.stats.reset()
                self.keys.reset()
                self.prompt_cache.clear()
                self.responses.clear()
                self.balances.reset()
            answer_body = {
                **self.stats.snapshot(),
                "overrides": self.keys.overrides(),
                "window_origin": self.keys.origin,
                "server_pid": _server_pid(),
            }
        ex.responded = True
        ex.protocol.response_bytes(200, [("content-type", JSON_TYPE)], orjson.dumps(answer_body))


def _override_of(raw: bytes) -> FaultSpec | None:
    """The fault of a ``PUT /_sim/keys/{key}`` body ``{"fault": "<spec>" | null}``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or "fault" not in body:
        raise ApiError(
            400,
            f'Expected a JSON body {{"fault": <spec> or null}}, where <spec> is {SPEC_HELP}.',
            param="fault",
        )
    spec = body["fault"]
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise ApiError(
            400,
            f"Invalid 'fault': expected a string or null, where a string is {SPEC_HELP}.",
            param="fault",
            code="invalid_type",
        )
    try:
        return parse_fault_spec(spec)
    except FaultKeyError as exc:
        raise ApiError(
            400,
            f"Invalid 'fault': {exc}. A fault spec is {SPEC_HELP}; null makes the key healthy.",
            param="fault",
            code="invalid_value",
        ) from None


def _rate_limited(rejection: Rejection, model: str) -> ApiError:
    """OpenAI's 429 for a request over the key's requests- or tokens-per-minute limit."""
    unit = "requests per min (RPM)" if rejection.kind == "requests" else "tokens per min (TPM)"
    where = f"{model} in organization {_ORGANIZATION_ID} on {unit}"
    if math.isinf(rejection.wait_s):
        message = (
            f"Request too large for {where}: Limit {rejection.limit}, Requested {rejection.requested}. "
            f"The input or output tokens must be reduced in order to run successfully. "
            f"Visit {_RATE_LIMITS_URL} to learn more."
        )
        return ApiError(429, message, type=rejection.kind, code="rate_limit_exceeded")
    message = (
        f"Rate limit reached for {where}: Limit {rejection.limit}, Used {rejection.used}, "
        f"Requested {rejection.requested}. Please try again in {duration(rejection.wait_s)}. "
        f"Visit {_RATE_LIMITS_URL} to learn more."
    )
    retry = [
        ("retry-after", str(max(1, math.ceil(rejection.wait_s)))),
        ("retry-after-ms", str(max(1, math.ceil(rejection.wait_s * 1000)))),
    ]
    return ApiError(429, message, type=rejection.kind, code="rate_limit_exceeded", headers=retry)


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
