"""What reaches the upstream: the client's body untouched except the mapped model and usage option.

A recording upstream (stdlib HTTP server) captures the exact bytes and headers received.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import orjson
import pytest

from tests.support.gateway import GatewayProcess, start_gateway

KEY = "sk-pass-0123456789abcdef"
REPLY = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream-name",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    "x_vendor_extra": {"kept": True},
}


class Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        out = orjson.dumps(REPLY)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def gw(recorder: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g = start_gateway(
        tmp_path_factory.mktemp("pass"),
        {
            "channels": [
                {
                    "name": "rec",
                    "base_url": recorder,
                    "keys": ["upstream-secret"],
                    "models": ["same", "alias"],
                    "model_map": {"alias": "upstream-name"},
                }
            ],
            "tokens": [{"name": "t", "key": KEY}],
        },
    )
    yield g
    g.stop()


def send(gw: GatewayProcess, raw: bytes) -> httpx.Response:
    return httpx.post(
        gw.base_url + "/chat/completions",
        content=raw,
        timeout=10,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )


def test_unmapped_body_is_forwarded_byte_for_byte(gw: GatewayProcess) -> None:
    raw = b'{"model": "same",  "messages": [{"role":"user","content":"hi"}], "x_unknown": [1, {"a": null}]}'
    r = send(gw, raw)
    assert r.status_code == 200
    path, headers, body = Recorder.received[-1]
    assert path == "/v1/chat/completions" and body == raw
    assert headers["authorization"] == "Bearer upstream-secret"  # the channel's key, never the client's
    assert KEY not in str(headers)
    assert r.json() == REPLY  # the response passes through untouched, vendor fields included


def test_mapped_model_changes_only_the_model(gw: GatewayProcess) -> None:
    sent = {
        "model": "alias",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "x_unknown": {"deep": [1, 2]},
        "metadata": {"k": "v"},
    }
    assert send(gw, orjson.dumps(sent)).status_code == 200
    got = orjson.loads(Recorder.received[-1][2])
    assert got == {**sent, "model": "upstream-name"}
