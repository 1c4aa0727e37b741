"""Conversions, kept whether or not a flow was running, and the campaign flows each is attributed to.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("conversion_id", sa.String(255), nullable=False),
        sa.Column("cart_id", sa.String(255)),
        sa.Column("customer_id", sa.String(255)),
        sa.Column("contact", sa.String(320)),
        sa.Column("amount_micros", sa.BigInteger),
        sa.Column("currency", sa.String(3)),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("conversion_id", name="conversions_conversion_id"),
    )
    op.create_table(
        "conversion_attributions",
        sa.Column("conversion_id", sa.String(255), nullable=False),
        sa.Column("campaign_id", sa.String(255), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("variant", sa.String(255)),
        sa.Column("flow_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_micros", sa.BigInteger),
        sa.Column("currency", sa.String(3)),
        sa.PrimaryKeyConstraint("conversion_id", "campaign_id", name="conversion_attributions_pk"),
    )
    op.create_index("conversion_attributions_campaign_variant", "conversion_attributions", ["campaign_id", "variant"])


def downgrade() -> None:
    op.drop_index("conversion_attributions_campaign_variant", table_name="conversion_attributions")
    op.drop_table("conversion_attributions")
    op.drop_table("conversions")
