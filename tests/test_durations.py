"""Durations as campaign and config files write them: "90s", "5m", "1h30m", "2d", "500ms", "1w"."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from scheduler.flow.durations import MAX_DURATION, Duration, format_duration, parse_duration

INVALID_HINT = "use a number and a unit (ms, s, m, h, d, w), e.g. '90s' or '1h30m'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1w", timedelta(weeks=1)),
        ("0s", timedelta(0)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1.5h", timedelta(minutes=90)),
        (" 1h 30m ", timedelta(hours=1, minutes=30)),
    ],
    ids=[
        "seconds",
        "minutes",
        "hours+minutes",
        "days",
        "milliseconds",
        "weeks",
        "zero",
        "every-unit",
        "fraction",
        "spaces",
    ],
)
def test_parse_duration_reads_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_duration_passes_timedelta_through() -> None:
    assert parse_duration(timedelta(seconds=7)) == timedelta(seconds=7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a duration such as '90s', '5m', '1h30m' or '2d', got ''"),
        ("   ", "expected a duration such as '90s', '5m', '1h30m' or '2d', got '   '"),
        (None, "expected a duration such as '90s', '5m', '1h30m' or '2d', got None"),
        (5, "expected a duration such as '90s', '5m', '1h30m' or '2d', got 5"),
        ("5", f"invalid duration '5': {INVALID_HINT}"),
        ("5x", f"invalid duration '5x': {INVALID_HINT}"),
        ("m5", f"invalid duration 'm5': {INVALID_HINT}"),
        ("1h30", f"invalid duration '1h30': {INVALID_HINT}"),
        ("-5m", f"invalid duration '-5m': {INVALID_HINT}"),
    ],
    ids=["empty", "blank", "none", "int", "no-unit", "bad-unit", "unit-first", "trailing-number", "negative"],
)
def test_parse_duration_rejects_with_message(text: object, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(text)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    "text",
    ["99999999999999w", "3651d", "1" + "0" * 400 + "s", "9" * 100_000 + "ms"],
    ids=["overflows-timedelta", "just-over", "float-infinity", "huge-number"],
)
def test_parse_duration_rejects_over_the_limit_without_repeating_it(text: str) -> None:
    with pytest.raises(ValueError, match="is longer than the limit of 3650d") as exc:
        parse_duration(text)
    assert len(str(exc.value)) < 120


def test_parse_duration_accepts_the_limit() -> None:
    assert parse_duration("3650d") == MAX_DURATION


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=2), "2d"),
        (timedelta(weeks=1), "7d"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(days=1, seconds=1, milliseconds=1), "1d1s1ms"),
    ],
    ids=["zero", "90s", "1h30m", "2d", "1w", "500ms", "mixed"],
)
def test_format_duration_is_shortest_form(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def test_duration_field_reads_and_writes_strings() -> None:
    class Model(BaseModel):
        wait: Duration

    model = Model.model_validate({"wait": "1h30m"})
    assert model.wait == timedelta(hours=1, minutes=30)
    assert model.model_dump(mode="json") == {"wait": "1h30m"}
    with pytest.raises(ValidationError) as exc:
        Model.model_validate({"wait": "5x"})
    assert exc.value.errors()[0]["loc"] == ("wait",)
    assert f"invalid duration '5x': {INVALID_HINT}" in exc.value.errors()[0]["msg"]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=int(MAX_DURATION.total_seconds() * 1000)))
def test_format_duration_round_trips_through_parse(total_ms: int) -> None:
    value = timedelta(milliseconds=total_ms)
    assert parse_duration(format_duration(value)) == value
