"""Hostile and careless campaign files: whatever a file holds, loading it gives a campaign or that file's problems.

Each bomb here once escaped the loader as an exception (RecursionError, ValueError, OverflowError,
OSError, UnicodeDecodeError) and stopped `validate` with a traceback and the reconcile loop for every
campaign; or it made tomllib spend seconds and gigabytes before failing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import string
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.campaigns.campaign import MAX_FILE_BYTES, deep_checks, load_campaign, load_campaign_dir
from scheduler.campaigns.reconcile import Reconciler
from scheduler.config import ChannelsSettings
from scheduler.flow.definition import MAX_STEPS, WorkflowDefinition, find_cycles
from scheduler.problems import Problem
from tests.helpers.campaigns import BASE, BOMBS
from tests.helpers.cli import scheduler
from tests.helpers.schedules import Campaigns


def _chain(steps: int, *, back_to: str | None = None) -> str:
    """A campaign whose steps form one chain s0 → s1 → … (the last going back to `back_to`, if given)."""
    out = [
        '[campaign]\nid = "chain"\n\n[schedule]\ncron = ["0 * * * *"]\n\n[workflow]\nstart_step = "s0"\n',
    ]
    for i in range(steps):
        target = f"s{i + 1}" if i + 1 < steps else back_to
        out.append(f'\n[workflow.steps.s{i}]\nnode = "explicit_wait"\n' + (f'go_to = "{target}"\n' if target else ""))
    return "".join(out)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield


def _write(name: str, content: str | bytes | Callable[[], bytes], directory: Path | None = None) -> Path:
    path = (directory or Path.cwd()) / name
    data = content() if callable(content) else content
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(("name", "content", "line", "message"), BOMBS.values(), ids=BOMBS.keys())
def test_load_campaign_bomb_is_one_located_problem(
    name: str, content: str | bytes | Callable[[], bytes], line: int, message: str
) -> None:
    path = _write(name, content)
    started = time.monotonic()

    campaign, problems = load_campaign(path)

    assert time.monotonic() - started < 5  # generous: the point is seconds and gigabytes, not milliseconds
    assert campaign is None
    (problem,) = [p for p in problems if not p.warning]
    assert (problem.path, problem.line) == (name, line), problem
    assert message in str(problem), problem
    assert len(str(problem)) < 300  # never the bomb itself


def test_load_campaign_dir_bomb_does_not_hold_back_the_others(tmp_path: Path) -> None:
    directory = tmp_path / "campaigns"
    directory.mkdir()
    _write("good.toml", BASE, directory)
    for i, (name, content, _, _) in enumerate(BOMBS.values()):
        if name.endswith(".toml"):
            _write(f"bomb{i}.toml", content, directory)

    campaigns, problems = load_campaign_dir(directory)

    assert list(campaigns) == ["spring-sale"]
    broken = {p.path for p in problems if not p.warning}
    assert broken == {f"campaigns/bomb{i}.toml" for i, b in enumerate(BOMBS.values()) if b[0].endswith(".toml")}


def test_load_campaign_chain_of_the_most_steps_is_valid() -> None:
    campaign, problems = load_campaign(_write("chain.toml", _chain(MAX_STEPS)))

    assert problems == []
    assert campaign is not None
    assert len(campaign.workflow.steps) == MAX_STEPS


def test_load_campaign_more_steps_are_refused_before_validating_them() -> None:
    started = time.monotonic()
    campaign, problems = load_campaign(_write("chain.toml", _chain(5000)))

    assert time.monotonic() - started < 5
    assert campaign is None
    assert [str(p) for p in problems] == [
        f"chain.toml:{_chain(5000).splitlines().index('[workflow]') + 1}: workflow.steps:"
        f" 5,000 steps: a definition may have at most {MAX_STEPS:,}"
    ]


def test_find_cycles_closes_a_5000_step_loop_without_recursion() -> None:
    definition = WorkflowDefinition.model_validate(tomllib.loads(_chain(5000, back_to="s0"))["workflow"])

    assert find_cycles(definition) == [
        (
            "steps.s4999.go_to",
            "cycle: s0 → s1 → s2 → s3 → s4 → s5 → … (4989 more) … → s4995 → s4996 → s4997 → s4998 → s4999 → s0",
        )
    ]


def test_load_campaign_reports_at_most_fifty_problems() -> None:
    text = BASE.replace(
        'params = { timeout = "1m" }', "params = { " + ", ".join(f"k{i} = 1" for i in range(500)) + " }"
    )

    campaign, problems = load_campaign(_write("c.toml", text))

    assert campaign is None
    assert len(problems) == 51
    assert problems[-1].message == "… and 450 more problem(s) after this line"


def test_load_campaign_step_name_must_fit_a_search_attribute() -> None:
    long_name = "s" * 101
    campaign, problems = load_campaign(
        _write("c.toml", BASE.replace("steps.c]", f"steps.{long_name}]").replace('"c"', f'"{long_name}"'))
    )

    assert campaign is None
    assert [p.message for p in problems if not p.warning] == [
        f"step name {'s' * 20 + '…'!r}: at most 100 characters, none of them control characters"
    ]


def test_find_cycles_reports_each_closing_edge_in_dfs_order() -> None:
    text = BASE.replace('go_to = "c"', 'go_to = "c"\ncondition = { satisfied = "a" }').replace(
        'node = "notify_creator"', 'node = "notify_creator"\ngo_to = "a"'
    )
    assert load_campaign(_write("c.toml", text))[0] is None

    definition = WorkflowDefinition.model_validate(tomllib.loads(text)["workflow"])
    assert find_cycles(definition) == [
        ("steps.b.condition.satisfied", "cycle: a → b → a"),
        ("steps.c.go_to", "cycle: a → b → c → a"),
    ]


async def test_validate_cli_reports_bombs_without_a_traceback(tmp_path: Path) -> None:
    paths = [_write(f"{key}{Path(name).suffix}", content) for key, (name, content, _, _) in BOMBS.items()]

    run = await scheduler("validate", *map(str, paths), cwd=tmp_path)

    assert run.code == 1, run
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stderr.splitlines() == [f"{len(BOMBS)} error(s) in {len(BOMBS)} of {len(BOMBS)} file(s)"]
    errors = run.stdout.splitlines()
    assert len(errors) == len(BOMBS), run.stdout
    for path, (_, _, line, message) in zip(paths, BOMBS.values(), strict=True):
        assert any(e.startswith(f"{path.name}:{line}: ") and message in e for e in errors), (path, run.stdout)


# Property: whatever the bytes, whatever the TOML document, loading gives a campaign or problems.


def _outcome_is_campaign_or_problems(path: Path) -> None:
    campaign, problems = load_campaign(path)
    assert all(isinstance(p, Problem) for p in problems)
    if campaign is None:
        assert any(not p.warning for p in problems)
    else:
        assert all(p.warning for p in problems)
        assert all(isinstance(p, Problem) for p in deep_checks(campaign, ChannelsSettings()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".toml", ".json"]))
def test_load_campaign_random_bytes_never_raise(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _outcome_is_campaign_or_problems(path)


_KEYS = st.sampled_from(
    [
        "campaign", "id", "name", "owner", "enabled", "max_starts_per_second", "schedule", "cron", "timezone",
        "jitter", "overlap", "catchup_window", "start_at", "end_at", "audience", "source", "path", "url", "query",
        "fields", "workflow", "start_step", "steps", "node", "go_to", "condition", "satisfied", "params",
        "timeout", "template", "duration", "channel", "max_attempts", "exit_on", "a", "b", "c",
    ]
) | st.text(string.ascii_letters + "_-.", min_size=1, max_size=8)  # fmt: skip
_SCALARS = (
    st.text(max_size=30)
    | st.sampled_from(["1m", "99999999999999w", "0 * * * *", "@every 1s", "Europe/Berlin", "a", "b", "c", ""])
    | st.sampled_from(["send_message", "wait_answer", "explicit_wait", "webhook", "notify_creator", "{{ x }}"])
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.datetimes()
    | st.dates()
)
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=20
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(str(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return value.isoformat()  # datetime, date


def _set(document: dict[str, Any], path: list[str], value: Any) -> None:
    """Put `value` at `path`, replacing whatever is in the way (a scalar becomes a table)."""
    for key in path[:-1]:
        if not isinstance(document.get(key), dict):
            document[key] = {}
        document = document[key]
    document[path[-1]] = value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.lists(_KEYS, min_size=1, max_size=4), _VALUES), max_size=4),
    start=st.sampled_from(["base", "empty"]),
)
def test_load_campaign_random_toml_documents_never_raise(
    tmp_path: Path, edits: list[tuple[list[str], Any]], start: str
) -> None:
    """A valid campaign (or nothing) with random values put at random (often meaningful) key paths."""
    document: dict[str, Any] = tomllib.loads(BASE) if start == "base" else {}
    for path, value in edits:
        _set(document, path, value)
    text = "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in document.items())
    path = tmp_path / "random.toml"
    path.write_text(text, encoding="utf-8")
    _outcome_is_campaign_or_problems(path)


# The reconcile loop: a bomb is one file's error, logged once, and never blocks the event loop.


async def test_reconciler_logs_a_file_error_once_and_when_fixed(
    campaigns: Campaigns, caplog: pytest.LogCaptureFixture
) -> None:
    c = campaigns
    c.write("good")
    _write("bomb.toml", BOMBS["dotted-key-20000-parts"][1], c.settings.campaigns.dir)
    reconciler = Reconciler(c.client, c.settings)

    with caplog.at_level(logging.INFO, logger="scheduler.campaigns.reconcile"):
        first = await reconciler.run_once()
        second = await reconciler.run_once()
        (c.settings.campaigns.dir / "bomb.toml").unlink()
        await reconciler.run_once()

    assert [p.path.rsplit("/", 1)[-1] for p in first.errors] == ["bomb.toml"]
    assert second.errors == first.errors
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if "bomb.toml" in r.getMessage()]
    assert [level for level, _ in logged] == ["ERROR", "INFO"], logged
    assert logged[1][1].startswith("reconcile: fixed: ")
    assert await c.describe("good") is not None


async def test_reconciler_reads_files_off_the_event_loop(campaigns: Campaigns) -> None:
    """A big (under the limit) file takes a second or more to parse; the loop must keep turning meanwhile."""
    c = campaigns
    c.write("good")
    junk = "".join(f"k{i} = [{i}, {i}.5, 'x{i}']\n" for i in range(25_000))
    big = _chain(MAX_STEPS, back_to="s0") + "\n[junk]\n" + junk  # parsed, then refused: a cycle and a junk table
    assert len(big.encode()) < MAX_FILE_BYTES
    _write("big.toml", big, c.settings.campaigns.dir)
    reconciler = Reconciler(c.client, c.settings)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    # The whole suite's objects out of the collector's way: a full collection over them pauses the loop for
    # a third of a second or more, which is not what this test is about.
    gc.collect()
    gc.freeze()
    tick = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        outcome = await reconciler.run_once()
    finally:
        tick.cancel()
        gc.unfreeze()
    took = time.monotonic() - started

    assert sorted(p.key for p in outcome.errors) == ["junk", f"workflow.steps.s{MAX_STEPS - 1}.go_to"]
    assert await c.describe("good") is not None
    assert took > 0.5, "the file loaded too fast for this test to mean anything"
    # Loaded on the event loop, the loop would stand still for the whole load; relative, as machines are noisy.
    assert max(gaps) < took / 3, (max(gaps), took)


def test_load_campaign_unexpected_error_is_the_file_s_problem_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of ours that one file meets (here: the validation raises) must not escape, nor flood the log."""

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("scheduler.campaigns.campaign._build", broken)
    path = _write("c.toml", BASE + f"# {time.time_ns()}\n")  # content no other test has parsed (and cached)

    with caplog.at_level(logging.ERROR, logger="scheduler.campaigns.campaign"):
        first, second = load_campaign(path), load_campaign(path)

    assert first == second == (None, [Problem("c.toml", 1, "", "cannot load: RuntimeError: boom")])
    assert [r.getMessage() for r in caplog.records] == [f"cannot load {path}"]
