"""The simulator's images, audio, moderations and rerank: spec shapes, determinism, errors."""

from __future__ import annotations

import io
import wave

import httpx
import openai
import orjson
import pytest

from tests.support.openapi import validate

AUDIO = ("clip.wav", b"RIFF" + bytes(3000), "audio/wav")


def test_images_match_the_spec_and_are_deterministic(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(model="gpt-image-1", prompt="a red fox", n=2)
    body = orjson.loads(raw.content)
    validate(body, "ImagesResponse")
    again = client.images.generate(model="gpt-image-1", prompt="a red fox", n=2)
    assert [d["b64_json"] for d in body["data"]] == [d.b64_json for d in again.data]
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
    dalle = client.images.generate(model="dall-e-3", prompt="a red fox")
    assert dalle.data and dalle.data[0].url and dalle.data[0].revised_prompt
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="dall-e-3", prompt="a red fox", n=2)
    assert caught.value.body["param"] == "n"  # type: ignore[index]


def test_image_edits_take_one_or_more_images(client: openai.OpenAI) -> None:
    png = ("cat.png", b"\x89PNG\r\n\x1a\n" + bytes(16), "image/png")
    one = client.images.edit(model="gpt-image-1", image=png, prompt="add a hat")
    two = client.images.edit(model="gpt-image-1", image=[png, png], prompt="add a hat")
    assert one.usage is not None and two.usage is not None
    assert two.usage.input_tokens > one.usage.input_tokens  # each input image is counted


def test_speech_is_real_audio(client: openai.OpenAI) -> None:
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there", response_format="wav")
    with wave.open(io.BytesIO(wav.content)) as w:
        assert w.getframerate() == 24_000 and w.getnframes() > 0
    mp3 = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="Hello there")
    assert mp3.headers["content-type"] == "audio/mpeg" and mp3.content.startswith(b"ID3")
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="robot", input="hi")  # type: ignore[arg-type]
    assert caught.value.body["param"] == "voice"  # type: ignore[index]


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcription_formats(http: httpx.Client, fmt: str) -> None:
    response = http.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1", "response_format": fmt}, files={"file": AUDIO}
    )
    assert response.status_code == 200
    if fmt == "json":
        validate(response.json(), "CreateTranscriptionResponseJson")
    elif fmt == "verbose_json":
        validate(response.json(), "CreateTranscriptionResponseVerboseJson")
    elif fmt == "vtt":
        assert response.text.startswith("WEBVTT")
    else:
        assert "3004-byte" in response.text
    missing = http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"other": AUDIO})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"


def test_moderation_and_rerank(client: openai.OpenAI, http: httpx.Client) -> None:
    raw = client.moderations.with_raw_response.create(input=["I will kill you", "hello"])
    body = orjson.loads(raw.content)
    validate(body, "CreateModerationResponse")
    assert [r["flagged"] for r in body["results"]] == [True, False]
    ranked = http.post(
        "/v1/rerank",
        json={
            "model": "rerank-v3",
            "query": "red fox",
            "return_documents": True,
            "documents": ["a blue whale", "a red fox", {"text": "a fox"}],
        },
    )
    results = ranked.json()["results"]
    assert [r["index"] for r in results] == [1, 2, 0] and results[0]["document"] == {"text": "a red fox"}


def test_faults_apply_to_media(simulator: object) -> None:
    from tests.support.procs import SimHandle, unique_key

    assert isinstance(simulator, SimHandle)
    sdk = openai.OpenAI(base_url=simulator.base_url, api_key=unique_key("fault-429"), max_retries=0)
    with pytest.raises(openai.RateLimitError):
        sdk.moderations.create(input="hi")
