"""Quiet hours: when a message may go out, in the customer's local time.

A campaign's quiet hours are a window of local wall time, `"21:00-08:00"`, in which no message is sent;
a send that falls inside waits until the window is over where the customer is. The rules, exactly:

- A window S-E gives one quiet period per local calendar day d: [instant(d, S), instant(d+1, E)) when
  S > E (it wraps midnight, as 21:00-08:00 does), [instant(d, S), instant(d, E)) when S < E (12:00-14:00).
  S == E is refused (quiet always, or never?). Periods go by calendar day rather than by reading the wall
  clock at each instant, which would turn quiet again during the repeated hour of a fall-back.
- instant(d, W) is the first instant at which the local date and time reach d W: the only occurrence
  of a wall time that occurs once; for a wall time a spring-forward skips (02:30), the end of the gap
  (the transition itself, local 03:00); for a wall time a fall-back repeats, its first occurrence (fold=0).
  `scheduler.campaigns.cron`, as Temporal does, skips a skipped time and may fire a repeated one twice; a window's
  edge must be neither lost nor doubled, so here each maps to exactly one instant.
- An instant is quiet in a zone when it lies in one of that zone's quiet periods; a customer counts as
  quiet while any of their zones is (`customer_zones`: the customer's own timezone, or every zone of their
  phone number's area, or the campaign's timezone).
- `allowed_at(now)` is the first instant at or after `now` that is quiet in none of the zones: while some
  zone is quiet, move to the end of that zone's current quiet period. None when that is more than
  `HORIZON` (8 days) away, as with zones whose quiet periods together cover every hour.
- At most `MAX_ZONES` zones count: of a longer list, the first ones in sorted order.

Pure and deterministic (nothing reads the clock): workflow code calls it at every send. Workflow modules
import it through `workflow.unsafe.imports_passed_through()`, as they import the rest of this package: a
copy imported inside the sandbox would get a proxy of `ZoneInfo`, which `datetime` refuses as a tzinfo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import phonenumbers.timezone
from temporalio import workflow

from scheduler.errors import InvalidContact, clip
from scheduler.flow.contacts import normalize_contact

HORIZON = timedelta(days=8)
"""How far `allowed_at` looks ahead. Quiet periods repeat daily: a customer with no free instant in a week
and a day has, DST changes aside, none at all."""
MAX_ZONES = 16
"""Zones `allowed_at` considers (the work grows with each one), and the most a phone number may map to and still
tell a customer's local time (Russia's mobile numbers map to 16; a toll-free +1 number to 42)."""

ZoneRule = Literal["customer.timezone", "phone", "campaign timezone"]
"""Which rule of `customer_zones` gave a customer's zones."""

_WINDOW = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", re.ASCII)
_EXAMPLE = "expected 'HH:MM-HH:MM' in 24-hour time, e.g. '21:00-08:00'"
# IANA names only: the tz directory also holds files that load but are not places, and differ between
# machines ("localtime" is the host's zone), or count leap seconds ("right/...").
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*", re.ASCII)
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})
_UNKNOWN_ZONE = phonenumbers.timezone.UNKNOWN_TIMEZONE
_ONE_DAY = timedelta(days=1)
# Each step of allowed_at ends one quiet period, and a zone has about one a day within the horizon.
_MAX_STEPS = 2 * MAX_ZONES * (HORIZON.days + 3)


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local wall time in which no message is sent (see the module docstring)."""

    start: time
    """Local wall time the quiet period begins, e.g. 21:00."""
    end: time
    """Local wall time it ends, e.g. 08:00; earlier than `start` when it wraps midnight."""

    def __post_init__(self) -> None:
        for edge in (self.start, self.end):
            if not isinstance(edge, time) or edge.tzinfo is not None:
                raise ValueError(f"quiet hours: {edge!r} is not a local wall time (a datetime.time without tzinfo)")
        if self.start == self.end:
            raise ValueError(f"quiet hours {self}: start and end are the same time (quiet always, or never?)")

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_quiet_hours(text: str) -> QuietHours | None:
    """Read quiet hours as a campaign writes them: `'21:00-08:00'`; empty means none.

    Raises:
        ValueError: `text` is not two 24-hour times joined by '-', or both are the same time.
    """
    if not isinstance(text, str):
        raise ValueError(f"quiet hours {clip(repr(text), 40)}: {_EXAMPLE}")
    if not text.strip():
        return None
    match = _WINDOW.fullmatch(text)
    numbers = [int(n) for n in match.groups()] if match else []
    if not numbers or max(numbers[0], numbers[2]) > 23 or max(numbers[1], numbers[3]) > 59:
        raise ValueError(f"quiet hours {clip(repr(text), 40)}: {_EXAMPLE}")
    start, end = time(numbers[0], numbers[1]), time(numbers[2], numbers[3])
    if start == end:
        raise ValueError(
            f"quiet hours {clip(repr(text), 40)}: start and end are the same time (quiet always, or never?); {_EXAMPLE}"
        )
    return QuietHours(start, end)


def customer_zones(customer: Mapping[str, Any], fallback: str) -> tuple[list[str], ZoneRule]:
    """The IANA zones whose local time counts for a customer, and the rule that gave them.

    1. `customer["timezone"]`, when it names an IANA zone;
    2. else every zone of the area of `customer["phone"]` (read as `scheduler.flow.contacts` reads it), sorted:
       an area code can span several zones (208, Idaho: Boise and Los Angeles). A number that maps to more
       than `MAX_ZONES` (a toll-free +1 number: 42, from Adak to Guam) tells no local time;
    3. else `fallback`, the campaign's timezone.

    Raises:
        ValueError: `fallback` is not a timezone.
    """
    own = customer.get("timezone")
    if isinstance(own, str) and place(own.strip()) is not None:
        return [own.strip()], "customer.timezone"
    if (zones := _phone_zones(customer.get("phone"))) and len(zones) <= MAX_ZONES:
        return zones, "phone"
    _zone(fallback)
    return [fallback], "campaign timezone"


def allowed_at(now: datetime, quiet: QuietHours, zones: Sequence[str]) -> datetime | None:
    """The first instant at or after `now` that is outside the quiet periods of every zone, in UTC.

    `now` itself when it already is; None when there is none within `HORIZON`. Of more than `MAX_ZONES`
    zones, the first `MAX_ZONES` in sorted order count.

    Raises:
        ValueError: `now` is naive, `zones` is empty or one of the zones that count is not a timezone.
    """
    t = _utc(now)
    if isinstance(zones, str) or not zones:
        raise ValueError(f"quiet hours: expected a non-empty list of timezones, got {clip(repr(zones), 60)}")
    if bad := [z for z in zones if not isinstance(z, str)]:
        raise ValueError(f"quiet hours: {clip(repr(bad[0]), 60)} is not a timezone name")
    tzs = [_zone(z) for z in sorted(set(zones))[:MAX_ZONES]]
    limit = t + HORIZON
    for _ in range(_MAX_STEPS):
        ends = [end for tz in tzs if (end := _quiet_until(t, quiet, tz)) is not None]
        if not ends:
            return t
        # Every instant up to the latest end is inside that zone's current period, hence quiet.
        t = max(ends)
        if t > limit:
            return None
    return None


def is_quiet(moment: datetime, quiet: QuietHours, zone: str) -> bool:
    """Whether an (aware) instant lies in one of the quiet periods of `zone`."""
    return _quiet_until(_utc(moment), quiet, _zone(zone)) is not None


def _quiet_until(t: datetime, quiet: QuietHours, tz: ZoneInfo) -> datetime | None:
    """The end of the quiet period of `tz` that `t` lies in (the latest, should two touch), or None."""
    day = t.astimezone(tz).date()
    end: datetime | None = None
    # The period of the day before reaches into this one when the window wraps midnight; the next day's
    # can start before `t` only when a fall-back sets the clock back across midnight.
    for d in (day - _ONE_DAY, day, day + _ONE_DAY):
        period = _period(quiet, tz, d)
        if period is not None and period[0] <= t < period[1] and (end is None or period[1] > end):
            end = period[1]
    return end


@lru_cache(maxsize=4096)
def _period(quiet: QuietHours, tz: ZoneInfo, day: date) -> tuple[datetime, datetime] | None:
    """The quiet period of `tz` that starts on local date `day`, in UTC; None when a DST change empties it."""
    start = _instant(day, quiet.start, tz)
    end = _instant(day + _ONE_DAY if quiet.end < quiet.start else day, quiet.end, tz)
    return (start, end) if start < end else None


def _instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first instant at which the local date and time in `tz` reach `day` `wall` (see the module docstring)."""
    naive = datetime.combine(day, wall).replace(fold=0)
    first = naive.replace(tzinfo=tz).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # `wall` falls in a gap. fold=1 reads it with the offset after the change, which lands before the change;
    # fold=0 (`first`) with the one before, which lands after it: the change is the first second in between
    # whose wall time is `wall` or later (transitions fall on whole seconds).
    before = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = 0, int((first - before).total_seconds())
    while high - low > 1:
        mid = (low + high) // 2
        if (before + timedelta(seconds=mid)).astimezone(tz).replace(tzinfo=None) >= naive:
            high = mid
        else:
            low = mid
    return before + timedelta(seconds=high)


def _phone_zones(phone: object) -> list[str]:
    """The known zones of a phone number's area, sorted; none when it is missing, invalid or unplaced."""
    if not isinstance(phone, str) or not phone.strip():
        return []
    # phonenumbers imports a region's metadata on first use: inside the sandbox that import must reach
    # the real module (as in `engine.start_attributes`).
    with workflow.unsafe.imports_passed_through():
        try:
            contact = normalize_contact(phone)
        except InvalidContact:
            return []
        if not contact.startswith("+"):  # an e-mail address
            return []
        try:
            names = phonenumbers.timezone.time_zones_for_number(phonenumbers.parse(contact))
        except phonenumbers.NumberParseException:
            return []
    return sorted({name for name in names if name != _UNKNOWN_ZONE and place(name) is not None})


def place(name: str) -> ZoneInfo | None:
    """The zone an IANA name stands for; None for anything else (customer data may say anything)."""
    if len(name) > 64 or not _ZONE_NAME.fullmatch(name) or name in _NOT_PLACES or name.startswith(("posix/", "right/")):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone(name: str) -> ZoneInfo:
    """The zone of a name, as a campaign's `timezone` accepts it (`place`)."""
    if isinstance(name, str) and (zone := place(name)) is not None:
        return zone
    raise ValueError(f"quiet hours: unknown timezone {clip(repr(name), 64)}")


def _utc(moment: datetime) -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"quiet hours: expected an aware datetime, got {clip(repr(moment), 60)}")
    return moment.astimezone(UTC)
