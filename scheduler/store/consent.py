"""Consent: the suppression list. A suppressed contact gets no customer message from any campaign, ever,
until it opts back in; opting in keeps the history (the rows stay, `lifted_at` set), an audit trail.

Contacts are kept normalized (`scheduler.flow.contacts`: E.164 phones, e-mail with an ASCII domain), so
`212-555-0142` and `+12125550142` are one person, and so are `Ann@Bücher.de` and `ann@xn--bcher-kva.de`.
Every write commits before it returns, so an opt-out the API answered 2xx is on disk (SQLite
`synchronous=FULL`, PostgreSQL's WAL).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Literal

from pydantic import BaseModel
from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from scheduler.errors import InvalidContact, NotSuppressed
from scheduler.flow.contacts import normalize_contact, redact
from scheduler.store import MAX_REASON, Store, stored_utc, suppressions

log = logging.getLogger(__name__)

Kind = Literal["sms", "email"]
ACTIVE = suppressions.c.lifted_at.is_(None)
"""An entry not lifted: the contact is suppressed."""
IMPORT_BATCH = 5000
"""Rows per INSERT during an import: big enough to be fast, small enough for PostgreSQL's 65,535 parameters."""
MAX_PROBLEMS = 100
"""Bad rows an import describes (it counts them all): a wrong file must not print a million lines."""
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
"""A cell a spreadsheet would read as a formula (OWASP, CSV injection), also behind `'`s of our own escaping."""


class Suppression(BaseModel):
    """One active opt-out, as `GET /suppressions` lists it."""

    contact: str
    kind: Kind
    reason: str
    at: datetime
    campaign_id: str | None = None
    workflow_id: str | None = None


def kind_of(contact: str) -> Kind:
    """`email` for an address, `sms` for a phone number (normalized contacts)."""
    return "email" if "@" in contact else "sms"


@dataclass
class ImportResult:
    """What an import did with each row (record) of its file: added, already suppressed or bad; or why it refused
    the whole file (nothing imported). `added + already + bad` is the number of rows."""

    added: int = 0
    already: int = 0
    """Rows whose contact was suppressed already, by the store or by an earlier row (an import is idempotent)."""
    bad: int = 0
    problems: list[str] = field(default_factory=list)
    """`line N: why` for the first `MAX_PROBLEMS` bad rows."""
    refused: str | None = None
    """`line N: why` the file is not CSV (an unclosed quote, a field over the size limit): then nothing is imported."""


class Consent:
    """The suppression list in the store. Synchronous: async callers use `asyncio.to_thread`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def suppress(
        self,
        contact: str,
        *,
        reason: str,
        campaign_id: str | None = None,
        workflow_id: str | None = None,
    ) -> tuple[Suppression, bool]:
        """Suppress a contact (normalized here): the active entry, and whether this call made it.

        Returns once the entry is committed and every send to the contact that could have missed it has
        been handed over (`sending`). Blocking: async callers use a thread.

        Raises:
            InvalidContact: neither a phone number nor an e-mail address.
        """
        normal = normalize_contact(contact)
        row = _row(normal, reason=reason, campaign_id=campaign_id, workflow_id=workflow_id)
        with self.store.engine.begin() as connection:  # already suppressed: the first opt-out stands
            created = (
                connection.execute(self._insert_new().values(row).returning(suppressions.c.id)).first() is not None
            )
        if not self.store.locks.fence(normal):
            log.warning("opt-out of %s: a send to it was still in flight after the wait", redact(normal))
        entry = self.get(normal)
        assert entry is not None
        return entry, created

    @asynccontextmanager
    async def sending(self, contact: str) -> AsyncIterator[bool]:
        """Hold a normalized contact while a message to it is handed over; yields whether it is suppressed.

        An opt-out written meanwhile is answered only once the block ends (`suppress` waits for it), so
        after an opt-out's answer no delivery to that contact starts.
        """
        async with self.store.locks.shared(contact):
            yield bool(await asyncio.to_thread(self.suppressed, [contact]))

    def lift(self, contact: str, *, reason: str) -> None:
        """Opt a contact back in; its entry stays as history.

        Raises:
            InvalidContact: neither a phone number nor an e-mail address.
            NotSuppressed: the contact is not suppressed.
        """
        normal = normalize_contact(contact)
        with self.store.engine.begin() as connection:
            done = connection.execute(
                update(suppressions)
                .where(suppressions.c.contact == normal, ACTIVE)
                .values(lifted_at=datetime.now(UTC), lifted_reason=reason[:MAX_REASON])
            )
        if done.rowcount == 0:
            raise NotSuppressed(normal)

    def get(self, contact: str) -> Suppression | None:
        """The active entry of a normalized contact, if it is suppressed."""
        with self.store.engine.connect() as connection:
            row = connection.execute(_active().where(suppressions.c.contact == contact)).first()
        return _entry(row._mapping) if row else None

    def suppressed(self, contacts: Iterable[str]) -> set[str]:
        """Which of these normalized contacts are suppressed (one query: a page of carts checks all at once)."""
        wanted = sorted(set(contacts))
        if not wanted:
            return set()
        with self.store.engine.connect() as connection:
            rows = connection.execute(select(suppressions.c.contact).where(suppressions.c.contact.in_(wanted), ACTIVE))
            return {row.contact for row in rows}

    def page(
        self, *, contact: str | None = None, cursor: int | None = None, limit: int = 100
    ) -> tuple[list[Suppression], int | None]:
        """Active entries oldest first, `limit` at a time: (entries, cursor of the next page or None)."""
        query = _active().order_by(suppressions.c.id).limit(limit + 1)
        if contact is not None:
            query = query.where(suppressions.c.contact == normalize_contact(contact))
        if cursor is not None:
            query = query.where(suppressions.c.id > cursor)
        with self.store.engine.connect() as connection:
            rows = [row._mapping for row in connection.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        return [_entry(r) for r in rows], (int(rows[-1]["id"]) if more else None)

    def count(self) -> int:
        with self.store.engine.connect() as connection:
            return _active_count(connection)

    def import_csv(self, file: IO[str], *, reason: str = "import") -> ImportResult:
        """Suppress every `contact` of a CSV (optional `reason` column), in one transaction.

        Read strictly: a file that is not CSV is refused whole, naming the line (`refused`). Bad rows are
        reported with their line and left out; the others all go in or, if the database fails, none does.
        Each row is counted by what the store did with it, so opt-outs written meanwhile cannot skew the counts.
        """
        result = ImportResult()
        try:
            rows = _read_rows(file, result, default_reason=reason)
        except _Malformed as exc:
            return ImportResult(refused=str(exc))
        unique: dict[str, dict[str, Any]] = {}
        for contact, why in rows:
            unique.setdefault(contact, _row(contact, reason=why))
        batch = list(unique.values())
        with self.store.engine.begin() as connection:
            for start in range(0, len(batch), IMPORT_BATCH):
                inserted = connection.execute(
                    self._insert_new().returning(suppressions.c.contact), batch[start : start + IMPORT_BATCH]
                )
                result.added += len(inserted.all())
        result.already = len(rows) - result.added
        return result

    def export_csv(self, file: IO[str]) -> int:
        """Every active entry as CSV (`contact,kind,reason,at,campaign_id,workflow_id`); how many.

        No cell starts with a character a spreadsheet reads as a formula (`_escape`); import undoes that.
        """
        writer = csv.writer(file)
        writer.writerow(["contact", "kind", "reason", "at", "campaign_id", "workflow_id"])
        count = 0
        for entry in self.all():
            cells = [
                entry.contact,
                entry.kind,
                _one_line(entry.reason),
                entry.at.isoformat(),
                entry.campaign_id or "",
                entry.workflow_id or "",
            ]
            writer.writerow([_escape(cell) for cell in cells])
            count += 1
        return count

    def all(self) -> Iterator[Suppression]:
        cursor: int | None = None
        while True:
            entries, cursor = self.page(cursor=cursor, limit=1000)
            yield from entries
            if cursor is None:
                return

    def _insert_new(self) -> Any:
        """INSERT that leaves out contacts suppressed already (the partial unique index decides, atomically:
        concurrent opt-outs of one contact leave one entry)."""
        dialect = sqlite if self.store.dialect == "sqlite" else postgresql
        return dialect.insert(suppressions).on_conflict_do_nothing(index_elements=["contact"], index_where=ACTIVE)


class _Malformed(Exception):
    """The file is not CSV; the message names the line."""


def _read_rows(file: IO[str], result: ImportResult, *, default_reason: str) -> list[tuple[str, str]]:
    """The good rows of a CSV as (normalized contact, reason), in file order; bad ones are counted in `result`.

    Raises:
        _Malformed: the file is not CSV, or its header has no `contact` column (the message names the line).
    """
    records = _records(csv.reader(file, strict=True))
    header = next(records, None)
    names = [_unescape(name).strip() for name in header[2]] if header else []
    if "contact" not in names:
        raise _Malformed("line 1: no 'contact' column in the header")
    if len(set(names)) != len(names):
        raise _Malformed("line 1: a column name appears twice in the header")
    at_contact = names.index("contact")
    at_reason = names.index("reason") if "reason" in names else None
    rows: list[tuple[str, str]] = []
    for first, last, record in records:
        problem = None
        if last != first:
            problem = f"a field runs over several lines (a quote opened on line {first} and closed too late?)"
        elif len(record) > len(names):
            problem = f"{len(record)} fields, the header has {len(names)}"
        else:
            cells = [_unescape(cell) for cell in record] + [""] * (len(names) - len(record))
            try:
                contact = normalize_contact(cells[at_contact])
            except InvalidContact as exc:
                problem = str(exc)
            else:
                why = cells[at_reason].strip() if at_reason is not None else ""
                rows.append((contact, why or default_reason))
        if problem is not None:
            result.bad += 1
            if len(result.problems) < MAX_PROBLEMS:
                where = f"line {first}" if last == first else f"lines {first}-{last}"
                result.problems.append(f"{where}: {problem}")
    return rows


def _records(reader: Any) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of each non-blank record of a strict `csv.reader`.

    Raises:
        _Malformed: the reader's error, at the record's first line. An unclosed quote at the end of the file
            would otherwise be one field holding every line after it.
    """
    while True:
        first = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            message = str(exc)
            if message == "unexpected end of data":
                message = 'a quote (") opened on this line is never closed'
            elif message.startswith("field larger than field limit"):
                message = f"a field is longer than {csv.field_size_limit()} characters"
            raise _Malformed(f"line {first}: {message}") from None
        if record:
            yield first, reader.line_num, record


def _escape(cell: str) -> str:
    """A cell as export writes it: a leading `'` before what a spreadsheet would run as a formula."""
    return f"'{cell}" if _FORMULA.match(cell) else cell


def _unescape(cell: str) -> str:
    """A cell as export meant it: the one `'` that `_escape` added taken off again."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell, 1) else cell


def _one_line(text: str) -> str:
    """A reason on one line, its runs of white space one space: an exported row stays one line of its file, so
    an import can refuse every row that runs over several (an unclosed quote) and lose none silently."""
    return " ".join(text.split())


def _row(
    contact: str, *, reason: str, campaign_id: str | None = None, workflow_id: str | None = None
) -> dict[str, Any]:
    return {
        "contact": contact,
        "kind": kind_of(contact),
        "reason": _one_line(reason)[:MAX_REASON] or "api",
        "at": datetime.now(UTC),
        "campaign_id": campaign_id,
        "workflow_id": workflow_id,
    }


def _active() -> Any:
    return select(suppressions).where(ACTIVE)


def _active_count(connection: Connection) -> int:
    query = select(func.count()).select_from(suppressions).where(ACTIVE)
    return int(connection.execute(query).scalar_one())


def _entry(row: Any) -> Suppression:
    at = row["at"]
    return Suppression(
        contact=row["contact"],
        kind=row["kind"],
        reason=row["reason"],
        at=stored_utc(at),
        campaign_id=row["campaign_id"],
        workflow_id=row["workflow_id"],
    )
