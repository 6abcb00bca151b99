"""The one explicit registry of upstream types: data, not code.

An upstream type says which wire format a host speaks, how it authenticates, how its URLs
are built and where it lives by default. Adding an OpenAI-compatible host is one entry in
:data:`_TYPES`; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WireFormat = Literal["openai", "anthropic", "gemini"]
# bearer: ``Authorization: Bearer <key>``; the others name the header that carries the key.
AuthStyle = Literal["bearer", "api-key", "x-api-key", "x-goog-api-key"]
# v1: base_url + "/chat/completions" …; azure: base_url + "/openai/deployments/<model>/…?api-version=";
# anthropic: base_url + "/v1/messages"; gemini: base_url + "/v1beta/models/<model>:generateContent".
UrlStyle = Literal["v1", "azure", "anthropic", "gemini"]


@dataclass(frozen=True, slots=True)
class UpstreamType:
    name: str
    wire: WireFormat
    auth: AuthStyle
    default_base_url: str | None = None
    urls: UrlStyle = "v1"
    headers: tuple[tuple[str, str], ...] = ()  # sent on every call
    api_version: str | None = None  # default ``api-version`` query value (azure)
    responses: bool = False  # serves the Responses API (``/responses``) and keeps its state
    description: str = ""


_TYPES = (
    UpstreamType(
        "openai",
        "openai",
        "bearer",
        "https://api.openai.com/v1",
        responses=True,
        description="OpenAI, or any server that speaks the OpenAI API (LM Studio, LocalAI …)",
    ),
    UpstreamType(
        "azure",
        "openai",
        "api-key",
        None,
        urls="azure",
        api_version="2024-10-21",
        description="Azure OpenAI: base_url is the resource endpoint; models name deployments",
    ),
    UpstreamType(
        "anthropic",
        "anthropic",
        "x-api-key",
        "https://api.anthropic.com",
        urls="anthropic",
        headers=(("anthropic-version", "2023-06-01"),),
        description="Anthropic Messages API",
    ),
    UpstreamType(
        "gemini",
        "gemini",
        "x-goog-api-key",
        "https://generativelanguage.googleapis.com",
        urls="gemini",
        description="Google Gemini API (v1beta generateContent)",
    ),
    # OpenAI-compatible hosts: a base URL and, where they differ, their quirks.
    UpstreamType("deepseek", "openai", "bearer", "https://api.deepseek.com/v1", description="DeepSeek"),
    UpstreamType(
        "qwen",
        "openai",
        "bearer",
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        description="Alibaba Qwen (DashScope compatible mode)",
    ),
    UpstreamType("moonshot", "openai", "bearer", "https://api.moonshot.cn/v1", description="Moonshot Kimi"),
    UpstreamType(
        "zhipu", "openai", "bearer", "https://open.bigmodel.cn/api/paas/v4", description="Zhipu GLM"
    ),
    UpstreamType(
        "siliconflow", "openai", "bearer", "https://api.siliconflow.cn/v1", description="SiliconFlow"
    ),
    UpstreamType("openrouter", "openai", "bearer", "https://openrouter.ai/api/v1", description="OpenRouter"),
    UpstreamType("groq", "openai", "bearer", "https://api.groq.com/openai/v1", description="Groq"),
    UpstreamType("mistral", "openai", "bearer", "https://api.mistral.ai/v1", description="Mistral"),
    UpstreamType("xai", "openai", "bearer", "https://api.x.ai/v1", description="xAI Grok"),
    UpstreamType("vllm", "openai", "bearer", "http://127.0.0.1:8000/v1", description="vLLM server"),
    UpstreamType("ollama", "openai", "bearer", "http://127.0.0.1:11434/v1", description="Ollama"),
)

UPSTREAM_TYPES: dict[str, UpstreamType] = {t.name: t for t in _TYPES}
