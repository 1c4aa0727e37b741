"""`read_page`: one page of any source, its rows mapped to targets and skips."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel, Field

from scheduler.audience.fields import Skip, Target, map_row
from scheduler.audience.files import read_file
from scheduler.audience.http import read_http
from scheduler.audience.model import Audience
from scheduler.audience.sql import read_sql
from scheduler.flow.models import PAGE_SIZE, Window


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
