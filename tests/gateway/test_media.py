"""Images, audio, moderations and rerank through the gateway with the openai SDK (and httpx for
rerank), against the simulator: model mapping (in multipart forms too), binary and text answers
passed through, usage recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import start_simulator, unique_key

KEY = "sk-media-0123456789abcdef"
MODELS = {
    "painter": "gpt-image-1",
    "voice": "tts-1",
    "ears": "whisper-1",
    "judge": "omni-moderation-latest",
    "ranker": "rerank-v3",
    "dall-e-2": "dall-e-2",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    sim = start_simulator()
    channel = {
        "name": "media",
        "type": "openai",
        "base_url": sim.base_url,
        "keys": [unique_key()],
        "models": list(MODELS),
        "model_map": MODELS,
    }
    g = start_gateway(
        tmp_path_factory.mktemp("media"), {"channels": [channel], "tokens": [{"name": "t", "key": KEY}]}
    )
    try:
        yield g
    finally:
        g.stop()
        sim.stop()


@pytest.fixture
def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=20)


def usage_of(gw: GatewayProcess, request_id: str) -> dict[str, object]:
    with gw.admin() as admin:
        for _ in range(50):
            response = admin.get(f"/api/usage/{request_id}")
            if response.status_code == 200:
                return dict(response.json())
            time.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


def test_image_generation_maps_the_model_and_records_usage(sdk: openai.OpenAI, gw: GatewayProcess) -> None:
    raw = sdk.images.with_raw_response.generate(model="painter", prompt="a red fox", size="1024x1024")
    images = raw.parse()
    assert images.data and images.data[0].b64_json and images.usage is not None
    record = usage_of(gw, raw.headers["x-request-id"])
    assert record["upstream_model"] == "gpt-image-1" and record["model"] == "painter"
    assert record["prompt_tokens"] == images.usage.input_tokens
    default = sdk.images.generate(prompt="a red fox")  # no model: OpenAI's default, dall-e-2
    assert default.data and default.data[0].url


def test_image_edit_is_a_multipart_pass_through(sdk: openai.OpenAI, gw: GatewayProcess) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    raw = sdk.images.with_raw_response.edit(
        model="painter", image=("fox.png", png, "image/png"), prompt="add a hat"
    )
    assert raw.parse().data
    assert usage_of(gw, raw.headers["x-request-id"])["upstream_model"] == "gpt-image-1"


def test_speech_comes_back_as_audio(sdk: openai.OpenAI) -> None:
    raw = sdk.audio.speech.with_raw_response.create(
        model="voice", voice="alloy", input="Hello there", response_format="wav"
    )
    assert raw.headers["content-type"].startswith("audio/wav") and raw.content[:4] == b"RIFF"


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
@pytest.mark.parametrize("fmt", ["json", "text", "srt", "verbose_json"])
def test_transcription_formats(sdk: openai.OpenAI, gw: GatewayProcess, fmt: str) -> None:
    audio = ("clip.wav", b"RIFF" + bytes(200), "audio/wav")
    raw = sdk.audio.transcriptions.with_raw_response.create(model="ears", file=audio, response_format=fmt)  # type: ignore[call-overload]
    size = str(len(audio[1])).encode()
    assert raw.http_response.status_code == 200 and size in raw.content  # the simulator names the size
    assert usage_of(gw, raw.headers["x-request-id"])["upstream_model"] == "whisper-1"
    translated = sdk.audio.translations.create(model="ears", file=audio)
    assert translated.text


def test_moderation_and_rerank(sdk: openai.OpenAI, gw: GatewayProcess) -> None:
    flagged = sdk.moderations.create(model="judge", input="I will kill the process")
    assert flagged.results[0].flagged and flagged.results[0].categories.violence
    body = {"model": "ranker", "query": "red fox", "documents": ["a red fox", "a blue whale"], "top_n": 1}
    ranked = httpx.post(
        f"{gw.base_url}/rerank", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert ranked.status_code == 200 and ranked.json()["results"][0]["index"] == 0


def test_streaming_media_is_refused_by_name(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.speech.create(model="voice", voice="alloy", input="hi", stream_format="sse")
    assert caught.value.body["param"] == "stream"  # type: ignore[index]


def test_a_form_without_its_file_is_refused(gw: GatewayProcess) -> None:
    response = httpx.post(
        f"{gw.base_url}/audio/transcriptions",
        data={"model": "ears"},
        files={"other": ("a.wav", b"RIFF")},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
