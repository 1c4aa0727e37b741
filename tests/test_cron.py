"""cron_problem, preview and schedule_warnings: Temporal's reading of cron, without a server.

The expected DST times below are the dev server's own answers (tests/test_preview.py checks the same cases live).
The machine's timezone is set to Asia/Kolkata so nothing can lean on it; freezegun only fixes "now".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.campaigns.campaign import CampaignSchedule
from scheduler.campaigns.cron import cron_problem, preview, schedule_warnings
from scheduler.problems import Problem

FIELDS = "standard cron has 5: minute hour day-of-month month day-of-week"
NY, BERLIN = "America/New_York", "Europe/Berlin"
START = datetime(2031, 3, 1, tzinfo=UTC)  # a Saturday
NOW = datetime(2031, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def machine_in_another_timezone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test with a local timezone that is neither UTC nor a campaign's, to catch naive local time."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def times(
    cron: list[str], timezone: str = "UTC", *, start: datetime = START, count: int = 6, **bounds: datetime
) -> list[str]:
    """preview's fire times as the campaign's wall clock reads them, with the zone's abbreviation."""
    schedule = CampaignSchedule(cron=cron, timezone=timezone, **bounds)
    zone = ZoneInfo(timezone)
    return [f"{t.astimezone(zone):%a %Y-%m-%d %H:%M %Z}" for t in preview(schedule, count=count, start=start)]


# ---------------------------------------------------------------------------------------------------------------
# cron_problem


@pytest.mark.parametrize(
    "expr",
    [
        "0 * * * *",
        "*/15 9-17 * * MON-FRI",
        "0 0 1 JAN *",
        "0 0 1 JUL *",
        "0 0 * * WED",
        "0 0 * * SAT,SUN",
        "0 0 1 JUL,AUG WED",
        "  0 * * * *  ",
        "0 9 * * 7",
        "0 9 * * 5-7",
        "0 9 * * 1-7/2",
        "0 8 * january-mar tues,thurs",
        "0 8 * * mo-we",
        "5/20 * * * *",
        "@hourly",
        "@daily",
        "@every 90m",
        "@every 1h/15m",
        "@every 2d",
        "@every 1.5h/30m",
    ],
    ids=[
        "hourly",
        "business-hours",
        "january",
        "july-name-has-L",
        "wednesday-name-has-W",
        "weekend-list",
        "names-with-L-and-W",
        "surrounding-spaces",
        "sunday-as-7",
        "range-to-7",
        "range-to-7-step-2",
        "long-and-lowercase-names",
        "two-letter-days",
        "start-slash-step",
        "@hourly",
        "@daily",
        "@every",
        "@every-with-offset",
        "@every-days",
        "@every-fraction",
    ],
)
def test_cron_problem_accepts_what_temporal_reads_as_cron(expr: str) -> None:
    assert cron_problem(expr) is None


SUNDAY_LOST = "(its 7-is-Sunday rule drops Sunday from ranges like 1-7); write 0-6, '*', or list 0 for Sunday"
INVALID_DURATION = "use a number and a unit (ns, us, ms, s, m, h, d), e.g. '90m' or '1h30m'"
ONE_SPACE = "write '@every <duration>' or '@every <duration>/<phase>' with a single space"


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("0 0 * * 1#2", "'0 0 * * 1#2': nth-weekday ('#') is not standard cron"),
        ("0 0 * * MON#2", "'0 0 * * MON#2': nth-weekday ('#') is not standard cron"),
        ("0 0 ? * MON?", "'0 0 ? * MON?': '?' is not standard cron; use '*'"),
        ("0 0 L * *", "'0 0 L * *': 'L' (last day) is not standard cron"),
        ("0 0 * * 5L", "'0 0 * * 5L': 'L' (last day) is not standard cron"),
        ("0 0 l * *", "'0 0 l * *': 'L' (last day) is not standard cron"),
        ("0 0 15W * *", "'0 0 15W * *': 'W' (nearest weekday) is not standard cron"),
        ("0 0 ? * *", "'0 0 ? * *': '?' is not standard cron; use '*'"),
        (
            "0 0 0 * * *",
            f"'0 0 0 * * *' has 6 fields; {FIELDS} (a 6th field would be read as seconds or years, not standard cron)",
        ),
        ("* * *", f"'* * *' has 3 fields; {FIELDS}"),
        ("61 * * * *", "'61 * * * *' is not a valid cron expression: Minute is not in range [0-59]"),
        ("0 0 * 13 *", "'0 0 * 13 *' is not a valid cron expression: Month is not in range [1-12]"),
        (
            "22-2 * * * *",
            "'22-2 * * * *' is not a valid cron expression: Minute End is before Start or not in range [0-59]",
        ),
        (
            "0 0 * * MON-SUN",
            "'0 0 * * MON-SUN' is not a valid cron expression: DayOfWeek End is before Start or not in range [0-7]",
        ),
        ("H * * * *", "'H * * * *' is not a valid cron expression: Minute is not in range [0-59]"),
        ("0 0 * ma *", "'0 0 * ma *' is not a valid cron expression: Month is not in range [1-12]"),
        ("0 0 1,,2 * *", "'0 0 1,,2 * *' is not a valid cron expression: DayOfMonth is not in range [1-31]"),
        ("5/ * * * *", "'5/ * * * *' is not a valid cron expression: Minute missing step value"),
        ("*/0 * * * *", "'*/0 * * * *' is not a valid cron expression: Minute has invalid Step"),
        ("1/2/3 * * * *", "'1/2/3 * * * *' is not a valid cron expression: Minute has too many slashes"),
        ("1-2-3 * * * *", "'1-2-3 * * * *' is not a valid cron expression: Minute has too many dashes"),
        ("0 9 * * 1-7", f"'0 9 * * 1-7': Temporal leaves Sunday out of day-of-week '1-7' {SUNDAY_LOST}"),
        ("0 9 * * MON-7", f"'0 9 * * MON-7': Temporal leaves Sunday out of day-of-week 'MON-7' {SUNDAY_LOST}"),
        ("0 9 * * 1/1", f"'0 9 * * 1/1': Temporal leaves Sunday out of day-of-week '1/1' {SUNDAY_LOST}"),
        ("CRON_TZ=UTC 0 * * * *", "set the timezone with schedule.timezone, not a CRON_TZ= prefix"),
        ("TZ=Europe/Berlin 0 * * * *", "set the timezone with schedule.timezone, not a CRON_TZ= prefix"),
        (
            "@foo",
            "unknown shorthand '@foo' (use one of @annually, @daily, @hourly, @midnight, @monthly, @weekly, @yearly"
            " or '@every <duration>')",
        ),
        (
            "@everyday",
            "unknown shorthand '@everyday' (use one of @annually, @daily, @hourly, @midnight, @monthly, @weekly,"
            " @yearly or '@every <duration>')",
        ),
        ("@every 0s", "'@every 0s': the interval must be at least 1s"),
        ("@every 500ms", "'@every 500ms': the interval must be at least 1s"),
        ("@every 1500ms", "'@every 1500ms': Temporal drops fractions of a second from intervals; use whole seconds"),
        ("@every 1h/1h", "'@every 1h/1h': the phase must be shorter than the interval"),
        ("@every 5x", f"'@every 5x': invalid duration '5x': {INVALID_DURATION}"),
        ("@every 1w", f"'@every 1w': invalid duration '1w': {INVALID_DURATION}"),
        ("@every", f"'@every': {ONE_SPACE}"),
        ("@every  5m", f"'@every  5m': {ONE_SPACE}"),
        ("", "expected a cron expression such as '0 * * * *', got ''"),
        ("   ", "expected a cron expression such as '0 * * * *', got '   '"),
    ],
    ids=[
        "hash",
        "hash-after-name",
        "question-mark-after-name",
        "L",
        "5L",
        "lowercase-l",
        "15W",
        "question-mark",
        "six-fields",
        "three-fields",
        "minute-61",
        "month-13",
        "wrapping-range",
        "MON-SUN",
        "jenkins-H",
        "two-letter-month",
        "empty-list-item",
        "missing-step",
        "zero-step",
        "two-slashes",
        "two-dashes",
        "dow-1-7",
        "dow-MON-7",
        "dow-1-slash-1",
        "CRON_TZ",
        "TZ",
        "unknown-shorthand",
        "everyday",
        "every-zero",
        "every-under-a-second",
        "every-fraction-of-a-second",
        "every-phase-not-shorter",
        "every-bad-duration",
        "every-weeks",
        "every-without-interval",
        "every-two-spaces",
        "empty",
        "blank",
    ],
)
def test_cron_problem_refuses_with_reason(expr: str, reason: str) -> None:
    assert cron_problem(expr) == reason


@pytest.mark.parametrize("value", [None, 5, ["0 * * * *"]], ids=["none", "int", "list"])
def test_cron_problem_refuses_non_strings(value: object) -> None:
    assert cron_problem(value) == f"expected a cron expression such as '0 * * * *', got {value!r}"


# ---------------------------------------------------------------------------------------------------------------
# preview


def test_preview_hourly_is_strictly_after_start() -> None:
    assert times(["0 * * * *"], count=3) == [
        "Sat 2031-03-01 01:00 UTC",
        "Sat 2031-03-01 02:00 UTC",
        "Sat 2031-03-01 03:00 UTC",
    ]


def test_preview_returns_aware_utc_datetimes() -> None:
    (first,) = preview(CampaignSchedule(cron=["0 9 * * *"], timezone=NY), count=1, start=START)
    assert first == datetime(2031, 3, 1, 14, 0, tzinfo=UTC)
    assert first.tzinfo is UTC


def test_preview_weekdays_in_the_campaign_timezone() -> None:
    assert times(["0 9 * * MON-FRI"], BERLIN, count=3) == [
        "Mon 2031-03-03 09:00 CET",
        "Tue 2031-03-04 09:00 CET",
        "Wed 2031-03-05 09:00 CET",
    ]


def test_preview_day_of_month_and_day_of_week_must_both_match() -> None:
    """Temporal ANDs them (POSIX cron would fire on every 13th and every Friday)."""
    assert times(["0 0 13 * FRI"], count=3) == [
        "Fri 2031-06-13 00:00 UTC",
        "Fri 2032-02-13 00:00 UTC",
        "Fri 2032-08-13 00:00 UTC",
    ]
    assert times(["0 0 1 JUL,AUG WED"], count=2) == ["Wed 2035-08-01 00:00 UTC", "Wed 2037-07-01 00:00 UTC"]


@pytest.mark.parametrize("sunday", ["0", "7", "SUN", "sunday"])
def test_preview_sunday_spellings(sunday: str) -> None:
    assert times([f"0 9 * * {sunday}"], NY, count=2) == ["Sun 2031-03-02 09:00 EST", "Sun 2031-03-09 09:00 EDT"]


def test_preview_range_to_7_includes_sunday() -> None:
    assert times(["0 9 * * 5-7"], count=4) == [
        "Sat 2031-03-01 09:00 UTC",
        "Sun 2031-03-02 09:00 UTC",
        "Fri 2031-03-07 09:00 UTC",
        "Sat 2031-03-08 09:00 UTC",
    ]


def test_preview_named_months_and_days() -> None:
    assert times(["0 12 1 JAN,JUL *"], BERLIN, count=3) == [
        "Tue 2031-07-01 12:00 CEST",
        "Thu 2032-01-01 12:00 CET",
        "Thu 2032-07-01 12:00 CEST",
    ]
    assert times(["0 8 * january-mar tues,thurs"], count=3) == [
        "Tue 2031-03-04 08:00 UTC",
        "Thu 2031-03-06 08:00 UTC",
        "Tue 2031-03-11 08:00 UTC",
    ]


def test_preview_steps_and_ranges() -> None:
    assert times(["5/20 * * * *"], count=4) == [
        "Sat 2031-03-01 00:05 UTC",
        "Sat 2031-03-01 00:25 UTC",
        "Sat 2031-03-01 00:45 UTC",
        "Sat 2031-03-01 01:05 UTC",
    ]
    assert times(["0 1-5/2 * * *"], count=4) == [
        "Sat 2031-03-01 01:00 UTC",
        "Sat 2031-03-01 03:00 UTC",
        "Sat 2031-03-01 05:00 UTC",
        "Sun 2031-03-02 01:00 UTC",
    ]


def test_preview_every_counts_from_the_epoch_whatever_the_timezone() -> None:
    assert times(["@every 90m"], NY, count=3) == [
        "Fri 2031-02-28 20:30 EST",
        "Fri 2031-02-28 22:00 EST",
        "Fri 2031-02-28 23:30 EST",
    ]
    assert times(["@every 1h/15m"], count=2) == ["Sat 2031-03-01 00:15 UTC", "Sat 2031-03-01 01:15 UTC"]
    assert times(["@every 1d/9h"], NY, count=2, start=datetime(2031, 3, 8, tzinfo=UTC)) == [
        "Sat 2031-03-08 04:00 EST",
        "Sun 2031-03-09 05:00 EDT",
    ]


def test_preview_merges_expressions_without_duplicates() -> None:
    assert times(["0 9 * * *", "0 9 * * SUN", "30 8 * * SAT,SUN", "@every 1d/9h"], count=5) == [
        "Sat 2031-03-01 08:30 UTC",
        "Sat 2031-03-01 09:00 UTC",
        "Sun 2031-03-02 08:30 UTC",
        "Sun 2031-03-02 09:00 UTC",
        "Mon 2031-03-03 09:00 UTC",
    ]


def test_preview_honours_start_at_and_end_at_in_the_campaign_timezone() -> None:
    """Local TOML datetimes are Berlin time; start_at and end_at are both inclusive, as on the server."""
    bounds = {"start_at": datetime(2031, 3, 3), "end_at": datetime(2031, 3, 5)}
    assert times(["0 0 * * *"], BERLIN, count=10, **bounds) == [
        "Mon 2031-03-03 00:00 CET",
        "Tue 2031-03-04 00:00 CET",
        "Wed 2031-03-05 00:00 CET",
    ]
    later = datetime(2031, 3, 4, 12, tzinfo=UTC)
    assert times(["0 0 * * *"], BERLIN, start=later, count=10, **bounds) == ["Wed 2031-03-05 00:00 CET"]
    aware = {"start_at": datetime(2031, 3, 3, 6, tzinfo=UTC)}
    assert times(["0 * * * *"], BERLIN, count=1, **aware) == ["Mon 2031-03-03 07:00 CET"]


def test_preview_ny_dst_gap_is_skipped() -> None:
    """2031-03-09 02:00 EST jumps to 03:00 EDT: a 02:xx time is not run that day, not moved to 03:xx."""
    start = datetime(2031, 3, 9, 5, tzinfo=UTC)
    assert times(["30 2 * * *"], NY, start=start, count=2) == ["Mon 2031-03-10 02:30 EDT", "Tue 2031-03-11 02:30 EDT"]
    assert times(["0 1-3 * * *"], NY, start=start, count=3) == [
        "Sun 2031-03-09 01:00 EST",
        "Sun 2031-03-09 03:00 EDT",
        "Mon 2031-03-10 01:00 EDT",
    ]


def test_preview_ny_dst_repeat_fires_twice() -> None:
    """2031-11-02 02:00 EDT falls back to 01:00 EST: 01:xx happens twice and New York runs both."""
    start = datetime(2031, 11, 2, 4, tzinfo=UTC)
    assert times(["30 1 * * SUN"], NY, start=start, count=3) == [
        "Sun 2031-11-02 01:30 EDT",
        "Sun 2031-11-02 01:30 EST",
        "Sun 2031-11-09 01:30 EST",
    ]


def test_preview_berlin_dst_gap_is_skipped() -> None:
    start = datetime(2031, 3, 29, 23, tzinfo=UTC)
    assert times(["*/20 2 * * *"], BERLIN, start=start, count=2) == [
        "Mon 2031-03-31 02:00 CEST",
        "Mon 2031-03-31 02:20 CEST",
    ]


def test_preview_berlin_dst_repeat_is_temporals_own() -> None:
    """2031-10-26 03:00 CEST falls back to 02:00 CET. Go's time.Date reads 02:xx as CET in Berlin, so a daily
    02:30 runs once (CET), an hourly :30 runs at the first 02:30 (CEST), and '*/20 2' even runs at 03:20 CET."""
    start = datetime(2031, 10, 25, 22, tzinfo=UTC)
    assert times(["30 2 * * *"], BERLIN, start=start, count=2) == [
        "Sun 2031-10-26 02:30 CET",
        "Mon 2031-10-27 02:30 CET",
    ]
    assert times(["30 * * * *"], BERLIN, start=start, count=4) == [
        "Sun 2031-10-26 00:30 CEST",
        "Sun 2031-10-26 01:30 CEST",
        "Sun 2031-10-26 02:30 CEST",
        "Sun 2031-10-26 03:30 CET",
    ]
    assert times(["*/20 2 * * *"], BERLIN, start=start, count=3) == [
        "Sun 2031-10-26 02:00 CET",
        "Sun 2031-10-26 03:20 CET",
        "Mon 2031-10-27 02:00 CET",
    ]


@pytest.mark.parametrize(
    "cron", [["0 0 31 2 *"], ["0 0 30 2 *"], ["0 0 31 4,6,9,11 *"]], ids=["feb-31", "feb-30", "31-of-30-day-months"]
)
def test_preview_never_firing_expression_gives_nothing(cron: list[str]) -> None:
    began = time.monotonic()
    assert times(cron) == []
    assert time.monotonic() - began < 2  # the search stops at 2100, like the server's


def test_preview_never_firing_expression_contributes_nothing_to_others() -> None:
    assert times(["0 0 31 2 *", "0 12 * * *"], count=2) == ["Sat 2031-03-01 12:00 UTC", "Sun 2031-03-02 12:00 UTC"]


def test_preview_leap_day_and_rare_dates() -> None:
    assert times(["0 0 29 2 *"], count=2) == ["Sun 2032-02-29 00:00 UTC", "Fri 2036-02-29 00:00 UTC"]
    assert times(["0 0 29 2 MON"], count=2) == ["Mon 2044-02-29 00:00 UTC", "Mon 2072-02-29 00:00 UTC"]


def test_preview_nothing_after_end_at() -> None:
    assert times(["0 0 * * *"], count=3, end_at=datetime(2031, 2, 1)) == []


@freeze_time("2031-03-01 10:20:00")
def test_preview_defaults_to_now() -> None:
    assert preview(CampaignSchedule(cron=["*/15 * * * *"]), count=2) == [
        datetime(2031, 3, 1, 10, 30, tzinfo=UTC),
        datetime(2031, 3, 1, 10, 45, tzinfo=UTC),
    ]


def test_preview_reads_a_naive_start_in_the_campaign_timezone() -> None:
    schedule = CampaignSchedule(cron=["0 * * * *"], timezone=NY)
    assert preview(schedule, count=1, start=datetime(2031, 3, 1, 9, 30)) == [datetime(2031, 3, 1, 15, 0, tzinfo=UTC)]


def test_preview_start_is_exclusive_to_the_second() -> None:
    schedule = CampaignSchedule(cron=["0 * * * *"])
    on_the_hour = datetime(2031, 3, 1, 10, tzinfo=UTC)
    assert preview(schedule, count=1, start=on_the_hour) == [datetime(2031, 3, 1, 11, tzinfo=UTC)]
    just_before = on_the_hour - timedelta(microseconds=1)
    assert preview(schedule, count=1, start=just_before) == [on_the_hour]


DOW = st.one_of(st.just("*"), st.integers(0, 6).map(str), st.sampled_from(["MON-FRI", "SAT,SUN", "*/2", "1-5/2"]))


@st.composite
def utc_crons(draw: st.DrawFn) -> str:
    def field(lo: int, hi: int) -> str:
        a, b = sorted(draw(st.lists(st.integers(lo, hi), min_size=2, max_size=2, unique=True)))  # croniter: 2-2 is *
        k = draw(st.integers(1, 7))
        return draw(st.sampled_from(["*", f"*/{k}", str(a), f"{a}-{b}", f"{a}-{b}/{k}", f"{a},{b}", f"{a}/{k}"]))

    return " ".join([field(0, 59), field(0, 23), field(1, 28), field(1, 12), draw(DOW)])


@settings(max_examples=150, deadline=None)
@given(cron=utc_crons(), start=st.datetimes(datetime(2025, 1, 1), datetime(2040, 1, 1)))
def test_preview_agrees_with_croniter_in_utc_when_days_are_anded(cron: str, start: datetime) -> None:
    """Away from DST, Temporal's walk is ordinary cron with day-of-month AND day-of-week (croniter day_or=False)."""
    dom, dow = cron.split()[2], cron.split()[4]
    expected_iter = croniter(cron, start, day_or=dom == "*" or dow == "*")  # croniter's AND mishandles a '*' field
    expected = [expected_iter.get_next(datetime).replace(tzinfo=UTC) for _ in range(5)]
    got = preview(CampaignSchedule(cron=[cron]), count=5, start=start.replace(tzinfo=UTC, microsecond=0))
    assert got == expected


# ---------------------------------------------------------------------------------------------------------------
# schedule_warnings


def warnings(cron: list[str], timezone: str = "UTC", *, now: datetime = NOW, **bounds: datetime) -> list[str]:
    found = schedule_warnings(CampaignSchedule(cron=cron, timezone=timezone, **bounds), now=now)
    assert {p.key for p in found} <= {"schedule.cron", "schedule.end_at"}
    assert all(p.warning for p in found)
    return [p.message for p in found]


def test_warnings_none_for_ordinary_schedules() -> None:
    """Every-hour expressions lose or gain a run at DST like any clock: not worth a warning."""
    assert warnings(["0 9 * * MON-FRI", "*/15 * * * *", "30 * * * *", "@every 90m"], BERLIN) == []
    assert warnings(["30 2 * * *", "0 0 13 * *"], "UTC") == []


def test_warnings_ny_gap_and_repeat() -> None:
    assert warnings(["30 2 * * *", "30 1 * * *"], NY) == [
        "'30 2 * * *' in America/New_York: 2031-03-09 02:30 does not exist (DST gap: clocks jump from 02:00 to"
        " 03:00); Temporal skips it (no run in its place)",
        "'30 1 * * *' in America/New_York: 2031-11-02 01:30 occurs twice (DST repeat: clocks go back from 02:00 to"
        " 01:00); Temporal fires twice, at 01:30 EDT (05:30 UTC) and 01:30 EST (06:30 UTC)",
    ]


def test_warnings_several_times_in_one_transition() -> None:
    assert warnings(["*/20 2 * * *", "*/20 1 * * SUN", "* 2 * * *"], NY) == [
        "'*/20 2 * * *' in America/New_York: 2031-03-09 02:00, 02:20, 02:40 do not exist (DST gap: clocks jump"
        " from 02:00 to 03:00); Temporal skips them (no runs instead)",
        "'*/20 1 * * SUN' in America/New_York: 2031-11-02 01:00, 01:20, 01:40 occur twice (DST repeat: clocks go"
        " back from 02:00 to 01:00); Temporal fires each twice (EDT and EST)",
        "'* 2 * * *' in America/New_York: 2031-03-09 02:00 to 02:59 (60 times) do not exist (DST gap: clocks jump"
        " from 02:00 to 03:00); Temporal skips them (no runs instead)",
    ]


def test_warnings_berlin_repeat_says_which_occurrence_and_stray_times() -> None:
    assert warnings(["30 2 * * *", "0 1-3 * * *", "*/20 2 * * *"], BERLIN) == [
        "'30 2 * * *' in Europe/Berlin: 2031-03-30 02:30 does not exist (DST gap: clocks jump from 02:00 to 03:00);"
        " Temporal skips it (no run in its place)",
        "'30 2 * * *' in Europe/Berlin: 2031-10-26 02:30 occurs twice (DST repeat: clocks go back from 03:00 to"
        " 02:00); Temporal fires once, at the second occurrence (02:30 CET, 01:30 UTC)",
        "'0 1-3 * * *' in Europe/Berlin: 2031-03-30 02:00 does not exist (DST gap: clocks jump from 02:00 to 03:00);"
        " Temporal skips it (no run in its place)",
        "'0 1-3 * * *' in Europe/Berlin: 2031-10-26 02:00 occurs twice (DST repeat: clocks go back from 03:00 to"
        " 02:00); Temporal fires once, at the first occurrence (02:00 CEST, 00:00 UTC)",
        "'*/20 2 * * *' in Europe/Berlin: 2031-03-30 02:00, 02:20, 02:40 do not exist (DST gap: clocks jump from"
        " 02:00 to 03:00); Temporal skips them (no runs instead)",
        "'*/20 2 * * *' in Europe/Berlin: 2031-10-26 02:00, 02:20, 02:40 occur twice (DST repeat: clocks go back"
        " from 03:00 to 02:00); Temporal fires 02:00 once, at the second occurrence (CET); 02:20, 02:40 not at"
        " all; it also fires at 03:20 CET (02:20 UTC), which the expression does not match",
    ]


def test_warnings_only_within_the_next_year_and_the_bounds() -> None:
    assert warnings(["30 2 * * *"], NY, now=datetime(2031, 3, 20, tzinfo=UTC)) == [
        "'30 2 * * *' in America/New_York: 2032-03-14 02:30 does not exist (DST gap: clocks jump from 02:00 to"
        " 03:00); Temporal skips it (no run in its place)"
    ]
    assert warnings(["30 2 * * *"], NY, end_at=datetime(2031, 3, 1)) == []
    assert warnings(["30 2 * * *"], NY, start_at=datetime(2035, 1, 1)) == [
        "'30 2 * * *' in America/New_York: 2035-03-11 02:30 does not exist (DST gap: clocks jump from 02:00 to"
        " 03:00); Temporal skips it (no run in its place)"
    ]


def test_warnings_never_fires() -> None:
    assert warnings(["0 0 31 2 *", "0 9 * * *"]) == ["'0 0 31 2 *' never fires: no date up to 2100 matches it"]


def test_warnings_never_fires_within_bounds() -> None:
    bounds = {"start_at": datetime(2031, 2, 1), "end_at": datetime(2031, 2, 28)}
    assert warnings(["0 12 1 JAN,JUL *", "0 9 * * MON"], BERLIN, **bounds) == [
        "'0 12 1 JAN,JUL *' never fires between start_at 2031-02-01 00:00 and end_at 2031-02-28 00:00"
        " (Europe/Berlin); it next matches at 2031-07-01 12:00"
    ]
    assert warnings(
        ["0 12 1 JAN,JUL *"], BERLIN, now=datetime(2031, 1, 2, tzinfo=UTC), end_at=datetime(2031, 2, 28)
    ) == [
        "'0 12 1 JAN,JUL *' never fires between now and end_at 2031-02-28 00:00 (Europe/Berlin); it next matches"
        " at 2031-07-01 12:00"
    ]


def test_warnings_end_at_past() -> None:
    found = schedule_warnings(
        CampaignSchedule(cron=["0 9 * * *"], timezone=BERLIN, end_at=datetime(2030, 6, 1)), now=NOW
    )
    assert found == [
        Problem(
            key="schedule.end_at",
            message="end_at 2030-06-01 00:00 (Europe/Berlin) is past: the schedule never fires again",
            warning=True,
        )
    ]


def test_warnings_day_of_month_with_day_of_week() -> None:
    assert warnings(["0 0 13 * FRI", "0 0 */2 * MON", "0 0 1-31 * MON"]) == [
        "'0 0 13 * FRI': Temporal fires only on days that match both day-of-month '13' and day-of-week 'FRI';"
        " standard cron fires on days that match either",
        "'0 0 1-31 * MON': Temporal fires only on days that match both day-of-month '1-31' and day-of-week 'MON';"
        " standard cron fires on days that match either",
    ]


def test_warnings_long_intervals_follow_utc() -> None:
    assert warnings(["@every 1d/9h", "@every 1h"], NY) == [
        "'@every 1d/9h' counts from 1970-01-01 00:00 UTC, not in America/New_York: its local time moves by the DST"
        " change on 2031-03-09"
    ]
    assert warnings(["@every 1d/9h"], "UTC") == []


@freeze_time("2031-01-01 00:00:00")
def test_warnings_default_to_now() -> None:
    first, _ = schedule_warnings(CampaignSchedule(cron=["30 2 * * *"], timezone=NY))
    key, message = first.key, first.message
    assert key == "schedule.cron"
    assert message.startswith("'30 2 * * *' in America/New_York: 2031-03-09 02:30 does not exist")


def test_describe_says_a_cron_expression_in_words() -> None:
    from scheduler.campaigns.cron import describe

    assert describe("0 * * * *") == "every hour at minute 0"
    assert describe("0 9 * * *") == "every day at 09:00"
    assert describe("30 9 * * 1-5") == "on Mon-Fri at 09:30"
    assert describe("*/15 * * * *") == "every 15 minutes"
    assert describe("@daily") == "every day at 00:00"
    assert describe("@every 90m") == "every 90m"
    assert describe("0 0 12 * * * *") == "0 0 12 * * * *"  # not a five-field expression: as written
