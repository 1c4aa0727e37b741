"""The service's own database: SQLite by default (one file, WAL), PostgreSQL where several workers and API
replicas share it. Its schema is Alembic's (`scheduler/store/migrations/`), brought up to date whenever a
process opens the store (`scheduler up`, `worker`, `api`, `db upgrade`): never by hand.

This module is the engine and the tables; each table's code is a module beside it (`consent`, `api_keys`,
`ledger`, `stops`, `conversions`, `deliveries`, and the per-contact `contact_locks`). The package imports only the
ground floor.

Calls are synchronous (SQLAlchemy Core) and short; async code runs them with `asyncio.to_thread`.
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from scheduler.errors import StoreUnavailable, first_line
from scheduler.store.contact_locks import AdvisoryLocks, ContactLocks, FileLocks

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
MAX_REASON = 200
"""The longest reason kept (of a suppression, its lifting, a stop): the width of those columns."""
metadata = MetaData()

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("contact", String(320), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("reason", String(MAX_REASON), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("campaign_id", String(255)),
    Column("workflow_id", String(255)),
    Column("lifted_at", DateTime(timezone=True)),
    Column("lifted_reason", String(MAX_REASON)),
    # One active entry per contact; lifted ones stay as the audit trail.
    Index(
        "suppressions_active_contact",
        "contact",
        unique=True,
        sqlite_where=text("lifted_at IS NULL"),
        postgresql_where=text("lifted_at IS NULL"),
    ),
)
"""Every opt-out, active while `lifted_at` is null; an opt-in sets `lifted_at` and keeps the row."""

sends = Table(
    "sends",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("contact", String(320), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("campaign_id", String(255), nullable=False),
    Column("workflow_id", String(255), nullable=False),
    Column("step", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    # A retried delivery reuses its message's key: it is recorded once.
    UniqueConstraint("key", name="sends_key"),
    Index("sends_contact_at", "contact", "at"),
    Index("sends_at", "at"),
)
"""The send ledger (`scheduler.store.ledger`): one row per message delivered or being delivered, for frequency caps.
Rows older than the longest cap's window are pruned."""

run_messages = Table(
    "run_messages",
    metadata,
    Column("run_id", String(255), nullable=False),
    Column("result", String(32), nullable=False),
    Column("count", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("run_id", "result", name="run_messages_pk"),
    Index("run_messages_at", "at"),
)
"""How many messages of a campaign run's flows were held or not sent by policy (`held`, `skipped_quiet_hours`,
`skipped_frequency_cap`), for `GET /schedules`; `at`: the last count. Kept `RUN_MESSAGES_KEPT`."""

api_keys_table = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("scope", String(8), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    UniqueConstraint("name", name="api_keys_name"),
    UniqueConstraint("key_hash", name="api_keys_key_hash"),
)
"""API keys (`store.api_keys`, a module named as the table: hence `_table`): the SHA-256 of each key, never the key;
a revoked key keeps its row (`revoked_at`)."""

campaign_stops = Table(
    "campaign_stops",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", String(255), nullable=False),
    Column("mode", String(8), nullable=False),
    Column("reason", String(MAX_REASON), nullable=False),
    Column("by", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("campaign_stops_campaign_at", "campaign_id", "at"),
)
"""Every emergency stop of a campaign (`scheduler.campaigns.stop`): who, why, when. A `cancel` stop also bars every flow
of the campaign started before it from sending anything more."""

conversions_table = Table(
    "conversions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("conversion_id", String(255), nullable=False),
    Column("cart_id", String(255)),
    Column("customer_id", String(255)),
    Column("contact", String(320)),
    Column("amount_micros", BigInteger),
    Column("currency", String(3)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # A redelivered conversion (same id) is recorded once: the first stands.
    UniqueConstraint("conversion_id", name="conversions_conversion_id"),
)
"""Every purchase reported (`scheduler.store.conversions`, a module named as the table: hence `_table`), whether or
not a flow was running. Amounts in millionths (`amount_micros`): exact sums on both backends, which SQLite's floats
would not give."""

conversion_attributions = Table(
    "conversion_attributions",
    metadata,
    Column("conversion_id", String(255), nullable=False),
    Column("campaign_id", String(255), nullable=False),
    Column("workflow_id", String(255), nullable=False),
    Column("variant", String(255)),
    Column("flow_started_at", DateTime(timezone=True), nullable=False),
    Column("amount_micros", BigInteger),
    Column("currency", String(3)),
    # One flow per campaign gets a conversion: a campaign's numbers count each purchase once.
    PrimaryKeyConstraint("conversion_id", "campaign_id", name="conversion_attributions_pk"),
    Index("conversion_attributions_campaign_variant", "campaign_id", "variant"),
)
"""Which campaign flow each conversion is attributed to (`scheduler.replies.attribution`), with what a campaign's
results sum (variant, amount), so they are one query on this table."""


deliveries_table = Table(
    "deliveries",
    metadata,
    Column("message_id", String(255), nullable=False),
    Column("workflow_id", String(255), nullable=False),
    Column("run_id", String(255), nullable=False),
    Column("campaign_id", String(255), nullable=False),
    Column("step", String(255), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("contact", String(320)),
    Column("provider_id", String(64)),
    Column("status", String(16), nullable=False),
    Column("error_code", String(32)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("message_id", name="deliveries_pk"),
    Index("deliveries_provider_id", "provider_id"),
    Index("deliveries_campaign_step", "campaign_id", "step"),
)
"""Every customer message a flow sent (`scheduler.store.deliveries`, a module named as the table: hence `_table`), one
row per message id (its idempotency key), with the furthest status its delivery receipts reported."""


def stored_utc(at: datetime) -> datetime:
    """An instant read back from the store, in UTC (SQLite keeps no offset: what it gives back is UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class Store:
    """The engine of the service's database, its schema brought up to date (`open`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.locks = _locks(engine)
        """Per-contact locks that order opt-outs against the sends racing them, and frequency-cap reservations
        against each other (`scheduler.store.contact_locks`)."""
        self._relaxed = _relaxed(engine)
        self._write_turn = threading.Lock()
        """Taken by `relaxed(queued=True)` writers on SQLite."""

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect and migrate; a SQLite file (and its directory) is created on first use.

        Raises:
            StoreUnavailable: the database cannot be reached or migrated (the message says which and why).
        """
        engine: Engine | None = None
        try:
            engine = _engine(url)
            upgrade(engine)
            return cls(engine)
        except (SQLAlchemyError, OSError) as exc:  # OSError: a SQLite directory or lock file that cannot be made
            if engine is not None:
                engine.dispose()
            raise StoreUnavailable(f"store {_shown(url)}: {first_line(exc)}") from None

    @contextmanager
    def relaxed(self, *, queued: bool = False) -> Iterator[Connection]:
        """A transaction for writes a power cut may lose (the send ledger: a cap then counts a message or two
        fewer), so its commit need not wait for the disk: SQLite commits without fsync, PostgreSQL with
        `synchronous_commit = off`. Consent is never written through it.

        `queued`: on SQLite, this process's writers take turns on a lock first. SQLite lets one writer in at a
        time and a waiting one polls, sleeping 1, 2, 5, 10 ms… between tries; for short writes made by many
        requests at once (delivery receipts) queueing in the process is much faster than polling the file."""
        with self._write_turn if queued and self.dialect == "sqlite" else nullcontext():
            with self._relaxed.begin() as connection:
                if self.dialect == "postgresql":
                    connection.execute(text("SET LOCAL synchronous_commit = off"))
                yield connection

    def close(self) -> None:
        self.locks.close()
        self._relaxed.dispose()
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def shown_url(self) -> str:
        """The database URL without its password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)


def _engine(url: str | URL, *, synchronous: str = "FULL") -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        # WAL: readers never wait for the writer; FULL: a committed opt-out survives a power cut.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    return engine


def _relaxed(engine: Engine) -> Engine:
    """SQLite: a second engine on the same file whose commits skip the fsync (WAL, `synchronous=NORMAL`)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    return _engine(engine.url, synchronous="NORMAL")


def _locks(engine: Engine) -> ContactLocks:
    if engine.dialect.name == "postgresql":
        return AdvisoryLocks(engine)
    database = engine.url.database
    if not database or database == ":memory:":  # a private database: private locks
        return FileLocks(tempfile.mkstemp(prefix="scheduler-", suffix=".locks")[1])
    return FileLocks(f"{database}.locks")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration: the schema every open store is brought to."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration, once even when several processes start together."""
    config = _alembic_config()
    head = head_revision()
    with _migration_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7233001)"))  # held until this transaction ends
        if MigrationContext.configure(connection).get_current_revision() == head:
            return
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        log.info("store: schema upgraded to %s", head)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks: an exclusive lock on a file beside the database instead."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)
