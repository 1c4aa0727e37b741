"""Campaign files: TOML (or a seed-shaped JSON definition) → a validated `Campaign`, with file:line errors.

Every problem of a file is reported at once, located as `path:line: key: message`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tomllib
from dataclasses import replace
from datetime import date, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from scheduler.audience import Audience, audience_problems, audience_warnings
from scheduler.campaigns.cron import aware, cron_problem, schedule_warnings
from scheduler.config import ChannelsSettings
from scheduler.errors import UnknownCampaign, clip
from scheduler.flow.definition import WorkflowDefinition, parse_definition, too_many_steps
from scheduler.flow.durations import Duration
from scheduler.flow.models import RunCampaign, RunCampaignInfo, RunDelivery, RunSchedule
from scheduler.flow.quiet_hours import parse_quiet_hours, place
from scheduler.problems import Problem
from scheduler.source_lines import (
    KeyPath,
    dotted_line,
    dotted_lines,
    json_key_lines,
    line_of,
    long_number_line,
    toml_key_lines,
    toml_shape_problem,
)

log = logging.getLogger(__name__)

Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


CAMPAIGN_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A campaign id: it names the schedule, and flow ids start with it."""
_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)


def is_campaign_id(value: str) -> bool:
    """Whether `value` can be a campaign's id (so it can go into a visibility query as it is)."""
    return _CAMPAIGN_ID.match(value) is not None


MAX_CRONS = 50
"""Cron expressions a schedule may have: each is checked and previewed, and Temporal stores each as a spec."""


DEFAULT_ATTRIBUTION_WINDOW = timedelta(days=5)
MAX_ATTRIBUTION_WINDOW = timedelta(days=90)
"""The longest `attribution_window`: how far back a conversion looks for the flows it may be attributed to."""


class CampaignInfo(RunCampaignInfo):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=CAMPAIGN_ID_PATTERN)
    name: str = Field("", max_length=200)
    owner: str = Field("", max_length=320)
    """Who `notify_creator` tells."""
    enabled: bool = True
    """False: the schedule is kept but paused."""
    max_starts_per_second: float = Field(50, gt=0, le=10_000)
    """How fast a run starts flows (the messaging provider's pace)."""
    attribution_window: Duration = DEFAULT_ATTRIBUTION_WINDOW
    """A purchase of a flow's cart or customer counts as the flow's conversion when it comes within this long
    after the flow started, whether the flow messaged (a holdout does not), ended or still runs."""

    @field_validator("attribution_window")
    @classmethod
    def _attribution_bounded(cls, v: timedelta) -> timedelta:
        if not timedelta(0) < v <= MAX_ATTRIBUTION_WINDOW:
            raise ValueError(f"attribution_window must be longer than 0s and at most {MAX_ATTRIBUTION_WINDOW.days}d")
        return v


class CampaignSchedule(RunSchedule):
    model_config = ConfigDict(extra="forbid")

    cron: list[str] = Field(min_length=1, max_length=MAX_CRONS)
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
        if place(v) is None:  # also `localtime`, `posixrules`, `right/…`: not places, or not the same everywhere
            raise ValueError(f"unknown timezone {v[:64]!r}: use an IANA name such as 'Europe/Berlin'")
        return v

    @field_validator("start_at", "end_at", mode="before")
    @classmethod
    def _dates_are_midnight(cls, v: Any) -> Any:
        return datetime(v.year, v.month, v.day) if isinstance(v, date) and not isinstance(v, datetime) else v

    @field_validator("end_at")
    @classmethod
    def _after_start(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        start, timezone = info.data.get("start_at"), info.data.get("timezone", "UTC")
        if v and start and aware(v, timezone) <= aware(start, timezone):
            raise ValueError("end_at must be after start_at")
        return v


MAX_DELAY_LIMIT = timedelta(days=7)


class Delivery(RunDelivery):
    """`[delivery]`: when this campaign's messages may go, over the service's `[compliance]`."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            parse_quiet_hours(v)
        return v

    @field_validator("max_delay")
    @classmethod
    def _bounded(cls, v: timedelta) -> timedelta:
        if not timedelta(0) <= v <= MAX_DELAY_LIMIT:
            raise ValueError(f"max_delay must be between 0s and {MAX_DELAY_LIMIT.days}d")
        return v


class Campaign(RunCampaign):
    """A campaign file. Its schedule starts runs with all of it; the workflows read it as a `RunCampaign`."""

    model_config = ConfigDict(extra="forbid")

    campaign: CampaignInfo
    schedule: CampaignSchedule | None = None
    """Required in campaign files; None for a seed-shaped JSON definition."""
    audience: Audience | None = None
    delivery: Delivery | None = None
    workflow: WorkflowDefinition
    source: Path | None = Field(default=None, exclude=True)

    @cached_property
    def sha256(self) -> str:
        """Hash of the canonical content (comments and formatting do not count), worked out once: loaded
        campaigns are cached and read only, and the reconcile loop compares every hash on every tick.

        A file without `[delivery]`, or without `attribution_window`, hashes as before those keys existed, so its
        schedule stays unchanged."""
        exclude: dict[str, Any] = {}
        if self.delivery is None:
            exclude["delivery"] = True
        if self.campaign.attribution_window == DEFAULT_ATTRIBUTION_WINDOW:
            exclude["campaign"] = {"attribution_window"}
        content = self.model_dump(mode="json", exclude=exclude or None)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


MAX_FILE_BYTES = 1_000_000
"""A campaign file is a few kilobytes; a bigger one is a mistake or an attack, refused before it is read."""
MAX_NESTING = 32
"""Arrays and inline tables nested deeper than this are refused before parsing (tomllib recurses)."""
MAX_KEY_PARTS = 64
"""Dotted keys with more parts are refused before parsing (tomllib is quadratic in them)."""
MAX_PROBLEMS = 50
"""Problems reported per file; the rest are counted."""


def load_campaign(path: Path) -> tuple[Campaign | None, list[Problem]]:
    """Read one campaign file (`.toml`) or seed-shaped definition (`.json`): (campaign or None, problems).

    A JSON definition becomes a campaign whose id is the file's stem. Whatever a file holds, the
    outcome is a campaign or problems of that file: a broken file never fails its directory.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        return None, [Problem(shown_path(path), 1, "", f"cannot read file: {exc.strerror or exc}")]
    if len(data) > MAX_FILE_BYTES:
        size = max(size, len(data))  # a file still being written may have grown since
        return None, [Problem(shown_path(path), 1, "", f"file is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, [Problem(shown_path(path), line, "", f"not UTF-8 text (byte {exc.start})")]
    campaign, problems = _parse(path, os.getcwd(), text)
    return campaign, list(problems)


@lru_cache(maxsize=1024)
def _parse(path: Path, cwd: str, text: str) -> tuple[Campaign | None, tuple[Problem, ...]]:
    """Parse and validate, once per file content: `/start-workflow` and the reconcile loop load the
    whole directory each time, and files rarely change. The campaign returned is shared: read only.

    `cwd` is part of the key because problems name the file relative to it (`shown_path`, slow enough to
    be worth caching too)."""
    shown = shown_path(path)
    try:
        return _parse_text(path, shown, text)
    except Exception as exc:  # a bug of ours, met by one file: that file's problem (logged once), never the directory's
        log.exception("cannot load %s", path)
        return None, (Problem(shown, 1, "", f"cannot load: {type(exc).__name__}: {clip(str(exc), 200)}"),)


def _parse_text(path: Path, shown: str, text: str) -> tuple[Campaign | None, tuple[Problem, ...]]:
    if path.suffix == ".json":
        campaign, problems = _from_json(path, shown, text)
    else:
        if shape := toml_shape_problem(text, max_depth=MAX_NESTING, max_key_parts=MAX_KEY_PARTS):
            return None, (Problem(shown, shape[0], "", f"refused before parsing: {shape[1]}"),)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return None, (Problem(shown, _toml_error_line(exc), "", f"invalid TOML: {exc}"),)
        except ValueError:  # an integer over Python's 4300-digit limit for int(str)
            return None, (Problem(shown, long_number_line(text) or 1, "", f"invalid TOML: {_LONG_NUMBER}"),)
        campaign, problems = _build(path, shown, data, text)
    if campaign is not None:
        _ = campaign.sha256  # worked out here, in the loading thread, not later on the event loop
    return campaign, tuple(problems)


def _from_json(path: Path, shown: str, text: str) -> tuple[Campaign | None, list[Problem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(shown, exc.lineno, "", f"invalid JSON: {exc.msg} (column {exc.colno})")]
    except RecursionError:
        return None, [Problem(shown, 1, "", "invalid JSON: nested too deeply")]
    except ValueError:  # an integer over Python's 4300-digit limit for int(str)
        return None, [Problem(shown, long_number_line(text) or 1, "", f"invalid JSON: {_LONG_NUMBER}")]
    if _seed_shaped(data):
        data = {"workflow": data}
    if isinstance(data, dict) and "campaign" not in data:
        data["campaign"] = {"id": re.sub(r"[^a-z0-9_-]", "-", path.stem.lower()) or "definition"}
    return _build(path, shown, data, text)


_LONG_NUMBER = f"a number of more than {sys.get_int_max_str_digits()} digits"


def _seed_shaped(data: Any) -> bool:
    """A JSON file that is the definition itself (as the seed's), not a campaign with a `workflow`."""
    return isinstance(data, dict) and "workflow" not in data


def _key_lines(path: Path, text: str) -> dict[KeyPath, int]:
    """The line of every key of a campaign file, in its own format (a seed-shaped JSON's keys under `workflow`)."""
    if path.suffix != ".json":
        return toml_key_lines(text)
    found = json_key_lines(text)
    return {("workflow", *k): v for k, v in found.items()} if _seed_shaped(json.loads(text)) else found


def key_line(path: Path, key: KeyPath) -> int:
    """The line of `key` in a campaign file (read again: lines are only worked out for a problem to place)."""
    return line_of(_key_lines(path, path.read_text(encoding="utf-8")), key)


def _build(path: Path, shown: str, data: Any, text: str) -> tuple[Campaign | None, list[Problem]]:
    """Validate; key lines are only worked out when there is a problem to place (most loads have none)."""
    placer: _Placer | None = None

    def place(found: Problem) -> Problem:
        nonlocal placer
        placer = placer or _Placer(shown, _key_lines(path, text))
        return placer(found)

    def problem(key: tuple[Any, ...], message: str) -> Problem:
        return place(Problem(key=".".join(str(k) for k in key), message=message))

    if not isinstance(data, dict):
        return None, [Problem(shown, 1, "", "expected a table of campaign settings")]
    problems: list[Problem] = []
    if path.suffix == ".toml" and "schedule" not in data:
        problems.append(problem(("schedule",), "required table [schedule] is missing (cron and timezone)"))
    if "workflow" not in data:
        problems.append(problem(("workflow",), "required table [workflow] is missing"))
    elif oversized := too_many_steps(data["workflow"]):  # validating the rest would take seconds
        return None, [place(oversized.under("workflow"))]
    else:
        from scheduler.delivery.templates import compile_template  # Jinja: only once a file has steps to check

        _, def_problems = parse_definition(data["workflow"], check_template=compile_template)
        problems.extend(place(p.under("workflow")) for p in def_problems)
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
    if (audience := _valid_audience(campaign, data)) is not None:
        problems.extend(place(p.under("audience")) for p in audience_problems(audience, path.parent))
    if any(not p.warning for p in problems):
        campaign = None
    return campaign, _at_most(MAX_PROBLEMS, sorted(problems, key=lambda p: p.line))


def _at_most(limit: int, problems: list[Problem]) -> list[Problem]:
    """The first `limit` problems, and one that counts the rest: a generated file can have thousands."""
    if len(problems) <= limit:
        return problems
    last = problems[limit - 1]
    rest = len(problems) - limit
    warning = all(p.warning for p in problems[limit:])
    return [
        *problems[:limit],
        Problem(last.path, last.line, "", f"… and {rest} more problem(s) after this line", warning),
    ]


def _valid_audience(campaign: Campaign | None, data: dict[str, Any]) -> Audience | None:
    """The audience, also when another part of the file is broken (every problem is reported at once)."""
    if campaign is not None:
        return campaign.audience
    try:
        return Audience.model_validate(data["audience"]) if isinstance(data.get("audience"), dict) else None
    except ValidationError:
        return None  # its errors are reported with the campaign's


TESTS_SUFFIX = ".tests.toml"
"""A campaign's tests file is `<campaign stem>.tests.toml` beside it (`scheduler.campaigns.cases`): not a campaign."""


def is_tests_file(path: Path) -> bool:
    return path.name.endswith(TESTS_SUFFIX)


def campaign_files(directory: Path) -> list[Path]:
    """The campaign files of a directory: every `*.toml` but tests files, sorted. The one place that says which."""
    return sorted(p for p in directory.glob("*.toml") if not is_tests_file(p))


def load_campaign_dir(directory: Path) -> tuple[dict[str, Campaign], list[Problem]]:
    """Every campaign file of a directory (`campaign_files`), by id (see `load_campaign_files`)."""
    if not directory.is_dir():
        return {}, [Problem(shown_path(directory), 1, "", "campaigns directory does not exist")]
    campaigns, problems = load_campaign_files(campaign_files(directory))
    return {c.id: c for c in campaigns}, problems


def load_campaign_files(paths: list[Path]) -> tuple[list[Campaign], list[Problem]]:
    """The campaigns of these files, in order, and every file's problems.

    A campaign file (`.toml`) whose id an earlier one already uses is an error naming both files; a
    JSON definition is checked on its own (its id is only its file name).
    """
    campaigns: list[Campaign] = []
    problems: list[Problem] = []
    first: dict[str, Path] = {}
    for path in paths:
        campaign, found = load_campaign(path)
        problems.extend(found)
        if campaign is None:
            continue
        if path.suffix == ".toml":
            if campaign.id in first:
                message = f"duplicate campaign id {campaign.id!r}: also used by {shown_path(first[campaign.id])}"
                problems.append(Problem(shown_path(path), key_line(path, ("campaign", "id")), "campaign.id", message))
                continue
            first[campaign.id] = path
        campaigns.append(campaign)
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
    raise UnknownCampaign(campaign_id, shown_path(directory), broken)


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


def shown_path(path: Path) -> str:
    """Paths relative to the working directory when under it, as users typed them."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def deep_checks(campaign: Campaign, channels: ChannelsSettings) -> list[Problem]:
    """`validate`'s checks beyond loading: schedule warnings (DST gaps and repeats, expressions that never
    fire), audience sources this machine cannot read (yet), and steps whose channel this service config
    cannot deliver through.

    Not part of loading: the schedule check walks a year of fire times, which the reconcile loop need not do.
    """
    source = campaign.source
    if source is None:
        return []
    found = schedule_warnings(campaign.schedule) if campaign.schedule else []
    if campaign.audience is not None:
        found += [p.under("audience") for p in audience_warnings(campaign.audience, source.parent)]
    for name, step in campaign.workflow.steps.items():
        listed = step.params.get("channel")
        for channel in listed if isinstance(listed, list) else [listed]:  # a list: each channel it may try
            if isinstance(channel, str) and (missing := channels.missing(channel)):
                key = f"workflow.steps.{name}.params.channel"
                found.append(Problem(key=key, message=f"channel {channel!r} needs {missing} in the config"))
    if not found:
        return []
    place = _Placer(shown_path(source), _key_lines(source, source.read_text(encoding="utf-8")))
    return [place(p) for p in found]


class _Placer:
    """Places problems keyed from a file's top at their lines, with key and message cut to a readable length."""

    def __init__(self, shown: str, lines: dict[KeyPath, int]) -> None:
        self.shown = shown
        self.lines = dotted_lines(lines)

    def __call__(self, found: Problem) -> Problem:
        line = dotted_line(self.lines, found.key)
        return replace(found, path=self.shown, line=line, key=clip(found.key, 200), message=clip(found.message, 200))
