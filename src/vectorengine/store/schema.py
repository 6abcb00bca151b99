"""Table definitions (SQLAlchemy Core). The migrations in ``migrations/versions`` create them.

Times are integer Unix milliseconds; upstream keys are stored as given (the gateway needs
them to call the provider); users' API keys are stored only as a SHA-256 hash.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

channels = sa.Table(
    "channels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("base_url", sa.Text, nullable=False),
    sa.Column("keys", sa.JSON, nullable=False),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("model_map", sa.JSON, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("weight", sa.Integer, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("managed_by", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # 0002: routing and resilience
    sa.Column("groups", sa.JSON, nullable=False),
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("timeouts", sa.JSON, nullable=False),
    sa.Column("hedge", sa.JSON, nullable=True),
    sa.Column("api_version", sa.String(64), nullable=True),  # 0003
    sa.Column("balance_alert_below_micro", sa.BigInteger, nullable=True),  # 0005
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_hint", sa.String(32), nullable=False),
    sa.Column("models", sa.JSON, nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("managed_by", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("group", sa.String(100), nullable=False),  # 0002
    # 0004: accounting
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("quota_micro_usd", sa.BigInteger, nullable=True),
    sa.Column("limits", sa.JSON, nullable=False),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("token_id", sa.Integer, nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("upstream_model", sa.String(200), nullable=True),
    sa.Column("channel_id", sa.Integer, nullable=True),
    sa.Column("key_index", sa.Integer, nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error_kind", sa.String(48), nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttfb_ms", sa.Float, nullable=True),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("reasoning_tokens", sa.Integer, nullable=False),
    sa.Column("client_ip", sa.String(64), nullable=True),
    sa.Column("attempts", sa.JSON, nullable=True),  # 0002: list of AttemptRecord
    # 0004: accounting
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("cost_micro_usd", sa.BigInteger, nullable=False),
    sa.Column("reserved_micro_usd", sa.BigInteger, nullable=False),
    sa.Column("unbilled_micro_usd", sa.BigInteger, nullable=False),
    sa.Column("price", sa.JSON, nullable=True),
    sa.Column("multiplier_ppm", sa.BigInteger, nullable=True),
    sa.Column("usage_estimated", sa.Boolean, nullable=False),
    sa.Column("cache_write_tokens", sa.Integer, nullable=False),
)
sa.Index("ix_usage_token", usage_records.c.token_id, usage_records.c.id)
sa.Index("ix_usage_model", usage_records.c.model, usage_records.c.id)
sa.Index("ix_usage_channel", usage_records.c.channel_id, usage_records.c.id)
sa.Index("ix_usage_created", usage_records.c.created_at)
sa.Index("ix_usage_user", usage_records.c.user_id, usage_records.c.id)

# -- 0004: accounting -------------------------------------------------------------------------

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("multiplier_ppm", sa.BigInteger, nullable=False),
    sa.Column("channel_groups", sa.JSON, nullable=True),
    sa.Column("managed_by", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("group", sa.String(100), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("limits", sa.JSON, nullable=False),
    # The sum of the user's ledger entries, kept in the same transactions that append them.
    sa.Column("balance_micro_usd", sa.BigInteger, nullable=False),
    sa.Column("managed_by", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

prices = sa.Table(
    "prices",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("price", sa.JSON, nullable=False),  # billing.prices.Price
    sa.Column("managed_by", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount_micro_usd", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
)
sa.Index("ix_ledger_user", ledger.c.user_id, ledger.c.id)

# Per day (billing time zone) × user × token × model × channel; 0 and "" stand for none, so the
# key has no NULLs and upserts can add to a row.
usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("day", sa.String(8), primary_key=True),  # YYYYMMDD
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("token_id", sa.Integer, primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("channel_id", sa.Integer, primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_micro_usd", sa.BigInteger, nullable=False),
)

redemption_codes = sa.Table(
    "redemption_codes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("code_hint", sa.String(32), nullable=False),
    sa.Column("batch", sa.String(100), nullable=False),
    sa.Column("value_micro_usd", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("redeemed_by", sa.Integer, nullable=True),
    sa.Column("redeemed_at", sa.BigInteger, nullable=True),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(48), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),  # "token:12", "user:3", "channel:2#1"
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("delivered", sa.Boolean, nullable=False),
    sa.Column("delivery_attempts", sa.Integer, nullable=False),
    # Alerts a watcher raises at most once ("cap:token:3:…:0.8"): every worker watches the same
    # shared state, and the first to insert the key is the one that raises it.
    sa.Column("dedupe", sa.String(200), nullable=True),
)
sa.Index("ix_alerts_created", alerts.c.created_at)
sa.Index("ux_alerts_dedupe", alerts.c.dedupe, unique=True)

# One row (id = 1); ``n`` goes up by one whenever channels or tokens change, so every
# worker and instance can tell cheaply that its in-memory snapshot is stale.
revision = sa.Table(
    "revision",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
