"""Migration round trips: a freshly opened store (at head), taken down to a revision and up again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from scheduler.store import MIGRATIONS, Store, head_revision


@dataclass
class Migrations:
    connection: Connection
    config: Config

    def downgrade(self, revision: str) -> None:
        command.downgrade(self.config, revision)

    def upgrade(self) -> None:
        command.upgrade(self.config, "head")


@contextmanager
def migrations(store_url: str) -> Iterator[Migrations]:
    """Alembic on one transaction of a store `Store.open` brought to head (asserted)."""
    store = Store.open(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with store.engine.begin() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
            config.attributes["connection"] = connection
            yield Migrations(connection, config)
    finally:
        store.close()
