"""OpenAI-compatible upstreams: where to send a call and how to authenticate it."""

from __future__ import annotations

from vectorengine.protocol.openai import Endpoint
from vectorengine.store.records import Channel
from vectorengine.upstreams.registry import UPSTREAM_TYPES


def target(
    channel: Channel, key_index: int, endpoint: Endpoint, stream: bool
) -> tuple[str, list[tuple[str, str]]]:
    """URL and headers for one call to ``channel`` with its key number ``key_index``."""
    utype = UPSTREAM_TYPES[channel.type]
    headers = [("content-type", "application/json")]
    if utype.auth == "bearer":
        headers.append(("authorization", "Bearer " + channel.keys[key_index]))
    if stream:
        headers.append(("accept", "text/event-stream"))
    return channel.base_url.rstrip("/") + endpoint.value, headers
