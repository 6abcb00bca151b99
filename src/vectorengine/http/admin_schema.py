"""Shapes of the admin API's JSON bodies. The OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Models = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=10_000)]


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


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    key: Annotated[str, msgspec.Meta(min_length=16, max_length=200)] | None = None
    models: Models | None = None
    enabled: bool = True
    expires_at: int | None = None  # unix seconds


class TokenPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    models: Models | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    expires_at: int | msgspec.UnsetType | None = msgspec.UNSET


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
