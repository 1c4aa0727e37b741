"""Campaign files as text: the seed definition, a base campaign, hostile files, and a builder of valid ones."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from scheduler.campaigns.campaign import MAX_FILE_BYTES, load_campaign

SEED = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "send_message", "go_to": "step_2"},
        "step_2": {"node": "wait_answer", "condition": {"satisfied": "step_3", "timeout": "step_4"}},
        "step_3": {"node": "notify_creator"},
        "step_4": {"node": "webhook", "go_to": "step_5"},
        "step_5": {"node": "explicity_wait", "go_to": "step_6"},
        "step_6": {"node": "send_message"},
    },
}
# Line numbers matter: the tests name them.
BASE = """\
[campaign]
id = "spring-sale"
name = "Spring sale"

[schedule]
cron = ["0 9 * * MON-FRI"]
timezone = "Asia/Tokyo"

[workflow]
start_step = "a"

[workflow.steps.a]
node = "wait_answer"
params = { timeout = "1m" }
condition = { satisfied = "b", timeout = "c" }

[workflow.steps.b]
node = "send_message"
go_to = "c"

[workflow.steps.c]
node = "notify_creator"
"""


def _with(line: str, after: str = 'name = "Spring sale"\n') -> str:
    """BASE with `line` added after `after` (so the bomb sits on a known line)."""
    return BASE.replace(after, after + line + "\n", 1)


BASE_LINES = BASE.count("\n")
NAME_LINE = BASE.splitlines().index('name = "Spring sale"') + 1
TIMEOUT_LINE = BASE.splitlines().index('params = { timeout = "1m" }') + 1


# (file name, content (str or bytes), line, message fragment)
BOMBS: dict[str, tuple[str, str | bytes | Callable[[], bytes], int, str]] = {
    "nesting-5000": (
        "c.toml",
        _with("tags = " + "[" * 5000 + "]" * 5000),
        NAME_LINE + 1,
        "refused before parsing: arrays or inline tables nested more than 32 levels deep",
    ),
    "inline-table-nesting": (
        "c.toml",
        _with("x = " + "{ a = " * 40 + "1" + " }" * 40),
        NAME_LINE + 1,
        "nested more than 32 levels deep",
    ),
    "dotted-key-20000-parts": (
        "c.toml",
        _with("a" + ".a" * 20_000 + " = 1"),
        NAME_LINE + 1,
        "refused before parsing: a dotted key of more than 64 parts",
    ),
    "table-header-20000-parts": (
        "c.toml",
        BASE + "\n[" + ".".join(["t"] * 20_000) + "]\n",
        BASE_LINES + 2,
        "a dotted key of more than 64 parts",
    ),
    "integer-5000-digits": (
        "c.toml",
        _with("max_starts_per_second = " + "9" * 5000),
        NAME_LINE + 1,
        "invalid TOML: a number of more than 4300 digits",
    ),
    "duration-99999999999999w": (
        "c.toml",
        BASE.replace('timeout = "1m"', 'timeout = "99999999999999w"'),
        TIMEOUT_LINE,
        "workflow.steps.a.params.timeout: duration '99999999999999w' is longer than the limit of 3650d",
    ),
    "timezone-too-long-for-a-file-name": (
        "c.toml",
        BASE.replace('timezone = "Asia/Tokyo"', f'timezone = "{"x" * 5000}"'),
        BASE.splitlines().index('timezone = "Asia/Tokyo"') + 1,
        "schedule.timezone: unknown timezone 'xxxx",
    ),
    "not-utf8": ("c.toml", BASE.encode() + b"\n# caf\xe9\n", BASE_LINES + 2, "not UTF-8 text"),
    "20-mb": (
        "c.toml",
        lambda: BASE.encode() + b"#" * 20_000_000,
        1,
        f"file is {len(BASE.encode()) + 20_000_000:,} bytes, over the limit of {MAX_FILE_BYTES:,}",
    ),
    "json-nesting-100000": ("d.json", "[" * 100_000 + "]" * 100_000, 1, "invalid JSON: nested too deeply"),
    "json-integer-5000-digits": (
        "d.json",
        '{\n"start_step": "a",\n"x": ' + "9" * 5000 + "}",
        3,
        "invalid JSON: a number of more than 4300 digits",
    ),
}


JSONL_AUDIENCE = """\
[audience]
source = "jsonl"
path = "carts.jsonl"

[audience.fields]
"cart.id" = "cart_ref"
"customer.phone" = "mobile"
"customer.name" = "name"

"""
"""An audience of `carts.jsonl` beside the campaign file, rows `{"cart_ref", "mobile", "name"}` (put it before
the workflow)."""
ONE_STEP = """\
[workflow]
start_step = "send"

[workflow.steps.send]
node = "send_message"
"""
WAITING = """\
[workflow]
start_step = "send"

[workflow.steps.send]
node = "send_message"
go_to = "wait"

[workflow.steps.wait]
node = "wait_answer"
params = { timeout = "1h" }
"""
STOP_THEN_TELL = """\
[workflow]
start_step = "send"

[workflow.steps.send]
node = "send_message"
go_to = "wait"

[workflow.steps.wait]
node = "wait_answer"
params = { timeout = "1h" }
condition = { not_satisfied = "owner" }

[workflow.steps.owner]
node = "notify_creator"
go_to = "sorry"

[workflow.steps.sorry]
node = "send_message"
params = { template = "Sorry to see you go" }
"""
"""Ask; an opt-out tells the owner, then tries a customer message (which the opt-out suppresses)."""

BROKEN = """\
[campaign]
id = "{cid}"

[schedule]
cron = ["0 9 * * *"]

[workflow]
start_step = "a"

[workflow.steps.a]
node = "nope"
"""
BROKEN_LINE = BROKEN.splitlines().index('node = "nope"') + 1
"""The line a problem in BROKEN must point at (the unknown node)."""


def campaign_toml(
    cid: str,
    *,
    cron: Iterable[str] = ("0 9 * * *",),
    timezone: str = "UTC",
    enabled: bool = True,
    jitter: str = "0s",
    overlap: str = "skip",
    catchup_window: str = "1m",
    start_at: str | None = None,
    end_at: str | None = None,
    max_starts_per_second: float | None = None,
    workflow: str = ONE_STEP,
) -> str:
    """A campaign file shaped like campaigns/abandoned_cart.toml."""
    lines = [
        "[campaign]",
        f'id = "{cid}"',
        f'name = "Test campaign {cid}"',
        'owner = "growth@example.com"',
        f"enabled = {str(enabled).lower()}",
    ]
    lines += [f"max_starts_per_second = {max_starts_per_second}"] if max_starts_per_second else []
    lines += [
        "",
        "[schedule]",
        f"cron = [{', '.join(json.dumps(c) for c in cron)}]",
        f'timezone = "{timezone}"',
        f'jitter = "{jitter}"',
        f'overlap = "{overlap}"',
        f'catchup_window = "{catchup_window}"',
    ]
    lines += [f"start_at = {start_at}"] if start_at else []
    lines += [f"end_at = {end_at}"] if end_at else []
    return "\n".join(lines) + "\n\n" + workflow


FUNNEL = """\
[workflow]
start_step = "send"
exit_on = ["cart-converted"]

[workflow.steps.send]
node = "send_message"
go_to = "wait"

[workflow.steps.wait]
node = "wait_answer"
params = { timeout = "1h" }
condition = { satisfied = "pause", timeout = "pause" }

[workflow.steps.pause]
node = "explicit_wait"
params = { duration = "1h" }
"""
"""Flows that park: at `wait` (for a reply, an hour), then at `pause` (an hour); a purchase ends them."""
SPLIT = """\
[workflow]
start_step = "copy_test"

[workflow.steps.copy_test]
node = "split"
params = { experiment = "copy-2031-01" }

[workflow.steps.copy_test.variants]
friendly = { weight = 45, go_to = "msg_friendly" }
discount = { weight = 45, go_to = "msg_discount" }
holdout = { weight = 10 }

[workflow.steps.msg_friendly]
node = "send_message"
params = { template = "Your cart misses you, {{ customer.name }}" }

[workflow.steps.msg_discount]
node = "send_message"
params = { template = "10% off your cart today" }
"""
"""An experiment: two messages and a holdout that is sent nothing."""


def load_workflow(tmp_path: Path, workflow: str, *, cid: str) -> tuple[Any, list[str]]:
    """Campaign `cid` with `workflow`, written and loaded: the campaign (None if refused) and its problems, each
    without the file's path (`line: key: message`)."""
    path = tmp_path / f"{cid}.toml"
    path.write_text(campaign_toml(cid, workflow=workflow), encoding="utf-8")
    campaign, problems = load_campaign(path)
    return campaign, [str(p).removeprefix(f"{path}:") for p in problems]


def line_in(text: str, workflow: str, *, cid: str) -> int:
    """The line of `text` (its last) in the file `load_workflow` writes."""
    lines = campaign_toml(cid, workflow=workflow).splitlines()
    return len(lines) - lines[::-1].index(text)
