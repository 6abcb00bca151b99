"""Accounting: users, groups, prices, the ledger, daily rollups, redemption codes, alerts;
token limits and the cost columns of usage records.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("quota_micro_usd", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("limits", sa.JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer, nullable=True))
        for name in ("cost_micro_usd", "reserved_micro_usd", "unbilled_micro_usd"):
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("price", sa.JSON, nullable=True))
        batch.add_column(sa.Column("multiplier_ppm", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("usage_estimated", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("cache_write_tokens", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_usage_user", "usage_records", ["user_id", "id"])
    op.create_table(
        "groups",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("multiplier_ppm", sa.BigInteger, nullable=False),
        sa.Column("channel_groups", sa.JSON, nullable=True),
        sa.Column("managed_by", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("group", sa.String(100), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("balance_micro_usd", sa.BigInteger, nullable=False),
        sa.Column("managed_by", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "prices",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("price", sa.JSON, nullable=False),
        sa.Column("managed_by", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ledger",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_micro_usd", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_index("ix_ledger_user", "ledger", ["user_id", "id"])
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.String(8), primary_key=True),
        sa.Column("user_id", sa.Integer, primary_key=True),
        sa.Column("token_id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("channel_id", sa.Integer, primary_key=True),
        *(
            sa.Column(name, sa.BigInteger, nullable=False)
            for name in (
                "requests",
                "errors",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "reasoning_tokens",
                "cost_micro_usd",
            )
        ),
    )
    op.create_table(
        "redemption_codes",
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
    op.create_table(
        "alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=False),
        sa.Column("delivery_attempts", sa.Integer, nullable=False),
    )
    op.create_index("ix_alerts_created", "alerts", ["created_at"])


def downgrade() -> None:
    for table in ("alerts", "redemption_codes", "usage_daily", "ledger", "prices", "users", "groups"):
        op.drop_table(table)
    op.drop_index("ix_usage_user", "usage_records")
    with op.batch_alter_table("usage_records") as batch:
        for name in (
            "cache_write_tokens",
            "usage_estimated",
            "multiplier_ppm",
            "price",
            "unbilled_micro_usd",
            "reserved_micro_usd",
            "cost_micro_usd",
            "user_id",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("tokens") as batch:
        for name in ("limits", "quota_micro_usd", "user_id"):
            batch.drop_column(name)
