"""Configuration of the simulator: a frozen record, serialisable to JSON for worker processes."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, get_args

import msgspec

FaultMode = Literal[
    "429",
    "insufficient-quota",
    "500",
    "503",
    "400",
    "401",
    "slow-first-byte",
    "hang",
    "drop-mid-stream",
    "malformed-json",
    "mid-stream-error",
    "context-length",
    "ratelimit",
]

FAULT_MODES: tuple[str, ...] = get_args(FaultMode)

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)


class FaultSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One injected failure.

    ``percent`` of the key's requests fail, chosen by the key's call counter so a run is
    repeatable: the n-th call fails when ``ceil(n * percent / 100)`` grows, i.e. with 50 the
    1st, 3rd, 5th … calls fail. With ``window_ms`` the clock decides instead: calls arriving
    in the first ``percent`` % of each ``window_ms`` window fail (windows start at the
    simulator's start, on the monotonic clock).

    Mode ``ratelimit`` is not a share of failures but an enforced limit: a bucket of
    ``rpm_limit`` requests and one of ``tpm_limit`` tokens per key, each refilled
    continuously over a minute; ``percent`` and ``window_ms`` do not apply to it.
    """

    mode: FaultMode
    percent: int = 100
    retry_after_s: float = 1.0  # 429 / 503: value of ``retry-after``
    delay_ms: int = 2000  # slow-first-byte: wait before the status line
    after_chunks: int = 3  # drop-mid-stream / malformed-json / mid-stream-error: good chunks first
    window_ms: int | None = None  # percent is the failing share of each window of this length
    rpm_limit: int = 60  # ratelimit: requests per minute
    tpm_limit: int | None = None  # ratelimit: tokens per minute (None: the config's tpm_limit)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; expected one of {', '.join(FAULT_MODES)}")
        if not 0 <= self.percent <= 100:
            raise ValueError(f"fault percent must be within 0..100, got {self.percent}")
        if self.retry_after_s < 0 or self.delay_ms < 0 or self.after_chunks < 0:
            raise ValueError("fault retry_after_s, delay_ms and after_chunks must not be negative")
        if self.window_ms is not None and self.window_ms < 1:
            raise ValueError(f"fault window_ms must be at least 1, got {self.window_ms}")
        if self.rpm_limit < 1 or (self.tpm_limit is not None and self.tpm_limit < 1):
            raise ValueError("fault rpm_limit and tpm_limit must be positive")


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the simulator behaves; every field has a default that suits the ``demo`` channel."""

    latency_ms: float = 0.0  # wait before the status line of every /v1 response
    chunk_delay_ms: float = 0.0  # wait between two SSE events
    models: tuple[str, ...] = DEFAULT_MODELS  # what GET /v1/models lists
    strict_models: bool = False  # reject models not in ``models`` with 404 model_not_found
    faults: dict[str, FaultSpec] = msgspec.field(default_factory=dict)  # API key -> fault
    organization: str = "vectorengine-sim"  # value of the ``openai-organization`` header
    rpm_limit: int = 10_000  # shown in the x-ratelimit-* headers
    tpm_limit: int = 30_000_000
    # What the providers' balance endpoints report (see :mod:`.balance`): API key -> balance
    balances: dict[str, Decimal] = msgspec.field(default_factory=dict)
    default_balance: Decimal = Decimal("100.00")  # of every other key

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.chunk_delay_ms < 0:
            raise ValueError("latency_ms and chunk_delay_ms must not be negative")
        if self.rpm_limit < 1 or self.tpm_limit < 1:
            raise ValueError("rpm_limit and tpm_limit must be positive")
        if not all(b.is_finite() for b in (self.default_balance, *self.balances.values())):
            raise ValueError("balances must be finite decimal amounts")

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, data: str | bytes) -> SimulatorConfig:
        return msgspec.json.decode(data, type=cls)
