"""Campaign files: TOML (or a seed-shaped JSON definition) → a validated `Campaign`, with file:line errors.

Every problem of a file is reported at once, located as `path:line: key: message`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from scheduler.config import ChannelsSettings
from scheduler.cron import cron_problem
from scheduler.definition import WorkflowDefinition, parse_definition
from scheduler.durations import Duration
from scheduler.errors import Problem, UnknownCampaign
from scheduler.locate import KeyPath, json_key_lines, line_of, toml_key_lines

Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CampaignInfo(_Table):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str = ""
    owner: str = ""
    """Who `notify_creator` tells."""
    enabled: bool = True
    """False: the schedule is kept but paused."""


class CampaignSchedule(_Table):
    cron: list[str] = Field(min_length=1)
    timezone: str = "UTC"
    jitter: Duration = timedelta(0)
    overlap: Overlap = "skip"
    catchup_window: Duration = timedelta(minutes=1)
    start_at: datetime | None = None
    end_at: datetime | None = None

    @field_validator("cron", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("cron")
    @classmethod
    def _temporal_reads_it_as_cron(cls, v: list[str]) -> list[str]:
        for expr in v:
            if problem := cron_problem(expr):
                raise ValueError(problem)
        return v

    @field_validator("timezone")
    @classmethod
    def _iana(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}: use an IANA name such as 'Europe/Berlin'") from None
        return v

    @field_validator("start_at", "end_at", mode="before")
    @classmethod
    def _dates_are_midnight(cls, v: Any) -> Any:
        return datetime(v.year, v.month, v.day) if isinstance(v, date) and not isinstance(v, datetime) else v

    @field_validator("end_at")
    @classmethod
    def _after_start(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        start, timezone = info.data.get("start_at"), info.data.get("timezone", "UTC")
        if v and start and _aware(v, timezone) <= _aware(start, timezone):
            raise ValueError("end_at must be after start_at")
        return v


def _aware(moment: datetime, timezone: str) -> datetime:
    """A TOML local datetime is read in the campaign's timezone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))


class Audience(_Table):
    source: Literal["jsonl", "csv", "http", "sql"]
    path: str | None = None
    url: str | None = None
    query: str | None = None
    dsn: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    """Our field name ("cart.id") = the source's column."""


class Campaign(_Table):
    campaign: CampaignInfo
    schedule: CampaignSchedule | None = None
    """Required in campaign files; None for a seed-shaped JSON definition."""
    audience: Audience | None = None
    workflow: WorkflowDefinition
    source: Path | None = Field(default=None, exclude=True)

    @property
    def id(self) -> str:
        return self.campaign.id


def load_campaign(path: Path) -> tuple[Campaign | None, list[Problem]]:
    """Read one campaign file (`.toml`) or seed-shaped definition (`.json`): (campaign or None, problems).

    A JSON definition becomes a campaign whose id is the file's stem, without a schedule.
    """
    shown = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(shown, 1, "", f"cannot read file: {exc.strerror or exc}")]
    if path.suffix == ".json":
        return _from_json(path, shown, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [Problem(shown, _toml_error_line(exc), "", f"invalid TOML: {exc}")]
    return _build(path, shown, data, lambda: toml_key_lines(text))


def _from_json(path: Path, shown: str, text: str) -> tuple[Campaign | None, list[Problem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(shown, exc.lineno, "", f"invalid JSON: {exc.msg} (column {exc.colno})")]

    def lines() -> dict[KeyPath, int]:
        found = json_key_lines(text)
        return {("workflow", *k): v for k, v in found.items()} if seed_shape else found

    seed_shape = isinstance(data, dict) and "workflow" not in data  # the definition itself
    if seed_shape:
        data = {"workflow": data}
    if isinstance(data, dict) and "campaign" not in data:
        data["campaign"] = {"id": re.sub(r"[^a-z0-9_-]", "-", path.stem.lower()) or "definition"}
    return _build(path, shown, data, lines)


def _build(
    path: Path, shown: str, data: Any, key_lines: Callable[[], dict[KeyPath, int]]
) -> tuple[Campaign | None, list[Problem]]:
    """Validate; key lines are only worked out when there is a problem to place (most loads have none)."""
    lines: dict[KeyPath, int] | None = None

    def problem(key: tuple[Any, ...], message: str, warning: bool = False) -> Problem:
        nonlocal lines
        if lines is None:
            lines = key_lines()
        return Problem(shown, line_of(lines, key), ".".join(str(k) for k in key), message, warning)

    if not isinstance(data, dict):
        return None, [Problem(shown, 1, "", "expected a table of campaign settings")]
    problems: list[Problem] = []
    if path.suffix == ".toml" and "schedule" not in data:
        problems.append(problem(("schedule",), "required table [schedule] is missing (cron and timezone)"))
    if "workflow" not in data:
        problems.append(problem(("workflow",), "required table [workflow] is missing"))
    else:
        _, def_problems = parse_definition(data["workflow"])
        problems.extend(problem(("workflow", *p.key.split(".")), p.message, p.warning) for p in def_problems)
    try:
        campaign = Campaign.model_validate({**data, "source": path})
    except ValidationError as exc:
        campaign = None
        for e in exc.errors():
            if e["loc"] and e["loc"][0] == "workflow":
                continue  # reported above, with the definition's own rules
            key = tuple(e["loc"])
            if key and key[-1] == "[key]":
                key = key[:-1]
            problems.append(problem(key, _message(e)))
    if any(not p.warning for p in problems):
        campaign = None
    return campaign, sorted(problems, key=lambda p: p.line)


def load_campaign_dir(directory: Path) -> tuple[dict[str, Campaign], list[Problem]]:
    """Every `*.toml` campaign of a directory, by id; duplicate ids are errors naming both files."""
    campaigns: dict[str, Campaign] = {}
    problems: list[Problem] = []
    if not directory.is_dir():
        return {}, [Problem(_shown(directory), 1, "", "campaigns directory does not exist")]
    for path in sorted(directory.glob("*.toml")):
        campaign, found = load_campaign(path)
        problems.extend(found)
        if campaign is None:
            continue
        if campaign.id in campaigns:
            first = campaigns[campaign.id].source
            problems.append(
                Problem(
                    _shown(path),
                    line_of(toml_key_lines(path.read_text(encoding="utf-8")), ("campaign", "id")),
                    "campaign.id",
                    f"duplicate campaign id {campaign.id!r}: also used by {_shown(first) if first else '?'}",
                )
            )
            continue
        campaigns[campaign.id] = campaign
    return campaigns, problems


def find_campaign(directory: Path, campaign_id: str) -> Campaign:
    """The campaign with this id in the directory.

    Raises:
        UnknownCampaign: no valid campaign file has that id (broken files are named in the message).
    """
    campaigns, problems = load_campaign_dir(directory)
    if campaign_id in campaigns:
        return campaigns[campaign_id]
    broken = sorted({p.path for p in problems if not p.warning})
    raise UnknownCampaign(campaign_id, _shown(directory), broken)


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int:
    # Python 3.11's TOMLDecodeError has no lineno; the position is only in its message.
    m = re.search(r"line (\d+)", str(exc))
    return int(m.group(1)) if m else 1


def _message(error: Any) -> str:
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "string_pattern_mismatch":
        return f"{error['input']!r} is not a valid id: lowercase letters, digits, '-' and '_', at most 63 characters"
    return str(error["msg"]).removeprefix("Value error, ")


def _shown(path: Path) -> str:
    """Paths relative to the working directory when under it, as users typed them."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def deep_checks(campaign: Campaign, channels: ChannelsSettings) -> list[Problem]:
    """`validate`'s checks beyond loading: schedule warnings (DST gaps and repeats, expressions that never
    fire) and steps whose channel this service config cannot deliver through.

    Not part of loading: the schedule check walks a year of fire times, which the reconcile loop need not do.
    """
    from scheduler.cron import schedule_warnings

    if campaign.source is None:
        return []
    lines = toml_key_lines(campaign.source.read_text(encoding="utf-8"))
    shown = _shown(campaign.source)
    problems = [
        Problem(shown, line_of(lines, key.split(".")), key, message, warning=True)
        for key, message in (schedule_warnings(campaign.schedule) if campaign.schedule else [])
    ]
    for name, step in campaign.workflow.steps.items():
        channel = step.params.get("channel")
        if isinstance(channel, str) and (missing := channels.missing(channel)):
            key = ("workflow", "steps", name, "params", "channel")
            problems.append(
                Problem(shown, line_of(lines, key), ".".join(key), f"channel {channel!r} needs {missing} in the config")
            )
    return problems
