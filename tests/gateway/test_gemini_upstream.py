"""OpenAI clients reaching a Gemini model through a Gemini channel (``type: gemini``).

The upstream here speaks the Gemini API's REST shapes (checked with the google-genai SDK's own
types): the model in the path, the key in ``x-goog-api-key``, SSE only with ``alt=sse``,
cumulative ``usageMetadata``, and Google's error envelope (an invalid key is a 400).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import openai
import pytest
from google.genai import types as gtypes

from tests.support.gateway import GatewayProcess, start_gateway

KEY = "sk-gemini-route-0123456789abcdef"
UPSTREAM_KEY = "AIza-test-key"


def _answer(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of an answer; the last holds the finish reason and the final usage."""
    prompt = sum(len(json.dumps(c)) // 4 for c in body["contents"])
    if body.get("tools"):
        parts: list[list[dict[str, Any]]] = [
            [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]
        ]
    else:
        parts = [[{"text": "Hello"}], [{"text": " from"}], [{"text": " Gemini."}]]
    chunks = []
    for i, p in enumerate(parts):
        cand: dict[str, Any] = {"content": {"role": "model", "parts": p}, "index": 0}
        if i == len(parts) - 1:
            cand["finishReason"] = "STOP"
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": 2 * (i + 1),
            "totalTokenCount": prompt + 2 * (i + 1),
        }
        chunk = {
            "candidates": [cand],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r",
        }
        gtypes.GenerateContentResponse.model_validate(chunk)
        chunks.append(chunk)
    return chunks


class _Upstream(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json; charset=UTF-8") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(
        self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        error = {"code": code, "message": message, "status": status, "details": details or []}
        self._send(code, json.dumps({"error": error}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Upstream.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        path, _, query = self.path.partition("?")
        model, _, method = path.removeprefix("/v1beta/models/").partition(":")
        if self.headers.get("x-goog-api-key") != UPSTREAM_KEY:
            info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            return self._error(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info]
            )
        if model == "gemini-busy":
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}
            return self._error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", [retry])
        chunks = _answer(body)
        if method == "generateContent":
            whole = {
                **chunks[-1],
                "candidates": [
                    {
                        **chunks[-1]["candidates"][0],
                        "content": {
                            "role": "model",
                            "parts": [p for c in chunks for p in c["candidates"][0]["content"]["parts"]],
                        },
                    }
                ],
            }
            return self._send(200, json.dumps(whole).encode())
        if method == "streamGenerateContent" and query == "alt=sse":
            sse = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
            return self._send(200, sse, "text/event-stream")
        return self._error(404, "NOT_FOUND", f"Unknown method {method}")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    channels = [
        {
            "name": "gem",
            "type": "gemini",
            "base_url": base,
            "keys": [UPSTREAM_KEY],
            "models": ["gemini", "gemini-busy"],
            "model_map": {"gemini": "gemini-2.5-flash"},
        },
        {
            "name": "gem-badkey",
            "type": "gemini",
            "base_url": base,
            "keys": ["wrong"],
            "models": ["gemini-badkey"],
        },
    ]
    config = {"channels": channels, "tokens": [{"name": "t", "key": KEY}], "routing": {"max_attempts": 1}}
    g = start_gateway(tmp_path_factory.mktemp("gemini-upstream"), config)
    try:
        yield g
    finally:
        g.stop()
        server.shutdown()


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=20)


def test_json_answer_and_the_request_the_upstream_got(gw: GatewayProcess) -> None:
    r = client(gw).chat.completions.create(
        model="gemini",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=40,
    )
    assert r.choices[0].message.content == "Hello from Gemini." and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 6  # the last usageMetadata
    path, headers, body = _Upstream.seen[-1]
    assert path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert headers["x-goog-api-key"] == UPSTREAM_KEY and "authorization" not in headers
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]
    assert body["generationConfig"] == {"maxOutputTokens": 40}


def test_stream_with_usage_taken_from_the_last_chunk(gw: GatewayProcess) -> None:
    chunks = list(
        client(gw).chat.completions.create(
            model="gemini",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Gemini."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6  # not 2 + 4 + 6
    assert _Upstream.seen[-1][0] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def test_streamed_tool_call_has_an_id_an_index_and_tool_calls_finish(gw: GatewayProcess) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"city": {"type": "string"}},
                },
            },
        }
    ]
    chunks = list(
        client(gw).chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": "Weather?"}], tools=tools, stream=True
        )
    )
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id
    assert calls[0].function is not None and json.loads(calls[0].function.arguments or "") == {
        "city": "Paris"
    }
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    sent = _Upstream.seen[-1][2]["tools"][0]["functionDeclarations"][0]["parameters"]
    assert "additionalProperties" not in sent  # a keyword Gemini rejects


def test_errors(gw: GatewayProcess) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        client(gw).chat.completions.create(model="gemini-busy", messages=[{"role": "user", "content": "Hi"}])
    assert limited.value.response.headers["retry-after"] == "3"  # from Google's RetryInfo
    assert limited.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as badkey:
        client(gw).chat.completions.create(
            model="gemini-badkey", messages=[{"role": "user", "content": "Hi"}]
        )
    assert badkey.value.status_code == 502  # the channel's own key was refused: not the caller's fault
