"""Audiences: the carts a campaign run starts flows for, read page by page from a file, an HTTP API or a database.

A run reads its audience in an activity that heartbeats between pages, so reading is resumable:
`read_page` takes an opaque cursor and gives the next one, and a retried activity carries on from the
last cursor it reported instead of starting over. Each call reads at most `limit` rows.

Rows become `Target`s (cart, customer, normalized contacts) through `[audience.fields]`; a row that
cannot become a flow is a `Skip` with its reason. Duplicate carts are *not* removed here: a run may
meet the same cart on two pages, in two runs, or twice in one file, and the flow id
`<campaign id>-<cart id>` is what keeps each cart to one flow.

The window: a run covers `[since, until)`, from where the previous successful run stopped (the first
run looks back `audience.lookback`). `sql` gets it as `:since`/`:until`, `http` as `since`/`until`
query parameters; `jsonl`/`csv` files are read whole every run.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
from pydantic import BaseModel, Field

from scheduler.campaign import AUDIENCE_FIELDS, Audience
from scheduler.errors import InvalidValue, SchedulerError
from scheduler.flow.contacts import InvalidContact, normalize_contact
from scheduler.flow.limits import check_id, check_record
from scheduler.flow.models import PAGE_SIZE, Window
from scheduler.outbound import http_client, retryable_status

HTTP_TIMEOUT = 30.0
"""Seconds for one page of an http source (connect, read): a slow API fails the attempt, not the worker."""
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class AudienceError(SchedulerError):
    """The audience could not be read (the source, not a row, is wrong).

    `retryable` tells the activity whether another attempt may help (a network error, a 5xx, a
    database that is not reachable) or not (a missing file or token, a 4xx, a query the database
    refuses), so it can fail the run at once with this message.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Target(BaseModel):
    """One row that can become a flow: what `FlowInput` gets as `cart` and `customer`, plus its contacts."""

    cart: dict[str, Any]
    """Always has `id` (text); maybe `url`, `total`, `items`."""
    customer: dict[str, Any] = Field(default_factory=dict)
    """Maybe `id` (text), `name`, `phone` (E.164), `email` (lower case), `timezone`."""
    contacts: list[str] = Field(default_factory=list)
    """The customer's normalized phone and e-mail (the `CustomerContact` search attribute)."""
    row_number: int = 0
    """Where the row was: see `Skip.row_number`."""


class Skip(BaseModel):
    """A row that cannot become a flow, and why.

    The reason never repeats a contact's value (it would end up in Temporal's history and logs):
    `row_number` finds the row instead. It is the line in a jsonl file, the line where the record
    starts in a csv file, and the 1-based position in the results for http (across pages) and sql.
    """

    reason: str
    row_number: int


class Page(BaseModel):
    """One `read_page` call's worth: `next_cursor` None means the audience is read to the end."""

    targets: list[Target] = Field(default_factory=list)
    skipped: list[Skip] = Field(default_factory=list)
    next_cursor: str | None = None


Rows = list[tuple[int, "Mapping[str, Any] | Skip"]]
"""(row number, the row as read or why it could not be read)."""


async def read_page(
    audience: Audience, *, base_dir: Path, window: Window, cursor: str | None, limit: int = PAGE_SIZE
) -> Page:
    """Read up to `limit` rows after `cursor` (None: from the start) and map them.

    `base_dir` is the directory of the campaign file (the campaigns directory): jsonl/csv paths and
    relative SQLite database paths are read from there. Cursors are opaque and belong to the source and
    window they came from: jsonl/csv, the byte offset and line after the last row read; http, the
    page URL and how many of its items were read; sql, the row offset.

    Raises:
        AudienceError: the source cannot be read; see its `retryable`.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if audience.source == "http":
        rows, next_cursor = await _read_http(audience, window, cursor, limit)
    elif audience.source == "sql":
        rows, next_cursor = await asyncio.to_thread(_read_sql, audience, base_dir, window, cursor, limit)
    else:
        rows, next_cursor = await asyncio.to_thread(_read_file, audience, base_dir, cursor, limit)
    page = Page(next_cursor=next_cursor)
    for number, row in rows:
        mapped = row if isinstance(row, Skip) else map_row(audience, row, number)
        if isinstance(mapped, Skip):
            page.skipped.append(mapped)
        else:
            page.targets.append(mapped)
    return page


# --- mapping -----------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """Why a row cannot become a flow (becomes a Skip)."""


def map_row(audience: Audience, row: Mapping[str, Any], row_number: int) -> Target | Skip:
    """A source row → a Target, or a Skip naming the reason.

    Each of our fields is read from the column `[audience.fields]` maps it to, else from the column of
    its own dotted name. A column name is looked up as a key first, then as a path into nested objects,
    so `cart.id` finds both a column "cart.id" and JSON `{"cart": {"id": …}}`. Columns that are not
    mapped to our fields are left out: they would otherwise all land in Temporal's history.
    Empty values (null, "", blanks) count as absent.
    """
    values: dict[str, Any] = {}
    for field in AUDIENCE_FIELDS:
        value = _pick(row, audience.fields.get(field, field))
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "":
            values[field] = value
    try:
        if "cart.id" not in values:
            column = audience.fields.get("cart.id", "cart.id")
            raise _Invalid(f"no cart.id (column {column!r} is missing or empty)")
        values["cart.id"] = _identifier("cart.id", values["cart.id"])
        if "customer.id" in values:
            values["customer.id"] = _identifier("customer.id", values["customer.id"])
        contacts = []
        for field in ("customer.phone", "customer.email"):
            if field in values:
                values[field] = _contact(field, values[field])
                if values[field] not in contacts:
                    contacts.append(values[field])
    except _Invalid as exc:
        return Skip(reason=str(exc), row_number=row_number)
    if "cart.total" in values:
        values["cart.total"] = _total(values["cart.total"])
    if isinstance(items := values.get("cart.items"), str) and items.startswith("["):
        try:
            values["cart.items"] = json.loads(items)  # a csv cell holding a JSON array
        except ValueError:
            pass
    cart: dict[str, Any] = {}
    customer: dict[str, Any] = {}
    for field, value in values.items():
        table, _, name = field.partition(".")
        (cart if table == "cart" else customer)[name] = _plain(value)
    try:  # e.g. a cart's items too many or too deep for a flow's input
        check_record(cart, what="cart")
        check_record(customer, what="customer")
    except InvalidValue as exc:
        return Skip(reason=str(exc), row_number=row_number)
    return Target(cart=cart, customer=customer, contacts=contacts, row_number=row_number)


def _pick(row: Mapping[str, Any], column: str) -> Any:
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _identifier(field: str, value: Any) -> str:
    """Ids become text that follows the id rule (`scheduler.flow.limits`): they end up in a workflow id and in
    Keyword search attributes, where a NUL or an oversize id would fail the start (and the page) or stall the flow."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        text = str(int(value))
    elif isinstance(value, UUID):
        text = str(value)
    else:
        raise _Invalid(f"{field} must be text or a whole number, not {type(value).__name__}")
    try:
        return check_id(text, what=field)
    except InvalidValue as exc:
        raise _Invalid(str(exc)) from None


def _contact(field: str, value: Any) -> str:
    phone = field == "customer.phone"
    what = "a valid phone number" if phone else "a valid e-mail address"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Invalid(f"{field} is not {what}")
    try:
        normal = normalize_contact(value)
    except InvalidContact:
        raise _Invalid(f"{field} is not {what}") from None
    if ("@" in normal) == phone:  # an e-mail in the phone column or the other way round
        raise _Invalid(f"{field} is not {what}")
    return normal


def _total(value: Any) -> Any:
    """A csv cell "42.50" becomes 42.5, so templates can compute with it; anything else stays as given."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value) if "." in value else int(value)
    return value


def _plain(value: Any) -> Any:
    """JSON-safe values (a Temporal payload): database rows bring Decimals, datetimes, UUIDs and bytes."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


# --- files -------------------------------------------------------------------------------------------------


def _read_file(audience: Audience, base_dir: Path, cursor: str | None, limit: int) -> tuple[Rows, str | None]:
    reader = _read_jsonl if audience.source == "jsonl" else _read_csv
    return reader(_audience_file(audience, base_dir), cursor, limit)


def _audience_file(audience: Audience, base_dir: Path) -> Path:
    """The file, checked again at read time: a symlink may have changed since the campaign was loaded."""
    root = base_dir.resolve()
    file = (root / (audience.path or "")).resolve()
    if not file.is_relative_to(root):
        raise AudienceError(f"audience file {audience.path!r} leads outside the campaigns directory {root}")
    if not file.is_file():
        raise AudienceError(f"audience file {audience.path!r} does not exist in {root}")
    return file


def _file_cursor(cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    try:
        offset, line = (int(part) for part in cursor.split(":"))
    except ValueError:
        raise AudienceError(f"invalid cursor {cursor!r} for a file audience") from None
    return offset, line


def _seek(f: IO[bytes], offset: int) -> None:
    """Go to a cursor's offset, which must be at the start of a line (else the file changed under us)."""
    if offset > 0:
        f.seek(offset - 1)
        if f.read(1) != b"\n":
            raise AudienceError("the audience file changed while it was being read: the cursor is not at a line start")


def _read_jsonl(file: Path, cursor: str | None, limit: int) -> tuple[Rows, str | None]:
    """One JSON object per line; blank lines are ignored (but count toward `limit`, which bounds the work)."""
    offset, line = _file_cursor(cursor)
    rows: Rows = []
    with file.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        _seek(f, offset)
        for _ in range(limit):
            raw = f.readline()
            if not raw:
                break
            line += 1
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError:
                rows.append((line, Skip(reason="not UTF-8 text", row_number=line)))
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                rows.append((line, Skip(reason=f"not JSON: {exc}", row_number=line)))
                continue
            rows.append((line, row if isinstance(row, dict) else Skip(reason="not a JSON object", row_number=line)))
        position = f.tell()
    return rows, (f"{position}:{line}" if position < size else None)


@dataclass
class _Lines:
    """Lines of a binary file for csv.reader, keeping the byte position and line number of what it consumed.

    csv.reader pulls exactly the lines one record needs (more than one for a quoted newline), so after
    each record `position` is where the next one starts: a cursor a later call can seek to.
    """

    f: IO[bytes]
    position: int
    line: int

    def __iter__(self) -> Iterator[str]:
        while raw := self.f.readline():
            self.position += len(raw)
            self.line += 1
            text = raw.decode("utf-8", errors="replace")
            yield text.removeprefix("\ufeff") if self.position == len(raw) else text


def _read_csv(file: Path, cursor: str | None, limit: int) -> tuple[Rows, str | None]:
    """A header row names the columns; every call reads it again (cheap), so the cursor stays two numbers."""
    offset, line = _file_cursor(cursor)
    rows: Rows = []
    with file.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        lines = _Lines(f, 0, 0)
        try:
            header = [name.strip() for name in next(csv.reader(lines))]
        except StopIteration:
            return [], None
        except csv.Error as exc:
            raise AudienceError(f"the header of {file.name} is not CSV: {exc}") from None
        if cursor is None:
            offset, line = lines.position, lines.line
        _seek(f, offset)
        lines = _Lines(f, offset, line)
        reader = csv.reader(lines)
        for _ in range(limit):
            start = lines.line + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rows.append((start, Skip(reason=f"not CSV: {exc}", row_number=start)))
                continue
            if not record:
                continue  # a blank line
            if len(record) != len(header):
                reason = f"row has {len(record)} cells, the header {len(header)}"
                rows.append((start, Skip(reason=reason, row_number=start)))
                continue
            rows.append((start, dict(zip(header, record, strict=True))))
    return rows, (f"{lines.position}:{lines.line}" if lines.position < size else None)


# --- http --------------------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _shown(url: str) -> str:
    """A URL for messages: without its query, which may carry secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


async def _read_http(audience: Audience, window: Window, cursor: str | None, limit: int) -> tuple[Rows, str | None]:
    """GET one page: a JSON array, or `{"items": [...], "next": url}` (`next` absent or null on the last page).

    The first page gets `since`/`until`; a `next` URL is followed as given (it is the server's own
    cursor). The bearer token is only sent to the configured URL's origin, never to a `next` elsewhere.
    """
    assert audience.url is not None  # checked by the model
    if cursor is None:
        first = httpx.URL(audience.url).copy_set_param("since", _iso(window.since))
        url, skip, before = str(first.copy_set_param("until", _iso(window.until))), 0, 0
    else:
        try:
            state = json.loads(cursor)
            url, skip, before = str(state["url"]), int(state["skip"]), int(state["row"])
        except (ValueError, KeyError, TypeError):
            raise AudienceError(f"invalid cursor {cursor!r} for an http audience") from None
    headers = {"Accept": "application/json"}
    if audience.token_env and _origin(url) == _origin(audience.url):
        token = os.environ.get(audience.token_env, "")
        if not token:
            raise AudienceError(f"environment variable {audience.token_env} (token_env) is not set")
        headers["Authorization"] = f"Bearer {token}"
    try:
        # httpx drops Authorization on a redirect to another origin.
        async with http_client(timeout=HTTP_TIMEOUT, follow_redirects=True) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise AudienceError(f"GET {_shown(url)} failed: {exc!r}", retryable=True) from None
    status = response.status_code
    if not 200 <= status < 300:
        raise AudienceError(f"GET {_shown(url)} answered {status}", retryable=retryable_status(status))
    try:
        body = response.json()
    except ValueError:
        raise AudienceError(f"GET {_shown(url)} did not answer JSON") from None
    items, next_url = _items(url, body)
    if next_url is not None:
        next_url = str(response.url.join(next_url))
        if urlsplit(next_url).scheme not in ("http", "https") or next_url == url:
            raise AudienceError(f"GET {_shown(url)} gave a bad next page URL: {_shown(next_url)}")
    rows: Rows = []
    for i, item in enumerate(items[skip : skip + limit], start=before + skip + 1):
        rows.append((i, item if isinstance(item, dict) else Skip(reason="not a JSON object", row_number=i)))
    if skip + limit < len(items):
        return rows, json.dumps({"url": url, "skip": skip + limit, "row": before})
    if next_url is not None:
        return rows, json.dumps({"url": next_url, "skip": 0, "row": before + len(items)})
    return rows, None


def _items(url: str, body: Any) -> tuple[list[Any], str | None]:
    if isinstance(body, list):
        return body, None
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        next_url = body.get("next")
        if next_url is None or (isinstance(next_url, str) and next_url.strip()):
            return body["items"], next_url
    raise AudienceError(f'GET {_shown(url)}: expected a JSON array or {{"items": [...], "next": url}}')


# --- sql ---------------------------------------------------------------------------------------------------


def _read_sql(
    audience: Audience, base_dir: Path, window: Window, cursor: str | None, limit: int
) -> tuple[Rows, str | None]:
    """Run the query for one page: `LIMIT/OFFSET` appended, one row more than asked to know if more follow.

    Offsets are stable because the query must have an ORDER BY (checked at load) and the window is
    fixed and in the past. A new connection per page (no pool): pages are minutes apart at most, and
    nothing stays open between heartbeats. Sync SQLAlchemy, run in a thread by `read_page`.
    """
    from sqlalchemy import DateTime, bindparam, create_engine, text
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    assert audience.url is not None and audience.query is not None  # checked by the model
    try:
        offset = int(cursor) if cursor is not None else 0
    except ValueError:
        raise AudienceError(f"invalid cursor {cursor!r} for a sql audience") from None
    query = audience.query.strip().rstrip(";").rstrip()
    used = set(text(query).compile().params)
    # Typed, so each dialect gets a real timestamp (SQLite: its own text format, in UTC).
    windowed = [bindparam(name, type_=DateTime(timezone=True)) for name in ("since", "until") if name in used]
    statement = text(f"{query}\nLIMIT :audience_limit OFFSET :audience_offset").bindparams(*windowed)
    params = {"audience_limit": limit + 1, "audience_offset": offset}
    params |= {name: getattr(window, name) for name in ("since", "until") if name in used}
    try:
        engine = create_engine(_database_url(audience.url, base_dir), poolclass=NullPool)
    except ImportError as exc:
        raise AudienceError(f"the database driver is not installed: {exc}") from None
    except SQLAlchemyError as exc:
        raise AudienceError(f"bad database URL: {exc}") from None
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:  # not reachable (yet): another attempt may get through
            raise AudienceError(f"cannot connect to the database: {_first_line(exc)}", retryable=True) from None
        with connection:
            try:
                fetched = [dict(row._mapping) for row in connection.execute(statement, params)]
            except DBAPIError as exc:  # the query itself is wrong, unless the connection broke under it
                retryable = exc.connection_invalidated
                raise AudienceError(f"audience query failed: {_first_line(exc)}", retryable=retryable) from None
            except SQLAlchemyError as exc:
                raise AudienceError(f"audience query failed: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    rows: Rows = [(offset + i, row) for i, row in enumerate(fetched[:limit], start=1)]
    return rows, (str(offset + limit) if len(fetched) > limit else None)


def _database_url(url: str, base_dir: Path) -> Any:
    """Like file paths, a relative SQLite database is relative to the campaign file, not the worker's cwd."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).is_absolute()
    ):
        return parsed.set(database=str(base_dir / database))
    return parsed


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
