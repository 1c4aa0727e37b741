"""Durations as campaign files write them: "90s", "5m", "1h30m", "2d", "500ms"."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

from scheduler.errors import clip

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = timedelta(days=3650)
"""Ten years: longer than any wait a campaign means, and far inside what timedelta and Temporal hold."""


def parse_duration(text: object) -> timedelta:
    """Parse a duration string; raise ValueError naming the bad value."""
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a duration such as '90s', '5m', '1h30m' or '2d', got {clip(repr(text), 40)}")
    s = text.strip().replace(" ", "")
    pos, seconds = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(
            f"invalid duration {clip(repr(text), 40)}: use a number and a unit (ms, s, m, h, d, w),"
            " e.g. '90s' or '1h30m'"
        )
    if not seconds <= MAX_DURATION.total_seconds():  # also inf, from a number too long for a float
        raise ValueError(f"duration {clip(repr(text), 40)} is longer than the limit of {format_duration(MAX_DURATION)}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest string parse_duration reads back as the same value."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, total_ms = divmod(total_ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
"""A timedelta field that reads "90s"-style strings and writes them back the same way."""
