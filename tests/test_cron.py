"""cron_problem: the cron expressions Temporal reads as standard cron pass; the others are refused with a reason."""

from __future__ import annotations

import pytest

from scheduler.cron import cron_problem

FIELDS = "standard cron has 5: minute hour day-of-month month day-of-week"


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
        "@hourly",
        "@daily",
        "@every 90m",
        "@every 1h/15m",
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
        "@hourly",
        "@daily",
        "@every",
        "@every-with-offset",
    ],
)
def test_cron_problem_accepts_standard_cron(expr: str) -> None:
    assert cron_problem(expr) is None


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
        ("61 * * * *", "'61 * * * *' is not a valid cron expression"),
        ("0 0 * 13 *", "'0 0 * 13 *' is not a valid cron expression"),
        ("CRON_TZ=UTC 0 * * * *", "set the timezone with schedule.timezone, not a CRON_TZ= prefix"),
        ("TZ=Europe/Berlin 0 * * * *", "set the timezone with schedule.timezone, not a CRON_TZ= prefix"),
        (
            "@foo",
            "unknown shorthand '@foo' (use one of @annually, @daily, @hourly, @midnight, @monthly, @weekly, @yearly"
            " or '@every <duration>')",
        ),
        ("@every 0s", "'@every 0s': the interval must be positive"),
        (
            "@every 5x",
            "'@every 5x': invalid duration '5x': use a number and a unit (ms, s, m, h, d, w), e.g. '90s' or '1h30m'",
        ),
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
        "CRON_TZ",
        "TZ",
        "unknown-shorthand",
        "every-zero",
        "every-bad-duration",
        "empty",
        "blank",
    ],
)
def test_cron_problem_refuses_with_reason(expr: str, reason: str) -> None:
    assert cron_problem(expr) == reason


@pytest.mark.parametrize("value", [None, 5, ["0 * * * *"]], ids=["none", "int", "list"])
def test_cron_problem_refuses_non_strings(value: object) -> None:
    assert cron_problem(value) == f"expected a cron expression such as '0 * * * *', got {value!r}"
