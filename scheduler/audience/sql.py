"""An audience from a database: the campaign's query with `:since`/`:until`, read in `LIMIT`/`OFFSET` pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheduler.audience.fields import Rows
from scheduler.audience.model import Audience
from scheduler.errors import AudienceError, first_line
from scheduler.flow.models import Window


def read_sql(
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
            raise AudienceError(f"cannot connect to the database: {first_line(exc)}", retryable=True) from None
        with connection:
            try:
                fetched = [dict(row._mapping) for row in connection.execute(statement, params)]
            except DBAPIError as exc:  # the query itself is wrong, unless the connection broke under it
                retryable = exc.connection_invalidated
                raise AudienceError(f"audience query failed: {first_line(exc)}", retryable=retryable) from None
            except SQLAlchemyError as exc:
                raise AudienceError(f"audience query failed: {first_line(exc)}") from None
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
