"""Legacy completions, embeddings, models, headers and a configured (strict) simulator."""

from __future__ import annotations

import base64
import math
import re
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.openapi import validate
from tests.support.procs import SimHandle, start_simulator, unique_key
from tests.support.sse import json_chunks
from vectorengine.simulator import FaultSpec, SimulatorConfig

# --------------------------------------------------------------------------- legacy completions


def test_completion_json(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=50
    )
    body = orjson.loads(raw.content)
    validate(body, "CreateCompletionResponse")
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert "Say this is a test" in choice["text"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completion_defaults_to_16_tokens_and_lists(client: openai.OpenAI) -> None:
    long_prompt = "Once upon a time there was a very long prompt that keeps going and going"
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=[long_prompt, "Hi"], n=2)
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert completion.choices[0].finish_reason == "length"  # the legacy default max_tokens is 16
    assert completion.usage is not None and completion.usage.completion_tokens <= 4 * 16
    assert completion.choices[0].text != completion.choices[1].text  # n alternatives differ
    tokens = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=[1, 2, 3], max_tokens=100)
    assert tokens.usage is not None and tokens.usage.prompt_tokens == 3


def test_completion_stream(client: openai.OpenAI, http: httpx.Client) -> None:
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Say this is a test",
        "max_tokens": 50,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = http.post("/v1/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks = json_chunks(response.content)
    for chunk in chunks:
        validate(_with_spec_finish_reason(chunk), "CreateCompletionResponse")
        assert chunk["object"] == "text_completion"
    *text_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == len(text_chunks) - 1
    assert text_chunks[-1]["choices"][0] == {
        "text": "",
        "index": 0,
        "logprobs": None,
        "finish_reason": "stop",
    }
    streamed = "".join(c["choices"][0]["text"] for c in text_chunks)
    plain = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=50
    )
    assert streamed == plain.choices[0].text
    sdk_text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=50, stream=True
        )
    )
    assert sdk_text == streamed


def _with_spec_finish_reason(chunk: dict[str, Any]) -> dict[str, Any]:
    """The spec reuses CreateCompletionResponse for stream chunks but types ``finish_reason`` as a
    non-null string, while OpenAI streams ``null`` until the last chunk; accept exactly that."""
    choices = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]
    return {**chunk, "choices": choices}


def test_completion_requires_prompt(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"model": "gpt-3.5-turbo-instruct"})
    assert response.status_code == 400
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == "prompt"


# --------------------------------------------------------------------------- embeddings


def test_embeddings_float(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["hello world", "bonjour"], encoding_format="float"
    )
    body = orjson.loads(raw.content)
    validate(body, "CreateEmbeddingResponse")
    assert [d["index"] for d in body["data"]] == [0, 1]
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 1536 for v in vectors)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] != vectors[1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_embeddings_base64_is_sdk_default(client: openai.OpenAI, http: httpx.Client) -> None:
    raw = http.post(
        "/v1/embeddings",
        json={
            "model": "text-embedding-3-large",
            "input": "hello world",
            "encoding_format": "base64",
            "dimensions": 256,
        },
    )
    encoded = raw.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = struct.unpack("<256f", base64.b64decode(encoded))
    # the SDK asks for base64 by default and decodes it to the same floats
    sdk = client.embeddings.create(model="text-embedding-3-large", input="hello world", dimensions=256)
    assert sdk.data[0].embedding == pytest.approx(list(decoded), abs=1e-7)
    as_float = client.embeddings.create(
        model="text-embedding-3-large", input="hello world", dimensions=256, encoding_format="float"
    )
    assert as_float.data[0].embedding == pytest.approx(list(decoded), abs=1e-7)
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x").data[0].embedding) == 3072


def test_embeddings_token_inputs(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(result.data) == 2 and result.usage.prompt_tokens == 5


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "text-embedding-3-small"}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "text-embedding-3-small", "input": ""}, None),
    ],
)
def test_embeddings_errors(http: httpx.Client, body: dict[str, Any], param: str | None) -> None:
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param


# --------------------------------------------------------------------------- models and headers


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    raw = client.models.with_raw_response.list()
    body = orjson.loads(raw.content)
    validate(body, "ListModelsResponse")
    ids = [m["id"] for m in body["data"]]
    assert "gpt-4o" in ids and "text-embedding-3-small" in ids
    model = client.models.with_raw_response.retrieve("gpt-4o")
    validate(orjson.loads(model.content), "Model")
    assert model.parse().id == "gpt-4o" and model.parse().object == "model"


def test_models_retrieve_unknown(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-99")
    assert info.value.code == "model_not_found"
    response = http.get("/v1/models/gpt-99")
    validate(response.json(), "ErrorResponse")
    assert (
        response.json()["error"]["message"]
        == "The model `gpt-99` does not exist or you do not have access to it."
    )


def test_openai_response_headers(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    )
    headers = response.headers
    assert headers["content-type"] == "application/json"
    assert re.fullmatch(r"req_[0-9a-f]{32}", headers["x-request-id"])
    assert headers["openai-version"] == "2020-10-01"
    assert headers["openai-organization"]
    assert int(headers["openai-processing-ms"]) >= 0
    assert int(headers["x-ratelimit-limit-requests"]) > int(headers["x-ratelimit-remaining-requests"]) >= 0
    assert int(headers["x-ratelimit-limit-tokens"]) > int(headers["x-ratelimit-remaining-tokens"]) >= 0
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert re.fullmatch(r"(\d+ms|\d+(\.\d+)?s|\d+m\d+s)", headers[name]), headers[name]


def test_latency_header_override(simulator: SimHandle) -> None:
    headers = {"authorization": "Bearer sk-test", "x-sim-latency-ms": "300", "x-sim-chunk-delay-ms": "20"}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    started = time.perf_counter()
    with httpx.stream(
        "POST", f"{simulator.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        pieces = response.iter_raw()
        first = next(pieces)
        first_byte = time.perf_counter() - started
        rest = b"".join(pieces)
    total = time.perf_counter() - started
    assert first.startswith(b"data: ")
    assert 0.3 <= first_byte < 1.5
    chunks = json_chunks(first + rest)
    assert total - first_byte >= 0.02 * (len(chunks) - 1)


# --------------------------------------------------------------------------- a configured simulator


@pytest.fixture(scope="module")
def strict_sim() -> Iterator[SimHandle]:
    config = SimulatorConfig(
        models=("alpha", "beta-embed"),
        strict_models=True,
        latency_ms=150,
        faults={"sk-flaky": FaultSpec(mode="503", percent=50, retry_after_s=0.1)},
    )
    with start_simulator(config) as handle:
        yield handle


def test_strict_models(strict_sim: SimHandle) -> None:
    with openai.OpenAI(base_url=strict_sim.base_url, api_key="sk-test", max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()] == ["alpha", "beta-embed"]
        started = time.perf_counter()
        completion = sdk.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
        assert time.perf_counter() - started >= 0.15  # configured latency
        assert completion.model == "alpha"
        with pytest.raises(openai.NotFoundError) as info:
            sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert info.value.code == "model_not_found"
        assert isinstance(info.value.body, dict)
        assert (
            info.value.body["message"] == "The model `gpt-4o` does not exist or you do not have access to it."
        )
        with pytest.raises(openai.NotFoundError):
            sdk.embeddings.create(model="text-embedding-3-small", input="x")


def test_configured_fault_map_and_sdk_retry(strict_sim: SimHandle) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=strict_sim.base_url, api_key="sk-flaky", max_retries=0) as sdk:
        with pytest.raises(openai.InternalServerError) as info:
            sdk.chat.completions.create(model="alpha", messages=messages)  # call 1 fails (50 %)
        assert info.value.status_code == 503
        sdk.chat.completions.create(model="alpha", messages=messages)  # call 2 passes
    # with retries, the SDK waits retry-after (0.1 s) and succeeds on the next call
    with openai.OpenAI(base_url=strict_sim.base_url, api_key="sk-flaky", max_retries=1) as retrying:
        started = time.perf_counter()
        assert retrying.chat.completions.create(model="alpha", messages=messages).model == "alpha"
        assert time.perf_counter() - started >= 0.1 + 2 * 0.15
    stats = strict_sim.stats()
    assert stats["calls"]["sk-flaky"] == 4 and stats["faults"]["sk-flaky"] == 2


def test_stats_reset(strict_sim: SimHandle) -> None:
    key = unique_key()
    httpx.get(f"{strict_sim.base_url}/models", headers={"authorization": f"Bearer {key}"})
    assert strict_sim.calls(key) == 1
    strict_sim.reset()
    stats = strict_sim.stats()
    origin = stats.pop("window_origin")
    assert isinstance(origin, float) and 0 < origin <= time.monotonic()
    empty: dict[str, Any] = {"calls": {}, "faults": {}, "by_path": {}, "statuses": {}, "aborted": {}}
    empty |= {"last_abort_ms": {}, "calls_at": {}, "overrides": {}}
    assert stats == {**empty, "total": 0, "server_pid": strict_sim.pid}
    assert httpx.get(f"{strict_sim.root_url}/_sim/reset").status_code == 405
