"""Campaign ↔ Temporal Schedule: the spec a campaign becomes, and planning and applying changes (`ScheduleWriter`).

Change detection reads the search attribute `CampaignSha256` of every schedule from one
`list_schedules` call (the server rewrites cron strings and never updates a schedule's memo, so
comparing specs or memos cannot work). Visibility lags, so a schedule the list shows as missing or
stale is confirmed with `describe` before anything is changed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from scheduler.campaigns.campaign import Campaign, CampaignSchedule
from scheduler.campaigns.cron import aware
from scheduler.config import Settings
from scheduler.errors import ApplyFailed, SchedulerError, UnmanagedSchedule
from scheduler.flow.attributes import CAMPAIGN_ID, CAMPAIGN_SHA256
from scheduler.flow.models import CampaignRunInput
from scheduler.flow.workflows import CampaignRunWorkflow

MANAGED_BY = "scheduler"
"""Memo `managed_by` of the schedules this tool creates; `--prune` never touches others."""
APPLY_CONCURRENCY = 8

_OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    DELETE = "delete"


@dataclass(frozen=True)
class Change:
    action: Action
    campaign_id: str
    campaign: Campaign | None = None
    """The campaign to apply; None for a delete."""
    previous: Campaign | None = None
    """The campaign the schedule ran until now (an update, pause or unpause), when its input decodes as one: what
    `plan` and `apply` compare the file with (`scheduler.campaigns.review`)."""

    @property
    def schedule_id(self) -> str:
        return schedule_id(self.campaign_id)

    def __str__(self) -> str:
        return f"{self.action} {self.campaign_id}"


SCHEDULE_ID_PREFIX = "campaign-"
"""A campaign's schedule id is this and the campaign id; the list of schedules is filtered on it."""
RUN_ID_PREFIX = "campaign-run-"
"""A run's workflow id is this, the campaign id and the time Temporal appends."""


def schedule_id(campaign_id: str) -> str:
    return SCHEDULE_ID_PREFIX + campaign_id


def campaign_id_of(sid: str) -> str:
    return sid.removeprefix(SCHEDULE_ID_PREFIX)


def schedule_spec(schedule: CampaignSchedule) -> ScheduleSpec:
    """The Temporal spec of a campaign's `[schedule]` (cron strings as written; the server parses them)."""
    start_at, end_at = aware(schedule.start_at, schedule.timezone), aware(schedule.end_at, schedule.timezone)
    return ScheduleSpec(
        cron_expressions=list(schedule.cron),
        time_zone_name=schedule.timezone,
        jitter=schedule.jitter or None,
        start_at=start_at.astimezone(UTC) if start_at else None,
        end_at=end_at.astimezone(UTC) if end_at else None,
    )


def disabled_note(campaign: Campaign) -> str:
    return f"disabled in {campaign.source.name if campaign.source else 'its campaign file'}: enabled = false"


def build_schedule(campaign: Campaign, settings: Settings) -> Schedule:
    """The whole schedule of a campaign: spec, policies, paused state, and the run it starts."""
    schedule = campaign.schedule
    if schedule is None:
        raise SchedulerError(f"campaign {campaign.id!r} has no [schedule]")
    return Schedule(
        action=ScheduleActionStartWorkflow(
            CampaignRunWorkflow.run,
            CampaignRunInput(campaign=campaign),
            id=RUN_ID_PREFIX + campaign.id,
            task_queue=settings.temporal.task_queue,
            typed_search_attributes=TypedSearchAttributes([SearchAttributePair(CAMPAIGN_ID, campaign.id)]),
        ),
        spec=schedule_spec(schedule),
        policy=SchedulePolicy(overlap=_OVERLAP[schedule.overlap], catchup_window=schedule.catchup_window),
        state=ScheduleState(
            paused=not campaign.campaign.enabled,
            note="" if campaign.campaign.enabled else disabled_note(campaign),
        ),
    )


def _sha_attributes(campaign: Campaign) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(CAMPAIGN_SHA256, campaign.sha256)])


# Plan


@dataclass(frozen=True)
class Listed:
    sha: str | None
    managed: bool


async def list_schedules(client: Client) -> dict[str, Listed]:
    """Our schedules by id, from one list call (memo and search attributes come with each entry)."""
    listed: dict[str, Listed] = {}
    async for entry in await client.list_schedules():
        if not entry.id.startswith(SCHEDULE_ID_PREFIX):
            continue
        memo = await entry.memo()
        listed[entry.id] = Listed(
            entry.typed_search_attributes.get(CAMPAIGN_SHA256), memo.get("managed_by") == MANAGED_BY
        )
    return listed


async def describe(client: Client, sid: str) -> ScheduleDescription | None:
    try:
        return await client.get_schedule_handle(sid).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def applied_campaign(client: Client, description: ScheduleDescription) -> Campaign | None:
    """The campaign a schedule runs, decoded from its action's input."""
    action = description.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not action.args:
        return None
    try:
        (run,) = await client.data_converter.decode(action.args, [CampaignRunInput])  # type: ignore[arg-type]
        return Campaign.model_validate(run.campaign.model_dump(mode="json"))
    except Exception:
        return None  # not ours, or an older shape: treat as changed


def _without_enabled(campaign: Campaign) -> dict[str, Any]:
    data = campaign.model_dump(mode="json")
    data["campaign"].pop("enabled")
    return data


class ScheduleWriter:
    """Plans and makes the changes to campaign schedules of one process (the reconcile loop, a CLI run, the API).

    It keeps what must be shared by all of that process's changes: a lock per schedule id (the SDK
    ignores the conflict token, so updates to one schedule must not overlap), and the `CampaignSha256`
    it last applied per schedule id (None: deleted). A listed hash that differs may be visibility
    lagging behind our own change, so the list alone must not say "unchanged" (an edit undone within
    the lag would otherwise be skipped).
    """

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._applied: dict[str, str | None] = {}

    async def plan(
        self,
        campaigns: Iterable[Campaign],
        *,
        prune: bool | Collection[str] = False,
        unmanaged: list[UnmanagedSchedule] | None = None,
    ) -> list[Change]:
        """What `apply` would do, one change per campaign (and per schedule to delete), sorted by campaign id.

        `prune`: True deletes every managed schedule without a campaign; a collection limits that to
        those campaign ids (the reconcile loop prunes only campaigns it loaded before).
        `unmanaged`: where a campaign whose schedule id someone else uses goes (it gets no change), so
        it does not hold back the others; without it, such a campaign raises `UnmanagedSchedule`.
        """
        listed = await list_schedules(self.client)
        wanted = {c.id: c for c in campaigns}
        semaphore = asyncio.Semaphore(APPLY_CONCURRENCY)

        async def one(campaign: Campaign) -> Change | None:
            async with semaphore:
                try:
                    return await self._plan_one(campaign, listed.get(schedule_id(campaign.id)))
                except UnmanagedSchedule as exc:
                    if unmanaged is None:
                        raise
                    unmanaged.append(exc)
                    return None

        changes = [c for c in await asyncio.gather(*(one(c) for c in wanted.values())) if c is not None]
        if prune:
            for sid, entry in listed.items():
                cid = campaign_id_of(sid)
                if entry.managed and cid not in wanted and (prune is True or cid in prune):
                    changes.append(Change(Action.DELETE, cid))
        if unmanaged:
            unmanaged.sort(key=lambda exc: exc.schedule_id)
        return sorted(changes, key=lambda c: c.campaign_id)

    async def _plan_one(self, campaign: Campaign, listed: Listed | None) -> Change:
        want = campaign.sha256
        sid = schedule_id(campaign.id)
        if listed is not None and listed.managed and listed.sha == want and self._applied.get(sid, want) == want:
            return Change(Action.UNCHANGED, campaign.id, campaign)
        description = await describe(self.client, sid)  # confirm: the list may lag
        if description is None:
            return Change(Action.CREATE, campaign.id, campaign)
        memo = await description.memo()
        if memo.get("managed_by") != MANAGED_BY:
            raise UnmanagedSchedule(sid)
        # The action's input is the campaign the schedule runs now; `describe` shows an update's search
        # attributes a moment after its action, so the hash there can be stale too.
        old = await applied_campaign(self.client, description)
        current = old.sha256 if old is not None else description.typed_search_attributes.get(CAMPAIGN_SHA256)
        if current == want:
            return Change(Action.UNCHANGED, campaign.id, campaign)
        enabled = campaign.campaign.enabled
        if old is not None and _without_enabled(old) == _without_enabled(campaign):
            return Change(Action.UNPAUSE if enabled else Action.PAUSE, campaign.id, campaign, old)
        return Change(Action.UPDATE, campaign.id, campaign, old)

    async def apply(self, changes: Iterable[Change]) -> list[Change]:
        """Carry out planned changes (concurrently across schedules, serially per schedule).

        Raises:
            ApplyFailed: Temporal refused some changes (e.g. a payload over its size limit); the others are
                carried out all the same, so one campaign never holds back the rest.
        """
        semaphore = asyncio.Semaphore(APPLY_CONCURRENCY)

        async def one(change: Change) -> Change:
            async with semaphore, self._locks[change.schedule_id]:
                await self._apply_one(change)
            return change

        todo = [c for c in changes if c.action != Action.UNCHANGED]
        results = await asyncio.gather(*(one(c) for c in todo), return_exceptions=True)
        failures = {c.campaign_id: r for c, r in zip(todo, results, strict=True) if isinstance(r, Exception)}
        if failures:
            raise ApplyFailed(failures)
        return todo

    async def _apply_one(self, change: Change) -> None:
        handle = self.client.get_schedule_handle(change.schedule_id)
        if change.action == Action.DELETE:
            try:
                await handle.delete()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            self._applied[change.schedule_id] = None
            return
        campaign = change.campaign
        assert campaign is not None
        schedule = build_schedule(campaign, self.settings)
        if change.action == Action.CREATE:
            try:
                await self.client.create_schedule(
                    change.schedule_id,
                    schedule,
                    memo={"managed_by": MANAGED_BY, "source": str(campaign.source or "")},
                    search_attributes=_sha_attributes(campaign),
                )
                self._applied[change.schedule_id] = campaign.sha256
                return
            except ScheduleAlreadyRunningError:
                pass  # created meanwhile (another apply): update it to this file instead

        def updated(_: ScheduleUpdateInput) -> ScheduleUpdate:
            # The file changed, so the file's `enabled` wins over a pause made through the API.
            return ScheduleUpdate(schedule=schedule, search_attributes=_sha_attributes(campaign))

        await handle.update(updated)
        self._applied[change.schedule_id] = campaign.sha256

    async def set_paused(self, campaign_id: str, *, paused: bool, note: str) -> None:
        """Pause or unpause a schedule by hand; reconcile keeps it so until the campaign file changes."""
        handle = self.client.get_schedule_handle(schedule_id(campaign_id))
        async with self._locks[handle.id]:
            await (handle.pause(note=note) if paused else handle.unpause(note=note))
