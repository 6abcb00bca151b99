"""Calibration reference: the least a Granian RSGI + pyreqwest proxy can do per request.

No gateway features: one hard-coded key check, JSON parse of request and response, forward
to the upstream, stream chunks straight through. Measuring it with the same harness on the
same machine shows how much of the gateway's CPU is the server and client stack itself.

    taskset -c 0 granian --interface rsgi --port 18590 --loop uvloop --no-access-log \\
        --working-dir bench bare_proxy:app
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from pyreqwest.client import ClientBuilder

KEY = "sk-bench-0123456789abcdef"
UPSTREAMS = {"gpt-4o-mini": 18001, "bench-long": 18002, "bench-paced": 18003}
HOST = os.environ.get("BARE_UPSTREAM_HOST", "127.0.0.1")


class BareProxy:
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.client = ClientBuilder().tcp_nodelay(True).build()

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.path == "/health":
            protocol.response_bytes(200, [("content-type", "application/json")], b'{"status":"ok"}')
            return
        body = await protocol()
        if scope.headers.get("authorization", "")[7:] != KEY:
            protocol.response_bytes(401, [("content-type", "application/json")], b'{"error":{}}')
            return
        req = orjson.loads(body)
        url = f"http://{HOST}:{UPSTREAMS.get(req.get('model'), 18001)}/v1/chat/completions"
        headers = [("content-type", "application/json"), ("authorization", "Bearer k")]
        builder = self.client.post(url).headers(headers).body_bytes(body)
        if not req.get("stream"):
            resp = await builder.build().send()
            data = await resp.bytes()
            orjson.loads(memoryview(data)).get("usage")
            protocol.response_bytes(resp.status, [("content-type", "application/json")], bytes(data))
            return
        async with builder.streamed_read_buffer_limit(0).build_streamed() as resp:
            out = protocol.response_stream(resp.status, [("content-type", "text/event-stream")])
            reader = resp.body_reader
            while (chunk := await reader.read_chunk()) is not None:
                await out.send_bytes(bytes(chunk))


app = BareProxy()
