"""Images, audio, moderations and rerank as the simulator answers them.

Pure builders: each checks the parsed request as the API does (OpenAI's messages, params and
codes) and returns the answer plus the tokens to charge. Everything is derived from the
request, so the same request gives the same bytes (ids and timestamps aside).
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import struct
import time
import wave
import zlib
from dataclasses import dataclass, field
from typing import Any

import python_multipart

from vectorengine.simulator import content
from vectorengine.simulator.wire import ApiError, invalid_type, invalid_value, missing, random_id

GPT_IMAGE = ("gpt-image-",)
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_MAGIC = {
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "opus": b"OggS\x00\x02",
    "aac": b"\xff\xf1\x50\x80",
    "flac": b"fLaC\x00\x00\x00\x22",
    "pcm": b"",
}
_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_TRIGGERS = {"violence": ("kill", "attack"), "harassment": ("idiot",), "self-harm": ("hurt myself",)}


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)  # name → (filename, bytes)


def parse_form(raw: bytes, content_type: str | None) -> Form:
    if not content_type or not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Invalid Content-Type header, expected multipart/form-data with a boundary.")
    form = Form()

    def on_field(f: Any) -> None:
        form.fields[f.field_name.decode()] = (f.value or b"").decode("utf-8", "replace")

    def on_file(f: Any) -> None:
        f.file_object.seek(0)
        name = f.field_name.decode()
        form.files.setdefault(name, []).append(((f.file_name or b"file").decode(), f.file_object.read()))

    headers = {"Content-Type": content_type.encode(), "Content-Length": str(len(raw)).encode()}
    try:
        python_multipart.parse_form(headers, io.BytesIO(raw), on_field, on_file)
    except Exception as exc:  # malformed bodies: the parser's own errors vary between releases
        raise ApiError(400, f"Could not parse multipart form: {exc}") from None
    return form


# --------------------------------------------------------------------------- images


def png(seed: str, size: int = 8) -> bytes:
    """A small valid PNG whose colour is a function of ``seed``."""
    r, g, b = hashlib.sha256(seed.encode()).digest()[:3]
    row = b"\x00" + bytes([r, g, b]) * size

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def images(body: dict[str, Any], *, edit: bool = False, image_count: int = 0) -> tuple[dict[str, Any], int]:
    """The ``ImagesResponse`` for a generation or an edit, and the tokens to charge."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise missing("prompt")
    model = str(body.get("model") or "dall-e-2")
    gpt = model.startswith(GPT_IMAGE)
    n = _int(body.get("n", 1), "n")
    if not 1 <= n <= 10:
        raise ApiError(
            400, f"Invalid 'n': must be between 1 and 10, got {n}.", param="n", code="invalid_value"
        )
    if model == "dall-e-3" and n != 1:
        raise invalid_value("n", "You must provide n=1 for this model.")
    fmt = body.get("response_format")
    if gpt and fmt is not None:
        raise ApiError(
            400, "Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter"
        )
    if fmt not in (None, "url", "b64_json"):
        raise invalid_value(
            "response_format", f"Invalid value: '{fmt}'. Supported values are: 'url' and 'b64_json'."
        )
    size = str(body.get("size") or "1024x1024")
    data = []
    for i in range(n):
        item: dict[str, Any] = {}
        seed = f"{model}|{prompt}|{i}|{image_count}"
        if gpt or fmt == "b64_json":
            item["b64_json"] = base64.b64encode(png(seed)).decode()
        else:
            item["url"] = f"https://simulator.invalid/images/{hashlib.sha1(seed.encode()).hexdigest()}.png"
        if model == "dall-e-3":
            item["revised_prompt"] = f"A detailed rendering of: {prompt}"
        data.append(item)
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    text_tokens = content.count_tokens(prompt)
    if not gpt:
        return answer, text_tokens
    image_tokens = 323 * image_count  # input images of an edit
    output = 272 * n
    answer.update(
        {
            "background": "opaque",
            "output_format": str(body.get("output_format") or "png"),
            "size": size,
            "quality": str(body.get("quality") or "medium"),
            "usage": {
                "input_tokens": text_tokens + image_tokens,
                "output_tokens": output,
                "total_tokens": text_tokens + image_tokens + output,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            },
        }
    )
    return answer, text_tokens + image_tokens + output


def image_edit(form: Form) -> tuple[dict[str, Any], int]:
    pictures = form.files.get("image", []) + form.files.get("image[]", [])
    if not pictures:
        raise missing("image")
    return images(dict(form.fields), edit=True, image_count=len(pictures))


# --------------------------------------------------------------------------- audio


def speech(body: dict[str, Any]) -> tuple[str, bytes, int]:
    """(content type, audio bytes, characters charged) for ``/v1/audio/speech``."""
    text = body.get("input")
    if not isinstance(text, str):
        raise missing("input")
    if len(text) > 4096:
        raise ApiError(
            400,
            "string too long. Expected a string with maximum length 4096, but got a string with "
            f"length {len(text)} instead.",
            param="input",
            code="string_above_max_length",
        )
    for name in ("model", "voice"):
        if not isinstance(body.get(name), str):
            raise missing(name)
    if body["voice"] not in VOICES:
        raise invalid_value(
            "voice", f"Invalid value: '{body['voice']}'. Supported values are: {', '.join(VOICES)}."
        )
    fmt = body.get("response_format", "mp3")
    if fmt not in AUDIO_TYPES:
        raise invalid_value(
            "response_format", f"Invalid value: '{fmt}'. Supported values are: {', '.join(AUDIO_TYPES)}."
        )
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        raise invalid_value("speed", "Invalid 'speed': must be between 0.25 and 4.0.")
    samples = int(24_000 * _seconds(text) / speed)
    if fmt == "wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(24_000)
            w.writeframes(b"\x00\x00" * samples)
        audio = out.getvalue()
    else:
        noise = hashlib.sha256(text.encode()).digest()
        audio = _MAGIC[str(fmt)] + noise * max(1, samples // 400)
    return AUDIO_TYPES[str(fmt)], audio, len(text)


def _seconds(text: str) -> float:
    return round(max(0.5, len(text) / 15), 2)  # about 15 characters a second


def transcription(form: Form, *, translate: bool) -> tuple[str, bytes, int]:
    """(content type, body, tokens charged) for a transcription or translation."""
    files = form.files.get("file")
    if not files:
        raise missing("file")
    model = form.fields.get("model")
    if not model:
        raise missing("model")
    name, audio = files[0]
    fmt = form.fields.get("response_format", "json")
    formats = ("json", "text", "srt", "verbose_json", "vtt")
    if fmt not in formats or (model.startswith("gpt-4o") and fmt not in ("json", "text")):
        allowed = formats if not model.startswith("gpt-4o") else ("json", "text")
        raise invalid_value(
            "response_format",
            f"response_format '{fmt}' is not compatible with model '{model}'. "
            f"Use one of: {', '.join(allowed)}.",
        )
    verb = "translation into English" if translate else "transcript"
    text = f"Simulated {verb} of a {len(audio)}-byte audio file named {name}."
    seconds = max(1.0, round(len(audio) / 16_000, 2))
    tokens = content.count_tokens(text)
    if fmt == "text":
        return "text/plain; charset=utf-8", (text + "\n").encode(), tokens
    if fmt in ("srt", "vtt"):
        end = f"00:00:{min(seconds, 59):06.3f}"
        if fmt == "srt":
            body = f"1\n00:00:00,000 --> {end.replace('.', ',')}\n{text}\n\n"
        else:
            body = f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n\n"
        return "text/plain; charset=utf-8", body.encode(), tokens
    usage: dict[str, Any]
    if model.startswith("gpt-4o"):
        audio_tokens = math.ceil(seconds * 10)
        usage = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "output_tokens": tokens,
            "total_tokens": audio_tokens + tokens,
            "input_tokens_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
        }
    else:
        usage = {"type": "duration", "seconds": math.ceil(seconds)}
    answer: dict[str, Any] = {"text": text}
    if not translate:
        answer["usage"] = usage
    if fmt == "verbose_json":
        answer = {
            "task": "translate" if translate else "transcribe",
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [
                {
                    "id": 0,
                    "seek": 0,
                    "start": 0.0,
                    "end": seconds,
                    "text": text,
                    "tokens": list(range(50364, 50364 + tokens)),
                    "temperature": 0.0,
                    "avg_logprob": -0.2,
                    "compression_ratio": 1.2,
                    "no_speech_prob": 0.01,
                }
            ],
            **({} if translate else {"usage": usage}),
        }
    return "application/json", _json(answer), tokens


# --------------------------------------------------------------------------- moderations, rerank


def moderation(body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("input")
    if raw is None:
        raise missing("input")
    inputs: list[Any] = raw if isinstance(raw, list) else [raw]
    model = str(body.get("model") or "omni-moderation-latest")
    if model == "omni-moderation-latest":
        model = "omni-moderation-2024-09-26"
    results = []
    for i, item in enumerate(inputs):
        if isinstance(item, dict):
            kind = "image" if item.get("type") == "image_url" else "text"
            text = str(item.get("text") or "")
        elif isinstance(item, str):
            kind, text = "text", item
        else:
            raise invalid_type(f"input[{i}]", "a string or an object", item)
        lowered = text.lower()
        flags = {c: any(w in lowered for w in _TRIGGERS.get(c, ())) for c in _CATEGORIES}
        scores = {c: (0.91 if flags[c] else round(0.0001 + 0.0001 * (len(text) % 7), 6)) for c in _CATEGORIES}
        applied = {
            c: [kind] if kind == "text" or c in ("violence", "sexual", "self-harm") else []
            for c in _CATEGORIES
        }
        results.append(
            {
                "flagged": any(flags.values()),
                "categories": flags,
                "category_scores": scores,
                "category_applied_input_types": applied,
            }
        )
    return {"id": random_id("modr-", 24), "model": model, "results": results}


def rerank(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    query = body.get("query")
    if not isinstance(query, str):
        raise missing("query")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise missing("documents")
    texts = [d if isinstance(d, str) else str((d or {}).get("text", "")) for d in documents]
    words = set(query.lower().split())
    scores = [len(words & set(t.lower().split())) / max(len(words), 1) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        order = order[:top_n]
    results = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": round(scores[i], 6)}
        if body.get("return_documents"):
            result["document"] = {"text": texts[i]}
        results.append(result)
    tokens = content.count_tokens(query) + sum(content.count_tokens(t) for t in texts)
    answer = {
        "id": random_id("", 32),
        "results": results,
        "meta": {"billed_units": {"search_units": 1}},
        "usage": {"total_tokens": tokens},
    }
    return answer, tokens


def _int(value: Any, name: str) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)  # form fields arrive as text
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(name, "an integer", value)
    return value


def _json(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj)
