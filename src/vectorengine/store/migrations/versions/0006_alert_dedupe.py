"""Alerts carry their deduplication key in a unique column, so that several workers or
instances watching the same state raise each alert once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("dedupe", sa.String(200), nullable=True))
    # Alerts stored before kept the key in their data; several workers may have stored the same
    # one, so only the first of each gets it.
    key = (
        "json_extract(data, '$.dedupe')" if op.get_bind().dialect.name == "sqlite" else "(data ->> 'dedupe')"
    )
    op.execute(
        f"UPDATE alerts SET dedupe = {key} WHERE id IN "
        f"(SELECT MIN(id) FROM alerts WHERE {key} IS NOT NULL GROUP BY {key})"
    )
    op.create_index("ux_alerts_dedupe", "alerts", ["dedupe"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_alerts_dedupe", table_name="alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("dedupe")
