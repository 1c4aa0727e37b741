"""Tests files: `<campaign stem>.tests.toml` beside a campaign, its `[[case]]`s checked against it, file:line:key.

A case is one customer's flow through the campaign, as `scheduler test` runs it: who, which cart, when it
starts, what the customer does (replies, a purchase) and what the world answers (webhooks, earlier sends
for frequency caps, the suppression list), and what is expected (the steps in order, the outcome, the
messages). Lists in keys count from 1 (`case[2].expect.messages[1].step`), as a reader counts.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scheduler.campaigns.campaign import MAX_FILE_BYTES, MAX_KEY_PARTS, MAX_NESTING, TESTS_SUFFIX, Campaign, shown_path
from scheduler.errors import clip
from scheduler.flow.durations import Duration
from scheduler.flow.models import FlowOutcome
from scheduler.flow.nodes.send_message import ChannelName
from scheduler.problems import Problem
from scheduler.source_lines import KeyPath, dotted_line, dotted_lines, toml_key_lines, toml_shape_problem

MAX_CASES = 200
MAX_AHEAD = timedelta(days=365 * 50)
"""How far in the future a case may start: the test server skips there in an instant, but not to any year."""
MAX_RECORD_KEYS = 50
_CASE_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*case[ \t]*\]\]", re.MULTILINE)


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseReply(_Table):
    text: str = Field(min_length=1, max_length=1600)
    after: Duration = timedelta(0)
    """From the flow's start, or from when it enters `step`."""
    step: str | None = None
    """The step the reply comes in (counting `after` from when the flow enters it); none: whatever step."""


class CaseConversion(_Table):
    after: Duration = timedelta(0)
    """From the flow's start."""


class EarlierSend(_Table):
    """A message the customer got before the case starts, counted by the service's frequency caps."""

    channel: ChannelName
    ago: Duration
    """Before the case's start."""
    count: int = Field(1, ge=1, le=1000)

    @field_validator("ago")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("ago must be longer than 0s")
        return v


class ExpectedMessage(_Table):
    step: str
    at: datetime | None = None
    """The instant it goes out (with an offset; matched within a minute, `AT_TOLERANCE` of `scheduler test`)."""
    contains: str | None = Field(None, max_length=1600)

    @field_validator("at", mode="before")
    @classmethod
    def _instant(cls, v: Any) -> Any:
        return _aware(v, "at")


class Expect(_Table):
    path: list[str] | None = Field(None, max_length=1000)
    outcome: FlowOutcome | None = None
    messages: list[ExpectedMessage] | None = Field(None, max_length=100)


class Case(_Table):
    name: str = Field(min_length=1, max_length=200)
    customer: dict[str, Any] = Field(default_factory=dict, max_length=MAX_RECORD_KEYS)
    cart: dict[str, Any] = Field(default_factory=dict, max_length=MAX_RECORD_KEYS)
    start: datetime | None = None
    """When the flow starts (an instant with an offset, in the future); none: as the test runs."""
    replies: list[CaseReply] = Field(default_factory=list, max_length=50)
    conversions: list[CaseConversion] = Field(default_factory=list, max_length=1)
    webhooks: dict[str, int] = Field(default_factory=dict)
    """Webhook step → the HTTP status its endpoint answers (default 200)."""
    history: list[EarlierSend] = Field(default_factory=list, max_length=100)
    suppressed: bool = False
    """The customer's phone and e-mail are on the suppression list when the case starts."""
    expect: Expect = Field(default_factory=Expect)

    @field_validator("start", mode="before")
    @classmethod
    def _instant(cls, v: Any) -> Any:
        return _aware(v, "start")

    @field_validator("webhooks")
    @classmethod
    def _statuses(cls, v: dict[str, int]) -> dict[str, int]:
        for step, status in v.items():
            if not 100 <= status <= 599:
                raise ValueError(f"{step}: {status} is not an HTTP status (100-599)")
        return v


def _aware(value: Any, key: str) -> Any:
    """An ISO 8601 string or TOML datetime, which must carry its offset."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            message = f"{clip(value, 60)!r} is not an ISO 8601 instant such as 2031-01-06T21:30:00-05:00"
            raise ValueError(message) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{key} needs an offset (e.g. -05:00 or Z): {value.isoformat()} could be any zone's")
        return value
    if isinstance(value, date | time):  # a TOML local date or time: no instant at all
        raise ValueError(f"{key} needs a date, a time and an offset, e.g. 2031-01-06T21:30:00-05:00; got {value}")
    raise ValueError(f"{key} must be an instant such as 2031-01-06T21:30:00-05:00, got {clip(repr(value), 60)}")


class TestsFile(BaseModel):
    """A campaign's tests file, loaded."""

    __test__ = False  # not a pytest class

    path: Path
    campaign_path: Path
    cases: list[Case]


def tests_file_of(campaign_path: Path) -> Path:
    """`campaigns/x.toml` → `campaigns/x.tests.toml`."""
    return campaign_path.with_name(campaign_path.stem + TESTS_SUFFIX)


def campaign_file_of(tests_path: Path) -> Path:
    """`campaigns/x.tests.toml` → `campaigns/x.toml`."""
    return tests_path.with_name(tests_path.name.removesuffix(TESTS_SUFFIX) + ".toml")


def load_cases(
    path: Path, campaign: Campaign | None, *, now: datetime | None = None
) -> tuple[TestsFile | None, list[Problem]]:
    """Read and check a tests file against its campaign (None: the campaign file is missing or broken, so
    only the file's own shape is checked, and that is a problem of its own)."""
    shown = shown_path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, [Problem(shown, 1, "", f"cannot read file: {exc.strerror or exc}")]
    if len(data) > MAX_FILE_BYTES:
        return None, [Problem(shown, 1, "", f"file is over the limit of {MAX_FILE_BYTES:,} bytes")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(shown, data.count(b"\n", 0, exc.start) + 1, "", f"not UTF-8 text (byte {exc.start})")]
    if shape := toml_shape_problem(text, max_depth=MAX_NESTING, max_key_parts=MAX_KEY_PARTS):
        return None, [Problem(shown, shape[0], "", f"refused before parsing: {shape[1]}")]
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        return None, [Problem(shown, int(m.group(1)) if m else 1, "", f"invalid TOML: {exc}")]
    except ValueError:
        return None, [Problem(shown, 1, "", "invalid TOML: a number too long")]
    place = _Placer(shown, text)
    problems = [place((key,), "unknown key: a tests file holds only [[case]] tables") for key in raw if key != "case"]
    found = raw.get("case", [])
    if not isinstance(found, list) or not all(isinstance(c, dict) for c in found):
        return None, [*problems, place(("case",), "expected [[case]] tables")]
    if not found:
        problems.append(place((), "no [[case]] in the file"))
    if len(found) > MAX_CASES:
        return None, [*problems, place(("case",), f"{len(found)} cases, over the limit of {MAX_CASES}")]
    if campaign is None:
        problems.append(place((), f"no valid campaign file {shown_path(campaign_file_of(path))} beside it"))
    cases: list[Case] = []
    names: dict[str, int] = {}
    for i, given in enumerate(found):
        try:
            case = Case.model_validate(given)
        except ValidationError as exc:
            problems.extend(place(("case", i, *e["loc"]), _message(e)) for e in exc.errors())
            continue
        if case.name in names:
            message = f"duplicate case name {case.name!r}: also case {names[case.name]}"
            problems.append(place(("case", i, "name"), message))
        names.setdefault(case.name, i + 1)
        problems.extend(place(("case", i, *key), message) for key, message in _case_problems(case, campaign, now))
        cases.append(case)
    problems.sort(key=lambda p: p.line)
    if problems:
        return None, problems
    return TestsFile(path=path, campaign_path=campaign_file_of(path), cases=cases), []


def _case_problems(
    case: Case, campaign: Campaign | None, now: datetime | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """What only the campaign (and the clock) can tell: steps that exist, a start in the future."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    now = now or datetime.now(UTC)
    if case.start is not None:
        if case.start <= now:
            found.append((("start",), f"{case.start.isoformat()} is in the past: a case starts in the future"))
        elif case.start - now > MAX_AHEAD:
            found.append((("start",), f"{case.start.isoformat()} is more than {MAX_AHEAD.days // 365} years ahead"))
    if campaign is None:
        return found
    steps = campaign.workflow.steps
    known = ", ".join(steps)

    def unknown(key: tuple[str | int, ...], name: str, node: str | None = None) -> None:
        if name not in steps:
            found.append((key, f"unknown step {name!r} (the campaign's steps: {known})"))
        elif node is not None and steps[name].node != node:
            found.append((key, f"step {name!r} is a {steps[name].node}, not a {node}"))

    for i, name in enumerate(case.expect.path or []):
        unknown(("expect", "path", i), name)
    for i, message in enumerate(case.expect.messages or []):
        unknown(("expect", "messages", i, "step"), message.step)
    for name in case.webhooks:
        unknown(("webhooks", name), name, "webhook")
    for i, reply in enumerate(case.replies):
        if reply.step is not None:
            unknown(("replies", i, "step"), reply.step)
    return found


def _message(error: Any) -> str:
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return str(error["msg"]).removeprefix("Value error, ")


class _Placer:
    """Problems of a tests file at their lines: each `[[case]]` has its own keys (tomllib gives no positions)."""

    def __init__(self, shown: str, text: str) -> None:
        self.shown = shown
        self.text = text
        starts = [m.start() for m in _CASE_HEADER.finditer(text)]
        self.headers = [text.count("\n", 0, s) + 1 for s in starts]
        self.top = dotted_lines(toml_key_lines(text[: starts[0]] if starts else text))
        self.cases: list[dict[str, int]] = []
        for n, s in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else len(text)
            segment = "\n" * (self.headers[n] - 1) + text[s:end]  # the same line numbers as the file's
            lines: dict[KeyPath, int] = {k[1:]: v for k, v in toml_key_lines(segment).items() if k[:1] == ("case",)}
            self.cases.append(dotted_lines(lines))

    def case_line(self, i: int) -> int:
        return self.headers[i] if i < len(self.headers) else 1

    def __call__(self, key: tuple[str | int, ...], message: str) -> Problem:
        if len(key) >= 2 and key[0] == "case" and isinstance(key[1], int):
            i, rest = key[1], [k for k in key[2:] if k != "[key]"]
            shown_key = f"case[{i + 1}]" + "".join(f"[{k + 1}]" if isinstance(k, int) else f".{k}" for k in rest)
            lines = self.cases[i] if i < len(self.cases) else {}
            named = [str(k) for k in rest[: next((n for n, k in enumerate(rest) if isinstance(k, int)), len(rest))]]
            line = dotted_line(lines, ".".join(named)) if named else 1
            line = self.case_line(i) if line == 1 else line  # no key of a case is on the file's first line
            if len(named) < len(rest) and isinstance(index := rest[len(named)], int):
                line = _element_line(self.text, line, index)
        else:
            shown_key = ".".join(str(k) for k in key)
            line = dotted_line(self.top, shown_key) if key else 1
        return Problem(self.shown, line, clip(shown_key, 200), clip(message, 200))


def _element_line(text: str, line: int, index: int) -> int:
    """The line where element `index` of the array assigned on `line` begins (the array's line if not found)."""
    pos = 0
    for _ in range(line - 1):
        pos = text.find("\n", pos) + 1
        if pos == 0:
            return line
    pos = text.find("[", text.find("=", pos) + 1)
    if pos < 0:
        return line
    depth, count, expecting, at = 0, -1, True, line
    while pos < len(text):
        c = text[pos]
        if c == "\n":
            at += 1
        elif c == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
            continue
        elif c in "\"'":
            if depth == 1 and expecting:
                count, expecting = count + 1, False
                if count == index:
                    return at
            close = pos + 1
            while close < len(text) and text[close] != c and text[close] != "\n":
                close += 2 if c == '"' and text[close] == "\\" else 1
            pos = close
        elif c in "[{":
            if depth == 1 and expecting:
                count, expecting = count + 1, False
                if count == index:
                    return at
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return line
        elif c == "," and depth == 1:
            expecting = True
        elif depth == 1 and expecting and not c.isspace():
            count, expecting = count + 1, False
            if count == index:
                return at
        pos += 1
    return line
