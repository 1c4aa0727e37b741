"""Keeping Temporal in step with the campaigns directory: `plan`/`apply` once, or on a timer in `scheduler up`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from temporalio.client import Client

from scheduler.campaigns.campaign import Campaign, key_line, load_campaign_dir, shown_path
from scheduler.campaigns.diff import campaign_diff
from scheduler.campaigns.schedules import Action, Change, ScheduleWriter, campaign_id_of
from scheduler.campaigns.stop import pruned_note
from scheduler.config import Settings
from scheduler.errors import ApplyFailed, UnmanagedSchedule
from scheduler.problems import Problem

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    changes: list[Change] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != Action.UNCHANGED]


async def load_campaigns(settings: Settings) -> tuple[dict[str, Campaign], list[Problem]]:
    """`load_campaign_dir` in a thread: parsing a big file takes a second, which the event loop (the API,
    the worker's flows) must not wait for."""
    return await asyncio.to_thread(load_campaign_dir, settings.campaigns.dir)


async def sync(
    client: Client,
    settings: Settings,
    *,
    prune: bool | Collection[str] = False,
    dry_run: bool = False,
    schedules: ScheduleWriter | None = None,
) -> SyncResult:
    """`plan` (dry_run) or `apply`: all or nothing, so a broken file changes no schedule.

    `prune`: as for `plan` (True: every managed schedule without a file; a collection: those campaign ids).
    `schedules`: the writer of earlier syncs of this process, if any (it remembers what they applied).
    """
    campaigns, problems = await load_campaigns(settings)
    result = SyncResult(problems=problems)
    if result.errors:
        return result
    schedules = schedules or ScheduleWriter(client, settings)
    result.changes = await schedules.plan(campaigns.values(), prune=prune)
    if not dry_run:
        await schedules.apply(result.changes)
    return result


class Reconciler:
    """The loop of `scheduler up`: apply the directory at start and every `campaigns.reconcile_every`.

    Unlike `apply`, a broken file does not hold back the others: the valid campaigns are applied,
    the broken file's schedule keeps its last good state, and nothing is pruned until every file
    loads again. Only campaigns this process loaded before are pruned when their file goes.
    """

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.schedules = ScheduleWriter(client, settings)
        """Its changes, and the API's pauses in the same process, go through this (see `ScheduleWriter`)."""
        self.loaded: set[str] = set()
        self.last: SyncResult | None = None
        self._logged: set[Problem] = set()
        """The errors logged so far: each is logged once, when it appears, not on every tick."""
        self._scheduler: AsyncIOScheduler | None = None

    async def run_once(self) -> SyncResult:
        campaigns, problems = await load_campaigns(self.settings)
        result = SyncResult(problems=problems)
        prune = set() if result.errors else self.loaded - set(campaigns)
        try:
            result.changes = await self._plan(campaigns, prune, result)
            try:
                await self.schedules.apply(result.changes)
            except ApplyFailed as exc:  # those campaigns' problems: the others were applied
                result.problems += [
                    _problem(campaigns.get(cid), f"Temporal refused: {e}") for cid, e in exc.failures.items()
                ]
        except Exception as exc:
            failure = Problem(str(self.settings.campaigns.dir), 0, "", f"reconcile failed: {exc}")
            if failure not in self._logged:  # with its traceback, once
                log.exception("reconcile failed")
                self._logged.add(failure)
            result.problems.append(failure)
        else:
            self.loaded |= set(campaigns)
            for change in result.pending:
                log.info("reconcile: %s", change)
                if change.action == Action.UPDATE:
                    for line in _diff_lines(change):
                        log.info("reconcile: %s: %s", change.campaign_id, line)
                if change.action == Action.DELETE and (note := await pruned_note(self.client, change.campaign_id)):
                    log.info("reconcile: %s", note)
        self._log_changes(result.errors)
        self.last = result
        return result

    def _log_changes(self, errors: list[Problem]) -> None:
        """Log an error when it appears and when it is gone, not on every tick: the loop runs every few seconds."""
        for p in errors:
            if p not in self._logged:
                log.error("reconcile: %s (the schedule keeps its last good state)", p)
        for p in self._logged.difference(errors):
            log.info("reconcile: fixed: %s", p)
        self._logged = set(errors)

    async def _plan(self, campaigns: dict[str, Campaign], prune: set[str], result: SyncResult) -> list[Change]:
        """`plan`, leaving out a campaign whose schedule id someone else uses (a problem of its file).

        Like a broken file, such a campaign must not hold back the others.
        """
        unmanaged: list[UnmanagedSchedule] = []
        changes = await self.schedules.plan(campaigns.values(), prune=prune, unmanaged=unmanaged)
        for exc in unmanaged:
            result.problems.append(_problem(campaigns.pop(campaign_id_of(exc.schedule_id)), str(exc)))
        return changes

    def start(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.settings.campaigns.reconcile_every.total_seconds(),
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            id="reconcile",
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None


MAX_LOGGED_DIFF = 20
"""Lines of an update's diff the reconcile loop logs; the rest are counted (`plan` shows them all)."""


def _diff_lines(change: Change) -> list[str]:
    """An update's change in words, as the reconcile loop logs it (`scheduler.campaigns.diff`)."""
    if change.previous is None or change.campaign is None:
        return []
    lines = [entry.text for entry in campaign_diff(change.previous, change.campaign)]
    if len(lines) > MAX_LOGGED_DIFF:
        lines = [*lines[: MAX_LOGGED_DIFF - 1], f"…and {len(lines) - MAX_LOGGED_DIFF + 1} more changes"]
    return lines


def _problem(campaign: Campaign | None, message: str) -> Problem:
    """A problem of a campaign that loaded but could not be applied, placed at its `campaign.id`."""
    source = campaign.source if campaign else None
    if source is None:
        return Problem("", 0, "campaign.id", message)
    return Problem(shown_path(source), key_line(source, ("campaign", "id")), "campaign.id", message)
