"""OpenAI wire format (chat, completions, embeddings, images, audio, moderations, rerank).

OpenAI in, OpenAI out: bytes pass through and are only *observed* (model, usage). A request
body is re-encoded only when it must change (the model name is mapped, or the upstream must
be asked for streamed usage the client did not request).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec
import orjson

from vectorengine.protocol import multipart
from vectorengine.protocol.usage import Usage, to_openai

# Facts about the endpoints, by path under /v1 (see Endpoint).
_STREAMING = frozenset({"/chat/completions", "/completions"})
_MULTIPART = frozenset({"/images/edits", "/audio/transcriptions", "/audio/translations"})
_NOT_ALWAYS_JSON = frozenset({"/audio/speech", "/audio/transcriptions", "/audio/translations"})
_TEXT = frozenset({"/chat/completions", "/completions", "/embeddings"})


class Endpoint(enum.Enum):
    """An OpenAI endpoint; its value is its path under ``/v1``.

    A member's facts are plain attributes, set once: the hot path reads them several times a
    request, and on CPython 3.11 an Enum property read costs 0.5-0.7 µs and an Enum's hash
    (its dict lookups) 0.2 µs, against a few tens of ns for these.
    """

    suffix: str  # the value: the path under /v1
    path: str  # the whole path, /v1/...
    streams: bool  # may answer with server-sent events
    multipart: bool  # takes a multipart form, not JSON
    json_answer: bool  # every successful answer is JSON (speech is audio; transcripts may be text)
    media: bool  # neither text generation nor embeddings

    CHAT = "/chat/completions"
    COMPLETIONS = "/completions"
    EMBEDDINGS = "/embeddings"
    IMAGES = "/images/generations"
    IMAGE_EDITS = "/images/edits"
    SPEECH = "/audio/speech"
    TRANSCRIPTIONS = "/audio/transcriptions"
    TRANSLATIONS = "/audio/translations"
    MODERATIONS = "/moderations"
    RERANK = "/rerank"  # Cohere / Jina shape, served by OpenAI-compatible hosts

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.path = "/v1" + suffix
        self.streams = suffix in _STREAMING
        self.multipart = suffix in _MULTIPART
        self.json_answer = suffix not in _NOT_ALWAYS_JSON
        self.media = suffix not in _TEXT

    __hash__ = object.__hash__  # members are singletons, equal only to themselves


_REQUIRED: dict[Endpoint, tuple[str, type | tuple[type, ...]]] = {
    Endpoint.CHAT: ("messages", list),
    Endpoint.COMPLETIONS: ("prompt", (str, list)),
    Endpoint.EMBEDDINGS: ("input", (str, list)),
    Endpoint.IMAGES: ("prompt", str),
    Endpoint.SPEECH: ("input", str),
    Endpoint.MODERATIONS: ("input", (str, list)),
    Endpoint.RERANK: ("documents", list),
}
_FILES = {Endpoint.IMAGE_EDITS: ("image", "image[]"), Endpoint.TRANSCRIPTIONS: ("file",),
          Endpoint.TRANSLATIONS: ("file",)}  # fmt: skip
DEFAULT_MODELS = {
    Endpoint.IMAGES: "dall-e-2",
    Endpoint.IMAGE_EDITS: "dall-e-2",
    Endpoint.MODERATIONS: "omni-moderation-latest",
}  # what OpenAI uses when the request names no model


class DecodeError(ValueError):
    def __init__(self, message: str, param: str | None = None, *, bad_json: bool = False) -> None:
        super().__init__(message)
        self.param = param
        self.bad_json = bad_json


class Call(msgspec.Struct):
    """What the gateway needs to know of an inbound request; the body itself passes on."""

    endpoint: Endpoint
    model: str
    stream: bool
    include_usage: bool  # the client asked for the streamed usage chunk
    body: dict[str, Any]
    raw: bytes
    # The client's protocol, and its own request bytes when that is not OpenAI's: an upstream
    # that speaks the client's protocol gets them as they are.
    protocol: str = "openai"
    native: bytes | None = None
    content_type: str | None = None  # a multipart body's (with its boundary); None: JSON
    # Why the client's request has no hub form (message, param), when only an upstream that
    # speaks the client's protocol can serve it (a Responses request with previous_response_id).
    untranslatable: tuple[str, str | None] | None = None

    def translatable(self) -> None:
        """Raise :class:`DecodeError` if the call can only pass through in its own protocol."""
        if self.untranslatable is not None:
            raise DecodeError(*self.untranslatable)


def decode(endpoint: Endpoint, raw: bytes, content_type: str | None = None) -> Call:
    if endpoint.multipart:
        return _decode_form(endpoint, raw, content_type)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"We could not parse the JSON body of your request: {exc}", bad_json=True) from None
    if not isinstance(body, dict):
        raise DecodeError("The request body must be a JSON object.", bad_json=True)
    model = body.get("model", DEFAULT_MODELS.get(endpoint))
    if not isinstance(model, str) or not model:
        raise DecodeError("you must provide a model parameter", "model")
    field, kind = _REQUIRED[endpoint]
    if field not in body:
        raise DecodeError(f"Missing required parameter: '{field}'.", field)
    if not isinstance(body[field], kind):
        raise DecodeError(f"Invalid type for '{field}'.", field)
    if endpoint is Endpoint.RERANK and not isinstance(body.get("query"), str):
        raise DecodeError("Missing required parameter: 'query'.", "query")
    if not body[field] and endpoint is Endpoint.CHAT:
        raise DecodeError("'messages' must contain at least one message.", "messages")
    if endpoint.media and (body.get("stream") is True or body.get("stream_format") == "sse"):
        raise DecodeError(f"Streaming {endpoint.path} is not supported by this gateway yet.", "stream")
    stream = body.get("stream") is True and endpoint.streams
    opts = body.get("stream_options")
    include_usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True
    return Call(endpoint, model, stream, include_usage, body, raw)


def _decode_form(endpoint: Endpoint, raw: bytes, content_type: str | None) -> Call:
    try:
        texts, files = multipart.fields(raw, content_type)
    except multipart.MultipartError as exc:
        raise DecodeError(str(exc), bad_json=True) from None
    model = texts.get("model") or DEFAULT_MODELS.get(endpoint)
    if not model:
        raise DecodeError("you must provide a model parameter", "model")
    names = _FILES[endpoint]
    if not files.intersection(names):
        raise DecodeError(f"Missing required parameter: '{names[0]}'.", names[0])
    if endpoint is Endpoint.IMAGE_EDITS and not texts.get("prompt"):
        raise DecodeError("Missing required parameter: 'prompt'.", "prompt")
    if texts.get("stream") == "true":
        raise DecodeError(f"Streaming {endpoint.path} is not supported by this gateway yet.", "stream")
    return Call(endpoint, model, False, False, dict(texts), raw, content_type=content_type)


def encode_upstream(call: Call, upstream_model: str) -> bytes:
    """The body to send upstream: the client's bytes, unless the model or usage option must change."""
    if call.content_type is not None:
        if upstream_model == call.body.get("model"):
            return call.raw
        return multipart.set_field(call.raw, call.content_type, "model", upstream_model)
    needs_usage = call.stream and not call.include_usage
    if upstream_model == call.model and not needs_usage:
        return call.raw
    body = dict(call.body)
    body["model"] = upstream_model
    if needs_usage:
        opts = body.get("stream_options")
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    return orjson.dumps(body)


def usage_from(obj: Any) -> Usage | None:
    """Usage from a response object's ``usage`` member (chat, completions or embeddings)."""
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    if "prompt_tokens" not in u and ("input_tokens" in u or "total_tokens" in u):
        return _usage_io(u)
    pd = u.get("prompt_tokens_details")
    cd = u.get("completion_tokens_details")
    return Usage(
        prompt_tokens=_int(u.get("prompt_tokens")),
        completion_tokens=_int(u.get("completion_tokens")),
        cached_tokens=_int(pd.get("cached_tokens")) if isinstance(pd, dict) else 0,
        reasoning_tokens=_int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else 0,
    )


def _usage_io(u: dict[str, Any]) -> Usage:
    """Usage named input/output (Responses, images, audio) or only a total (rerank)."""
    pd = u.get("input_tokens_details")
    cd = u.get("output_tokens_details")
    prompt = _int(u.get("input_tokens")) if "input_tokens" in u else _int(u.get("total_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_int(u.get("output_tokens")),
        cached_tokens=_int(pd.get("cached_tokens")) if isinstance(pd, dict) else 0,
        reasoning_tokens=_int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else 0,
    )


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def usage_from_body(raw: bytes | memoryview) -> tuple[Any, Usage | None]:
    """Parse a JSON response body; (parsed object or None if it is not JSON, usage)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    return obj, usage_from(obj)


def error_envelope(obj: Any) -> bool:
    """True if ``obj`` is an OpenAI error envelope ``{"error": {...}}``."""
    return isinstance(obj, dict) and isinstance(obj.get("error"), dict)


_MID_STREAM_END = b',"usage":null}\n\n'
_MID_STREAM_CUT = -len(_MID_STREAM_END)
_USAGE_NULL = (b',"usage":null', b', "usage": null', b',"usage": null')
_CONTENT_MARKERS = (b'"content":"', b'"text":"', b'"tool_calls":[', b'"reasoning_content":"', b'"refusal":"')
_EMPTY_MARKERS = (b'"content":""', b'"text":""', b'"reasoning_content":""', b'"refusal":""')


def _drop_usage_null(data: bytes) -> bytes:
    """Remove the ``"usage":null`` members OpenAI adds to chunks when usage was requested."""
    if b'"usage"' in data:
        for marker in _USAGE_NULL:
            data = data.replace(marker, b"")
    return data


class StreamObserver:
    """Watches an OpenAI SSE stream on its way to the client.

    ``feed`` takes upstream bytes and returns the bytes to forward. It records usage, the
    ``[DONE]`` terminator, an in-band error and the first content event. With ``strip_usage``
    (the gateway asked for usage the client did not), the usage chunk is removed and the
    ``"usage":null`` members OpenAI adds to the other chunks are dropped, so the client
    receives exactly what it would have without the gateway.

    Most blocks of events need no parsing at all: only a block that holds a usage object,
    ``[DONE]``, an error, or (until it has been seen) the first content is split into events.
    """

    __slots__ = ("_buf", "_steady", "content_seen", "done", "error", "strip_usage", "usage")

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self._buf = b""
        self._steady = False  # the first content has been seen and nothing is buffered
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.content_seen = False

    def feed(self, chunk: bytes | memoryview) -> bytes:
        raw = bytes(chunk)
        if (
            self._steady
            and raw.endswith(_MID_STREAM_END)
            and raw.find(b"\n") == len(raw) - 2
            and raw[8] != 0x65  # not `data: {"e…`: an error event takes the long way
        ):  # by far the commonest read: one whole mid-stream chunk as OpenAI sends it when
            # usage was asked for ("usage":null its last member); one memchr, no other scan
            return raw[:_MID_STREAM_CUT] + b"}\n\n" if self.strip_usage else raw
        if (
            self._steady
            and raw[-2:] == b"\n\n"
            and b"\r" not in raw
            and b"[DONE]" not in raw
            and b'"error"' not in raw
        ):  # the common case: whole events in the middle of the stream, nothing to observe
            if self.strip_usage:
                stripped = raw.replace(b',"usage":null', b"")
                if b'"usage"' not in stripped:
                    return stripped
            elif b'"usage":{' not in raw and b'"usage": {' not in raw:
                return raw
        out = self._split(raw)
        self._steady = self.content_seen and not self._buf
        return out

    def _split(self, raw: bytes) -> bytes:
        """The long way: complete the buffered event, then look at each whole event."""
        data = raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return b"" if self.strip_usage else raw
        complete, self._buf = buf[: end + 2], buf[end + 2 :]
        if (
            self.content_seen
            and b"[DONE]" not in complete
            and b'"error"' not in complete
            and b'"usage":{' not in complete
            and b'"usage": {' not in complete
        ):
            if not self.strip_usage:
                return raw
            return _drop_usage_null(complete)
        out = []
        for event in complete.split(b"\n\n")[:-1]:
            kept = self._observe(event)
            if kept is not None:
                out.append(kept)
                out.append(b"\n\n")
        return b"".join(out) if self.strip_usage else raw

    def tail(self) -> bytes:
        """Whatever is left unterminated at the end of the stream (forwarded as is)."""
        rest, self._buf = self._buf, b""
        self._steady = self.content_seen
        return rest if self.strip_usage else b""

    def _observe(self, event: bytes) -> bytes | None:
        """Look at one event; return it (possibly rewritten) or None to drop it."""
        if not event.startswith(b"data:"):
            return event
        payload = event[5:].lstrip()
        if payload.startswith(b"[DONE]"):
            self.done = True
            return event
        if not self.content_seen and any(m in payload for m in _CONTENT_MARKERS):
            self.content_seen = not any(m in payload for m in _EMPTY_MARKERS) or b'"tool_calls":[' in payload
        if payload.startswith(b'{"error"'):
            self._error(payload)
            return event
        if b'"usage":{' in payload or b'"usage": {' in payload:
            return self._usage_event(event, payload)
        return _drop_usage_null(event) if self.strip_usage else event

    def _usage_event(self, event: bytes, payload: bytes) -> bytes | None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        self.usage = usage_from(obj) or self.usage
        if not self.strip_usage:
            return event
        if not obj.get("choices"):
            return None  # the usage-only chunk the client did not ask for
        del obj["usage"]  # usage riding on a content chunk (some compatible servers do this)
        return b"data: " + orjson.dumps(obj)

    def _error(self, payload: bytes) -> None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if error_envelope(obj):
            self.error = obj["error"]


def leading_error(chunk: bytes | memoryview) -> dict[str, Any] | None:
    """The error object if the stream's first event is ``data: {"error": …}``."""
    head = bytes(chunk[:64]).lstrip()
    if not head.startswith(b"data:") or b'"error"' not in head:
        return None
    event = bytes(chunk).lstrip().split(b"\n\n", 1)[0]
    obj, _ = usage_from_body(event[5:].strip())
    if error_envelope(obj):
        error: dict[str, Any] = obj["error"]
        return error
    return {"message": "The upstream stream began with an error event."}


class ChunkWriter:
    """Writes OpenAI chat completion chunks for a stream translated from another format.

    With ``include_usage`` every chunk carries ``"usage": null`` and :meth:`usage_chunk` is the
    ``choices: []`` chunk OpenAI sends last, as OpenAI does when the client asked for usage.
    """

    __slots__ = ("created", "id", "include_usage", "model")
    DONE = b"data: [DONE]\n\n"

    def __init__(self, *, id: str, created: int, model: Any, include_usage: bool) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = self._object([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        if self.include_usage:
            obj["usage"] = None
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def usage_chunk(self, usage: Usage) -> bytes:
        obj = self._object([])
        obj["usage"] = to_openai(usage)
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
