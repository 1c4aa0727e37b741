"""Cron expressions as Temporal reads them, and refusal of the ones it would read differently."""

from __future__ import annotations

import re

from croniter import croniter

from scheduler.durations import parse_duration

_SHORTHANDS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_EVERY = re.compile(r"^@every\s+(\S+?)(?:/(\S+))?$")
_FORBIDDEN = {
    "#": "nth-weekday ('#') is not standard cron",
    "L": "'L' (last day) is not standard cron",
    "W": "'W' (nearest weekday) is not standard cron",
    "?": "'?' is not standard cron; use '*'",
}
# A letter modifier stands alone or beside digits, never inside a name such as JUL or WED.
_MODIFIER = {t: re.compile(rf"(?<![A-Z]){re.escape(t)}(?![A-Z])" if t.isalpha() else re.escape(t)) for t in _FORBIDDEN}


def cron_problem(expr: object) -> str | None:
    """Why Temporal would not run `expr` as standard cron means it, or None when it is fine."""
    if not isinstance(expr, str) or not expr.strip():
        return f"expected a cron expression such as '0 * * * *', got {expr!r}"
    text = expr.strip()
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        return "set the timezone with schedule.timezone, not a CRON_TZ= prefix"
    if text.startswith("@"):
        if text in _SHORTHANDS:
            return None
        if m := _EVERY.match(text):
            interval, offset = m.groups()
            try:
                if parse_duration(interval).total_seconds() <= 0:
                    return f"{text!r}: the interval must be positive"
                if offset is not None:
                    parse_duration(offset)
            except ValueError as exc:
                return f"{text!r}: {exc}"
            return None
        return f"unknown shorthand {text!r} (use one of {', '.join(sorted(_SHORTHANDS))} or '@every <duration>')"
    fields = text.split()
    if len(fields) != 5:
        extra = " (a 6th field would be read as seconds or years, not standard cron)" if len(fields) > 5 else ""
        return (
            f"{text!r} has {len(fields)} fields; standard cron has 5: minute hour day-of-month month day-of-week{extra}"
        )
    for token, why in _FORBIDDEN.items():
        if any(_MODIFIER[token].search(f.upper()) for f in fields):
            return f"{text!r}: {why}"
    if not croniter.is_valid(text):
        return f"{text!r} is not a valid cron expression"
    return None
