"""What `GET /schedules` and `scheduler status` show: each managed schedule's state, next and recent runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client, ScheduleDescription

from scheduler.campaigns.campaign import Campaign, is_campaign_id
from scheduler.campaigns.schedules import (
    MANAGED_BY,
    applied_campaign,
    campaign_id_of,
    describe,
    list_schedules,
    schedule_id,
)
from scheduler.errors import first_line
from scheduler.flow.models import StartCounts
from scheduler.flow.workflows import CAMPAIGN_RUN_TYPE
from scheduler.store.ledger import Ledger
from scheduler.visibility import campaign_query, running_query

log = logging.getLogger(__name__)


class RunStatus(StartCounts):
    """A run as its schedule and its memo (`CampaignRunResult` without the flow ids and reasons) tell it."""

    workflow_id: str
    scheduled_at: datetime
    status: str
    """Running, Completed, Failed, … as Temporal reports the run."""
    window: dict[str, datetime] | None = None
    """The audience time span the run covered: {since, until}."""
    messages: dict[str, int] = Field(default_factory=dict)
    """Messages of the run's flows held or not sent by policy so far, by what happened: `held`,
    `skipped_quiet_hours`, `skipped_frequency_cap` (counted as they happen, after the run itself ended)."""


class ScheduleStatus(BaseModel):
    campaign_id: str
    schedule_id: str
    cron: list[str]
    timezone: str
    paused: bool
    note: str
    next_runs: list[datetime]
    recent_runs: list[RunStatus]
    running_flows: int
    definition_version: str | None
    source: str | None


async def list_managed(client: Client) -> list[str]:
    """Ids of the campaigns whose schedule this tool manages."""
    return sorted(campaign_id_of(sid) for sid, entry in (await list_schedules(client)).items() if entry.managed)


async def managed_schedule(client: Client, campaign_id: str) -> tuple[ScheduleDescription, Mapping[str, Any]] | None:
    """The campaign's schedule and its memo; None if there is none, or it is not one this tool manages."""
    description = await describe(client, schedule_id(campaign_id))
    if description is None or (memo := await description.memo()).get("managed_by") != MANAGED_BY:
        return None
    return description, memo


async def campaign_applied(client: Client, campaign_id: str) -> Campaign | None:
    """The campaign its schedule runs (as `apply` last wrote it); None without a schedule of ours, or for a string
    that is no campaign id."""
    managed = await managed_schedule(client, campaign_id) if is_campaign_id(campaign_id) else None
    return await applied_campaign(client, managed[0]) if managed else None


async def schedule_statuses(
    client: Client, ids: Sequence[str] | None = None, *, ledger: Ledger | None = None
) -> list[ScheduleStatus | None]:
    """`schedule_status` of each campaign id (None: every managed schedule), concurrently."""
    if ids is None:
        ids = await list_managed(client)
    return list(await asyncio.gather(*(schedule_status(client, cid, ledger=ledger) for cid in ids)))


async def schedule_status(client: Client, campaign_id: str, *, ledger: Ledger | None = None) -> ScheduleStatus | None:
    """A managed schedule's state, next and recent runs, and running flows; None if there is none.

    `ledger`: where the runs' held and skipped messages are counted (None: not shown)."""
    if (managed := await managed_schedule(client, campaign_id)) is None:
        return None
    description, memo = managed
    campaign = await applied_campaign(client, description)
    runs, running = await asyncio.gather(
        _runs_by_id(client, campaign_id),
        client.count_workflows(running_query(campaign_id)),
    )
    recent = []
    for action in reversed(description.info.recent_actions):  # newest first
        workflow_id = getattr(action.action, "workflow_id", "")
        status, run_memo = runs.get(workflow_id, ("Running", {}))  # visibility lags just-started runs
        recent.append(
            RunStatus.model_validate(
                {**run_memo, "workflow_id": workflow_id, "scheduled_at": action.scheduled_at, "status": status}
            )
        )
    if ledger is not None and recent:
        try:
            counts = await asyncio.to_thread(ledger.run_messages, [run.workflow_id for run in recent])
        except SQLAlchemyError as exc:  # the schedule's own status still stands
            log.warning("runs of %s without their message counts: %s", campaign_id, first_line(exc))
            counts = {}
        for run in recent:
            run.messages = counts.get(run.workflow_id, {})
    state = description.schedule.state
    schedule = campaign.schedule if campaign else None
    return ScheduleStatus(
        campaign_id=campaign_id,
        schedule_id=description.id,
        cron=list(schedule.cron) if schedule else [],
        timezone=schedule.timezone if schedule else "",
        paused=state.paused,
        note=state.note or "",
        next_runs=list(description.info.next_action_times),
        recent_runs=recent,
        running_flows=running.count,
        definition_version=campaign.workflow.version if campaign else None,
        source=memo.get("source") or None,
    )


async def _runs_by_id(client: Client, campaign_id: str) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """Status and memo (counts and window) of the campaign's recent runs, from one visibility query."""
    out: dict[str, tuple[str, Mapping[str, Any]]] = {}
    async for execution in client.list_workflows(campaign_query(campaign_id, CAMPAIGN_RUN_TYPE), limit=20):
        status = execution.status.name.title().replace("_", "") if execution.status else "Unknown"
        out[execution.id] = (status, await execution.memo())
    return out
