"""Routing and resilience: channel groups, per-key limits, timeouts, hedging; token group; attempts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("groups", sa.JSON, nullable=False, server_default='["default"]'))
        batch.add_column(sa.Column("rpm", sa.Integer, nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer, nullable=True))
        batch.add_column(sa.Column("timeouts", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("hedge", sa.JSON, nullable=True))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("group", sa.String(100), nullable=False, server_default="default"))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("attempts", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("attempts")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("group")
    with op.batch_alter_table("channels") as batch:
        for name in ("hedge", "timeouts", "tpm", "rpm", "groups"):
            batch.drop_column(name)
