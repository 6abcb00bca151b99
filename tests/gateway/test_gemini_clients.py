"""Gemini clients (google-genai, raw HTTP) at the gateway, and Anthropic's count_tokens."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import start_simulator, unique_key

KEY = "sk-gemini-clients-0123456789abcdef"
LIMITED = "sk-gemini-limited-0123456789abcdef"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    sim = start_simulator()
    channels = [
        {"name": "gpt", "type": "openai", "base_url": sim.base_url, "keys": [unique_key()],
         "models": ["gpt"], "model_map": {"gpt": "gpt-4o"}},
        {"name": "gem", "type": "gemini", "base_url": sim.root_url, "keys": [unique_key()],
         "models": ["gem"], "model_map": {"gem": "gemini-2.0-flash"}},
    ]  # fmt: skip
    tokens = [{"name": "t", "key": KEY}, {"name": "limited", "key": LIMITED, "models": ["gem"]}]
    g = start_gateway(tmp_path_factory.mktemp("gemini-clients"), {"channels": channels, "tokens": tokens})
    try:
        yield g
    finally:
        g.stop()
        sim.stop()


def client(gw: GatewayProcess, version: str = "v1beta") -> genai.Client:
    return genai.Client(api_key=KEY, http_options=gt.HttpOptions(base_url=gw.url, api_version=version))


def test_gemini_channel_is_a_pass_through(gw: GatewayProcess) -> None:
    sdk = client(gw, "v1")  # google-genai 3's default path
    answer = sdk.models.generate_content(model="gem", contents="Hello there")
    assert answer.model_version == "gemini-2.0-flash"  # the upstream's own answer, untouched
    assert '"Hello there"' in (answer.text or "")


def test_other_channels_answer_in_gemini_shapes(gw: GatewayProcess) -> None:
    sdk = client(gw)
    answer = sdk.models.generate_content(model="gpt", contents="Hello there")
    assert answer.model_version == "gpt" and answer.candidates[0].finish_reason == gt.FinishReason.STOP
    usage = answer.usage_metadata
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    chunks = list(sdk.models.generate_content_stream(model="gpt", contents="Hello there"))
    assert "".join(c.text or "" for c in chunks) == answer.text
    assert chunks[-1].candidates[0].finish_reason == gt.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == usage.total_token_count


def test_stream_without_alt_sse_is_one_json_array(gw: GatewayProcess) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    for model in ("gpt", "gem"):
        url = f"{gw.url}/v1beta/models/{model}:streamGenerateContent"
        response = httpx.post(url, json=body, params={"key": KEY}, timeout=10)  # ?key= auth
        assert response.status_code == 200, response.text
        array = response.json()
        assert isinstance(array, list) and array
        assert array[-1]["candidates"][0]["finishReason"] == "STOP"


def test_errors_use_googles_envelope(gw: GatewayProcess) -> None:
    url = f"{gw.url}/v1beta/models/gpt:generateContent"
    body = {"contents": [{"parts": [{"text": "Hi"}]}]}
    anonymous = httpx.post(url, json=body, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
    missing = httpx.post(url.replace("/gpt:", "/nope:"), json=body, headers={"x-goog-api-key": KEY})
    error = missing.json()["error"]
    assert missing.status_code == 404 and error["status"] == "NOT_FOUND" and error["code"] == 404
    broken = httpx.post(url, content=b"{nope", headers={"x-goog-api-key": KEY})
    assert broken.status_code == 400 and broken.json()["error"]["status"] == "INVALID_ARGUMENT"
    search = {**body, "tools": [{"googleSearch": {}}]}
    refused = httpx.post(url, json=search, headers={"x-goog-api-key": KEY})
    assert refused.status_code == 400 and "googleSearch" in refused.json()["error"]["message"]
    sdk = genai.Client(api_key=LIMITED, http_options=gt.HttpOptions(base_url=gw.url, api_version="v1beta"))
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.generate_content(model="gpt", contents="Hi")
    assert caught.value.code == 403 and caught.value.status == "PERMISSION_DENIED"
    bad_method = httpx.post(
        url.replace(":generateContent", ":embedContent"), json=body, headers={"x-goog-api-key": KEY}
    )
    assert bad_method.status_code == 404


def test_anthropic_count_tokens(gw: GatewayProcess) -> None:
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
    short = sdk.messages.count_tokens(model="gpt", messages=[{"role": "user", "content": "Hello there"}])
    tools = [{"name": "get_weather", "description": "Weather of a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]  # fmt: skip
    longer = sdk.messages.count_tokens(
        model="gpt", system="Be brief.", tools=tools, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    wrong = anthropic.Anthropic(base_url=gw.url, api_key="sk-wrong-0123456789", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.count_tokens(model="gpt", messages=[{"role": "user", "content": "Hi"}])
