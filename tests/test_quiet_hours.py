"""Quiet hours: the first instant a message may go out, in every zone the customer may be in."""

from __future__ import annotations

import time as clock
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

from pydantic import BaseModel
from temporalio import workflow

# The workflow below runs in the sandbox, which re-imports this module: everything else is passed through.
with workflow.unsafe.imports_passed_through():
    from zoneinfo import ZoneInfo

    import phonenumbers
    import phonenumbers.timezone
    import pytest
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from scheduler.flow.quiet_hours import (
        HORIZON,
        MAX_ZONES,
        QuietHours,
        allowed_at,
        customer_zones,
        is_quiet,
        parse_quiet_hours,
    )

NY, BERLIN, BOISE, LA = "America/New_York", "Europe/Berlin", "America/Boise", "America/Los_Angeles"
NY_PHONE = "+1 212 555 0142"
IDAHO_PHONE = "+1 208 555 0142"
"""Area code 208 (Idaho): phonenumbers maps it to Boise (Mountain time) and Los Angeles (Pacific time)."""
NIGHT = QuietHours(time(21), time(8))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: str, *args: int) -> datetime:
    """A local wall time in `zone` (its first occurrence), as a UTC instant.

    Only inside tests: the sandbox re-imports this module, and there `ZoneInfo` is a proxy that `datetime`
    refuses, so module-level values (parameters) are written in UTC.
    """
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)  # type: ignore[misc]


@pytest.fixture(autouse=True)
def machine_in_another_timezone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test with a local timezone that is neither UTC nor a customer's, to catch naive local time."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    clock.tzset()
    yield
    monkeypatch.undo()
    clock.tzset()


# Parsing


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("21:00-08:00", time(21), time(8)),
        ("9:30-17:45", time(9, 30), time(17, 45)),
        (" 21:00 - 8:00 ", time(21), time(8)),
        ("00:00-23:59", time(0), time(23, 59)),
        ("23:59-00:00", time(23, 59), time(0)),
    ],
    ids=["wraps-midnight", "unpadded-hour", "spaces", "whole-day-but-a-minute", "one-minute"],
)
def test_parse_quiet_hours_reads_24_hour_windows(text: str, start: time, end: time) -> None:
    assert parse_quiet_hours(text) == QuietHours(start, end)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"], ids=["empty", "spaces", "whitespace"])
def test_parse_quiet_hours_empty_means_none(text: str) -> None:
    assert parse_quiet_hours(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "25:00-08:00",
        "24:00-08:00",
        "21:60-08:00",
        "21:00-08:7",
        "21:00",
        "21-08",
        "9pm-8am",
        "21:00-08:00-09:00",
        "21:00\u201308:00",
        "\u0662\u0661:00-08:00",
    ],
    ids=[
        "hour-25",
        "hour-24",
        "minute-60",
        "one-digit-minute",
        "no-end",
        "no-minutes",
        "am-pm",
        "three-times",
        "en-dash",
        "arabic-digits",
    ],
)
def test_parse_quiet_hours_refuses_other_forms_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'HH:MM-HH:MM' in 24-hour time") as caught:
        parse_quiet_hours(text)
    assert repr(text) in str(caught.value)


def test_parse_quiet_hours_refuses_start_equal_to_end() -> None:
    with pytest.raises(ValueError, match=r"'21:00-21:00': start and end are the same time"):
        parse_quiet_hours("21:00-21:00")
    with pytest.raises(ValueError, match="same time"):
        QuietHours(time(7), time(7))


def test_parse_quiet_hours_refuses_a_non_string() -> None:
    with pytest.raises(ValueError, match=r"quiet hours 2100: expected"):
        parse_quiet_hours(2100)  # type: ignore[arg-type]


def test_quiet_hours_reads_back_its_own_text() -> None:
    assert str(NIGHT) == "21:00-08:00"
    assert parse_quiet_hours(str(QuietHours(time(7, 5), time(9)))) == QuietHours(time(7, 5), time(9))
    assert len({NIGHT, parse_quiet_hours("21:00-08:00")}) == 1


# Which zones count


@pytest.mark.parametrize(
    ("customer", "zones", "rule"),
    [
        ({"timezone": BERLIN, "phone": NY_PHONE}, [BERLIN], "customer.timezone"),
        ({"timezone": " Europe/Berlin "}, [BERLIN], "customer.timezone"),
        ({"timezone": "Mars/Olympus", "phone": NY_PHONE}, [NY], "phone"),
        ({"timezone": 123, "phone": NY_PHONE}, [NY], "phone"),
        ({"timezone": "", "phone": NY_PHONE}, [NY], "phone"),
        ({"timezone": "localtime", "phone": NY_PHONE}, [NY], "phone"),
        ({"timezone": "right/Europe/Berlin", "phone": NY_PHONE}, [NY], "phone"),
        ({"timezone": "../../etc/passwd", "phone": NY_PHONE}, [NY], "phone"),
        ({"phone": "(212) 555-0142"}, [NY], "phone"),
        ({"phone": "tel:+1-212-555-0142"}, [NY], "phone"),
        ({"phone": IDAHO_PHONE}, [BOISE, LA], "phone"),
        ({}, ["Asia/Tokyo"], "campaign timezone"),
        ({"phone": ""}, ["Asia/Tokyo"], "campaign timezone"),
        ({"phone": 2125550142}, ["Asia/Tokyo"], "campaign timezone"),
        ({"phone": "call me"}, ["Asia/Tokyo"], "campaign timezone"),
        ({"phone": "ann@example.com"}, ["Asia/Tokyo"], "campaign timezone"),
        ({"phone": "+1 555 555 0142"}, ["Asia/Tokyo"], "campaign timezone"),
        ({"phone": "+800 1234 5678"}, ["Asia/Tokyo"], "campaign timezone"),
        ({"timezone": "Mars/Olympus", "phone": "+999 123 4567"}, ["Asia/Tokyo"], "campaign timezone"),
    ],
    ids=[
        "timezone-wins",
        "timezone-spaces",
        "timezone-unknown",
        "timezone-number",
        "timezone-empty",
        "timezone-localtime",
        "timezone-leap-seconds",
        "timezone-path",
        "phone-national",
        "phone-tel-uri",
        "phone-two-zones",
        "nothing",
        "phone-empty",
        "phone-number",
        "phone-words",
        "phone-email",
        "phone-invalid-area",
        "phone-no-region",
        "phone-bad-country",
    ],
)
def test_customer_zones_follow_the_three_rules(customer: dict[str, object], zones: list[str], rule: str) -> None:
    assert customer_zones(customer, "Asia/Tokyo") == (zones, rule)


def test_customer_zones_refuses_an_unknown_fallback() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        customer_zones({}, "Mars/Olympus")


def test_idaho_phone_maps_to_two_zones_in_phonenumbers() -> None:
    """The multi-zone case below rests on phonenumbers' data: if it changes, pick another area code."""
    zones = phonenumbers.timezone.time_zones_for_number(phonenumbers.parse(IDAHO_PHONE))
    assert sorted(zones) == [BOISE, LA]


# The first allowed instant


def test_new_york_customer_at_night_waits_for_8_in_the_morning() -> None:
    zones, rule = customer_zones({"phone": NY_PHONE}, "UTC")
    assert (zones, rule) == ([NY], "phone")
    now = local(NY, 2027, 1, 14, 23, 30)
    assert now == utc(2027, 1, 15, 4, 30)
    assert is_quiet(now, NIGHT, NY)
    assert allowed_at(now, NIGHT, zones) == utc(2027, 1, 15, 13, 0)  # 08:00 EST


def test_new_york_customer_at_noon_is_sent_to_now() -> None:
    now = local(NY, 2027, 1, 14, 12, 0, 17)
    allowed = allowed_at(now, NIGHT, customer_zones({"phone": NY_PHONE}, "UTC")[0])
    assert allowed == now == utc(2027, 1, 14, 17, 0, 17)
    assert allowed is not None and allowed.tzinfo is UTC


def test_allowed_at_answers_in_utc_for_any_aware_now() -> None:
    now = datetime(2027, 1, 14, 23, 30, tzinfo=ZoneInfo(NY))
    allowed = allowed_at(now, NIGHT, [NY])
    assert allowed == utc(2027, 1, 15, 13, 0)
    assert allowed is not None and allowed.tzinfo is UTC


def test_berlin_customer_one_minute_before_the_end() -> None:
    zones, rule = customer_zones({"timezone": BERLIN, "phone": NY_PHONE}, "UTC")
    assert rule == "customer.timezone"
    assert allowed_at(local(BERLIN, 2027, 1, 14, 7, 59), NIGHT, zones) == utc(2027, 1, 14, 7, 0)  # 08:00 CET


@pytest.mark.parametrize(
    ("moment", "quiet"),
    [
        (utc(2027, 1, 15, 1, 59, 59), False),  # 20:59:59 EST
        (utc(2027, 1, 15, 2), True),  # 21:00 EST
        (utc(2027, 1, 15, 5), True),  # midnight EST
        (utc(2027, 1, 15, 12, 59, 59), True),  # 07:59:59 EST
        (utc(2027, 1, 15, 13), False),  # 08:00 EST
    ],
    ids=["before-start", "start", "midnight", "just-before-end", "end"],
)
def test_is_quiet_includes_the_start_and_excludes_the_end(moment: datetime, quiet: bool) -> None:
    assert is_quiet(moment, NIGHT, NY) is quiet


def test_window_within_one_day() -> None:
    lunch = QuietHours(time(12), time(14))
    assert allowed_at(local(NY, 2027, 1, 14, 13), lunch, [NY]) == local(NY, 2027, 1, 14, 14)
    assert allowed_at(local(NY, 2027, 1, 14, 23), lunch, [NY]) == local(NY, 2027, 1, 14, 23)
    assert not is_quiet(local(NY, 2027, 1, 15, 2), lunch, NY)


def test_two_zone_area_code_waits_for_the_later_zones_morning() -> None:
    zones, rule = customer_zones({"phone": IDAHO_PHONE}, "UTC")
    assert (zones, rule) == ([BOISE, LA], "phone")
    now = local(BOISE, 2027, 1, 14, 6, 0)
    assert is_quiet(local(BOISE, 2027, 1, 14, 8, 30), NIGHT, LA)  # 07:30 in Los Angeles
    assert allowed_at(now, NIGHT, zones) == local(LA, 2027, 1, 14, 8) == utc(2027, 1, 14, 16, 0)
    # In the evening Boise's 21:00 comes first: at 20:30 in Los Angeles it is too late for Boise.
    evening = local(LA, 2027, 1, 14, 19, 30)
    assert allowed_at(evening, NIGHT, zones) == evening
    assert allowed_at(local(LA, 2027, 1, 14, 20, 30), NIGHT, zones) == utc(2027, 1, 15, 16, 0)


# DST: each window edge is one instant, a repeated hour is quiet or not as a whole


@pytest.mark.parametrize(
    ("zone", "window", "now", "allowed"),
    [
        # US spring forward, 2027-03-14 02:00 EST -> 03:00 EDT (07:00 UTC): an end at 02:30 is at 03:00.
        (NY, "22:00-02:30", utc(2027, 3, 14, 6, 0), utc(2027, 3, 14, 7, 0)),
        # US fall back, 2027-11-07 02:00 EDT -> 01:00 EST (06:00 UTC): an end at 01:30 is the first 01:30.
        (NY, "22:00-01:30", utc(2027, 11, 7, 4, 30), utc(2027, 11, 7, 5, 30)),
        # Berlin spring forward, 2027-03-28 02:00 CET -> 03:00 CEST (01:00 UTC).
        (BERLIN, "23:00-02:30", utc(2027, 3, 28, 0, 0), utc(2027, 3, 28, 1, 0)),
        # Berlin fall back, 2027-10-31 03:00 CEST -> 02:00 CET (01:00 UTC): the first 02:30 is 00:30 UTC.
        (BERLIN, "23:00-02:30", utc(2027, 10, 30, 23, 0), utc(2027, 10, 31, 0, 30)),
    ],
    ids=["ny-march-end-in-gap", "ny-november-end-in-repeat", "berlin-march-end-in-gap", "berlin-october-end-in-repeat"],
)
def test_window_ending_in_a_dst_change(zone: str, window: str, now: datetime, allowed: datetime) -> None:
    quiet = parse_quiet_hours(window)
    assert quiet is not None
    assert is_quiet(now, quiet, zone)
    assert allowed_at(now, quiet, [zone]) == allowed
    assert not is_quiet(allowed, quiet, zone)
    assert is_quiet(allowed - timedelta(seconds=1), quiet, zone)


@pytest.mark.parametrize(
    ("zone", "window", "repeat_start"),
    [(NY, "22:00-01:30", utc(2027, 11, 7, 6, 0)), (BERLIN, "23:00-02:30", utc(2027, 10, 31, 1, 0))],
    ids=["ny", "berlin"],
)
def test_repeated_hour_is_not_quiet_again_after_a_window_ends_in_it(
    zone: str, window: str, repeat_start: datetime
) -> None:
    """The second pass through the repeated hour reads 01:00-01:59 (02:00-02:59 in Berlin) again: not quiet."""
    quiet = parse_quiet_hours(window)
    assert quiet is not None
    second_pass = [repeat_start + timedelta(minutes=m) for m in range(60)]
    assert [t.astimezone(ZoneInfo(zone)).fold for t in second_pass] == [1] * 60
    assert [is_quiet(t, quiet, zone) for t in second_pass] == [False] * 60
    assert [allowed_at(t, quiet, [zone]) for t in second_pass] == second_pass


@pytest.mark.parametrize(
    ("zone", "window", "first_quiet", "end"),
    [
        # Starts at 02:30, which 2027-03-14 skips: quiet from 03:00 EDT until 06:00 EDT.
        (NY, "02:30-06:00", utc(2027, 3, 14, 7, 0), utc(2027, 3, 14, 10, 0)),
        # Starts at 01:30, which 2027-11-07 repeats: quiet from the first 01:30 until 05:00 EST.
        (NY, "01:30-05:00", utc(2027, 11, 7, 5, 30), utc(2027, 11, 7, 10, 0)),
        (BERLIN, "02:30-06:00", utc(2027, 3, 28, 1, 0), utc(2027, 3, 28, 4, 0)),
        (BERLIN, "02:30-06:00", utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 5, 0)),
    ],
    ids=[
        "ny-march-start-in-gap",
        "ny-november-start-in-repeat",
        "berlin-march-start-in-gap",
        "berlin-october-start-in-repeat",
    ],
)
def test_window_starting_in_a_dst_change(zone: str, window: str, first_quiet: datetime, end: datetime) -> None:
    """Quiet from one instant on, without a break in the repeated hour (whose wall time reads before the start)."""
    quiet = parse_quiet_hours(window)
    assert quiet is not None
    before = first_quiet - timedelta(seconds=1)
    assert not is_quiet(before, quiet, zone)
    assert allowed_at(before, quiet, [zone]) == before
    minutes = int((end - first_quiet).total_seconds() // 60)
    assert [is_quiet(first_quiet + timedelta(minutes=m), quiet, zone) for m in range(minutes)] == [True] * minutes
    assert allowed_at(first_quiet, quiet, [zone]) == end
    assert allowed_at(first_quiet + timedelta(minutes=50), quiet, [zone]) == end
    assert not is_quiet(end, quiet, zone)


def test_window_inside_a_gap_is_empty_that_day() -> None:
    """02:10-02:40 does not happen on 2027-03-14 in New York: no quiet period that night, as usual the next."""
    quiet = QuietHours(time(2, 10), time(2, 40))
    assert not is_quiet(utc(2027, 3, 14, 7, 0), quiet, NY)
    assert allowed_at(utc(2027, 3, 14, 7, 0), quiet, [NY]) == utc(2027, 3, 14, 7, 0)
    assert is_quiet(local(NY, 2027, 3, 15, 2, 20), quiet, NY)


def test_day_a_zone_skipped() -> None:
    """Samoa skipped 2011-12-30 when it crossed the date line (at 10:00 UTC): every time of that day maps to
    the change, so a night window runs on to the next morning and a day window is empty that day."""
    apia, change = "Pacific/Apia", utc(2011, 12, 30, 10)
    assert local(apia, 2011, 12, 31, 0) == change
    assert allowed_at(local(apia, 2011, 12, 29, 23), NIGHT, [apia]) == local(apia, 2011, 12, 31, 8)
    day = QuietHours(time(8), time(20))
    assert allowed_at(change, day, [apia]) == change
    assert allowed_at(local(apia, 2011, 12, 29, 19), day, [apia]) == local(apia, 2011, 12, 29, 20)
    assert allowed_at(local(apia, 2011, 12, 31, 9), day, [apia]) == local(apia, 2011, 12, 31, 20)


# Giving up, and hostile input


def test_zones_covering_every_hour_give_none_quickly() -> None:
    """Kiritimati (UTC+14) and Pago Pago (UTC-11) read the same hour a day apart; with 23 quiet hours a day
    Kiritimati's free hour (07:00) is Pago Pago's 06:00, and Pago Pago's is Kiritimati's 08:00."""
    long_night = QuietHours(time(8), time(7))
    zones = ["Pacific/Kiritimati", "Pacific/Pago_Pago"]
    started = clock.perf_counter()
    assert allowed_at(utc(2027, 1, 14, 12), long_night, zones) is None
    assert allowed_at(utc(2027, 1, 14, 12), NIGHT, ["UTC", "Asia/Shanghai", "America/Los_Angeles"]) is None
    assert clock.perf_counter() - started < 0.5
    assert allowed_at(utc(2027, 1, 14, 12), long_night, zones[:1]) == utc(2027, 1, 14, 17)


def test_allowed_at_gives_up_past_the_horizon() -> None:
    """A window of 23h59m leaves a minute a day: Kiritimati's and Pago Pago's minutes never meet."""
    almost_always = QuietHours(time(0, 1), time(0, 0))
    assert allowed_at(utc(2027, 1, 14), almost_always, ["Pacific/Kiritimati", "Pacific/Pago_Pago"]) is None
    assert HORIZON == timedelta(days=8)


def test_a_number_of_more_than_16_zones_tells_no_local_time() -> None:
    """A toll-free +1 number maps to 42 zones, from Adak (UTC-10) to Guam (UTC+10): quiet somewhere at every hour."""
    assert customer_zones({"phone": "+1 800 555 0142"}, "America/Chicago") == (["America/Chicago"], "campaign timezone")
    zones, rule = customer_zones({"phone": "+7 916 123 4567"}, "UTC")  # a Russian mobile: 16 zones, all count
    assert (len(zones), rule) == (16, "phone")


def test_allowed_at_counts_the_first_16_zones_sorted() -> None:
    zones = list(phonenumbers.timezone.time_zones_for_number(phonenumbers.parse("+18005550142")))
    assert len(zones) > MAX_ZONES == 16
    now = utc(2027, 1, 14, 12)
    assert allowed_at(now, NIGHT, zones) == allowed_at(now, NIGHT, sorted(zones)[:16]) == utc(2027, 1, 14, 18)
    assert allowed_at(now, NIGHT, list(reversed(zones))) == utc(2027, 1, 14, 18)


def test_allowed_at_is_quick_with_a_hostile_zone_list() -> None:
    zones = [f"Etc/GMT{offset:+d}" for offset in range(-12, 13) if offset] * 1000 + ["Etc/GMT"] * 10_000
    started = clock.perf_counter()
    assert allowed_at(utc(2027, 1, 14, 12), QuietHours(time(8), time(7, 59)), zones) is None
    now = utc(2027, 1, 14, 12, 30)  # in every zone of the list, half past an hour
    assert allowed_at(now, QuietHours(time(0, 0), time(0, 1)), zones) == now
    assert clock.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("now", "zones", "message"),
    [
        (datetime(2027, 1, 14, 12), [NY], "expected an aware datetime"),
        (utc(2027, 1, 14, 12), [], "expected a non-empty list of timezones"),
        (utc(2027, 1, 14, 12), NY, "expected a non-empty list of timezones"),
        (utc(2027, 1, 14, 12), ["Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
        (utc(2027, 1, 14, 12), [NY, 5], "5 is not a timezone name"),
    ],
    ids=["naive-now", "no-zones", "one-string", "unknown-zone", "not-a-string"],
)
def test_allowed_at_refuses_bad_arguments(now: datetime, zones: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allowed_at(now, NIGHT, zones)


def test_allowed_at_is_well_under_a_millisecond() -> None:
    """Called at every send inside a workflow: 300 instants (each a first look at its days) in 3 zones."""
    zones = [BOISE, LA, BERLIN]
    instants = [utc(2030, 1, 1) + timedelta(hours=7 * i, minutes=13 * i) for i in range(300)]
    started = clock.perf_counter()
    results = [allowed_at(t, NIGHT, zones) for t in instants]
    assert (clock.perf_counter() - started) / len(instants) < 0.001
    assert all(r is not None for r in results)


# Properties

ZONES = [
    "UTC",
    NY,
    BERLIN,
    LA,
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",  # a 30-minute DST change
    "Australia/Adelaide",
    "America/Santiago",  # DST changes around midnight
    "America/St_Johns",
    "Africa/Casablanca",  # DST off during Ramadan: four changes a year
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
]
# Hypothesis imports some of its modules when settings and strategies are made; the sandbox, which imports this
# module again for the workflow below, would import them again too (and refuse their file access).
with workflow.unsafe.imports_passed_through():
    PROPERTY = settings(max_examples=150, deadline=None)
    instants = st.datetimes(datetime(2020, 1, 1), datetime(2035, 12, 31), timezones=st.just(UTC))
    minutes = st.integers(0, 24 * 60 - 1)
    windows = (
        st.tuples(minutes, minutes)
        .filter(lambda w: w[0] != w[1])
        .map(lambda w: QuietHours(time(*divmod(w[0], 60)), time(*divmod(w[1], 60))))
    )
    zone_lists = st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True)
    one_zone = st.sampled_from(ZONES)


@PROPERTY
@given(now=instants, quiet=windows, zones=zone_lists)
def test_allowed_at_is_the_first_instant_quiet_in_no_zone(now: datetime, quiet: QuietHours, zones: list[str]) -> None:
    allowed = allowed_at(now, quiet, zones)
    end = allowed if allowed is not None else now + HORIZON
    if allowed is not None:
        assert now <= allowed <= now + HORIZON
        assert [z for z in zones if is_quiet(allowed, quiet, z)] == []
    # Before it, some zone is quiet: every minute up to a day, then samples of the rest (about 800 in all).
    span = end - now
    step = timedelta(minutes=max(1, int(span.total_seconds() // 60) // 800))
    samples = [now + step * i for i in range(int(span / step))]
    if allowed is not None and allowed > now:
        samples.append(allowed - timedelta(seconds=1))
    assert [t for t in samples if not any(is_quiet(t, quiet, z) for z in zones)] == []


@PROPERTY
@given(moment=instants, quiet=windows, zone=one_zone)
def test_is_quiet_reads_the_wall_clock_away_from_dst_changes(moment: datetime, quiet: QuietHours, zone: str) -> None:
    """With the same offset a day either side, quiet hours are just the local time of day inside the window."""
    tz = ZoneInfo(zone)
    assume(all((moment + timedelta(hours=h)).astimezone(tz).utcoffset() == moment.astimezone(tz).utcoffset()
               for h in (-26, -13, 13, 26)))  # fmt: skip
    wall = moment.astimezone(tz).time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        expected = quiet.start <= wall < quiet.end
    else:
        expected = wall >= quiet.start or wall < quiet.end
    assert is_quiet(moment, quiet, zone) is expected


# Inside the workflow sandbox


class QuietProbeResult(BaseModel):
    now: datetime
    zones: list[str]
    rule: str
    allowed: datetime | None
    woke: datetime | None
    """`workflow.now()` after sleeping until `allowed`."""


@workflow.defn(name="QuietHoursProbe")
class QuietHoursProbe:
    """Waits for a customer's quiet hours to end, as a send step would (in the default sandbox)."""

    @workflow.run
    async def run(self, customer: dict[str, str], window: str) -> QuietProbeResult:
        quiet = parse_quiet_hours(window)
        assert quiet is not None
        zones, rule = customer_zones(customer, "UTC")
        now = workflow.now()
        allowed = allowed_at(now, quiet, zones)
        woke = None
        if allowed is not None:
            if allowed > now:
                await workflow.sleep(allowed - now)
            woke = workflow.now()
        return QuietProbeResult(now=now, zones=zones, rule=rule, allowed=allowed, woke=woke)


@pytest.mark.parametrize("window", ["21:00-08:00", "09:00-07:00"], ids=["night", "all-but-two-hours"])
async def test_quiet_hours_in_workflow_sandbox(ts_env: WorkflowEnvironment, task_queue: str, window: str) -> None:
    """A Portuguese mobile number: two zones (Azores, Lisbon), and a region no other test parses first, so
    phonenumbers loads its metadata inside the sandbox."""
    quiet = parse_quiet_hours(window)
    assert quiet is not None
    async with Worker(
        ts_env.client,
        task_queue=task_queue,
        workflows=[QuietHoursProbe],
        workflow_failure_exception_types=[Exception],
    ):
        result = await ts_env.client.execute_workflow(
            QuietHoursProbe.run,
            args=[{"phone": "+351 912 345 678"}, window],
            id=f"quiet-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=QuietProbeResult,
        )
    assert (result.zones, result.rule) == (["Atlantic/Azores", "Europe/Lisbon"], "phone")
    assert result.allowed is not None and result.woke is not None
    assert result.allowed == allowed_at(result.now, quiet, result.zones)
    assert result.now <= result.allowed <= result.woke < result.allowed + timedelta(minutes=1)
    assert [z for z in result.zones if is_quiet(result.woke, quiet, z)] == []
