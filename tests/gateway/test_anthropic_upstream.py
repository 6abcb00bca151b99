"""OpenAI clients reaching a Claude model through an Anthropic channel (``type: anthropic``).

The upstream here replays streams recorded from the real Messages API
(``shared/specs/fixtures/anthropic``) and answers JSON and errors in Anthropic's documented
shapes, checking the headers and the required fields as the API does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import anthropic
import openai
import pytest

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.openapi import specs_dir

KEY = "sk-anthropic-route-0123456789abcdef"
UPSTREAM_KEY = "sk-ant-test-key"
FIXTURES = specs_dir() / "fixtures" / "anthropic"


def _fixture_events(name: str) -> list[dict[str, Any]]:
    raw = (FIXTURES / name).read_text()
    return [json.loads(line[5:]) for line in raw.splitlines() if line.startswith("data:")]


class _Upstream(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[dict[str, str], dict[str, Any]]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", "req_test")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, etype: str, message: str, **headers: str) -> None:
        body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_test"}
        self._send(status, json.dumps(body).encode(), **headers)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Upstream.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        if self.path != "/v1/messages":
            return self._error(404, "not_found_error", f"Not found: {self.path}")
        if self.headers.get("x-api-key") != UPSTREAM_KEY:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not self.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return self._error(400, "invalid_request_error", f"{field}: Field required")
        if body["model"] == "claude-overloaded":
            return self._error(529, "overloaded_error", "Overloaded", retry_after="1")
        if body.get("stream"):
            fixture = "tool_use_response.txt" if body.get("tools") else "basic_response.txt"
            return self._send(200, (FIXTURES / fixture).read_bytes(), "text/event-stream; charset=utf-8")
        message = {
            "id": "msg_01json", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": "Hello from Claude."}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 30,
                      "output_tokens": 5},
        }  # fmt: skip
        self._send(200, json.dumps(message).encode())


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def gw(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    channel = {
        "name": "claude",
        "type": "anthropic",
        "base_url": upstream,
        "keys": [UPSTREAM_KEY],
        "models": ["claude", "claude-busy"],
        "model_map": {"claude": "claude-sonnet-4-20250514", "claude-busy": "claude-overloaded"},
    }
    config = {"channels": [channel], "tokens": [{"name": "t", "key": KEY}], "routing": {"max_attempts": 1}}
    g = start_gateway(tmp_path_factory.mktemp("anthropic-upstream"), config)
    try:
        yield g
    finally:
        g.stop()


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=20)


def test_json_answer_and_the_request_the_upstream_got(gw: GatewayProcess) -> None:
    r = client(gw).chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    assert r.choices[0].message.content == "Hello from Claude." and r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (46, 5)  # 12 + 4 written + 30 read
    assert r.usage.prompt_tokens_details is not None and r.usage.prompt_tokens_details.cached_tokens == 30
    headers, body = _Upstream.seen[-1]
    assert headers["x-api-key"] == UPSTREAM_KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert body["model"] == "claude-sonnet-4-20250514" and body["max_tokens"] == 4096
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]


def test_streamed_text_with_usage(gw: GatewayProcess) -> None:
    stream = client(gw).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    events = _fixture_events("basic_response.txt")  # what the upstream sent
    sent_text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    final = next(e for e in events if e["type"] == "message_delta")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == sent_text and text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == final["usage"]["output_tokens"]


def test_streamed_tool_call_arguments_arrive_whole(gw: GatewayProcess) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}}]  # fmt: skip
    chunks = list(
        client(gw).chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools,
            stream=True,
        )
    )
    calls: dict[int, str] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            calls[tc.index] = calls.get(tc.index, "") + (tc.function.arguments or "" if tc.function else "")
    assert json.loads(calls[0]) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    sent = _Upstream.seen[-1][1]
    assert sent["tools"][0]["name"] == "get_weather" and sent["stream"] is True


def test_overloaded_is_503_for_openai_clients(gw: GatewayProcess) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client(gw).chat.completions.create(model="claude-busy", messages=[{"role": "user", "content": "Hi"}])
    assert err.value.status_code == 503
    assert err.value.body["type"] == "overloaded_error" and err.value.body["message"] == "Overloaded"  # type: ignore[index]


def test_what_anthropic_cannot_express_is_a_400_naming_the_parameter(gw: GatewayProcess) -> None:
    before = len(_Upstream.seen)
    with pytest.raises(openai.BadRequestError) as err:
        client(gw).chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}], n=2)
    assert err.value.body["param"] == "n"  # type: ignore[index]
    assert len(_Upstream.seen) == before  # never sent


# -- Anthropic clients on an Anthropic channel: passed through as they are ---------------------------


def anthropic_client(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0, timeout=20)


def test_anthropic_clients_pass_through_untouched(gw: GatewayProcess) -> None:
    cached = {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}
    thought = {"type": "thinking", "thinking": "Hmm.", "signature": "c2lnbmF0dXJl"}
    history = [
        {"role": "user", "content": [cached]},
        {"role": "assistant", "content": [thought, {"type": "text", "text": "Yes?"}]},
        {"role": "user", "content": "Go on"},
    ]
    msg = anthropic_client(gw).messages.create(
        model="claude", max_tokens=64, messages=history, extra_body={"context_management": {"edits": []}}
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from Claude."
    assert msg.model == "claude-sonnet-4-20250514"  # the upstream's own answer, untranslated
    assert msg.usage.cache_read_input_tokens == 30
    headers, body = _Upstream.seen[-1]
    # The client's request, field for field: cache_control, the thinking signature and fields the
    # gateway does not know survive; only the model name is mapped.
    assert body["messages"] == history and body["context_management"] == {"edits": []}
    assert body["model"] == "claude-sonnet-4-20250514" and headers["x-api-key"] == UPSTREAM_KEY


def test_anthropic_client_stream_passes_through(gw: GatewayProcess) -> None:
    events = _fixture_events("basic_response.txt")
    sent_text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    with anthropic_client(gw).messages.stream(
        model="claude", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == sent_text and final.id == events[0]["message"]["id"]  # the upstream's own message
    assert (
        final.usage.output_tokens
        == next(e for e in events if e["type"] == "message_delta")["usage"]["output_tokens"]
    )
