"""Campaign files ↔ Temporal Schedules: `sync` (plan + apply) against the real dev server, read back with `describe`.

The dev server is shared by the session and by every test, so each test uses campaign ids of its own
(a fresh prefix), its own campaigns directory and task queue, prunes only its own ids, and deletes
its schedules when it ends. The helpers for this are in `tests.helpers.schedules`, shared with
test_reconcile, test_schedules_api and test_plan_cli.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy, WorkflowExecutionStatus

from scheduler.campaigns.schedules import Action, describe
from scheduler.errors import UnmanagedSchedule
from scheduler.flow.attributes import CAMPAIGN_ID, CAMPAIGN_SHA256
from scheduler.worker import make_worker
from tests.helpers.campaigns import BROKEN_LINE
from tests.helpers.schedules import (
    BERLIN,
    Campaigns,
    changes_of,
    create_foreign_schedule,
    listed_sha_is,
    sha_is,
    terminate_flows,
    wait_listed,
)
from tests.helpers.waiting import eventually


def _ranges(ranges: Iterable[Any]) -> list[tuple[int, int, int]]:
    return [(r.start, r.end, r.step) for r in ranges]


async def test_apply_creates_schedules_as_temporal_reports_them(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("berlin", cron=["0 9 * * *"], timezone="Europe/Berlin", overlap="buffer_one", catchup_window="10m")
    c.write(
        "york",
        cron=["*/15 * * * *", "30 18 * * 1-5"],
        timezone="America/New_York",
        jitter="30s",
        overlap="allow_all",
        catchup_window="1h",
        start_at="2030-01-01T00:00:00",
        end_at="2031-01-01T00:00:00",
    )
    c.write("off", cron=["0 0 1 * *"], enabled=False)

    outcome = await c.sync()

    assert outcome.problems == []
    assert changes_of(outcome) == [(Action.CREATE, c.id(n)) for n in ("berlin", "off", "york")]
    for name in ("berlin", "york", "off"):
        d = await c.describe(name)
        assert d.id == f"campaign-{c.id(name)}"
        assert await d.memo() == {"managed_by": "scheduler", "source": str(c.path(name))}
        assert d.typed_search_attributes.get(CAMPAIGN_SHA256) == c.sha(name)
        action = d.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "CampaignRunWorkflow"
        assert action.task_queue == c.settings.temporal.task_queue
        assert action.id == f"campaign-run-{c.id(name)}"
        assert action.typed_search_attributes.get(CAMPAIGN_ID) == c.id(name)
        assert d.schedule.spec.cron_expressions == []  # the server keeps calendars, not our strings

    berlin = await c.describe("berlin")
    spec = berlin.schedule.spec
    assert spec.time_zone_name == "Europe/Berlin"
    assert not spec.jitter
    assert (spec.start_at, spec.end_at) == (None, None)
    (calendar,) = spec.calendars
    assert (_ranges(calendar.hour), _ranges(calendar.minute)) == ([(9, 9, 1)], [(0, 0, 1)])
    assert berlin.schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE
    assert berlin.schedule.policy.catchup_window == timedelta(minutes=10)
    assert not berlin.schedule.state.paused
    local = [t.astimezone(BERLIN) for t in berlin.info.next_action_times]
    assert len(local) >= 3
    assert {(t.hour, t.minute, t.second, t.microsecond) for t in local} == {(9, 0, 0, 0)}
    assert [t.date() for t in local[:3]] == [local[0].date() + timedelta(days=i) for i in range(3)]
    now = datetime.now(UTC)
    assert now < local[0] <= now + timedelta(days=1)

    york = await c.describe("york")
    spec = york.schedule.spec
    assert spec.time_zone_name == "America/New_York"
    assert spec.jitter == timedelta(seconds=30)
    # Local TOML datetimes are read in the campaign's timezone (EST is UTC-5).
    start, end = datetime(2030, 1, 1, 5, tzinfo=UTC), datetime(2031, 1, 1, 5, tzinfo=UTC)
    assert (spec.start_at, spec.end_at) == (start, end)
    assert [(_ranges(cal.minute), _ranges(cal.hour), _ranges(cal.day_of_week)) for cal in spec.calendars] == [
        ([(0, 59, 15)], [(0, 23, 1)], [(0, 6, 1)]),
        ([(30, 30, 1)], [(18, 18, 1)], [(1, 5, 1)]),
    ]
    assert york.schedule.policy.overlap == ScheduleOverlapPolicy.ALLOW_ALL
    assert york.schedule.policy.catchup_window == timedelta(hours=1)
    assert not york.schedule.state.paused
    assert start <= york.info.next_action_times[0] <= start + timedelta(seconds=30)
    assert all(start <= t < end for t in york.info.next_action_times)

    off = await c.describe("off")
    assert off.schedule.state.paused
    assert "enabled = false" in (off.schedule.state.note or "")
    assert off.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert off.schedule.policy.catchup_window == timedelta(minutes=1)


async def test_apply_twice_is_unchanged(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a")
    c.write("b", cron=["0 9 * * 1", "0 17 * * 5"], timezone="Europe/Berlin", enabled=False)
    await c.sync()
    updated = {n: (await c.describe(n)).info.last_updated_at for n in ("a", "b")}
    unchanged = [(Action.UNCHANGED, c.id("a")), (Action.UNCHANGED, c.id("b"))]

    # Right after the first apply, before visibility has caught up with the new schedules.
    assert changes_of(await c.sync(dry_run=True)) == unchanged
    again = await c.sync()
    assert changes_of(again) == unchanged
    assert again.pending == []

    async def visible_with_sha() -> None:
        shas = {e.id: e.typed_search_attributes.get(CAMPAIGN_SHA256) async for e in await c.client.list_schedules()}
        assert {n: shas.get(c.sid(n)) for n in ("a", "b")} == {n: c.sha(n) for n in ("a", "b")}

    await eventually(visible_with_sha)
    assert changes_of(await c.sync()) == unchanged
    assert {n: (await c.describe(n)).info.last_updated_at for n in ("a", "b")} == updated


async def test_plan_right_after_update_is_unchanged(campaigns: Campaigns) -> None:
    c = campaigns
    names = ("a", "b", "c")
    for name in names:
        c.write(name)
    await c.sync()
    # Each round changes the cron and flips `enabled`, then plans at once: the search attribute the
    # update set may not show yet, but the schedule already runs the new file.
    for minute in range(1, 5):
        for name in names:
            c.write(name, cron=[f"{minute} 9 * * *"], enabled=minute % 2 == 0)
        assert changes_of(await c.sync()) == [(Action.UPDATE, c.id(n)) for n in names]
        assert changes_of(await c.sync(dry_run=True)) == [(Action.UNCHANGED, c.id(n)) for n in names]


async def test_plan_edit_undone_right_after_apply_is_update(campaigns: Campaigns) -> None:
    c = campaigns
    for round_ in range(3):
        c.write("a", cron=["0 9 * * *"])
        await c.sync()
        first = c.sha("a")
        await eventually(lambda: listed_sha_is(c, "a", first))  # noqa: B023
        c.write("a", cron=[f"{round_} 10 * * *"])
        assert changes_of(await c.sync()) == [(Action.UPDATE, c.id("a"))]
        # Undone at once: the list may still show the first file's hash, but the schedule runs the second.
        c.write("a", cron=["0 9 * * *"])
        assert changes_of(await c.sync(dry_run=True)) == [(Action.UPDATE, c.id("a"))]


async def test_apply_cron_edit_updates_and_comment_edit_is_unchanged(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a", cron=["0 9 * * *"])
    await c.sync()
    old_sha = c.sha("a")

    path = c.write("a", cron=["15 10 * * *"])
    assert changes_of(await c.sync(dry_run=True)) == [(Action.UPDATE, c.id("a"))]
    assert changes_of(await c.sync()) == [(Action.UPDATE, c.id("a"))]

    d = await c.describe("a")
    (calendar,) = d.schedule.spec.calendars
    assert (_ranges(calendar.hour), _ranges(calendar.minute)) == ([(10, 10, 1)], [(15, 15, 1)])
    assert d.info.next_action_times
    assert all((t.hour, t.minute) == (10, 15) for t in d.info.next_action_times)
    assert c.sha("a") != old_sha
    await eventually(lambda: sha_is(c, "a", c.sha("a")))

    # Comments and formatting are not content.
    text = path.read_text(encoding="utf-8").replace("[schedule]", "# tuned after the spring sale\n[schedule]  ")
    path.write_text(text.replace('timezone = "UTC"', 'timezone    =    "UTC"  # same zone'), encoding="utf-8")
    assert changes_of(await c.sync()) == [(Action.UNCHANGED, c.id("a"))]
    assert (await c.describe("a")).info.last_updated_at == d.info.last_updated_at


async def test_apply_enabled_toggle_pauses_and_unpauses(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a")
    await c.sync()
    assert not (await c.describe("a")).schedule.state.paused

    c.write("a", enabled=False)
    assert changes_of(await c.sync(dry_run=True)) == [(Action.PAUSE, c.id("a"))]
    await c.sync()
    state = (await c.describe("a")).schedule.state
    assert state.paused
    assert "enabled = false" in (state.note or "")
    await eventually(lambda: sha_is(c, "a", c.sha("a")))

    c.write("a", enabled=True)
    assert changes_of(await c.sync(dry_run=True)) == [(Action.UNPAUSE, c.id("a"))]
    await c.sync()
    assert not (await c.describe("a")).schedule.state.paused


async def test_prune_deletes_managed_schedule_whose_file_is_gone(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a")
    c.write("b")
    await c.sync()
    await wait_listed(c.client, c.sid("a"), c.sid("b"))

    c.path("a").unlink()
    assert changes_of(await c.sync(dry_run=True, prune=["a"])) == [
        (Action.DELETE, c.id("a")),
        (Action.UNCHANGED, c.id("b")),
    ]
    # Without prune a schedule without a file is left alone.
    assert changes_of(await c.sync(dry_run=True)) == [(Action.UNCHANGED, c.id("b"))]
    await c.sync(prune=["a"])

    assert await describe(c.client, c.sid("a")) is None
    assert await describe(c.client, c.sid("b")) is not None


async def test_prune_never_deletes_unmanaged_schedule(campaigns: Campaigns) -> None:
    c = campaigns
    c.owned.add(c.sid("foreign"))
    await create_foreign_schedule(c.client, c.sid("foreign"))
    c.write("a")
    await c.sync()
    await wait_listed(c.client, c.sid("foreign"))

    outcome = await c.sync(prune=["foreign", "a"])

    assert changes_of(outcome) == [(Action.UNCHANGED, c.id("a"))]
    d = await c.describe("foreign")
    assert d.schedule.state.note == "made by hand"


async def test_plan_campaign_named_like_unmanaged_schedule_raises(campaigns: Campaigns) -> None:
    c = campaigns
    c.owned.add(c.sid("foreign"))
    await create_foreign_schedule(c.client, c.sid("foreign"))
    c.write("foreign")

    with pytest.raises(UnmanagedSchedule, match=f"'{c.sid('foreign')}'"):
        await c.sync(dry_run=True)
    with pytest.raises(UnmanagedSchedule):
        await c.sync()
    d = await c.describe("foreign")
    assert isinstance(d.schedule.action, ScheduleActionStartWorkflow)
    assert d.schedule.action.workflow == "SomeoneElsesWorkflow"


async def test_sync_broken_file_changes_nothing(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a", cron=["0 9 * * *"])
    c.write("b")
    await c.sync()
    sha_a = c.sha("a")

    c.write("a", cron=["0 11 * * *"])
    c.path("b").unlink()
    broken = c.write_broken("broken")

    for dry_run in (True, False):
        outcome = await c.sync(dry_run=dry_run, prune=["b"])
        assert outcome.changes == []
        (error,) = outcome.errors
        assert (Path(error.path), error.line, error.key) == (broken, BROKEN_LINE, "workflow.steps.a.node")
        assert "unknown node 'nope'" in error.message

    d = await c.describe("a")
    assert d.typed_search_attributes.get(CAMPAIGN_SHA256) == sha_a
    assert [_ranges(cal.hour) for cal in d.schedule.spec.calendars] == [[(9, 9, 1)]]
    assert await describe(c.client, c.sid("b")) is not None
    assert await describe(c.client, c.sid("broken")) is None


async def test_apply_keeps_hand_pause_until_file_changes(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a")
    await c.sync()
    await c.writer.set_paused(c.id("a"), paused=True, note="paused by hand for the outage")

    assert changes_of(await c.sync()) == [(Action.UNCHANGED, c.id("a"))]
    state = (await c.describe("a")).schedule.state
    assert (state.paused, state.note) == (True, "paused by hand for the outage")

    # The file changed: its `enabled = true` wins over the pause made by hand.
    c.write("a", cron=["0 12 * * *"])
    assert changes_of(await c.sync()) == [(Action.UPDATE, c.id("a"))]
    assert not (await c.describe("a")).schedule.state.paused


async def test_trigger_runs_campaign_run_that_starts_one_flow(campaigns: Campaigns) -> None:
    c = campaigns
    c.write("a")
    await c.sync()
    client = c.client
    async with make_worker(client, c.settings):
        try:
            await client.get_schedule_handle(c.sid("a")).trigger()

            async def run_completed() -> str:
                recent = (await c.describe("a")).info.recent_actions
                assert len(recent) == 1
                run_id = getattr(recent[0].action, "workflow_id", "")
                assert run_id.startswith(f"campaign-run-{c.id('a')}-")
                assert (await client.get_workflow_handle(run_id).describe()).status == WorkflowExecutionStatus.COMPLETED
                return run_id

            run_id = await eventually(run_completed)
            run = await client.get_workflow_handle(run_id).describe()
            assert run.workflow_type == "CampaignRunWorkflow"
            assert (await run.memo())["started"] == 1
            assert run.typed_search_attributes.get(CAMPAIGN_ID) == c.id("a")

            async def one_flow() -> list[Any]:
                query = f"WorkflowType = 'AbandonedCartWorkflow' AND CampaignId = '{c.id('a')}'"
                flows = [w async for w in client.list_workflows(query)]
                assert len(flows) == 1
                return flows

            (flow,) = await eventually(one_flow)
            assert flow.id.startswith(f"{c.id('a')}-")
            assert flow.typed_search_attributes.get(CAMPAIGN_ID) == c.id("a")
            assert flow.task_queue == c.settings.temporal.task_queue
        finally:
            await terminate_flows(client, c.id("a"))
