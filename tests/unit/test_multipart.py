"""Multipart forms: reading the fields, and mapping the model without touching anything else."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vectorengine.protocol import multipart
from vectorengine.protocol import openai as wire


def form(data: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A body encoded by httpx, as the openai SDK sends it."""
    request = httpx.Request("POST", "http://x/v1/audio/transcriptions", data=data, files=files)
    return request.read(), request.headers["content-type"]


def test_fields_and_file_names() -> None:
    raw, ctype = form(
        {"model": "whisper-1", "language": "fr"}, {"file": ("a.wav", b"RIFF\x00\x01", "audio/wav")}
    )
    texts, files = multipart.fields(raw, ctype)
    assert texts == {"model": "whisper-1", "language": "fr"} and files == {"file"}


@settings(max_examples=60, deadline=None)
@given(
    audio=st.binary(max_size=2000),
    model=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=40),
    prompt=st.text(max_size=100),
)
def test_set_field_changes_only_the_model(audio: bytes, model: str, prompt: str) -> None:
    raw, ctype = form({"model": "whisper-1", "prompt": prompt}, {"file": ("clip.mp3", audio, "audio/mpeg")})
    edited = multipart.set_field(raw, ctype, "model", model)
    texts, files = multipart.fields(edited, ctype)
    assert texts["model"] == model and texts["prompt"] == prompt
    assert files == {"file"} and audio in edited  # the file's bytes are untouched
    assert len(edited) - len(raw) == len(model.encode()) - len(b"whisper-1")


def test_set_field_adds_a_missing_field() -> None:
    raw, ctype = form({"prompt": "a cat"}, {"image": ("cat.png", b"\x89PNG....", "image/png")})
    edited = multipart.set_field(raw, ctype, "model", "gpt-image-1")
    texts, files = multipart.fields(edited, ctype)
    assert texts == {"prompt": "a cat", "model": "gpt-image-1"} and files == {"image"}


def test_decode_needs_the_file_and_a_boundary() -> None:
    raw, ctype = form({"model": "whisper-1"}, {"file": ("a.wav", b"RIFF", "audio/wav")})
    call = wire.decode(wire.Endpoint.TRANSCRIPTIONS, raw, ctype)
    assert call.model == "whisper-1" and call.content_type == ctype and call.raw == raw
    no_file, ctype2 = form({"model": "whisper-1"}, {"other": ("a.wav", b"RIFF", "audio/wav")})
    with pytest.raises(wire.DecodeError) as caught:
        wire.decode(wire.Endpoint.TRANSCRIPTIONS, no_file, ctype2)
    assert caught.value.param == "file"
    with pytest.raises(wire.DecodeError) as caught:
        wire.decode(wire.Endpoint.TRANSCRIPTIONS, raw, "application/json")
    assert caught.value.bad_json
    edits, ctype3 = form({"model": "dall-e-2"}, {"image": ("c.png", b"\x89PNG", "image/png")})
    with pytest.raises(wire.DecodeError) as caught:
        wire.decode(wire.Endpoint.IMAGE_EDITS, edits, ctype3)
    assert caught.value.param == "prompt"


def test_json_media_requests() -> None:
    call = wire.decode(wire.Endpoint.IMAGES, b'{"prompt": "a cat"}')
    assert call.model == "dall-e-2" and not call.stream  # OpenAI's default model
    assert wire.decode(wire.Endpoint.MODERATIONS, b'{"input": "hi"}').model == "omni-moderation-latest"
    with pytest.raises(wire.DecodeError) as caught:
        wire.decode(wire.Endpoint.SPEECH, b'{"model": "tts-1", "input": "hi", "stream_format": "sse"}')
    assert caught.value.param == "stream"
    with pytest.raises(wire.DecodeError) as caught:
        wire.decode(wire.Endpoint.RERANK, b'{"model": "rerank-v3", "documents": ["a"]}')
    assert caught.value.param == "query"


def test_usage_of_media_answers() -> None:
    details = {"text_tokens": 50, "image_tokens": 0}
    usage_obj = {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210}
    usage_obj["input_tokens_details"] = details
    images = {"created": 1, "data": [], "usage": usage_obj}
    usage = wire.usage_from(images)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (50, 4160)
    rerank = wire.usage_from({"results": [], "usage": {"total_tokens": 31}})
    assert rerank is not None and (rerank.prompt_tokens, rerank.completion_tokens) == (31, 0)


def test_token_estimate_is_near_o200k() -> None:
    from vectorengine.tokencount import count_chat, count_text

    # o200k_base encodes this sentence, repeated 100 times, as 901 tokens (measured with bpe-openai)
    assert abs(count_text("Hello there, how are you doing today? " * 100) - 901) <= 90
    short = count_chat({"messages": [{"role": "user", "content": "Hello there"}]})
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    longer = count_chat({"messages": [{"role": "user", "content": "Hello there"}], "tools": tools})
    assert 0 < short < longer
