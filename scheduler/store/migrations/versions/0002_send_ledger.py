"""The send ledger: one row per message delivered, for frequency caps across campaigns.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("contact", sa.String(320), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("campaign_id", sa.String(255), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("key", name="sends_key"),
    )
    op.create_index("sends_contact_at", "sends", ["contact", "at"])
    op.create_index("sends_at", "sends", ["at"])


def downgrade() -> None:
    op.drop_index("sends_at", table_name="sends")
    op.drop_index("sends_contact_at", table_name="sends")
    op.drop_table("sends")
