"""The consent store on SQLite and on a real PostgreSQL: migrations, the suppression list, import and export."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from scheduler.config import Settings
from scheduler.errors import InvalidContact, NotSuppressed, StoreUnavailable
from scheduler.flow.contacts import normalize_contact
from scheduler.store import (
    Store,
    contact_locks,
    conversion_attributions,
    conversions_table,
    deliveries_table,
    head_revision,
    sends,
    suppressions,
)
from scheduler.store.consent import Consent
from tests.helpers.cli import scheduler, write_config


@pytest.fixture
def consent(store_url: str) -> Iterator[Consent]:
    store = Store.open(store_url)
    yield Consent(store)
    store.close()


def history(consent: Consent, contact: str) -> list[tuple[str, bool]]:
    """(reason, still active) of every entry a contact ever had, oldest first."""
    with consent.store.engine.connect() as connection:
        rows = connection.execute(
            select(suppressions.c.reason, suppressions.c.lifted_at)
            .where(suppressions.c.contact == contact)
            .order_by(suppressions.c.id)
        )
        return [(r.reason, r.lifted_at is None) for r in rows]


def test_open_migrates_once_and_again_is_a_no_op(store_url: str) -> None:
    first = Store.open(store_url)
    again = Store.open(store_url)
    with again.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
    first.close()
    again.close()


def test_processes_starting_together_migrate_once(store_url: str) -> None:
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store.open(store_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = Store.open(store_url)
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
    assert Consent(store).suppress("+12125550142", reason="api")[1]  # the schema is whole
    store.close()


def test_default_store_is_sqlite_beside_the_dev_server_database(settings: Settings, tmp_path: Path) -> None:
    settings.store.url = ""
    settings.dev_server.db_file = tmp_path / "state" / "temporal.db"
    store = Store.open(settings.store_url)
    assert (tmp_path / "state" / "scheduler.db").is_file()
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    store.close()


def test_unreachable_store_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=r"store postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:1/x"):
        Store.open("postgresql+psycopg://u:secret@127.0.0.1:1/x?connect_timeout=2")


def test_a_sqlite_store_whose_directory_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory", encoding="utf-8")
    with pytest.raises(
        StoreUnavailable, match=r"store sqlite:///.*/file/sub/scheduler\.db: \[Errno 20\] Not a directory"
    ):
        Store.open(f"sqlite:///{tmp_path}/file/sub/scheduler.db")


def test_suppress_normalizes_and_the_first_opt_out_stands(consent: Consent) -> None:
    entry, created = consent.suppress("(212) 555-0142", reason="keyword STOP", campaign_id="a", workflow_id="a-1")
    assert created
    assert (entry.contact, entry.kind, entry.reason, entry.campaign_id, entry.workflow_id) == (
        "+12125550142",
        "sms",
        "keyword STOP",
        "a",
        "a-1",
    )
    again, created = consent.suppress("+1 212 555 0142", reason="api")
    assert not created
    assert again == entry
    assert consent.suppressed(["+12125550142", "ann@example.com"]) == {"+12125550142"}
    email, _ = consent.suppress("Ann@Example.COM", reason="unsubscribe link")
    assert (email.contact, email.kind) == ("ann@example.com", "email")


def test_opting_in_keeps_the_history(consent: Consent) -> None:
    consent.suppress("+12125550142", reason="keyword STOP")
    consent.lift("212-555-0142", reason="keyword START")
    assert consent.suppressed(["+12125550142"]) == set()
    assert consent.get("+12125550142") is None
    consent.suppress("+12125550142", reason="api")
    assert history(consent, "+12125550142") == [("keyword STOP", False), ("api", True)]
    with pytest.raises(NotSuppressed):
        consent.lift("ann@example.com", reason="api")
    with pytest.raises(InvalidContact):
        consent.suppress("call me", reason="api")


def test_concurrent_opt_outs_of_one_contact_leave_one_active_entry(consent: Consent) -> None:
    created: list[bool] = []

    def opt_out() -> None:
        created.append(consent.suppress("+12125550142", reason="keyword STOP")[1])

    threads = [threading.Thread(target=opt_out) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == [False] * 7 + [True]
    assert history(consent, "+12125550142") == [("keyword STOP", True)]


async def test_an_opt_out_waits_for_the_sends_to_its_contact_in_flight(
    consent: Consent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`suppress` returns only once no send holds the contact (or, past the wait, logs that one still did)."""
    monkeypatch.setattr(contact_locks, "FENCE_WAIT", 0.3)
    locks = consent.store.locks
    async with consent.sending("+12125550142") as suppressed:
        assert not suppressed
        assert not await asyncio.to_thread(locks.fence, "+12125550142")
        assert await asyncio.to_thread(locks.fence, "+12125550143")  # another contact is not held
        async with consent.sending("+12125550142"):  # sends share the hold
            pass
    assert await asyncio.to_thread(locks.fence, "+12125550142")

    async with consent.sending("+12125550142"):
        opt_out = asyncio.create_task(asyncio.to_thread(consent.suppress, "+12125550142", reason="keyword STOP"))
        await asyncio.sleep(0.1)
        assert not opt_out.done()
    await opt_out
    async with consent.sending("+12125550142") as suppressed:
        assert suppressed


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_sends_hold_contacts_again_after_the_lock_session_is_lost(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL drops a session's advisory locks with it (a failover, a restart): the next send reconnects."""
    monkeypatch.setattr(contact_locks, "FENCE_WAIT", 0.3)
    store = Store.open(store_url)
    consent = Consent(store)
    try:
        async with consent.sending("+12125550142"):
            pass
        with store.engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        async with consent.sending("+12125550142") as suppressed:
            assert not suppressed
            assert not await asyncio.to_thread(store.locks.fence, "+12125550142")
        assert await asyncio.to_thread(store.locks.fence, "+12125550142")
    finally:
        store.close()


def test_pages_follow_the_cursor_to_the_end(consent: Consent) -> None:
    for i in range(5):
        consent.suppress(f"+1212555010{i}", reason="api")
    first, cursor = consent.page(limit=2)
    second, cursor2 = consent.page(limit=2, cursor=cursor)
    third, end = consent.page(limit=2, cursor=cursor2)
    assert [e.contact for e in first + second + third] == [f"+1212555010{i}" for i in range(5)]
    assert end is None
    only, _ = consent.page(contact="212 555 0103")
    assert [e.contact for e in only] == ["+12125550103"]


def test_import_is_idempotent_reports_bad_lines_and_exports_back(consent: Consent) -> None:
    source = "contact,reason\n(212) 555-0142,old list\nann@example.com,\nnot a contact,\n+12125550142,twice\n"
    result = consent.import_csv(io.StringIO(source))
    assert (result.added, result.already, result.bad) == (2, 1, 1)  # the repeated contact: already suppressed
    assert len(result.problems) == 1 and result.problems[0].startswith("line 4: 'not a contact'")
    again = consent.import_csv(io.StringIO(source))
    assert (again.added, again.already, again.bad) == (0, 3, 1)
    assert consent.count() == 2
    out = io.StringIO()
    assert consent.export_csv(out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "contact,kind,reason,at,campaign_id,workflow_id"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["'+12125550142", "sms", "old list"],  # no cell starts like a formula
        ["ann@example.com", "email", "import"],
    ]


def test_import_without_a_contact_column_changes_nothing(consent: Consent) -> None:
    result = consent.import_csv(io.StringIO("phone\n+12125550142\n"))
    assert result.refused == "line 1: no 'contact' column in the header"
    assert consent.count() == 0


def test_nothing_is_lost_when_the_store_is_opened_again(store_url: str) -> None:
    """An answered opt-out is committed: a new process (a restart) sees it."""
    first = Consent(Store.open(store_url))
    first.suppress("+12125550142", reason="keyword STOP")
    first.import_csv(io.StringIO("contact\nann@example.com\n"))
    first.store.close()
    reopened = Consent(Store.open(store_url))
    assert reopened.suppressed(["+12125550142", "ann@example.com"]) == {"+12125550142", "ann@example.com"}
    with reopened.store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(suppressions)).scalar_one() == 2
    reopened.store.close()


def test_import_refuses_a_file_whose_quote_never_closes_naming_its_line(consent: Consent) -> None:
    """csv reads an unclosed quote to the end of the file as one field: 998 rows would vanish into it."""
    rows = "".join(f"+1212555{i:04d},r\n" for i in range(998))
    result = consent.import_csv(io.StringIO(f'contact,reason\n+12125559999,"oops\n{rows}'))
    assert result.refused == 'line 2: a quote (") opened on this line is never closed'
    assert (result.added, result.already, result.bad) == (0, 0, 0)
    assert consent.count() == 0


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('contact,reason\n+12125550100,x\n+12125550101,"a"b\n', "line 3: ',' expected after '\"'"),
        ("contact\n" + "x" * 200_000 + "\n", "line 2: a field is longer than 131072 characters"),
        ('contact,reason\n"+12125550100\n', 'line 2: a quote (") opened on this line is never closed'),
    ],
    ids=["junk-after-quote", "field-over-limit", "unclosed-at-eof"],
)
def test_import_refuses_a_malformed_file_whole(consent: Consent, source: str, problem: str) -> None:
    result = consent.import_csv(io.StringIO(source))
    assert result.refused == problem
    assert consent.count() == 0


def test_import_reports_every_row_as_added_already_or_bad(consent: Consent) -> None:
    """A row is never dropped silently: a quote closed lines later, a row with extra fields, a repeated contact."""
    consent.suppress("+12125550109", reason="api")
    source = (
        "contact,reason\n"
        "+12125550100,one\n"
        '+12125550101,"runs\n+12125550102,on\n+12125550103,here"\n'
        "+12125550104,a,b\n"
        "\n"
        "+12125550105\n"
        "(212) 555-0105,again\n"
        "+12125550109,\n"
    )
    result = consent.import_csv(io.StringIO(source))
    assert result.refused is None
    assert (result.added, result.already, result.bad) == (2, 2, 2)
    assert result.problems == [
        "lines 3-5: a field runs over several lines (a quote opened on line 3 and closed too late?)",
        "line 6: 3 fields, the header has 2",
    ]
    assert consent.suppressed(f"+1212555010{i}" for i in range(10)) == {"+12125550100", "+12125550105", "+12125550109"}


@pytest.mark.parametrize("writers", [1, 4], ids=["one-writer", "four-writers"])
def test_import_counts_stay_right_while_other_writes_land(consent: Consent, writers: int) -> None:
    """Counts come from what the store did with each row, not from the list's size before and after."""
    rows = 3000
    source = "contact\n" + "".join(f"+1212555{i:04d}\n" for i in range(rows)) + "not a contact\n"
    stop = threading.Event()
    written: list[str] = []

    def write(offset: int) -> None:
        i = offset
        while not stop.is_set() and i < rows:
            consent.suppress(f"+1212555{i:04d}", reason="api")
            written.append(f"+1212555{i:04d}")
            i += 7 * writers

    threads = [threading.Thread(target=write, args=(k * 7,)) for k in range(writers)]
    for t in threads:
        t.start()
    try:
        results = [consent.import_csv(io.StringIO(source)) for _ in range(2)]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert written  # the writers did land writes meanwhile
    for result in results:
        assert min(result.added, result.already, result.bad) >= 0
        assert result.added + result.already + result.bad == rows + 1
        assert result.bad == 1
    assert results[1].added == 0
    assert results[0].added + results[1].added + len(set(written)) >= rows  # every row is suppressed
    assert consent.count() == rows


def test_export_never_starts_a_cell_with_a_formula_and_imports_back(consent: Consent) -> None:
    """OWASP's CSV injection rule: a cell starting with = + - @ tab or CR gets a leading `'`, which import strips."""
    reasons = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "'=kept", "plain", "it's"]
    for i, reason in enumerate(reasons):
        consent.suppress(f"+1212555010{i}", reason=reason, campaign_id="-c", workflow_id="@w")
    out = io.StringIO()
    consent.export_csv(out)
    for row in list(csv.reader(io.StringIO(out.getvalue())))[1:]:
        assert all(not cell or cell[0] not in "=+-@\t\r" for cell in row), row
    assert [row[0] for row in csv.reader(io.StringIO(out.getvalue()))][1:3] == ["'+12125550100", "'+12125550101"]
    before = {e.contact: e.reason for e in consent.all()}
    for entry in list(consent.all()):
        consent.lift(entry.contact, reason="test")
    result = consent.import_csv(io.StringIO(out.getvalue()))
    assert (result.added, result.bad) == (len(reasons), 0), result.problems
    assert {e.contact: e.reason for e in consent.all()} == before
    assert before["+12125550106"] == "'=kept"


async def test_suppress_import_cli_exits_1_naming_the_line_of_a_malformed_file(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "scheduler.toml", address="", task_queue="unused"))
    source = tmp_path / "optouts.csv"
    rows = "".join(f"+1212555{i:04d},r\n" for i in range(998))
    source.write_text(f'contact,reason\n+12125559999,"oops\n{rows}', encoding="utf-8")
    run = await scheduler("suppress", "import", str(source), "--config", config)
    assert (run.code, run.stdout) == (1, "")
    assert run.stderr == f'error: {source}:line 2: a quote (") opened on this line is never closed; nothing imported\n'

    source.write_text("contact\n" + "+" * 200_000 + "\n", encoding="utf-8")
    run = await scheduler("suppress", "import", str(source), "--config", config)
    assert (run.code, run.stderr) == (
        1,
        f"error: {source}:line 2: a field is longer than 131072 characters; nothing imported\n",
    )

    source.write_text("contact\n+12125550100\n+12125550100\nnope\n", encoding="utf-8")
    run = await scheduler("suppress", "import", str(source), "--config", config)
    assert run.code == 1
    assert run.stdout == "imported: 1 added, 1 already suppressed, 1 bad\n"
    source.write_text("contact\n+12125550100\n+12125550101\n", encoding="utf-8")
    run = await scheduler("suppress", "import", str(source), "--config", config)
    assert (run.code, run.stdout) == (0, "imported: 1 added, 1 already suppressed, 0 bad\n")


@pytest.mark.parametrize(
    ("suppressed", "sent_to"),
    [
        ("Ann@Bücher.de", "ann@xn--bcher-kva.de"),
        ("ann@XN--BCHER-KVA.de", "ANN@bücher.DE"),
        ("a\u200bnn@example.com", "Ann@Example.com\u200f"),
        ("+1 212\u200b555 0142", "\u200f(212) 555-0142"),
    ],
    ids=["idn-then-punycode", "punycode-then-idn", "zero-width-and-rtl-mark", "phone-invisible"],
)
def test_one_contact_whatever_its_spelling_is_suppressed_once(consent: Consent, suppressed: str, sent_to: str) -> None:
    entry, created = consent.suppress(suppressed, reason="api")
    assert created
    assert consent.suppressed([normalize_contact(sent_to)]) == {entry.contact}
    assert not consent.suppress(sent_to, reason="api")[1]
    assert consent.import_csv(io.StringIO(f"contact\n{sent_to}\n")).already == 1
    consent.lift(sent_to, reason="api")
    assert consent.count() == 0


def test_upgrade_respells_stored_addresses_and_merges_what_became_one_contact(store_url: str) -> None:
    """Entries written under the old rule (a Unicode domain, a zero-width space) match today's spelling."""
    store = Store.open(store_url)
    now = datetime.now(UTC)

    def sent(contact: str) -> dict[str, Any]:
        return {
            "contact": contact,
            "key": contact,
            "channel": "smtp",
            "campaign_id": "a",
            "workflow_id": "w",
            "step": "s",
            "at": now,
        }

    def entry(contact: str, *, lifted: bool = False) -> dict[str, Any]:
        return {"contact": contact, "kind": "email", "reason": contact, "at": now, "lifted_at": now if lifted else None}

    with store.engine.begin() as connection:
        connection.execute(
            suppressions.insert(),
            [
                entry("ann@bücher.de"),  # the oldest of three spellings of one contact: it stays active
                entry("ann@xn--bcher-kva.de"),
                entry("a\u200bnn@xn--bcher-kva.de"),
                entry("bo@bücher.de", lifted=True),
                entry("cy@example.com"),
                entry("dee@example.local"),  # no longer a valid contact: left as it was
            ],
        )
        connection.execute(sends.insert(), [sent("ann@bücher.de"), sent("ann@xn--bcher-kva.de")])
        for later in (deliveries_table, conversion_attributions, conversions_table):  # of migrations after 0006
            later.drop(connection)
        connection.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    store.close()

    store = Store.open(store_url)
    with store.engine.connect() as connection:
        rows = connection.execute(select(suppressions).order_by(suppressions.c.id)).all()
        ledger = connection.execute(select(sends.c.contact)).scalars().all()
    store.close()
    assert [(r.contact, r.reason, r.lifted_at is None) for r in rows] == [
        ("ann@xn--bcher-kva.de", "ann@bücher.de", True),
        ("ann@xn--bcher-kva.de", "ann@xn--bcher-kva.de", False),
        ("ann@xn--bcher-kva.de", "a\u200bnn@xn--bcher-kva.de", False),
        ("bo@xn--bcher-kva.de", "bo@bücher.de", False),
        ("cy@example.com", "cy@example.com", True),
        ("dee@example.local", "dee@example.local", True),
    ]
    assert [r.lifted_reason for r in rows[1:3]] == ["merged: the same contact as an older entry"] * 2
    assert ledger == ["ann@xn--bcher-kva.de"] * 2
