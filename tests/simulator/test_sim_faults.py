"""One test per fault mode: status, envelope, headers, the SDK's exception, and the call counters."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.openapi import validate
from tests.support.procs import SimHandle, unique_key
from tests.support.sse import data_payloads
from vectorengine.simulator import FAULT_MODES

MESSAGES: Any = [{"role": "user", "content": "Tell me a story about a brave little robot"}]
CHAT = {"model": "gpt-4o", "messages": MESSAGES}


def covers(mode: str) -> str:
    """Marks the fault mode a test is about (see test_every_mode_has_a_test)."""
    return mode


@contextmanager
def sdk(simulator: SimHandle, key: str, **options: Any) -> Iterator[openai.OpenAI]:
    options = {"max_retries": 0, "timeout": 10, **options}
    with openai.OpenAI(base_url=simulator.base_url, api_key=key, **options) as client:
        yield client


def post(
    simulator: SimHandle, key: str, body: dict[str, Any], path: str = "/chat/completions"
) -> httpx.Response:
    return httpx.post(
        f"{simulator.base_url}{path}", json=body, headers={"authorization": f"Bearer {key}"}, timeout=10
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    envelope = response.json()
    validate(envelope, "ErrorResponse")
    error: dict[str, Any] = envelope["error"]
    return error


def assert_counted(simulator: SimHandle, key: str, calls: int, faults: int) -> None:
    stats = simulator.stats()
    assert stats["calls"].get(key) == calls
    assert stats["faults"].get(key, 0) == faults


def test_429_rate_limit(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('429')}-ra2")
    response = post(simulator, key, CHAT)
    assert response.status_code == 429
    error = error_of(response)
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded" and error["param"] is None
    assert error["message"].startswith("Rate limit reached for gpt-4o in organization ")
    assert (
        "on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in 2s."
        in error["message"]
    )
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "2000"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-request-id"].startswith("req_")
    with sdk(simulator, key) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**CHAT)
    assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
    assert info.value.type == "requests"
    assert info.value.request_id == info.value.response.headers["x-request-id"]
    assert_counted(simulator, key, calls=2, faults=2)


def test_429_percentage_and_sdk_retry(simulator: SimHandle) -> None:
    key = unique_key("fault-429-p50-ra0.2")
    statuses = [post(simulator, key, CHAT).status_code for _ in range(4)]
    assert statuses == [429, 200, 429, 200]  # deterministic: the 1st, 3rd, … calls fail
    # the SDK honours retry-after-ms (200 ms) and the retry succeeds
    with sdk(simulator, key, max_retries=1) as client:
        started = time.perf_counter()
        assert client.chat.completions.create(**CHAT).choices[0].message.content
        assert time.perf_counter() - started >= 0.2
    assert_counted(simulator, key, calls=6, faults=3)


def test_insufficient_quota(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('insufficient-quota')}")
    response = post(simulator, key, CHAT)
    assert response.status_code == 429
    error = error_of(response)
    assert error["type"] == "insufficient_quota" and error["code"] == "insufficient_quota"
    assert "exceeded your current quota" in error["message"]
    assert "retry-after" not in response.headers
    with sdk(simulator, key) as client, pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.code == "insufficient_quota"
    assert_counted(simulator, key, calls=2, faults=2)


def test_500_server_error(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('500')}")
    response = post(simulator, key, CHAT)
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "server_error"
    with sdk(simulator, key) as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(**CHAT)
    assert info.value.status_code == 500
    assert_counted(simulator, key, calls=2, faults=2)


def test_503_overloaded(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('503')}")
    response = post(simulator, key, CHAT)
    assert response.status_code == 503
    error = error_of(response)
    assert error["message"] == "The server is overloaded or not ready yet."
    assert error["type"] == "server_error"
    assert response.headers["retry-after"] == "1"
    with sdk(simulator, key) as client, pytest.raises(openai.InternalServerError) as info:
        client.models.list()
    assert info.value.status_code == 503
    assert_counted(simulator, key, calls=2, faults=2)


def test_400_bad_request(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('400')}")
    error = error_of(post(simulator, key, CHAT))
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    with sdk(simulator, key) as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**CHAT)
    assert info.value.status_code == 400 and info.value.code == "invalid_value"
    assert_counted(simulator, key, calls=2, faults=2)


def test_401_invalid_key(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('401')}")
    response = post(simulator, key, CHAT)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("Incorrect API key provided: fau")
    assert key not in error["message"]  # masked like OpenAI does
    with sdk(simulator, key) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)
    assert_counted(simulator, key, calls=2, faults=2)


def test_slow_first_byte(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('slow-first-byte')}-ms400")
    with sdk(simulator, key) as client:
        started = time.perf_counter()
        assert client.chat.completions.create(**CHAT).choices[0].finish_reason == "stop"
        assert 0.4 <= time.perf_counter() - started < 2
    with sdk(simulator, key, timeout=0.15) as impatient, pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(**CHAT)
    assert_counted(simulator, key, calls=2, faults=2)


def test_hang_until_client_gives_up(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('hang')}")
    with sdk(simulator, key, timeout=0.3) as client:
        started = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**CHAT)
        assert time.perf_counter() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{simulator.base_url}/models", headers={"authorization": f"Bearer {key}"}, timeout=0.2)
    assert_counted(simulator, key, calls=2, faults=2)
    assert post(simulator, "sk-after-hang", CHAT).status_code == 200  # the server is still fine


def _raw_exchange(simulator: SimHandle, key: str, body: dict[str, Any]) -> bytes:
    """Send one request over a bare socket and read until the server closes (or 5 s)."""
    payload = orjson.dumps(body)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    received = b""
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def test_drop_mid_stream(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('drop-mid-stream')}-n2")
    # a raw client sees the chunked body cut: no terminating 0-chunk, no [DONE]
    raw = _raw_exchange(simulator, key, {**CHAT, "stream": True})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"200 OK" in head.split(b"\r\n")[0] and b"transfer-encoding: chunked" in head.lower()
    assert b"data: " in body and b"[DONE]" not in body
    assert not body.endswith(b"0\r\n\r\n")
    # httpx reports an incomplete body, the SDK a connection error, after the first events
    with (
        httpx.stream(
            "POST",
            f"{simulator.base_url}/chat/completions",
            json={**CHAT, "stream": True},
            headers={"authorization": f"Bearer {key}"},
        ) as response,
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
    ):
        assert response.status_code == 200
        b"".join(response.iter_raw())
    received: list[Any] = []
    with sdk(simulator, key) as client, pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(**CHAT, stream=True):
            received.append(chunk)
    assert len(received) == 2
    # a JSON answer is cut too: fewer bytes than its content-length
    with sdk(simulator, key) as client, pytest.raises(openai.APIConnectionError) as info:
        client.chat.completions.create(**CHAT)
    assert "incomplete" in repr(info.value.__cause__) or "without sending complete" in repr(
        info.value.__cause__
    )
    assert_counted(simulator, key, calls=4, faults=4)


def test_malformed_json(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('malformed-json')}-n2")
    response = post(simulator, key, CHAT)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    streamed = post(simulator, key, {**CHAT, "stream": True})
    payloads = data_payloads(streamed.content)  # the framing stays intact …
    assert payloads[-1] == "[DONE]"
    bad = []
    for index, payload in enumerate(payloads[:-1]):
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError:
            bad.append(index)
    assert bad == [2]  # … but the third event's payload is not JSON
    with sdk(simulator, key) as client:
        with pytest.raises(json.JSONDecodeError):
            client.chat.completions.create(**CHAT)
        with pytest.raises(json.JSONDecodeError):
            list(client.chat.completions.create(**CHAT, stream=True))
    assert_counted(simulator, key, calls=4, faults=4)


def test_mid_stream_error(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('mid-stream-error')}")
    response = post(simulator, key, {**CHAT, "stream": True})
    assert response.status_code == 200
    payloads = data_payloads(response.content)
    assert "[DONE]" not in payloads
    events = [orjson.loads(p) for p in payloads]
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1]) and len(events) == 4
    validate(events[-1], "ErrorResponse")
    assert events[-1]["error"]["type"] == "server_error"
    received = []
    with sdk(simulator, key) as client, pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(**CHAT, stream=True):
            received.append(chunk)
    assert len(received) == 3
    assert info.value.message == "The server had an error while processing your request. Sorry about that!"
    # without streaming the same fault is a plain 500
    assert post(simulator, key, CHAT).status_code == 500
    assert_counted(simulator, key, calls=3, faults=3)


def test_context_length(simulator: SimHandle) -> None:
    key = unique_key(f"fault-{covers('context-length')}")
    error = error_of(post(simulator, key, CHAT))
    assert error == {
        "message": "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 128001 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    # a real prompt past the window is shown with its own size; with max_tokens, both parts
    long = {**CHAT, "messages": [{"role": "user", "content": "word " * 130_000}]}
    tokens = int(re.findall(r"resulted in (\d+) tokens", error_of(post(simulator, key, long))["message"])[0])
    assert tokens > 130_000
    with sdk(simulator, key) as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**CHAT, max_tokens=1000, stream=True)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == (
        "This model's maximum context length is 128000 tokens. However, you requested 128001 tokens "
        "(127001 in the messages, 1000 in the completion). Please reduce the length of the messages or "
        "completion."
    )
    # the legacy endpoints word it differently, without param and code
    legacy = error_of(
        post(simulator, key, {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}, "/completions")
    )
    assert legacy == {
        "message": "This model's maximum context length is 4097 tokens, however you requested 4098 tokens "
        "(4082 in your prompt; 16 for the completion). Please reduce your prompt; or completion length.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    embeddings = post(simulator, key, {"model": "text-embedding-3-small", "input": "hi"}, "/embeddings")
    assert embeddings.status_code == 400
    assert error_of(embeddings)["message"] == (
        "This model's maximum context length is 8192 tokens, however you requested 8193 tokens (8193 in your "
        "prompt; 0 for the completion). Please reduce your prompt; or completion length."
    )
    # listing models has no prompt: it works, and is not counted as a fault
    models = httpx.get(f"{simulator.base_url}/models", headers={"authorization": f"Bearer {key}"})
    assert models.status_code == 200
    assert_counted(simulator, key, calls=6, faults=5)
    assert simulator.statuses(key) == {400: 5, 200: 1}


def _sleep_until_phase(origin: float, window_ms: int, phase_ms: float) -> None:
    """Sleep until the simulator's window clock (``time.monotonic() - origin``) reaches ``phase_ms``
    within a window."""
    now_phase = ((time.monotonic() - origin) * 1000) % window_ms
    time.sleep(((phase_ms - now_phase) % window_ms) / 1000)


def test_window_burst_strikes_only_inside_the_window(simulator: SimHandle) -> None:
    key = unique_key("fault-503-p50-w300-ra0.1")  # fails in the first 150 ms of every 300
    origin = simulator.window_origin()
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=5) as http:
        http.get(f"{simulator.base_url}/models")  # a warm connection: arrival ≈ send time
        seen: dict[str, list[int]] = {"inside": [], "outside": []}
        for _ in range(3):
            for where, phase in (("inside", 75.0), ("outside", 225.0)):
                _sleep_until_phase(origin, 300, phase)
                seen[where].append(http.get(f"{simulator.base_url}/models").status_code)
    assert seen == {"inside": [503, 503, 503], "outside": [200, 200, 200]}
    # a spread over whole windows: about half fail, in runs, unlike the call-counter rule
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=5) as http:
        statuses = []
        started = time.monotonic()
        while time.monotonic() - started < 0.9:
            statuses.append(http.get(f"{simulator.base_url}/models").status_code)
            time.sleep(0.01)
    failed = statuses.count(503) / len(statuses)
    assert 0.3 < failed < 0.7
    runs = sum(1 for a, b in itertools.pairwise(statuses) if a != b)
    assert runs <= 8  # 3 windows: at most 2 changes each (+1 at the edges), not one per call


def test_every_mode_has_a_test() -> None:
    sources = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    covered = set(re.findall(r"covers\('([^']+)'\)", sources))
    assert covered == set(FAULT_MODES)
