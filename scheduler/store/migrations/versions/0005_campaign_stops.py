"""Emergency stops of campaigns: the audit trail, and the instant before which a campaign's flows send nothing.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_stops",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("campaign_stops_campaign_at", "campaign_stops", ["campaign_id", "at"])


def downgrade() -> None:
    op.drop_index("campaign_stops_campaign_at", table_name="campaign_stops")
    op.drop_table("campaign_stops")
