"""``vectorengine channel test``: one small real request per key of a channel, bypassing routing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from vectorengine.errors import GatewayError
from vectorengine.protocol import openai as wire
from vectorengine.protocol.openai import Endpoint
from vectorengine.store.records import Channel
from vectorengine.upstreams.transport import PyreqwestTransport
from vectorengine.upstreams.wires import dialect_for


@dataclass(frozen=True)
class ProbeResult:
    key_index: int
    ok: bool
    status: int
    latency_ms: float
    detail: str


async def probe_channel(
    channel: Channel, model: str | None = None, timeout_s: float = 30.0
) -> list[ProbeResult]:
    model = model or channel.models[0]
    upstream_model = channel.model_map.get(model, model)
    body: dict[str, object]
    if "embedding" in model:
        endpoint, body = Endpoint.EMBEDDINGS, {"model": upstream_model, "input": "ping"}
    else:
        endpoint = Endpoint.CHAT
        body = {"model": upstream_model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 5}
    dialect = dialect_for(channel)
    call = wire.decode(endpoint, orjson.dumps(body))
    transport = PyreqwestTransport(timeout_s=timeout_s)
    results = []
    try:
        for i in range(len(channel.keys)):
            up = dialect.request(channel, i, call, upstream_model)
            t0 = time.perf_counter()
            try:
                async with transport.open("POST", up.url, up.headers, up.body) as resp:
                    raw = bytes(await resp.read())
                    ms = (time.perf_counter() - t0) * 1000
                    if resp.status >= 400:
                        error = dialect.error(resp.status, raw).error or {}
                        detail = f"error: {error.get('message') or f'HTTP {resp.status}'}"
                    else:
                        answered = dialect.answer(call, raw)
                        detail = _summary(bytes(answered[0])) if answered else "response is not JSON"
                    results.append(ProbeResult(i, resp.status < 400, resp.status, ms, detail))
            except GatewayError as err:
                ms = (time.perf_counter() - t0) * 1000
                results.append(ProbeResult(i, False, 0, ms, f"{err.kind.value}: {err.message}"))
    finally:
        await transport.close()
    return results


def _summary(raw: bytes) -> str:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "response is not JSON"
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        return f"error: {obj['error'].get('message')}"
    if isinstance(obj, dict) and obj.get("choices"):
        msg = obj["choices"][0].get("message") or {}
        return f"reply: {str(msg.get('content'))[:60]!r}"
    if isinstance(obj, dict) and obj.get("data"):
        return f"{len(obj['data'])} embedding(s)"
    return "ok"
