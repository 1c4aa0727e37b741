"""The `[audience]` table of a campaign file: where a run finds its carts, and its checks that need no IO."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, field_validator

from scheduler.flow.durations import Duration
from scheduler.flow.models import RunAudience

AUDIENCE_FIELDS = (
    "cart.id",
    "customer.id",
    "customer.name",
    "customer.phone",
    "customer.email",
    "customer.timezone",
    "cart.url",
    "cart.total",
    "cart.items",
)
"""Our fields, the keys `[audience.fields]` may map: only these reach a flow (and Temporal's history)."""

_USED_BY = {"path": ("jsonl", "csv"), "url": ("http", "sql"), "query": ("sql",), "token_env": ("http",)}
_REQUIRED = {"path", "url", "query"}
# The bind parameters SQLAlchemy's text() finds (its own pattern), so the check agrees with what runs.
_SQL_PARAM = re.compile(r"(?<![:\w\x5c]):(\w+)(?!:)")
_SQL_PARAMS = ("since", "until")
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
_TRAILING_LIMIT = re.compile(r"\b(limit|offset|fetch)\b[^()]*$", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _our_field(name: str) -> str:
    if name not in AUDIENCE_FIELDS:
        raise ValueError(f"unknown field {name!r} (fields: {', '.join(AUDIENCE_FIELDS)})")
    return name


def _column(name: str) -> str:
    if not name.strip():
        raise ValueError("the source's column name is empty")
    return name


class Audience(RunAudience):
    """Where a campaign run finds its carts, and how the source's columns become our fields.

    The checks here are pure, because the model is rebuilt from the schedule's input for every page a
    run reads; the ones that need the file system or SQLAlchemy run at load time in
    `audience_problems` and, for `validate`, `deep_checks`.
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["jsonl", "csv", "http", "sql"]
    path: str | None = Field(default=None, validate_default=True)
    """jsonl/csv: the file, relative to the campaign file's directory and inside it."""
    url: str | None = Field(default=None, validate_default=True)
    """http: the first page (GET); sql: a SQLAlchemy database URL."""
    query: str | None = Field(default=None, validate_default=True)
    """sql: a SELECT with an ORDER BY; may use `:since` and `:until`."""
    token_env: str | None = Field(default=None, validate_default=True)
    """http: name of the environment variable holding a bearer token (the token never sits in the file)."""
    lookback: Duration = timedelta(hours=1)
    """How far back the first run looks (later runs start where the previous successful one stopped)."""
    fields: dict[Annotated[str, AfterValidator(_our_field)], Annotated[str, AfterValidator(_column)]] = Field(
        default_factory=dict
    )
    """Our field ("cart.id") = the source's column; an unmapped field is read from the column of its own name."""

    @field_validator("path", "url", "query", "token_env")
    @classmethod
    def _fits_the_source(cls, v: str | None, info: ValidationInfo) -> str | None:
        source, key = info.data.get("source"), info.field_name
        if source is None or key is None:
            return v  # the source itself is wrong, and reported there
        used = source in _USED_BY[key]
        if v is None:
            if used and key in _REQUIRED:
                raise ValueError(f"required for source {source!r}")
            return v
        if not used:
            users = " and ".join(_USED_BY[key])
            raise ValueError(f"not used by source {source!r} (only by {users})")
        if not v.strip():
            raise ValueError("must not be empty")
        check = {"path": _relative_inside, "url": _url_for(source), "query": _sql_query, "token_env": _env_name}[key]
        check(v)
        return v

    @field_validator("lookback")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return v


def _relative_inside(path: str) -> None:
    """A campaign file must not read files outside its directory (a shared campaigns repo is not a file server)."""
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or path.startswith(("\\", "~")):
        raise ValueError(f"{path!r} must be relative to the campaign file's directory, not absolute")
    depth = 0  # worked out on the text alone: the file need not exist on this machine
    for part in PurePosixPath(path.replace("\\", "/")).parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise ValueError(f"{path!r} leaves the campaigns directory ('..')")


def _url_for(source: str) -> Callable[[str], None]:
    def http(url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")

    def sql(url: str) -> None:
        if "://" not in url:
            raise ValueError(f"{url!r} is not a SQLAlchemy URL (dialect+driver://user@host/database)")

    return http if source == "http" else sql


def _sql_query(query: str) -> None:
    unknown = sorted({m for m in _SQL_PARAM.findall(query) if m not in _SQL_PARAMS})
    if unknown:
        raise ValueError(f"unknown parameter :{unknown[0]} (a query may use :since and :until)")
    if not _ORDER_BY.search(query):
        raise ValueError(
            "needs an ORDER BY on a unique key (e.g. ORDER BY created_at, id): rows are read in pages"
            " with LIMIT/OFFSET, and without a stable order pages skip or repeat rows"
        )
    if _TRAILING_LIMIT.search(query.rstrip().rstrip(";")):
        raise ValueError("must not end with LIMIT/OFFSET: the scheduler reads the rows in pages with its own")


def _env_name(name: str) -> None:
    if not _ENV_NAME.fullmatch(name):
        # The value is not repeated: what is not a variable name may well be the token itself.
        raise ValueError(
            "must be the name of an environment variable (letters, digits, '_'), e.g. 'SHOP_API_TOKEN',"
            " never the token itself"
        )
