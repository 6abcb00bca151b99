"""Shapes of the admin API's JSON bodies. The OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated

import msgspec

from vectorengine.store.records import AttemptRecord, Hedge, Timeouts

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Models = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
Groups = Annotated[list[Name], msgspec.Meta(min_length=1)]
PerMinute = Annotated[int, msgspec.Meta(ge=1)]


class ChannelCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    type: str = "openai"
    base_url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    keys: Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
    models: Models
    model_map: dict[str, str] = {}
    priority: int = 0
    weight: Weight = 1
    enabled: bool = True
    groups: Groups = msgspec.field(default_factory=lambda: ["default"])
    rpm: PerMinute | None = None  # per key
    tpm: PerMinute | None = None  # per key
    timeouts: Timeouts = Timeouts()
    hedge: Hedge | None = None
    api_version: str | None = None  # azure


class ChannelPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    type: str | msgspec.UnsetType = msgspec.UNSET
    base_url: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | msgspec.UnsetType = msgspec.UNSET
    keys: (
        Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    models: Models | msgspec.UnsetType = msgspec.UNSET
    model_map: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    priority: int | msgspec.UnsetType = msgspec.UNSET
    weight: Weight | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    groups: Groups | msgspec.UnsetType = msgspec.UNSET
    rpm: PerMinute | msgspec.UnsetType | None = msgspec.UNSET
    tpm: PerMinute | msgspec.UnsetType | None = msgspec.UNSET
    timeouts: Timeouts | msgspec.UnsetType = msgspec.UNSET
    hedge: Hedge | msgspec.UnsetType | None = msgspec.UNSET
    api_version: str | msgspec.UnsetType | None = msgspec.UNSET


class ChannelOut(msgspec.Struct, kw_only=True):
    id: int
    name: str
    type: str
    base_url: str
    keys: list[str]  # hints only, never the keys
    key_count: int
    models: list[str]
    model_map: dict[str, str]
    priority: int
    weight: int
    enabled: bool
    managed_by: str
    created_at: int
    updated_at: int
    groups: list[str]
    rpm: int | None
    tpm: int | None
    timeouts: Timeouts
    hedge: Hedge | None
    api_version: str | None


class KeyHealthOut(msgspec.Struct, kw_only=True):
    key_index: int
    key: str  # hint only
    state: str  # healthy | cooling | open | disabled
    reason: str | None
    since: int  # unix ms, when the key entered its state
    error_rate: float  # exponentially weighted share of failed calls
    samples: int
    consecutive_failures: int
    latency_ms: float | None  # exponentially weighted time to first byte
    next_probe_in_s: float | None
    last_probe: int | None
    last_probe_ok: bool | None
    rpm: float | None  # pacing: effective limits (configured or learned from headers)
    tpm: float | None
    learned_rpm: int | None
    learned_tpm: int | None


class ChannelHealth(msgspec.Struct, kw_only=True):
    channel_id: int
    name: str
    ttfb_p95_ms: float | None
    keys: list[KeyHealthOut]


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    key: Annotated[str, msgspec.Meta(min_length=16, max_length=200)] | None = None
    models: Models | None = None
    enabled: bool = True
    expires_at: int | None = None  # unix seconds
    group: Name = "default"


class TokenPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    models: Models | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    expires_at: int | msgspec.UnsetType | None = msgspec.UNSET
    group: Name | msgspec.UnsetType = msgspec.UNSET


class TokenOut(msgspec.Struct, kw_only=True):
    id: int
    name: str
    key_hint: str
    models: list[str] | None
    enabled: bool
    expires_at: int | None  # unix seconds
    managed_by: str
    created_at: int
    updated_at: int
    group: str


class TokenCreated(TokenOut, kw_only=True):
    key: str  # shown once, never again


class UsageOut(msgspec.Struct, kw_only=True):
    id: int
    request_id: str
    created_at: int
    endpoint: str
    token_id: int | None
    model: str | None
    upstream_model: str | None
    channel_id: int | None
    key_index: int | None
    status: int
    error_kind: str | None
    latency_ms: float
    ttfb_ms: float | None
    ttft_ms: float | None
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    client_ip: str | None
    attempts: list[AttemptRecord] | None  # every try on a channel and key, in order; None before routing


class UsagePage(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[UsageOut]
    has_more: bool
    next_after: int | None


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorOut(msgspec.Struct, kw_only=True):
    error: ErrorDetail
