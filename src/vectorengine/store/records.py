"""Typed rows the store returns and accepts. Plain data, no behaviour."""

from __future__ import annotations

import msgspec


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    type: str
    base_url: str
    keys: tuple[str, ...]
    models: tuple[str, ...]
    model_map: dict[str, str]
    priority: int
    weight: int
    enabled: bool
    managed_by: str
    created_at: int
    updated_at: int


class Token(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    key_hash: str
    key_hint: str
    models: tuple[str, ...] | None
    enabled: bool
    expires_at: int | None  # unix ms
    managed_by: str
    created_at: int
    updated_at: int


class UsageRecord(msgspec.Struct, kw_only=True):
    """One per request, whatever happened to it."""

    request_id: str
    created_at: int  # unix ms, when the request arrived
    endpoint: str
    token_id: int | None = None
    model: str | None = None
    upstream_model: str | None = None
    channel_id: int | None = None
    key_index: int | None = None
    status: int = 0
    error_kind: str | None = None
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    ttft_ms: float | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    client_ip: str | None = None


class StoredUsage(UsageRecord, kw_only=True):
    id: int


class UsageFilter(msgspec.Struct, frozen=True, kw_only=True):
    token_id: int | None = None
    model: str | None = None
    channel_id: int | None = None
    status: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
