"""`scheduler plan`, `apply` and `status` as a user runs them: the console script, a temp config, the dev server.

Each test has its own campaigns directory, task queue and campaign ids (see test_schedules); the
`--prune` test runs against a dev server of its own, because `--prune` deletes every managed schedule
without a file, which on the shared server would include other tests' schedules.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.schedules import Action, describe
from scheduler.config import Settings
from scheduler.flow.attributes import CAMPAIGN_SHA256
from tests.helpers.campaigns import BROKEN_LINE
from tests.helpers.cli import Run, scheduler
from tests.helpers.schedules import Campaigns, changes_of, create_foreign_schedule, own_campaigns, wait_listed
from tests.helpers.servers import local_environment


@dataclass
class Cli:
    c: Campaigns
    config: Path

    async def __call__(self, *args: str) -> Run:
        """`scheduler <args> --config <this test's config>`, run from the config's directory."""
        return await scheduler(*args, "--config", self.config, cwd=self.config.parent)


def write_config(path: Path, *, client: Client, settings: Settings) -> Path:
    path.write_text(
        f"""\
[temporal]
address = "{client.service_client.config.target_host}"
task_queue = "{settings.temporal.task_queue}"

[campaigns]
dir = "{settings.campaigns.dir}"

[channels]
outbox = "{settings.channels.outbox}"
""",
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def cli_for(client: Client, settings: Settings, task_queue: str, tmp_path: Path) -> AsyncIterator[Cli]:
    async with own_campaigns(client, settings, task_queue, tmp_path) as c:
        yield Cli(c, write_config(tmp_path / "scheduler.toml", client=client, settings=settings))


@pytest_asyncio.fixture
async def cli(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path) -> AsyncIterator[Cli]:
    async with cli_for(dev_env.client, settings, task_queue, tmp_path) as cli:
        yield cli


def assert_clean(run: Run) -> None:
    assert "Traceback" not in run.stderr, run.stderr


async def test_plan_apply_plan_exit_codes_and_output(cli: Cli) -> None:
    c = cli.c
    c.write("a")

    planned = await cli("plan")
    assert planned.code == 2, planned
    assert planned.stdout.splitlines() == [f"create {c.id('a')}", "plan: 1 create"]
    assert await describe(c.client, c.sid("a")) is None

    applied = await cli("apply")
    assert applied.code == 0, applied
    assert applied.stdout.splitlines() == [f"create {c.id('a')}", "applied: 1 create"]
    d = await c.describe("a")
    assert d.typed_search_attributes.get(CAMPAIGN_SHA256) == c.sha("a")
    assert await d.memo() == {"managed_by": "scheduler", "source": str(c.path("a"))}

    again = await cli("plan")
    assert again.code == 0, again
    assert again.stdout.splitlines() == [f"unchanged {c.id('a')}", "plan: 1 unchanged"]
    assert_clean(again)


async def test_plan_json_prints_only_the_changes(cli: Cli) -> None:
    c = cli.c
    c.write("old")
    await c.sync()
    c.write("new")

    planned = await cli("plan", "--json")

    assert planned.code == 2, planned
    assert planned.stdout.count("\n") == 1
    assert json.loads(planned.stdout) == [
        {"action": "create", "campaign_id": c.id("new")},
        {"action": "unchanged", "campaign_id": c.id("old")},
    ]


async def test_plan_and_apply_broken_file_exit_1_and_change_nothing(cli: Cli) -> None:
    c = cli.c
    c.write("a", cron=["0 9 * * *"])
    await c.sync()
    sha = c.sha("a")
    c.write("a", cron=["0 10 * * *"])
    c.write("b")
    c.write_broken("broken")
    expected = f"campaigns/broken.toml:{BROKEN_LINE}: workflow.steps.a.node: unknown node 'nope'"

    planned, applied = await asyncio.gather(cli("plan"), cli("apply"))

    for run in (planned, applied):
        assert run.code == 1, run
        assert run.stdout == ""
        assert_clean(run)
        lines = run.stderr.splitlines()
        assert lines[0].startswith(expected), run.stderr
        assert lines[-1] == "1 error(s): nothing was changed"
    assert (await c.describe("a")).typed_search_attributes.get(CAMPAIGN_SHA256) == sha
    assert await describe(c.client, c.sid("b")) is None


async def test_status_table_one_campaign_and_unknown(cli: Cli) -> None:
    c = cli.c
    c.write("on", cron=["0 9 * * *", "30 17 * * 5"], timezone="Europe/Berlin")
    c.write("off", enabled=False)
    await c.sync()
    await wait_listed(c.client, c.sid("on"), c.sid("off"))

    everything, one, unknown = await asyncio.gather(cli("status"), cli("status", c.id("on")), cli("status", c.id("no")))

    assert everything.code == 0, everything
    lines = everything.stdout.splitlines()
    assert lines[0].split()[:3] == ["CAMPAIGN", "STATE", "CRON"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[c.id("on")][1:7] == ["active", "0", "9", "*", "*", "*"]
    assert "Europe/Berlin" in rows[c.id("on")]
    assert rows[c.id("off")][1] == "paused"
    assert f"{c.id('off')}: disabled in off.toml: enabled = false" in lines

    assert one.code == 0, one
    rows = one.stdout.splitlines()
    assert rows[0].startswith("CAMPAIGN")
    assert [r.split()[:2] for r in rows[1:]] == [[c.id("on"), "active"]]

    assert unknown.code == 1, unknown
    assert unknown.stdout == ""
    assert unknown.stderr.splitlines() == [f"error: no schedule for campaign {c.id('no')!r}"]


async def test_status_lists_campaign_files_that_do_not_load(cli: Cli) -> None:
    c = cli.c
    c.write("on")
    await c.sync()
    await wait_listed(c.client, c.sid("on"))
    broken = c.write_broken("broken")

    run = await cli("status")

    assert run.code == 0, run
    assert_clean(run)
    lines = run.stdout.splitlines()
    assert lines[1].split()[:2] == [c.id("on"), "active"]
    heading = lines.index("1 error(s) in campaign files (their schedules keep their last good state):")
    where = broken.relative_to(cli.config.parent)
    assert lines[heading + 1].startswith(f"  {where}:{BROKEN_LINE}: workflow.steps.a.node: unknown node 'nope'")


async def test_apply_prune_deletes_schedule_whose_file_is_gone(
    settings: Settings, task_queue: str, tmp_path: Path
) -> None:
    env = await local_environment()
    try:
        async with cli_for(env.client, settings, task_queue, tmp_path) as cli:
            c = cli.c
            c.write("kept")
            c.write("gone")
            assert changes_of(await c.sync()) == [(Action.CREATE, c.id("gone")), (Action.CREATE, c.id("kept"))]
            c.owned.add(c.sid("foreign"))
            await create_foreign_schedule(c.client, c.sid("foreign"))
            await wait_listed(c.client, c.sid("kept"), c.sid("gone"), c.sid("foreign"))
            c.path("gone").unlink()

            without = await cli("plan")
            assert without.code == 0, without
            assert without.stdout.splitlines() == [f"unchanged {c.id('kept')}", "plan: 1 unchanged"]
            planned = await cli("plan", "--prune")
            assert planned.code == 2, planned
            assert planned.stdout.splitlines() == [
                f"delete {c.id('gone')}",
                f"unchanged {c.id('kept')}",
                "plan: 1 delete, 1 unchanged",
            ]
            applied = await cli("apply", "--prune")
            assert applied.code == 0, applied
            assert applied.stdout.splitlines() == [
                f"delete {c.id('gone')}",
                f"unchanged {c.id('kept')}",
                "applied: 1 delete, 1 unchanged",
            ]

            assert await describe(c.client, c.sid("gone")) is None
            assert await describe(c.client, c.sid("kept")) is not None
            assert await describe(c.client, c.sid("foreign")) is not None
    finally:
        await env.shutdown()
