"""Shapes of the admin API's JSON bodies. The OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from vectorengine.billing.prices import Price
from vectorengine.store.records import AttemptRecord, Hedge, Limits, Timeouts

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Models = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
Groups = Annotated[list[Name], msgspec.Meta(min_length=1)]
PerMinute = Annotated[int, msgspec.Meta(ge=1)]
BalanceThreshold = Annotated[int, msgspec.Meta(ge=0, le=10**18)]  # micro-units of a provider's currency


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
    # Alert when the provider's balance of a key falls below this (micro-units of the provider's
    # currency); only for upstream types whose host reports a balance.
    balance_alert_below_micro: BalanceThreshold | None = None


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
    balance_alert_below_micro: BalanceThreshold | msgspec.UnsetType | None = msgspec.UNSET


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
    balance_alert_below_micro: int | None  # micro-units of the provider's currency


class KeyBalanceOut(msgspec.Struct, kw_only=True):
    key_index: int
    key: str  # hint only
    balance: str | None  # decimal, in ``currency``, exactly as the provider reported it
    balance_micro: int | None  # the same in micro-units of ``currency``, rounded down
    currency: str | None
    checked_at: int | None  # unix ms of the last reading; None: not read yet
    error: str | None  # why the last reading has no balance (HTTP status, bad answer, timeout)
    low: bool  # below the threshold and alerted, not back above since


class ChannelBalance(msgspec.Struct, kw_only=True):
    channel_id: int
    name: str
    type: str
    polled: bool  # enabled, with a threshold, of a type whose host reports a balance
    balance_alert_below_micro: int | None
    poll_interval_s: float
    keys: list[KeyBalanceOut]


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
    group: Name = "default"  # routing group of a token without a user
    user_id: int | None = None  # the user it bills; None: nobody
    quota_micro_usd: Annotated[int, msgspec.Meta(ge=0)] | None = None
    limits: Limits = Limits()


class TokenPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    models: Models | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    expires_at: int | msgspec.UnsetType | None = msgspec.UNSET
    group: Name | msgspec.UnsetType = msgspec.UNSET
    user_id: int | msgspec.UnsetType | None = msgspec.UNSET
    quota_micro_usd: Annotated[int, msgspec.Meta(ge=0)] | msgspec.UnsetType | None = msgspec.UNSET
    limits: Limits | msgspec.UnsetType = msgspec.UNSET


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
    user_id: int | None = None
    quota_micro_usd: int | None = None
    limits: Limits = Limits()


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
    user_id: int | None = None
    cost_micro_usd: int = 0  # charged
    reserved_micro_usd: int = 0  # held before the upstream call
    unbilled_micro_usd: int = 0  # used beyond the hold, never charged
    price: Price | None = None  # unit prices charged with (micro-USD; token rates per 1M tokens)
    multiplier_ppm: int | None = None  # group multiplier charged with, parts per million
    usage_estimated: bool = False  # the upstream reported no usage; tokens were estimated
    cache_write_tokens: int = 0


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


# -- accounting ---------------------------------------------------------------------------------

Micro = Annotated[int, msgspec.Meta(ge=0)]


class GroupIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    multiplier_ppm: Micro = 1_000_000  # prices × multiplier_ppm / 1,000,000
    channel_groups: Groups | None = None  # default: the channel group of the same name


class GroupOut(msgspec.Struct, kw_only=True):
    name: str
    multiplier_ppm: int
    channel_groups: list[str] | None
    managed_by: str


class UserCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    group: Name = "default"
    enabled: bool = True
    limits: Limits = Limits()


class UserPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    group: Name | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    limits: Limits | msgspec.UnsetType = msgspec.UNSET
    # Set the balance: appends an `adjustment` ledger entry of the difference.
    balance_micro_usd: Micro | msgspec.UnsetType = msgspec.UNSET


class UserOut(msgspec.Struct, kw_only=True):
    id: int
    name: str
    group: str
    enabled: bool
    limits: Limits
    balance_micro_usd: int  # the sum of the ledger entries written so far
    available_micro_usd: int | None  # live: less the holds of requests in flight and unwritten charges
    managed_by: str
    created_at: int
    updated_at: int


class TopUp(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    amount_micro_usd: Annotated[int, msgspec.Meta(ge=1, le=10**15)]
    note: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class Refund(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    note: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class LedgerEntryOut(msgspec.Struct, kw_only=True):
    id: int
    user_id: int
    kind: str  # initial | topup | charge | refund | redemption | adjustment
    amount_micro_usd: int
    created_at: int
    request_id: str | None
    note: str | None


class LedgerPage(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[LedgerEntryOut]
    has_more: bool
    next_after: int | None


class PriceOut(msgspec.Struct, kw_only=True):
    model: str
    price: Price
    source: str  # default (shipped) | config | api


class SpendOut(msgspec.Struct, kw_only=True):
    cap_micro_usd: int | None
    spent_micro_usd: int  # includes the holds of requests in flight


class DayOut(msgspec.Struct, kw_only=True):
    day: str  # YYYYMMDD in the billing time zone
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int


class MeOut(msgspec.Struct, kw_only=True):
    user: UserOut | None  # None: the key bills nobody
    token: TokenOut  # the key used for this call
    tokens: list[TokenOut]  # all the user's keys
    spend: dict[str, SpendOut]  # token_daily, token_monthly, user_daily, user_monthly
    usage: list[DayOut]  # the last 30 days, the user's (or this key's) requests and cost


class CodesCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    value_micro_usd: Annotated[int, msgspec.Meta(ge=1, le=10**15)]
    batch: Name
    expires_at: int | None = None  # unix seconds


class CodesCreated(msgspec.Struct, kw_only=True):
    batch: str
    value_micro_usd: int
    expires_at: int | None
    codes: list[str]  # shown once, stored only as hashes


class CodeOut(msgspec.Struct, kw_only=True):
    id: int
    code_hint: str
    batch: str
    value_micro_usd: int
    expires_at: int | None  # unix seconds
    created_at: int
    redeemed_by: int | None
    redeemed_at: int | None


class Redeem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: Annotated[str, msgspec.Meta(min_length=8, max_length=100)]


class RollupOut(msgspec.Struct, kw_only=True):
    day: str  # YYYYMMDD, billing time zone
    user_id: int  # 0: none
    token_id: int
    model: str
    channel_id: int  # 0: none (refused before routing)
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_micro_usd: int


class AlertOut(msgspec.Struct, kw_only=True):
    id: int
    created_at: int
    kind: str
    subject: str  # token:ID, user:ID or ip:ADDRESS
    message: str
    data: dict[str, Any]
    delivered: bool  # reached every webhook
    delivery_attempts: int


class AlertPage(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[AlertOut]
    has_more: bool
    next_after: int | None
