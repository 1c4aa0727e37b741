"""Audience files (`jsonl`, `csv`), read whole every run, resumable at a byte offset."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scheduler.audience.fields import Rows, Skip
from scheduler.audience.model import Audience
from scheduler.errors import AudienceError


def read_file(audience: Audience, base_dir: Path, cursor: str | None, limit: int) -> tuple[Rows, str | None]:
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
