"""The one explicit registry of upstream types.

An upstream type is data: which wire format it speaks, how it authenticates and where it
lives by default. Adding an OpenAI-compatible host is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AuthStyle = Literal["bearer"]
WireFormat = Literal["openai"]


@dataclass(frozen=True, slots=True)
class UpstreamType:
    name: str
    wire: WireFormat
    auth: AuthStyle
    default_base_url: str | None = None


UPSTREAM_TYPES: dict[str, UpstreamType] = {
    t.name: t
    for t in (
        # Any server that speaks the OpenAI API: OpenAI itself, vLLM, Ollama, LM Studio ...
        UpstreamType("openai", wire="openai", auth="bearer", default_base_url="https://api.openai.com/v1"),
    )
}
