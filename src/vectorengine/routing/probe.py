"""Active probes: the only way back into service for a key that was taken out of it.

Every ``probe_tick_ms`` the prober looks for keys whose rest is over and sends each one a
minimal request of the same endpoint, stream mode and model as the real traffic that
failed on it (``max_tokens: 1``; a stream is read until its first chunk). Success puts the
key back in service; failure keeps it out, with the wait the failure calls for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from vectorengine.errors import GatewayError
from vectorengine.protocol import openai as wire
from vectorengine.routing.health import CallShape, HealthBoard, KeyHealth
from vectorengine.routing.policy import (
    POLICY,
    ErrorClass,
    classify_event,
    classify_status,
    classify_transport,
)
from vectorengine.routing.ratelimit_headers import retry_after_s
from vectorengine.settings import HealthConfig
from vectorengine.store.records import Channel
from vectorengine.upstreams.dialect import Dialect
from vectorengine.upstreams.transport import Transport
from vectorengine.upstreams.wires import dialect_for

log = logging.getLogger(__name__)


def probe_body(shape: CallShape) -> bytes:
    """The smallest request of the shape's endpoint that a provider will answer."""
    body: dict[str, object] = {"model": shape.upstream_model}
    if shape.endpoint is wire.Endpoint.CHAT:
        body |= {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    elif shape.endpoint is wire.Endpoint.COMPLETIONS:
        body |= {"prompt": "ping", "max_tokens": 1}
    else:
        body["input"] = "ping"
    if shape.stream:
        body["stream"] = True
    return orjson.dumps(body)


class Prober:
    def __init__(
        self,
        board: HealthBoard,
        channels: Callable[[], dict[int, Channel]],
        transport: Transport,
        config: HealthConfig,
    ) -> None:
        self._board = board
        self._channels = channels
        self._transport = transport
        self._config = config
        self._running: set[asyncio.Task[None]] = set()
        self._synced: dict[int, Channel] | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._config.probe_tick_ms / 1000.0)
            try:
                self.tick()
            except Exception:  # never let one bad tick stop the prober
                log.exception("health probe tick failed")

    def tick(self) -> None:
        if not self._board.out:
            return
        channels = self._channels()
        if channels is not self._synced:  # a new snapshot: drop the state of changed channels
            self._board.sync({c.id: c.keys for c in channels.values()})
            self._synced = channels
        for h in self._board.due():
            channel = channels.get(h.channel_id)
            if channel is None or not channel.enabled:
                continue
            h.probing = True
            task = asyncio.get_running_loop().create_task(self.probe(h, channel))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def probe(self, h: KeyHealth, channel: Channel) -> None:
        shape = h.shape or CallShape(
            wire.Endpoint.CHAT, False, channel.model_map.get(channel.models[0], channel.models[0])
        )
        dialect = dialect_for(channel)
        if not dialect.supports(shape.endpoint):
            shape = CallShape(wire.Endpoint.CHAT, shape.stream, shape.upstream_model)
        up = dialect.request(
            channel, h.key_index, wire.decode(shape.endpoint, probe_body(shape)), shape.upstream_model
        )
        ok, cls, reason, wait = False, ErrorClass.CONNECTION, "probe failed", None
        try:
            async with asyncio.timeout(self._config.probe_timeout_s):
                ok, cls, reason, wait = await self._send(dialect, up.url, up.headers, up.body, shape.stream)
        except TimeoutError:
            cls, reason = ErrorClass.TIMEOUT, f"probe: no answer within {self._config.probe_timeout_s:g} s"
        except GatewayError as err:
            cls, reason = classify_transport(err.kind), f"probe: {err.message}"
        except asyncio.CancelledError:
            h.probing = False
            raise
        except Exception as exc:  # a probe must never leave the key stuck in "probing"
            reason = f"probe: {type(exc).__name__}"
        self._board.probe_result(h, ok, POLICY[cls].effect, f"{cls.value}: {reason}", wait)

    async def _send(
        self, dialect: Dialect, url: str, headers: list[tuple[str, str]], body: bytes, stream: bool
    ) -> tuple[bool, ErrorClass, str, float | None]:
        if not stream:
            resp = await self._transport.send("POST", url, headers, body)
            if resp.status < 400:
                return True, ErrorClass.SERVER, "ok", None
            info = dialect.error(resp.status, await resp.read())
            return False, *_status(resp.status, info.error, retry_after_s(resp.header))
        async with self._transport.open("POST", url, headers, body) as resp:
            if resp.status >= 400:
                info = dialect.error(resp.status, await resp.read())
                return False, *_status(resp.status, info.error, retry_after_s(resp.header))
            first = await resp.next_chunk()
            if not first:
                return False, ErrorClass.BAD_RESPONSE, "probe: empty stream", None
            error = dialect.leading_error(first)
            if error is not None:
                return (
                    False,
                    classify_event(error),
                    f"probe: stream began with an error: {error.get('message')}",
                    None,
                )
            return True, ErrorClass.SERVER, "ok", None


def _status(
    status: int, error: dict[str, Any] | None, wait: float | None
) -> tuple[ErrorClass, str, float | None]:
    message = error.get("message") if error else None
    return classify_status(status, error), f"probe: HTTP {status} {message or ''}".strip(), wait
