"""E-mail contacts in today's one spelling: the domain in lower-case ASCII (IDNA), invisible characters dropped.

Suppressions and ledger rows written before kept what the old rule gave (`ann@bücher.de`, a zero-width space
inside): each is rewritten to `normalize_contact`'s form, so it keeps matching the sends and replies that are
now spelled that way. Where two active suppressions turn out to be one contact, the oldest stays active and
the others are lifted, kept as history. A contact the rule no longer accepts is left as it was.

Revision ID: 0006
Revises: 0005
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from scheduler.errors import InvalidContact
from scheduler.flow.contacts import normalize_contact

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

suppressions = sa.table(
    "suppressions",
    sa.column("id", sa.Integer),
    sa.column("contact", sa.String),
    sa.column("lifted_at", sa.DateTime(timezone=True)),
    sa.column("lifted_reason", sa.String),
)
sends = sa.table("sends", sa.column("contact", sa.String))


def _normal(contact: str) -> str:
    """The contact as `normalize_contact` spells it today; as stored if the rule no longer accepts it."""
    try:
        return normalize_contact(contact)
    except InvalidContact:
        return contact


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(suppressions.c.id, suppressions.c.contact, suppressions.c.lifted_at)
        .where(suppressions.c.contact.contains("@"))
        .order_by(suppressions.c.id)
    ).all()
    normal = {row.id: _normal(row.contact) for row in rows}
    oldest: dict[str, int] = {}
    for row in rows:
        if row.lifted_at is None:
            oldest.setdefault(normal[row.id], row.id)
    # Lift the duplicates first: the partial unique index allows one active entry per contact at every step.
    merged = [row.id for row in rows if row.lifted_at is None and oldest[normal[row.id]] != row.id]
    if merged:
        bind.execute(
            sa.update(suppressions)
            .where(suppressions.c.id.in_(merged))
            .values(lifted_at=datetime.now(UTC), lifted_reason="merged: the same contact as an older entry")
        )
    for row in rows:
        if normal[row.id] != row.contact:
            bind.execute(sa.update(suppressions).where(suppressions.c.id == row.id).values(contact=normal[row.id]))
    for (contact,) in bind.execute(sa.select(sends.c.contact).distinct().where(sends.c.contact.contains("@"))).all():
        if _normal(contact) != contact:
            bind.execute(sa.update(sends).where(sends.c.contact == contact).values(contact=_normal(contact)))


def downgrade() -> None:
    """Nothing to undo: the old rule matched these spellings no worse than the ones they replaced."""
