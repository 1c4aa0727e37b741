"""Deliveries as the store keeps them: one row per customer message sent (its idempotency key), and the furthest
status its delivery receipts reported.

The activity writes the row before it hands the message over (`begin`, status `queued`), so a receipt that
races the activity's own bookkeeping always finds it; after the gateway's answer it adds the gateway's id
(`sent`). Receipts (`report`) move a row forward only: a status replaces one of a lower rank
(`DeliveryState.rank`), in one conditional UPDATE, so receipts out of order, repeated or concurrent end in
the furthest state and nothing goes back from `delivered`. Every write commits without waiting for the disk
(`Store.relaxed`, like the send ledger): the row is written between a message's last checks (stop, opt-out,
caps) and its delivery, so it must cost little there, and a receipt is written per request. A power cut may
forget the last few: a receipt then leaves its message at an earlier state, never a wrong one, and a lost row
makes that message's later receipts 404 (and, in the narrowest case, a retry after it re-post the message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from scheduler.flow.signals import DeliveryState
from scheduler.store import Store, deliveries_table, stored_utc

COUNTED = (DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.UNDELIVERED, DeliveryState.FAILED)
"""The statuses a campaign's stats count per step (a `queued` message is counted as sent: it went)."""


@dataclass(frozen=True)
class DeliveryRecord:
    """A customer message as recorded."""

    message_id: str
    """Its idempotency key, which the gateway gets and receipts name."""
    workflow_id: str
    run_id: str
    campaign_id: str
    step: str
    channel: str
    contact: str | None = None
    """Normalized (`scheduler.flow.contacts.normalize_contact`); None for a name the console channel logged."""
    provider_id: str | None = None
    """The gateway's id of the message (Twilio's SID), once it answered."""
    status: DeliveryState = DeliveryState.QUEUED
    error_code: str | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None
    """When the gateway took the message; None before."""


def _rank() -> Any:
    """The stored status's rank, in SQL (an unknown spelling ranks below every status)."""
    return case({s.value: s.rank for s in DeliveryState}, value=deliveries_table.c.status, else_=-1)


class Deliveries:
    """The deliveries in the store. Synchronous: async callers use `asyncio.to_thread`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self, record: DeliveryRecord) -> DeliveryRecord:
        """Record a message about to go, unless it is recorded already (a retried delivery): the stored record.

        A stored `provider_id` means an earlier attempt got the message to its gateway."""
        row = {
            "message_id": record.message_id,
            "workflow_id": record.workflow_id,
            "run_id": record.run_id,
            "campaign_id": record.campaign_id,
            "step": record.step,
            "channel": record.channel,
            "contact": record.contact,
            "status": DeliveryState.QUEUED.value,
            "updated_at": record.updated_at or datetime.now(UTC),
        }
        insert = self._dialect().insert(deliveries_table).on_conflict_do_nothing(index_elements=["message_id"])
        with self.store.relaxed(queued=True) as connection:
            connection.execute(insert.values(row))
            stored = _get(connection, record.message_id)
        assert stored is not None
        return stored

    def sent(self, message_id: str, *, provider_id: str | None, at: datetime) -> DeliveryRecord | None:
        """The gateway took the message (`provider_id`: its id of it): the record, its status at least `sent`."""
        with self.store.relaxed(queued=True) as connection:
            connection.execute(
                update(deliveries_table)
                .where(deliveries_table.c.message_id == message_id)
                .values(provider_id=func.coalesce(provider_id, deliveries_table.c.provider_id), sent_at=at)
            )
            _advance(connection, message_id, DeliveryState.SENT, None, at)
            return _get(connection, message_id)

    def report(
        self,
        message_id: str,
        status: DeliveryState,
        *,
        error_code: str | None = None,
        provider_id: str | None = None,
        at: datetime | None = None,
    ) -> tuple[DeliveryRecord | None, bool]:
        """A receipt: the record after it (None: no such message) and whether it moved the status forward.

        A status of a rank the stored one already has or passes changes nothing (a repeat, or one out of order)."""
        at = at or datetime.now(UTC)
        table = deliveries_table
        values: dict[str, Any] = {"status": status.value, "error_code": error_code, "updated_at": at}
        if provider_id is not None:
            values["provider_id"] = func.coalesce(table.c.provider_id, provider_id)
        with self.store.relaxed(queued=True) as connection:
            # One statement when the receipt moves the message forward (the common case): UPDATE … RETURNING.
            moved = connection.execute(
                update(table)
                .where(table.c.message_id == message_id, _rank() < status.rank)
                .values(values)
                .returning(*table.c)
            ).first()
            if moved is not None:
                return _record(moved._mapping), True
            if provider_id is not None:
                connection.execute(
                    update(table)
                    .where(table.c.message_id == message_id, table.c.provider_id.is_(None))
                    .values(provider_id=provider_id)
                )
            return _get(connection, message_id), False

    def get(self, message_id: str) -> DeliveryRecord | None:
        with self.store.engine.connect() as connection:
            return _get(connection, message_id)

    def by_provider_id(self, provider_id: str) -> DeliveryRecord | None:
        """The message the gateway knows as `provider_id` (Twilio's SID)."""
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(deliveries_table).where(deliveries_table.c.provider_id == provider_id).limit(1)
            ).first()
        return None if row is None else _record(row._mapping)

    def by_step(self, campaign_id: str, *, since: datetime | None = None) -> dict[str, dict[str, int]]:
        """A campaign's messages per step and status (`COUNTED`, zeros included; `queued` counts as `sent`),
        those last updated since `since` if given: one GROUP BY."""
        table = deliveries_table
        query = select(table.c.step, table.c.status, func.count().label("n")).where(table.c.campaign_id == campaign_id)
        if since is not None:
            query = query.where(table.c.updated_at >= since)
        counts: dict[str, dict[str, int]] = {}
        with self.store.engine.connect() as connection:
            for row in connection.execute(query.group_by(table.c.step, table.c.status).order_by(table.c.step)):
                step = counts.setdefault(row.step, {s.value: 0 for s in COUNTED})
                status = DeliveryState.SENT.value if row.status == DeliveryState.QUEUED.value else row.status
                if status in step:
                    step[status] += int(row.n)
        return counts

    def _dialect(self) -> Any:
        return sqlite if self.store.dialect == "sqlite" else postgresql


def _advance(
    connection: Connection, message_id: str, status: DeliveryState, error_code: str | None, at: datetime
) -> bool:
    """Set `status` where it passes the stored one's rank: whether it did."""
    done = connection.execute(
        update(deliveries_table)
        .where(deliveries_table.c.message_id == message_id, _rank() < status.rank)
        .values(status=status.value, error_code=error_code, updated_at=at)
    )
    return done.rowcount > 0


def _get(connection: Connection, message_id: str) -> DeliveryRecord | None:
    row = connection.execute(select(deliveries_table).where(deliveries_table.c.message_id == message_id)).first()
    return None if row is None else _record(row._mapping)


def _record(row: Mapping[str, Any]) -> DeliveryRecord:
    return DeliveryRecord(
        message_id=row["message_id"],
        workflow_id=row["workflow_id"],
        run_id=row["run_id"],
        campaign_id=row["campaign_id"],
        step=row["step"],
        channel=row["channel"],
        contact=row["contact"],
        provider_id=row["provider_id"],
        status=DeliveryState(row["status"]),
        error_code=row["error_code"],
        updated_at=stored_utc(row["updated_at"]),
        sent_at=None if row["sent_at"] is None else stored_utc(row["sent_at"]),
    )
