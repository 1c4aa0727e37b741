"""Messages a campaign run's flows held or did not send by policy, counted per run and result.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_messages",
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "result", name="run_messages_pk"),
    )
    op.create_index("run_messages_at", "run_messages", ["at"])


def downgrade() -> None:
    op.drop_index("run_messages_at", table_name="run_messages")
    op.drop_table("run_messages")
