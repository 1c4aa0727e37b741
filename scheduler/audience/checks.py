"""Checks of an `[audience]` table that need the file system or SQLAlchemy, run when a campaign file loads
(`audience_problems`) and by `scheduler validate` (`audience_warnings`). Keys are under `[audience]`."""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import urlsplit

from scheduler.audience.model import AUDIENCE_FIELDS, Audience
from scheduler.problems import Problem

_PASSWORD_IN_URL = "the url holds a password, which would be stored in the Temporal schedule: leave it out"


def audience_problems(audience: Audience, campaign_dir: Path) -> list[Problem]:
    """Load-time checks that need the file system or SQLAlchemy (so they cannot live in the model).

    `campaign_dir` is the campaign file's directory: an audience file must resolve inside it, also
    through symlinks, so a campaign cannot read (and message) data it was not meant to see.
    """
    issues: list[Problem] = []
    if audience.path is not None:
        root = campaign_dir.resolve()
        target = (root / audience.path).resolve()
        if not target.is_relative_to(root):
            issues.append(
                Problem(key="path", message=f"{audience.path!r} leads outside the campaigns directory (to {target})")
            )
    if audience.source == "sql" and audience.url is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(audience.url)
        except ArgumentError:
            issues.append(Problem(key="url", message="not a SQLAlchemy URL (dialect+driver://user@host/database)"))
        else:
            try:
                url.get_dialect()
            except ArgumentError:
                issues.append(Problem(key="url", message=f"unknown database dialect {url.drivername!r}"))
            if url.password is not None:
                issues.append(
                    Problem(
                        key="url", message=_PASSWORD_IN_URL + " (PostgreSQL: PGPASSWORD or ~/.pgpass)", warning=True
                    )
                )
    if audience.source == "http" and audience.url is not None and urlsplit(audience.url).password is not None:
        issues.append(Problem(key="url", message=_PASSWORD_IN_URL + " (use token_env)", warning=True))
    return issues


def audience_warnings(audience: Audience, campaign_dir: Path) -> list[Problem]:
    """Warnings about this machine rather than the file: a file not there (yet), a CSV header without a
    mapped column, a database driver not installed. Warnings, because the worker that reads the audience
    may run elsewhere, and an export may write the file just before the run.
    """
    found: list[Problem] = []
    if audience.path is not None:
        file = campaign_dir / audience.path
        if not file.is_file():
            return [
                Problem(
                    key="path", message=f"{audience.path!r} does not exist (yet): runs fail until it does", warning=True
                )
            ]
        if audience.source == "csv":
            try:
                with file.open(encoding="utf-8-sig", errors="replace", newline="") as f:
                    header = {name.strip() for name in next(csv.reader(f), [])}
            except (OSError, csv.Error) as exc:
                return [Problem(key="path", message=f"cannot read {audience.path!r}: {exc}", warning=True)]
            if "cart.id" not in audience.fields and "cart.id" not in header:
                message = f"no column 'cart.id' in {audience.path!r}: map \"cart.id\" to the cart id column"
                found.append(Problem(key="fields", message=message, warning=True))
            for field in AUDIENCE_FIELDS:
                column = audience.fields.get(field)
                if column is not None and column not in header:
                    message = f"column {column!r} is not in the header of {audience.path!r}"
                    found.append(Problem(key=f"fields.{field}", message=message, warning=True))
    if audience.source == "sql" and audience.url is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(audience.url).get_dialect().import_dbapi()
        except ImportError as exc:
            found.append(Problem(key="url", message=f"the database driver is not installed here ({exc})", warning=True))
        except ArgumentError:
            pass  # a bad URL or dialect is an error of the file, reported when loading
    return found
