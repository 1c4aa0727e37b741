"""Campaigns of a test's own on the shared dev server, as Temporal Schedules.

The dev server is shared by the session and by every test, so each test uses campaign ids of its own
(a fresh prefix), its own campaigns directory and task queue, prunes only its own ids, and deletes
its schedules when it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from scheduler.campaigns import schedules
from scheduler.campaigns.campaign import Campaign, load_campaign
from scheduler.campaigns.reconcile import SyncResult, sync
from scheduler.campaigns.schedules import Action, ScheduleWriter
from scheduler.config import Settings
from scheduler.flow.attributes import CAMPAIGN_SHA256
from tests.helpers.campaigns import BROKEN, campaign_toml
from tests.helpers.waiting import eventually

BERLIN = ZoneInfo("Europe/Berlin")


async def delete_schedules(client: Client, sids: Iterable[str]) -> None:
    for sid in sids:
        try:
            await client.get_schedule_handle(sid).delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise


async def terminate_flows(client: Client, campaign_id: str) -> None:
    """Stop whatever a test's campaign left running (flows wait for replies)."""
    async for execution in client.list_workflows(f"CampaignId = '{campaign_id}' AND ExecutionStatus = 'Running'"):
        try:
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate("test cleanup")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise


async def wait_listed(client: Client, *sids: str) -> None:
    """Until `list_schedules` (eventually consistent) shows every one of `sids`."""

    async def check() -> None:
        listed = {entry.id async for entry in await client.list_schedules()}
        assert set(sids) <= listed, set(sids) - listed

    await eventually(check)


async def create_foreign_schedule(client: Client, sid: str) -> None:
    """A schedule someone else made under our naming scheme: no `managed_by` memo."""
    await client.create_schedule(
        sid,
        Schedule(
            action=ScheduleActionStartWorkflow("SomeoneElsesWorkflow", id=f"{sid}-run", task_queue="not-ours"),
            spec=ScheduleSpec(cron_expressions=["0 0 1 1 *"]),
            state=ScheduleState(paused=True, note="made by hand"),
        ),
    )


def changes_of(result: SyncResult | list[schedules.Change]) -> list[tuple[Action, str]]:
    changes = result.changes if isinstance(result, SyncResult) else result
    return [(c.action, c.campaign_id) for c in changes]


@dataclass
class Campaigns:
    """A test's own campaigns directory; `write("a")` makes campaign `<prefix>-a` in `a.toml`."""

    dir: Path
    settings: Settings
    client: Client
    prefix: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")
    owned: set[str] = field(default_factory=set)
    """Schedule ids to delete when the test ends."""
    writer: ScheduleWriter = field(init=False)
    """One for all of the test's syncs, as a long-running process (the reconcile loop) has."""

    def __post_init__(self) -> None:
        self.writer = ScheduleWriter(self.client, self.settings)

    def id(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def sid(self, name: str) -> str:
        return schedules.schedule_id(self.id(name))

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.toml"

    def write(self, name: str, **options: Any) -> Path:
        self.owned.add(self.sid(name))
        path = self.path(name)
        path.write_text(campaign_toml(self.id(name), **options), encoding="utf-8")
        return path

    def write_broken(self, name: str) -> Path:
        path = self.path(name)
        path.write_text(BROKEN.format(cid=self.id(name)), encoding="utf-8")
        return path

    def campaign(self, name: str) -> Campaign:
        campaign, problems = load_campaign(self.path(name))
        assert campaign is not None, problems
        return campaign

    def sha(self, name: str) -> str:
        return self.campaign(name).sha256

    async def sync(self, *, dry_run: bool = False, prune: Iterable[str] = ()) -> SyncResult:
        """`sync` pruning at most the given names of this test (never the whole shared server)."""
        ids = {self.id(n) for n in prune}
        return await sync(self.client, self.settings, dry_run=dry_run, prune=ids, schedules=self.writer)

    async def describe(self, name: str) -> ScheduleDescription:
        return await self.client.get_schedule_handle(self.sid(name)).describe()

    async def run(self, name: str, runs_before: int) -> dict[str, Any]:
        """Trigger the schedule and return the memo of the run it started, once that run completed."""
        await self.client.get_schedule_handle(self.sid(name)).trigger()

        async def completed() -> dict[str, Any]:
            recent = (await self.describe(name)).info.recent_actions
            assert len(recent) == runs_before + 1
            run = await self.client.get_workflow_handle(getattr(recent[-1].action, "workflow_id", "")).describe()
            assert run.status == WorkflowExecutionStatus.COMPLETED
            return dict(await run.memo())

        return await eventually(completed, timeout=60)


@asynccontextmanager
async def own_campaigns(
    client: Client, settings: Settings, task_queue: str, tmp_path: Path
) -> AsyncIterator[Campaigns]:
    """A fresh campaigns directory and task queue in `settings`; the schedules made are deleted at the end."""
    settings.campaigns.dir = tmp_path / "campaigns"
    settings.campaigns.dir.mkdir()
    settings.temporal.task_queue = task_queue
    c = Campaigns(settings.campaigns.dir, settings, client)
    try:
        yield c
    finally:
        await delete_schedules(client, c.owned)


async def sha_is(c: Campaigns, name: str, sha: str) -> None:
    """`describe` shows an update's search attributes a moment after its spec: use with `eventually`."""
    assert (await c.describe(name)).typed_search_attributes.get(CAMPAIGN_SHA256) == sha


async def listed_sha_is(c: Campaigns, name: str, sha: str) -> None:
    """`list_schedules` (visibility) shows `sha` for the campaign: use with `eventually`."""
    shas = {e.id: e.typed_search_attributes.get(CAMPAIGN_SHA256) async for e in await c.client.list_schedules()}
    assert shas.get(c.sid(name)) == sha
