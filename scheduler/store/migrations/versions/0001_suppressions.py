"""Suppressions: every opt-out, active while `lifted_at` is null.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("contact", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("campaign_id", sa.String(255)),
        sa.Column("workflow_id", sa.String(255)),
        sa.Column("lifted_at", sa.DateTime(timezone=True)),
        sa.Column("lifted_reason", sa.String(200)),
    )
    op.create_index(
        "suppressions_active_contact",
        "suppressions",
        ["contact"],
        unique=True,
        sqlite_where=sa.text("lifted_at IS NULL"),
        postgresql_where=sa.text("lifted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("suppressions_active_contact", table_name="suppressions")
    op.drop_table("suppressions")
