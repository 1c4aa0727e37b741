"""The send ledger: frequency caps per contact across campaigns ("at most 2 SMS in 24 hours, all campaigns").

Before a message under a cap goes out, `reserve` counts the contact's messages in each applicable cap's
window and either records this one (a row of `sends`) or answers when the caps let it through. The count and
the insert are one step across threads and processes: both happen under the contact's exclusive lock
`"cap:" + contact` (`scheduler.store.contact_locks`), held for those few statements only, never across a delivery.

A message's idempotency key makes a retried delivery count once; a delivery that failed for good is
`release`d and stops counting. Reservations commit without waiting for the disk (`Store.relaxed`): a power
cut may forget the last ones, so a cap counts a message or two fewer, never more. The table stays bounded
without a separate job: `reserve` deletes the rows older than the longest window of the caps it is given, at
most once a minute (`PRUNE_EVERY`) per `Ledger`.

It also counts, per campaign run, the messages the run's flows held or did not send by policy
(`count_run_message`), which `GET /schedules` shows with the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from scheduler.config import FrequencyCap
from scheduler.store import Store, run_messages, sends, stored_utc

T = TypeVar("T")

PRUNE_EVERY = 60.0
"""Seconds between two write-time prunes of one `Ledger`."""
RUN_MESSAGES_KEPT = timedelta(days=90)
"""How long a run's message counts are kept after its flows' last hold or skip (`GET /schedules` shows the last
few runs of each campaign)."""
LOCK_PREFIX = "cap:"
"""The contact lock a reservation holds is `"cap:" + contact`: apart from the one sends share with opt-outs."""


class Ledger:
    """The send ledger in the store. `reserve` is async (it waits for the contact's lock); `release` and `prune`
    are synchronous: async callers use `asyncio.to_thread`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pruned_at = float("-inf")
        """When (`time.monotonic`) `reserve` last pruned."""

    async def reserve(
        self,
        *,
        contact: str,
        channel: str,
        rules: Sequence[FrequencyCap],
        key: str,
        campaign_id: str,
        workflow_id: str,
        step: str,
        now: datetime | None = None,
    ) -> datetime | None:
        """Record a message to `contact` on `channel` if every cap naming `channel` lets it through.

        Args:
            contact: normalized (`scheduler.flow.contacts.normalize_contact`).
            rules: every configured cap, each time: those naming `channel` apply, and the longest window of all
                bounds what pruning deletes.
            key: the message's idempotency key; a retried delivery passes the same one and counts once.
            now: the instant of the send (timezone-aware); default: the clock.

        Returns:
            None if the message may go: recorded now, recorded already under `key`, or no cap applies (then
            nothing is recorded). Otherwise the instant the caps let it through; nothing is recorded.

        Raises:
            StoreUnavailable: other reservations held the contact's lock for too long.
            ValueError: `now` has no timezone.
        """
        caps = [rule for rule in rules if channel in rule.channels]
        if not caps:
            return None
        at = _utc(now) if now is not None else datetime.now(UTC)
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = time.monotonic()
            await asyncio.to_thread(self.prune, older_than=at - max(rule.per for rule in rules))
        row = {
            "contact": contact,
            "channel": channel,
            "campaign_id": campaign_id,
            "workflow_id": workflow_id,
            "step": step,
            "key": key,
            "at": at,
        }
        async with self.store.locks.exclusive(LOCK_PREFIX + contact):
            return await _to_the_end(lambda: self._reserve_held(row, caps))

    def count_run_message(self, run_id: str, result: str, *, now: datetime | None = None) -> None:
        """One more message of run `run_id`'s flows `held` or skipped (`skipped_quiet_hours`, …)."""
        at = _utc(now) if now is not None else datetime.now(UTC)
        dialect = sqlite if self.store.dialect == "sqlite" else postgresql
        insert = dialect.insert(run_messages).values(run_id=run_id, result=result, count=1, at=at)
        upsert = insert.on_conflict_do_update(
            index_elements=["run_id", "result"], set_={"count": run_messages.c.count + 1, "at": at}
        )
        with self.store.relaxed() as connection:
            connection.execute(upsert)
            connection.execute(delete(run_messages).where(run_messages.c.at < at - RUN_MESSAGES_KEPT))

    def run_messages(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """{run id: {result: count}} of these runs (those with none left out)."""
        if not run_ids:
            return {}
        out: dict[str, dict[str, int]] = {}
        query = select(run_messages).where(run_messages.c.run_id.in_(sorted(set(run_ids))))
        with self.store.engine.connect() as connection:
            for row in connection.execute(query):
                out.setdefault(row.run_id, {})[row.result] = row.count
        return out

    def release(self, key: str) -> None:
        """The delivery under `key` failed: its row no longer counts (a retry reserves again)."""
        with self.store.engine.begin() as connection:
            connection.execute(delete(sends).where(sends.c.key == key))

    def prune(self, *, older_than: datetime) -> int:
        """Delete the rows recorded before `older_than` (timezone-aware); how many."""
        with self.store.engine.begin() as connection:
            return connection.execute(delete(sends).where(sends.c.at < _utc(older_than))).rowcount

    def _reserve_held(self, row: dict[str, Any], caps: list[FrequencyCap]) -> datetime | None:
        """Count and insert, the contact's lock held (blocking)."""
        with self.store.relaxed() as connection:
            if connection.execute(select(sends.c.id).where(sends.c.key == row["key"])).first() is not None:
                return None
            free = [at for cap in caps if (at := _free_at(connection, row["contact"], cap, row["at"])) is not None]
            if free:
                return max(free)
            dialect = sqlite if self.store.dialect == "sqlite" else postgresql
            connection.execute(dialect.insert(sends).values(row).on_conflict_do_nothing(index_elements=["key"]))
        return None


def _free_at(connection: Connection, contact: str, cap: FrequencyCap, now: datetime) -> datetime | None:
    """When `cap` lets one more message to `contact` through: None if it does at `now`.

    With n rows in the window, r1..rn oldest first, one more fits once n - k < max, that is once r_k leaves the
    window, k = n - max + 1: the max-th row counting from the newest. No such row: fewer than max, it fits.
    """
    query = (
        select(sends.c.at)
        .where(sends.c.contact == contact, sends.c.channel.in_(cap.channels), sends.c.at > now - cap.per)
        .order_by(sends.c.at.desc())
        .offset(cap.max - 1)
        .limit(1)
    )
    at = connection.execute(query).scalar()
    return None if at is None else stored_utc(at) + cap.per


def _utc(value: datetime) -> datetime:
    """`value` in UTC: the store compares instants as UTC (SQLite keeps no offset)."""
    if value.tzinfo is None:
        raise ValueError(f"expected a timezone-aware instant, got {value.isoformat()!r}")
    return value.astimezone(UTC)


async def _to_the_end(function: Callable[[], T]) -> T:
    """Run a blocking call in a thread; cancelled meanwhile, wait for the call before leaving, so the lock held
    around it is not let go while it still writes."""
    work = asyncio.ensure_future(asyncio.to_thread(function))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise
