"""Which dialect speaks to a channel, and which wire format it uses for a client's protocol."""

from __future__ import annotations

from vectorengine.store.records import Channel
from vectorengine.upstreams.anthropic import AnthropicDialect
from vectorengine.upstreams.dialect import Dialect
from vectorengine.upstreams.gemini import GeminiDialect
from vectorengine.upstreams.openai import OpenAIDialect
from vectorengine.upstreams.registry import UPSTREAM_TYPES

_DIALECTS: dict[str, Dialect] = {
    "openai": OpenAIDialect(),
    "anthropic": AnthropicDialect(),
    "gemini": GeminiDialect(),
}


def dialect_for(channel: Channel) -> Dialect:
    """How to speak to ``channel``'s upstream."""
    return _DIALECTS[UPSTREAM_TYPES[channel.type].wire]


def wire_of(channel: Channel, protocol: str = "openai") -> str:
    """The wire format ``channel``'s upstream speaks to a client of ``protocol``: ``openai``,
    ``anthropic``, ``gemini``, or ``responses`` when it takes Responses API calls as they are."""
    utype = UPSTREAM_TYPES[channel.type]
    return "responses" if protocol == "responses" and utype.responses else utype.wire
