"""Deliveries: each customer message sent, with the furthest status its receipts reported.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("campaign_id", sa.String(255), nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("contact", sa.String(320)),
        sa.Column("provider_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(32)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("message_id", name="deliveries_pk"),
    )
    op.create_index("deliveries_provider_id", "deliveries", ["provider_id"])
    op.create_index("deliveries_campaign_step", "deliveries", ["campaign_id", "step"])


def downgrade() -> None:
    op.drop_index("deliveries_campaign_step", table_name="deliveries")
    op.drop_index("deliveries_provider_id", table_name="deliveries")
    op.drop_table("deliveries")
