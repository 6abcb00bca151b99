"""Typed rows the store returns and accepts. Plain data, no behaviour."""

from __future__ import annotations

import msgspec

from vectorengine.billing.prices import Price


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Per-channel upstream timeouts in seconds; ``None`` takes the global ``upstream`` default."""

    connect_s: float | None = None  # TCP (and TLS) connect
    first_byte_s: float | None = None  # request sent → first body byte (first SSE chunk when streaming)
    idle_s: float | None = None  # longest silence between two chunks of a stream
    total_s: float | None = None  # the whole exchange


class Hedge(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Start a second attempt elsewhere when the first byte is late.

    Late means ``after_ms``, or with ``p95`` the recent 95th percentile of the channel's time
    to first byte (``after_ms`` is then the floor, used too until enough samples exist).
    """

    after_ms: float = 1000.0
    p95: bool = False


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
    groups: tuple[str, ...] = ("default",)
    rpm: int | None = None  # per key; None: unlimited unless learned from x-ratelimit-* headers
    tpm: int | None = None
    timeouts: Timeouts = Timeouts()
    hedge: Hedge | None = None
    api_version: str | None = None  # azure: the api-version query value; None: the type's default
    # Alert when the provider's balance of a key falls below this, in micro-units of the
    # provider's currency; None: the balance is not polled.
    balance_alert_below_micro: int | None = None


class Limits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Limits a token or a user carries; ``None`` is no limit."""

    daily_cap_micro_usd: int | None = None  # spend per calendar day (billing time zone)
    monthly_cap_micro_usd: int | None = None  # spend per calendar month
    rpm: int | None = None  # requests in any 60 s
    tpm: int | None = None  # prompt + completion tokens in any 60 s
    max_concurrency: int | None = None  # requests in flight at once
    ip_allow: tuple[str, ...] | None = None  # CIDRs the requests must come from
    suspend_on_anomaly: bool | None = None  # disable the token when an anomaly alert fires


NO_LIMITS = Limits()


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
    group: str = "default"  # for a user's token, the user's group (see Snapshot.build)
    user_id: int | None = None  # None: not billed to anyone (automation, demo)
    quota_micro_usd: int | None = None  # the most this token may ever spend; None: unlimited
    limits: Limits = Limits()


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    group: str
    enabled: bool
    limits: Limits
    managed_by: str
    created_at: int
    updated_at: int


class Group(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    multiplier_ppm: int  # prices × multiplier_ppm / 1e6
    channel_groups: tuple[str, ...] | None  # channel groups its tokens may use; None: its own name
    managed_by: str = "api"


class LedgerEntry(msgspec.Struct, kw_only=True):
    """One change of a balance. Append-only: the balance is the sum of a user's entries."""

    id: int = 0
    user_id: int
    kind: str  # topup | initial | charge | refund | redemption | adjustment
    amount_micro_usd: int  # positive credits, negative debits
    created_at: int  # unix ms
    request_id: str | None = None  # for a charge
    note: str | None = None


class AttemptRecord(msgspec.Struct, kw_only=True):
    """One try of a request on one channel and key."""

    n: int  # 1-based, in the order the attempts started
    channel_id: int
    key_index: int
    upstream_model: str
    start_ms: float  # since the request arrived
    status: int | None = None  # upstream HTTP status, None if none arrived
    error_class: str | None = None  # routing.policy.ErrorClass, None on success
    latency_ms: float | None = None  # until this attempt won, failed or was cancelled
    ttfb_ms: float | None = None
    hedge: bool = False  # started by hedging, beside another attempt
    outcome: str = "failed"  # won | failed | cancelled
    cost_micro_usd: int = 0  # charged for this attempt (only the one that answered is charged)


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
    attempts: list[AttemptRecord] | None = None
    # accounting (0004)
    user_id: int | None = None
    cost_micro_usd: int = 0  # charged (a ledger entry when the token belongs to a user)
    reserved_micro_usd: int = 0  # held before the upstream call
    unbilled_micro_usd: int = 0  # what the usage cost beyond the hold (never charged)
    price: Price | None = None  # the unit prices charged with
    multiplier_ppm: int | None = None  # the group multiplier charged with
    usage_estimated: bool = False  # no usage report: tokens estimated (a cut stream)
    cache_write_tokens: int = 0  # prompt tokens written to the provider's cache


class StoredUsage(UsageRecord, kw_only=True):
    id: int


class UsageFilter(msgspec.Struct, frozen=True, kw_only=True):
    token_id: int | None = None
    user_id: int | None = None
    model: str | None = None
    channel_id: int | None = None
    status: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
