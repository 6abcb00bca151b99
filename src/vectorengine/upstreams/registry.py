"""The one explicit registry of upstream types: data, not code.

An upstream type says which wire format a host speaks, how it authenticates, how its URLs
are built and where it lives by default, and where a host reports the balance left on a key's
account (:class:`BalanceApi`). Adding an OpenAI-compatible host is one entry in :data:`_TYPES`;
nothing else changes.
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
# Where a value sits in a JSON answer: object keys and list indexes, e.g. ("data", "totalBalance").
JsonPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class BalanceApi:
    """Where a host reports the balance left on the account of a key, and how to read it.

    The request is a ``GET`` with the key sent as for every other call. ``root`` says what ``path``
    is appended to: ``host`` is the scheme and host of the channel's ``base_url`` (for a balance
    that sits outside the API's ``/v1`` prefix), ``base_url`` the channel's ``base_url`` itself.
    Amounts may be decimal strings or JSON numbers; both are read exactly.
    """

    path: str
    root: Literal["host", "base_url"]
    amount: JsonPath  # the balance left; with ``used``, the total ever credited
    used: JsonPath | None = None  # set: the balance left is ``amount`` − ``used``
    currency_at: JsonPath | None = None  # where the answer names its currency, if it does
    currency: str = "USD"  # otherwise: the currency the host bills in
    host_currency: tuple[tuple[str, str], ...] = ()  # (host suffix, currency) of hosts that bill in another


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
    balance: BalanceApi | None = None  # None: the host reports no balance through its API


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
    UpstreamType(
        "deepseek",
        "openai",
        "bearer",
        "https://api.deepseek.com/v1",
        description="DeepSeek",
        # {"is_available": true, "balance_infos": [{"currency": "CNY", "total_balance": "110.00", …}]}
        balance=BalanceApi(
            "/user/balance",
            "host",
            amount=("balance_infos", 0, "total_balance"),
            currency_at=("balance_infos", 0, "currency"),
            currency="CNY",
        ),
    ),
    UpstreamType(
        "qwen",
        "openai",
        "bearer",
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        description="Alibaba Qwen (DashScope compatible mode)",
    ),
    UpstreamType(
        "moonshot",
        "openai",
        "bearer",
        "https://api.moonshot.cn/v1",
        description="Moonshot Kimi",
        # {"code": 0, "data": {"available_balance": 49.58894, "voucher_balance": …, "cash_balance": …}, …}
        balance=BalanceApi(
            "/users/me/balance",
            "base_url",
            amount=("data", "available_balance"),
            currency="CNY",
            host_currency=(("moonshot.ai", "USD"),),
        ),
    ),
    UpstreamType(
        "zhipu", "openai", "bearer", "https://open.bigmodel.cn/api/paas/v4", description="Zhipu GLM"
    ),
    UpstreamType(
        "siliconflow",
        "openai",
        "bearer",
        "https://api.siliconflow.cn/v1",
        description="SiliconFlow",
        # {"code": 20000, "data": {…, "balance": "0.88", "chargeBalance": "88.00", "totalBalance": "88.88"}}
        balance=BalanceApi(
            "/user/info",
            "base_url",
            amount=("data", "totalBalance"),
            currency="CNY",
            host_currency=(("siliconflow.com", "USD"),),
        ),
    ),
    UpstreamType(
        "openrouter",
        "openai",
        "bearer",
        "https://openrouter.ai/api/v1",
        description="OpenRouter",
        # {"data": {"total_credits": 100, "total_usage": 25.5}}: what is left is the difference
        balance=BalanceApi(
            "/credits", "base_url", amount=("data", "total_credits"), used=("data", "total_usage")
        ),
    ),
    UpstreamType("groq", "openai", "bearer", "https://api.groq.com/openai/v1", description="Groq"),
    UpstreamType("mistral", "openai", "bearer", "https://api.mistral.ai/v1", description="Mistral"),
    UpstreamType("xai", "openai", "bearer", "https://api.x.ai/v1", description="xAI Grok"),
    UpstreamType("vllm", "openai", "bearer", "http://127.0.0.1:8000/v1", description="vLLM server"),
    UpstreamType("ollama", "openai", "bearer", "http://127.0.0.1:11434/v1", description="Ollama"),
)

UPSTREAM_TYPES: dict[str, UpstreamType] = {t.name: t for t in _TYPES}
