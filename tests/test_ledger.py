"""The send ledger on SQLite and on a real PostgreSQL: frequency caps across campaigns, retries, pruning, races."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect, select

from scheduler.config import FrequencyCap
from scheduler.errors import StoreUnavailable
from scheduler.store import Store, contact_locks, sends
from scheduler.store import ledger as ledger_module
from scheduler.store.ledger import Ledger
from tests.helpers.store import migrations as store_migrations

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("America/New_York"))
"""Not UTC, so nothing silently assumes it."""
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
ANN = "+12125550142"
BOB = "bob@example.com"
SMS_TWICE_A_DAY = FrequencyCap(channels=["http"], max=2, per="24h")
SMS_ONCE_A_DAY = FrequencyCap(channels=["http"], max=1, per="24h")


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    store = Store.open(store_url)
    yield Ledger(store)
    store.close()


async def send(
    ledger: Ledger,
    key: str,
    *,
    rules: list[FrequencyCap],
    at: datetime = T0,
    channel: str = "http",
    contact: str = ANN,
    campaign: str = "cart",
) -> datetime | None:
    return await ledger.reserve(
        contact=contact,
        channel=channel,
        rules=rules,
        key=key,
        campaign_id=campaign,
        workflow_id=f"{campaign}-{contact}",
        step="step_1",
        now=at,
    )


def recorded(ledger: Ledger) -> list[str]:
    """The keys of the rows in the ledger, oldest first."""
    with ledger.store.engine.connect() as connection:
        return list(connection.execute(select(sends.c.key).order_by(sends.c.at, sends.c.id)).scalars())


async def test_reserve_caps_a_contact_across_campaigns(ledger: Ledger) -> None:
    rules = [SMS_TWICE_A_DAY]
    assert await send(ledger, "a", rules=rules, campaign="cart") is None
    assert await send(ledger, "b", rules=rules, campaign="winback", at=T0 + HOUR) is None
    assert await send(ledger, "c", rules=rules, campaign="promo", at=T0 + 2 * HOUR) == T0 + 24 * HOUR
    assert await send(ledger, "d", rules=rules, contact=BOB, at=T0 + 2 * HOUR) is None  # per contact
    assert recorded(ledger) == ["a", "b", "d"]
    # Once the first send leaves the window, one more fits.
    assert await send(ledger, "c", rules=rules, at=T0 + 24 * HOUR) is None
    assert await send(ledger, "e", rules=rules, at=T0 + 24 * HOUR) == T0 + 25 * HOUR


async def test_a_cap_counts_and_limits_only_its_channels(ledger: Ledger) -> None:
    rules = [SMS_ONCE_A_DAY]
    assert [await send(ledger, f"mail-{i}", rules=rules, channel="smtp") for i in range(3)] == [None] * 3
    assert recorded(ledger) == []  # no cap on smtp: nothing recorded
    assert await send(ledger, "sms-1", rules=rules) is None
    assert await send(ledger, "sms-2", rules=rules) == T0 + 24 * HOUR
    both = [FrequencyCap(channels=["http", "smtp"], max=1, per="1h")]
    assert await send(ledger, "mail-4", rules=both, channel="smtp") == T0 + HOUR  # counts the SMS


async def test_every_cap_must_hold_and_the_latest_free_instant_counts(ledger: Ledger) -> None:
    hourly_sms = FrequencyCap(channels=["http"], max=2, per="1h")
    daily_any = FrequencyCap(channels=["http", "smtp"], max=3, per="24h")
    rules = [hourly_sms, daily_any]
    assert await send(ledger, "mail", rules=rules, channel="smtp") is None
    assert await send(ledger, "sms-1", rules=rules, at=T0 + 10 * MINUTE) is None
    assert await send(ledger, "sms-2", rules=rules, at=T0 + 20 * MINUTE) is None
    # The hourly cap frees at 10m + 1h, the daily one at 0m + 24h: the later one counts.
    assert await send(ledger, "sms-3", rules=rules, at=T0 + 30 * MINUTE) == T0 + 24 * HOUR
    # A second e-mail: only the daily cap applies to smtp.
    assert await send(ledger, "mail-2", rules=rules, channel="smtp", at=T0 + 2 * HOUR) == T0 + 24 * HOUR
    assert recorded(ledger) == ["mail", "sms-1", "sms-2"]


async def test_only_the_violated_cap_decides_when_a_send_fits(ledger: Ledger) -> None:
    rules = [FrequencyCap(channels=["http"], max=2, per="1h"), FrequencyCap(channels=["http"], max=10, per="24h")]
    assert await send(ledger, "a", rules=rules) is None
    assert await send(ledger, "b", rules=rules, at=T0 + 10 * MINUTE) is None
    assert await send(ledger, "c", rules=rules, at=T0 + 20 * MINUTE) == T0 + HOUR


async def test_a_retry_counts_once_and_a_released_send_no_longer_counts(ledger: Ledger) -> None:
    rules = [SMS_ONCE_A_DAY]
    assert await send(ledger, "m1", rules=rules) is None
    assert await send(ledger, "m1", rules=rules, at=T0 + MINUTE) is None  # a retried delivery
    assert recorded(ledger) == ["m1"]
    assert await send(ledger, "m2", rules=rules) == T0 + 24 * HOUR
    await asyncio.to_thread(ledger.release, "m1")  # its delivery failed
    assert await send(ledger, "m2", rules=rules) is None
    assert recorded(ledger) == ["m2"]


async def test_sends_older_than_the_window_do_not_count_and_prune_deletes_them(ledger: Ledger) -> None:
    rules = [SMS_ONCE_A_DAY]
    assert await send(ledger, "old", rules=rules, at=T0 - 25 * HOUR) is None
    assert await send(ledger, "new", rules=rules) is None
    assert recorded(ledger) == ["old", "new"]
    assert ledger.prune(older_than=T0 - 24 * HOUR) == 1
    assert recorded(ledger) == ["new"]
    assert ledger.prune(older_than=T0) == 0


async def test_reserve_prunes_at_most_once_a_minute_beyond_the_longest_window(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The e-mail cap does not apply to SMS, but its longer window keeps the rows it may need.
    rules = [FrequencyCap(channels=["http"], max=9, per="1h"), FrequencyCap(channels=["smtp"], max=9, per="2h")]
    assert await send(ledger, "3h-ago", rules=rules, at=T0 - 3 * HOUR) is None
    assert await send(ledger, "90m-ago", rules=rules, at=T0 - 90 * MINUTE) is None
    assert await send(ledger, "now", rules=rules) is None
    assert recorded(ledger) == ["3h-ago", "90m-ago", "now"]  # pruned on the first call only, before them
    monkeypatch.setattr(ledger_module, "PRUNE_EVERY", 0.0)  # a minute has passed
    assert await send(ledger, "later", rules=rules, at=T0 + MINUTE) is None
    assert recorded(ledger) == ["90m-ago", "now", "later"]


async def test_no_applicable_cap_records_nothing(ledger: Ledger) -> None:
    assert await send(ledger, "a", rules=[]) is None
    assert await send(ledger, "b", rules=[FrequencyCap(channels=["smtp"], max=1, per="1d")]) is None
    assert recorded(ledger) == []


async def test_concurrent_reservations_in_one_process_let_one_through(ledger: Ledger) -> None:
    results = await asyncio.gather(*(send(ledger, f"task-{i}", rules=[SMS_ONCE_A_DAY]) for i in range(20)))
    assert sorted(results, key=lambda r: r is not None) == [None] + [T0 + 24 * HOUR] * 19
    assert len(recorded(ledger)) == 1


def racer(commands: Queue[str | None], barrier: Barrier, results: Queue[list[Any]]) -> None:
    """One of the processes of `racers`: for each store URL it is sent, five reservations at once, once every
    process is ready."""

    async def five(ledger: Ledger) -> list[datetime | None]:
        keys = [f"{os.getpid()}-{i}" for i in range(5)]
        return await asyncio.gather(*(send(ledger, key, rules=[SMS_ONCE_A_DAY]) for key in keys))

    while (url := commands.get()) is not None:
        try:
            store = Store.open(url)
            try:
                barrier.wait(timeout=60)
                outcomes: list[Any] = asyncio.run(five(Ledger(store)))
            finally:
                store.close()
        except Exception as exc:
            outcomes = [repr(exc)]
        results.put(outcomes)
    results.close()
    results.join_thread()
    os._exit(0)  # the outcomes are sent: skip tearing down the interpreter (seconds, on a busy machine)


@pytest.fixture(scope="module")
def racers() -> Iterator[Callable[[str], list[Any]]]:
    """Four processes ("spawn": nothing inherited), started once for both backends; call it with a store URL."""
    spawn = multiprocessing.get_context("spawn")
    commands: Queue[str | None] = spawn.Queue()
    results: Queue[list[Any]] = spawn.Queue()
    barrier = spawn.Barrier(4)
    processes = [spawn.Process(target=racer, args=(commands, barrier, results), daemon=True) for _ in range(4)]
    for process in processes:
        process.start()

    def race(url: str) -> list[Any]:
        for _ in processes:
            commands.put(url)  # each process takes one: it waits at the barrier until the others have theirs
        return [outcome for _ in processes for outcome in results.get(timeout=90)]

    try:
        yield race
    finally:
        for _ in processes:
            commands.put(None)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        assert [process.exitcode for process in processes] == [0] * 4


def test_concurrent_reservations_in_four_processes_let_one_through(
    store_url: str, racers: Callable[[str], list[Any]]
) -> None:
    Store.open(store_url).close()  # migrated before the race
    outcomes = racers(store_url)
    assert sorted(outcomes, key=lambda r: r is not None) == [None] + [T0 + 24 * HOUR] * 19
    store = Store.open(store_url)
    assert len(recorded(Ledger(store))) == 1
    store.close()


async def test_exclusive_holds_exclude_every_other_hold_of_their_key(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contact_locks, "EXCLUSIVE_WAIT", 0.2)
    monkeypatch.setattr(contact_locks, "SEND_WAIT", 0.2)
    store = Store.open(store_url)
    locks = store.locks
    try:
        async with locks.exclusive("k"):
            with pytest.raises(StoreUnavailable):
                async with locks.exclusive("k"):
                    pass
            with pytest.raises(StoreUnavailable):
                async with locks.shared("k"):
                    pass
            async with locks.exclusive("other"), locks.shared("other-too"):
                pass
        async with locks.shared("k"), locks.shared("k"):
            with pytest.raises(StoreUnavailable):
                async with locks.exclusive("k"):
                    pass
        async with locks.exclusive("k"):
            pass
    finally:
        store.close()


async def test_a_cancelled_reservation_leaves_the_contact_free(ledger: Ledger) -> None:
    async with ledger.store.locks.exclusive("cap:" + ANN):
        waiting = asyncio.create_task(send(ledger, "cancelled", rules=[SMS_ONCE_A_DAY]))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert await asyncio.wait_for(send(ledger, "next", rules=[SMS_ONCE_A_DAY]), 5) is None
    assert recorded(ledger) == ["next"]


def test_migrations_0002_and_0003_downgrade_and_upgrade_again(store_url: str) -> None:
    with store_migrations(store_url) as migrations:
        connection = migrations.connection
        migrations.downgrade("0001")
        assert not inspect(connection).has_table("sends")
        assert not inspect(connection).has_table("run_messages")
        migrations.upgrade()
        assert inspect(connection).get_pk_constraint("run_messages")["constrained_columns"] == ["run_id", "result"]
        indexes = {
            index["name"]: index["column_names"]
            for index in inspect(connection).get_indexes("sends")
            if "duplicates_constraint" not in index  # PostgreSQL's index behind the unique key
        }
        assert indexes == {"sends_contact_at": ["contact", "at"], "sends_at": ["at"]}
        assert [c["column_names"] for c in inspect(connection).get_unique_constraints("sends")] == [["key"]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channels": [], "max": 1, "per": "1d"}, "channels\n  Value error, name at least one channel"),
        (
            {"channels": ["fax"], "max": 1, "per": "1d"},
            "channels.0\n  Input should be 'console', 'http', 'smtp' or 'twilio'",
        ),
        ({"channels": ["http"], "max": 0, "per": "1d"}, "max\n  Value error, at least 1 message per window, got 0"),
        ({"channels": ["http"], "max": 1, "per": "0s"}, "per\n  Value error, the window must be longer than 0s"),
        ({"channels": ["http"], "max": 1, "per": "367d"}, "per\n  Value error, the window is at most 366d, got '367d'"),
        ({"channels": ["http"], "max": 1, "per": "soon"}, "per\n  Value error, invalid duration 'soon'"),
        ({"channels": ["http"], "max": 1, "per": "1d", "min": 1}, "min\n  Extra inputs are not permitted"),
    ],
    ids=["no-channel", "unknown-channel", "max-zero", "per-zero", "per-too-long", "per-unreadable", "extra-key"],
)
def test_frequency_cap_names_the_bad_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        FrequencyCap.model_validate(fields)
    assert message in str(error.value)


def test_frequency_cap_reads_and_writes_durations() -> None:
    cap = FrequencyCap.model_validate({"channels": ["http", "smtp", "http"], "max": 3, "per": "1d12h"})
    assert (cap.channels, cap.per) == (["http", "smtp"], 36 * HOUR)
    assert cap.model_dump() == {"channels": ["http", "smtp"], "max": 3, "per": "1d12h"}


def test_a_runs_held_and_skipped_messages_are_counted_and_forgotten_after_90_days(ledger: Ledger) -> None:
    for result in ("held", "held", "skipped_quiet_hours"):
        ledger.count_run_message("run-1", result, now=T0)
    ledger.count_run_message("run-2", "skipped_frequency_cap", now=T0)
    assert ledger.run_messages(["run-1", "run-2", "run-3"]) == {
        "run-1": {"held": 2, "skipped_quiet_hours": 1},
        "run-2": {"skipped_frequency_cap": 1},
    }
    ledger.count_run_message("run-3", "held", now=T0 + timedelta(days=91))  # counting also forgets the old ones
    assert ledger.run_messages(["run-1", "run-2", "run-3"]) == {"run-3": {"held": 1}}
    assert ledger.run_messages([]) == {}
