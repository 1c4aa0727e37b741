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

One module per source (`files`, `http`, `sql`), the field mapping (`fields`), the `[audience]` table's
model (`model`) and its load-time checks (`checks`); the names callers use are re-exported here.
"""

import asyncio
from pathlib import Path

from pydantic import BaseModel, Field

from scheduler.audience.checks import audience_problems, audience_warnings
from scheduler.audience.fields import Skip, Target, map_row
from scheduler.audience.files import read_file
from scheduler.audience.http import HTTP_TIMEOUT, read_http
from scheduler.audience.model import AUDIENCE_FIELDS, Audience
from scheduler.audience.sql import read_sql
from scheduler.flow.models import PAGE_SIZE, Window

__all__ = [
    "AUDIENCE_FIELDS",
    "HTTP_TIMEOUT",
    "Audience",
    "Page",
    "Skip",
    "Target",
    "audience_problems",
    "audience_warnings",
    "map_row",
    "read_page",
]


class Page(BaseModel):
    """One `read_page` call's worth: `next_cursor` None means the audience is read to the end."""

    targets: list[Target] = Field(default_factory=list)
    skipped: list[Skip] = Field(default_factory=list)
    next_cursor: str | None = None


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
        rows, next_cursor = await read_http(audience, window, cursor, limit)
    elif audience.source == "sql":
        rows, next_cursor = await asyncio.to_thread(read_sql, audience, base_dir, window, cursor, limit)
    else:
        rows, next_cursor = await asyncio.to_thread(read_file, audience, base_dir, cursor, limit)
    page = Page(next_cursor=next_cursor)
    for number, row in rows:
        mapped = row if isinstance(row, Skip) else map_row(audience, row, number)
        if isinstance(mapped, Skip):
            page.skipped.append(mapped)
        else:
            page.targets.append(mapped)
    return page
