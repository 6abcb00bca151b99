"""Configuration: raw YAML → ``${ENV}`` substitution → validated → frozen.

Unknown keys are errors naming their path (``$.channels[0].wieght``). The result is a tree
of frozen ``msgspec`` structs, passed explicitly to whoever needs it; there are no
module-level settings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from vectorengine.billing.money import MoneyError, to_micro
from vectorengine.billing.prices import PriceConfig
from vectorengine.store.records import Hedge, Limits, Timeouts
from vectorengine.upstreams.registry import UPSTREAM_TYPES

DEFAULT_DATABASE = "sqlite:///./data/vectorengine.db"
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_CONFIG_PATH = "vectorengine.yaml"

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending path."""


class ChannelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    type: str = "openai"
    base_url: str
    keys: Annotated[list[str], msgspec.Meta(min_length=1)]
    models: Annotated[list[str], msgspec.Meta(min_length=1)]
    model_map: dict[str, str] = {}
    priority: int = 0
    weight: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 1
    enabled: bool = True
    groups: Annotated[list[Name], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["default"]
    )
    rpm: Annotated[int, msgspec.Meta(ge=1)] | None = None  # per key
    tpm: Annotated[int, msgspec.Meta(ge=1)] | None = None  # per key
    timeouts: Timeouts = Timeouts()
    hedge: Hedge | None = None
    api_version: str | None = None  # azure: api-version (default: the upstream type's)
    # Alert when the provider's balance of a key falls below this, in the provider's currency
    # (decimal, read exactly); only for upstream types whose host reports a balance.
    balance_alert_below: Decimal | None = None

    def stored(self) -> dict[str, Any]:
        """The channel's fields as the store keeps them (the threshold in micro-units)."""
        fields = msgspec.structs.asdict(self)
        below = fields.pop("balance_alert_below")
        fields["balance_alert_below_micro"] = to_micro(below) if below is not None else None
        return fields


Usd = Decimal  # decimal USD, parsed exactly (YAML 0.1 is 0.1); checked non-negative by _check
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Limits of a token or user, as written in the config file."""

    daily_cap_usd: Usd | None = None
    monthly_cap_usd: Usd | None = None
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_concurrency: PositiveInt | None = None
    ip_allow: list[str] | None = None  # CIDRs
    suspend_on_anomaly: bool | None = None  # disable automatically when an anomaly alert fires

    def limits(self) -> Limits:
        def micro(v: Decimal | None) -> int | None:
            return None if v is None else to_micro(v)

        return Limits(
            daily_cap_micro_usd=micro(self.daily_cap_usd),
            monthly_cap_micro_usd=micro(self.monthly_cap_usd),
            rpm=self.rpm,
            tpm=self.tpm,
            max_concurrency=self.max_concurrency,
            ip_allow=tuple(self.ip_allow) if self.ip_allow is not None else None,
            suspend_on_anomaly=self.suspend_on_anomaly,
        )


class TokenConfig(LimitsConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    key: Annotated[str, msgspec.Meta(min_length=16, max_length=200)] | None = None
    models: list[str] | None = None
    enabled: bool = True
    expires_at: int | None = None  # unix seconds
    group: Name = "default"  # routing group of a token without a user (a user's tokens use the user's)
    user: Name | None = None  # the user it bills; None: nobody (automation)
    quota_usd: Usd | None = None  # the most it may ever spend


class UserConfig(LimitsConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    group: Name = "default"
    enabled: bool = True
    initial_balance_usd: Usd | None = None  # applied once, as a ledger entry, on first start


class GroupConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    multiplier: Decimal = Decimal(1)  # prices × this
    channel_groups: Annotated[list[Name], msgspec.Meta(min_length=1)] | None = None  # default: [name]


class BillingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    timezone: str = "UTC"  # where calendar days and months (spend caps, rollups) begin
    prompt_margin: Decimal = Decimal("0.25")  # the hold counts the prompt estimate × (1 + this)
    default_max_output: PositiveInt = 4096  # tokens held for a model whose price has no max_output


class UsageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    flush_interval_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 1000
    shutdown_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 15.0
    # Records waiting for the database beyond which new requests are refused (503) rather than
    # let memory grow without bound while the database is down or far behind.
    max_pending: Annotated[int, msgspec.Meta(ge=1)] = 200_000


Seconds = Annotated[float, msgspec.Meta(gt=0)]


class UpstreamConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Defaults for every channel (a channel's ``timeouts`` override them)."""

    connect_timeout_s: Seconds = 10.0
    first_byte_timeout_s: Seconds = 300.0  # a non-streaming answer's first byte comes when it is done
    idle_timeout_s: Seconds = 120.0
    timeout_s: Seconds = 600.0
    max_connections: Annotated[int, msgspec.Meta(ge=1)] | None = None


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-key circuit breakers, cooldowns and probes."""

    failures_to_open: Annotated[int, msgspec.Meta(ge=1)] = 5  # consecutive failures
    error_rate_to_open: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    min_samples: Annotated[int, msgspec.Meta(ge=1)] = 20  # before the error rate counts
    window: Annotated[int, msgspec.Meta(ge=2)] = (
        50  # the error rate and latency average over ~this many calls
    )
    open_s: Seconds = 5.0  # first wait before probing an open breaker; doubles per failed probe
    max_open_s: Seconds = 300.0
    cooldown_s: Seconds = 1.0  # after a 429 without retry-after
    disabled_probe_s: Seconds = 300.0  # how often a key disabled for auth or billing is probed
    probe_timeout_s: Seconds = 30.0
    probe_tick_ms: Annotated[float, msgspec.Meta(ge=10)] = 100.0


class Webhook(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    secret: Annotated[str, msgspec.Meta(min_length=16)]


class AlertsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    webhooks: list[Webhook] = []
    cap_thresholds: list[Annotated[float, msgspec.Meta(gt=0, le=1)]] = msgspec.field(
        default_factory=lambda: [0.5, 0.8, 1.0]
    )  # fractions of each spend cap and quota
    balance_below_usd: Decimal | None = None  # alert when a user's balance falls below this
    anomaly_factor: Annotated[float, msgspec.Meta(gt=1)] = 5.0
    anomaly_min_requests: Annotated[int, msgspec.Meta(ge=1)] = 50  # per 5 minutes, the floor of a baseline
    anomaly_min_spend_usd: Decimal = Decimal(1)  # per 5 minutes, the floor of a spend baseline
    auth_failures_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 20  # from one address
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 6
    retry_base_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    # How often the provider balance of the keys of channels with ``balance_alert_below`` is read.
    provider_balance_poll_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 600.0


class RoutingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    deadline_s: Seconds = 600.0  # for all attempts of a request, until its response starts
    capacity_wait_ms: Annotated[float, msgspec.Meta(ge=0)] = 2000.0  # every key at its limit: wait this long
    strategy: Literal["weighted", "latency"] = "weighted"
    affinity_ttl_s: Seconds | None = None  # same `user` / `prompt_cache_key` → same channel
    fallbacks: dict[str, list[str]] = {}  # model → models to try when its channels are exhausted
    context_fallbacks: dict[str, list[str]] = {}  # model → larger-context models (context_length_exceeded)
    hedge: dict[str, Hedge] = {}  # model → hedging policy


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = DEFAULT_LISTEN
    database: str = DEFAULT_DATABASE
    admin_key: str | None = None
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 20 * 1024 * 1024
    snapshot_poll_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    demo: bool | None = None  # None: on when no channel is configured
    usage: UsageConfig = UsageConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    health: HealthConfig = HealthConfig()
    routing: RoutingConfig = RoutingConfig()
    redis: str | None = None  # redis://host:port/db — shared balances and limits for several workers
    billing: BillingConfig = BillingConfig()
    alerts: AlertsConfig = AlertsConfig()
    groups: list[GroupConfig] = []  # price multiplier and channel groups of each user group
    users: list[UserConfig] = []
    prices: dict[str, PriceConfig] = {}  # model → price, over the shipped defaults
    channels: list[ChannelConfig] = []
    tokens: list[TokenConfig] = []

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"$.listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(node: Any, env: dict[str, str], path: str = "$") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a raw config tree.

    A value that is exactly one reference to an unset variable becomes ``None`` (so an
    optional setting such as ``admin_key`` counts as absent); an unset variable inside a
    longer string is an error.
    """
    if isinstance(node, dict):
        return {k: substitute_env(v, env, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = _ENV_REF.fullmatch(node)
    if whole and whole.group(1) not in env and whole.group(2) is None:
        return None

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV_REF.sub(repl, node)


def parse_settings(raw: Any, env: dict[str, str] | None = None) -> Settings:
    """Validate a raw config tree (as loaded from YAML) into frozen :class:`Settings`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("$: the configuration must be a mapping")
    raw = substitute_env(raw, dict(os.environ) if env is None else env)
    try:
        settings = msgspec.convert(raw, Settings, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_friendly(str(exc))) from None
    _check(settings)
    return settings


def load_settings(path: str | Path | None, env: dict[str, str] | None = None) -> Settings:
    """Load settings from ``path``; ``None`` means ``./vectorengine.yaml`` if present, else defaults."""
    if path is None:
        path = Path(DEFAULT_CONFIG_PATH)
        if not path.exists():
            return parse_settings({}, env)
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_settings(raw, env)


def _friendly(message: str) -> str:
    # msgspec: "Object contains unknown field `wieght` - at `$.channels[0]`"
    m = re.match(r"(.*) - at `(\$[^`]*)`$", message)
    what, where = m.groups() if m else (message, "$")
    unknown = re.match(r"Object contains unknown field `([^`]+)`", what)
    if unknown:
        return f"{where}.{unknown.group(1)}: unknown key"
    return f"{where}: {what}"


def _check(settings: Settings) -> None:
    split_listen(settings.listen)
    seen: set[str] = set()
    for i, ch in enumerate(settings.channels):
        where = f"$.channels[{i}]"
        if ch.name in seen:
            raise ConfigError(f"{where}.name: duplicate channel name {ch.name!r}")
        seen.add(ch.name)
        if ch.type not in UPSTREAM_TYPES:
            known = ", ".join(sorted(UPSTREAM_TYPES))
            raise ConfigError(f"{where}.type: unknown upstream type {ch.type!r} (known: {known})")
        if not ch.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: must start with http:// or https://")
        for model in ch.model_map:
            if model not in ch.models:
                raise ConfigError(f"{where}.model_map.{model}: not one of this channel's models")
        if ch.balance_alert_below is not None:
            _check_balance_alert(ch, where)
    names: set[str] = set()
    for i, tok in enumerate(settings.tokens):
        if tok.name in names:
            raise ConfigError(f"$.tokens[{i}].name: duplicate token name {tok.name!r}")
        names.add(tok.name)
        _check_money(tok, f"$.tokens[{i}]", ("quota_usd",))
    groups = {"default"}
    for i, grp in enumerate(settings.groups):
        if grp.name in groups and grp.name != "default":
            raise ConfigError(f"$.groups[{i}].name: duplicate group name {grp.name!r}")
        groups.add(grp.name)
        try:
            to_micro(grp.multiplier, negative=False)
        except MoneyError as exc:
            raise ConfigError(f"$.groups[{i}].multiplier: {exc}") from None
    users: set[str] = set()
    for i, user in enumerate(settings.users):
        where = f"$.users[{i}]"
        if user.name in users:
            raise ConfigError(f"{where}.name: duplicate user name {user.name!r}")
        users.add(user.name)
        if user.group not in groups:
            raise ConfigError(f"{where}.group: no group named {user.group!r} in $.groups")
        _check_money(user, where, ("initial_balance_usd",))
    for model, price in settings.prices.items():
        try:
            price.to_price()
        except MoneyError as exc:
            raise ConfigError(f"$.prices.{model}: {exc}") from None
    for name in ("balance_below_usd", "anomaly_min_spend_usd"):
        value = getattr(settings.alerts, name)
        if value is not None:
            try:
                to_micro(value, negative=False)
            except MoneyError as exc:
                raise ConfigError(f"$.alerts.{name}: {exc}") from None
    if not 0 <= settings.billing.prompt_margin <= 10:
        raise ConfigError("$.billing.prompt_margin: must be between 0 and 10")
    try:
        zoneinfo.ZoneInfo(settings.billing.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"$.billing.timezone: unknown time zone {settings.billing.timezone!r}") from None
    if settings.workers > 1 and settings.redis is None:
        raise ConfigError(
            "$.redis: with several workers, balances, spend caps and rate limits must be shared; "
            "set redis: redis://HOST:PORT/DB (or run one worker)"
        )
    if not settings.database.startswith(("sqlite", "postgresql", "postgres")):
        raise ConfigError("$.database: expected a sqlite:/// or postgresql+asyncpg:// URL")
    if settings.database.startswith("sqlite") and (
        ":memory:" in settings.database or settings.database.rstrip("/") in ("sqlite:", "sqlite:/")
    ):
        raise ConfigError("$.database: SQLite in memory is not supported; give it a file (sqlite:///./x.db)")


def _check_balance_alert(ch: ChannelConfig, where: str) -> None:
    if UPSTREAM_TYPES[ch.type].balance is None:
        reporting = ", ".join(sorted(n for n, t in UPSTREAM_TYPES.items() if t.balance is not None))
        raise ConfigError(
            f"{where}.balance_alert_below: upstream type {ch.type!r} reports no balance "
            f"(types that do: {reporting})"
        )
    try:
        to_micro(ch.balance_alert_below, negative=False)
    except MoneyError as exc:
        raise ConfigError(f"{where}.balance_alert_below: {exc}") from None


def _check_money(cfg: LimitsConfig, where: str, extra: tuple[str, ...]) -> None:
    for name in ("daily_cap_usd", "monthly_cap_usd", *extra):
        value = getattr(cfg, name)
        if value is not None:
            try:
                to_micro(value, negative=False)
            except MoneyError as exc:
                raise ConfigError(f"{where}.{name}: {exc}") from None
    for j, cidr in enumerate(cfg.ip_allow or ()):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{where}.ip_allow[{j}]: not an IP network: {cidr!r}") from None


def encode_settings(settings: Settings) -> bytes:
    return msgspec.json.encode(settings)


def decode_settings(data: bytes | str) -> Settings:
    return msgspec.json.decode(data, type=Settings)
