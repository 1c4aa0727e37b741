"""A campaign's emergency stop (`scheduler stop`, `POST /campaigns/{id}/stop`) and `resume`.

A stop, in this order:

1. pauses the campaign's schedule (the note says who and why), so no run starts;
2. cancels the campaign's runs still fanning out and waits until they have closed: their page activity
   stops at its next heartbeat (within about a second, see `scheduler.worker`), so no flow starts after;
3. `cancel` mode: records the stop in the store. From then on no flow of the campaign started before
   it delivers anything: the activities check, right before delivery, as they check the suppression
   list, so this holds whatever the cancellation's progress (a message already handed to its channel may
   still go out). Such a send gives up and its flow ends `stopped`;
4. `cancel` mode: cancels the running flows with one Temporal batch operation over visibility; each
   flow cancels its step and ends `stopped`.

A stop is about the flows started before it: its instant (`Stopped.at`, taken once the runs have closed)
is the one the store records, which the activities compare with each flow's start, and the bound of every
batch (`StartTime < at`). So a flow started after a `resume`, however soon, runs and sends as usual.

Visibility lags a little behind the flows started last, so `finish` starts another batch while it still
shows running flows of the stop once the previous batch is done; it ends when none is left or the campaign
is resumed (its schedule unpaused, from any process). The stop is recorded (`drain` too, as history).
A paused schedule stays paused across reconcile until `resume` or a change of the campaign's file.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from temporalio.api.batch.v1 import BatchOperationCancellation
from temporalio.api.enums.v1 import BatchOperationState
from temporalio.api.workflowservice.v1 import DescribeBatchOperationRequest, StartBatchOperationRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from scheduler.campaigns.campaign import is_campaign_id
from scheduler.campaigns.schedules import ScheduleWriter, describe, schedule_id
from scheduler.campaigns.status import managed_schedule
from scheduler.errors import NoCampaign, NoSchedule, first_line
from scheduler.flow.workflows import CAMPAIGN_RUN_TYPE
from scheduler.store import MAX_REASON
from scheduler.store.stops import CampaignStops, StopMode
from scheduler.visibility import running_query

log = logging.getLogger(__name__)

RUNS_CLOSE_WITHIN = 30.0
"""Seconds a stop waits for the campaign's runs to close once cancelled (a worker must be running)."""
POLL_SECONDS = 1.0
REBATCH_SECONDS = 5.0
"""The least time between two cancellations of the flows visibility still shows running."""
CANCEL_CONCURRENCY = 16
"""Flows cancelled at once when the server runs too many batch operations to take ours."""


class StopResult(BaseModel):
    schedule: Literal["paused", "none"]
    """`none`: the campaign has no schedule (deleted, or never applied); its flows were stopped all the same."""
    cancelled: int
    """Running flows the stop asked Temporal to cancel (0 with `drain`)."""


@dataclass(frozen=True)
class Stopped:
    """A stop that has begun: what `finish` goes on with."""

    campaign_id: str
    mode: StopMode
    why: str
    by: str
    at: datetime
    """The stop's instant: the flows the server started before it are the stop's, later ones are not.

    Read on this machine's clock once the campaign's runs have closed (no flow of theirs starts later), and
    compared with the `StartTime` the server stamps. Temporal offers no call that tells its time, so the
    same instant serves both comparisons (the activities' check of the stop's record and the batches'
    bound) and they always agree on which flows are stopped. A skew between the clocks (milliseconds with
    NTP; none with the embedded server) moves that line by as much: it matters only to a flow started
    within the skew of the stop, which an operator could not have ordered before or after it anyway."""
    result: StopResult


class Finished(NamedTuple):
    running: int
    """Flows of the stop still running (0: all ended)."""
    resumed: bool
    """The campaign was resumed meanwhile (its schedule unpaused), which ends the waiting."""


async def running_flows(client: Client, campaign_id: str, *, started_before: datetime | None = None) -> int:
    return (await client.count_workflows(running_query(campaign_id, started_before=started_before))).count


async def pruned_note(client: Client, campaign_id: str) -> str | None:
    """What becomes of the running flows of a campaign whose schedule is deleted (its file is gone): they finish,
    as does a run still starting flows. None if it has none (or Temporal cannot say: it is only a note)."""
    try:
        running = await running_flows(client, campaign_id)
    except RPCError:
        return None
    if not running:
        return None
    return f"{campaign_id}: its {running} running flow(s) finish; `scheduler stop {campaign_id}` cancels them"


def _why(by: str, reason: str) -> str:
    """The schedule's note and the flows' cancel reason: `stopped by key ops: wrong link`."""
    return f"stopped by {by}" + (f": {reason}" if reason else "")


class Stopper:
    """Stops and resumes campaigns through one process's `ScheduleWriter` (so a pause never overlaps reconcile).

    `stops`: where stops are recorded; None (no store) leaves out step 3 of a stop (see the module).
    """

    def __init__(self, client: Client, schedules: ScheduleWriter, stops: CampaignStops | None) -> None:
        self.client = client
        self.schedules = schedules
        self.stops = stops

    async def stop(self, campaign_id: str, *, mode: StopMode, reason: str, by: str) -> Stopped:
        """Steps 1 to 4 (see the module); returns once the flows' cancellation has begun, not ended (`finish`).

        Raises:
            NoCampaign: the campaign has neither a schedule of ours nor a running flow or run.
        """
        if not is_campaign_id(campaign_id):  # it goes into visibility queries
            raise NoCampaign(campaign_id)
        why = _why(by, reason)
        paused = await self._pause(campaign_id, why)
        runs = await self._stop_runs(campaign_id, why)
        at = datetime.now(UTC)
        flows = await running_flows(self.client, campaign_id, started_before=at)
        if not (paused or runs or flows):
            raise NoCampaign(campaign_id)
        if self.stops is not None:
            try:
                await asyncio.to_thread(self.stops.record, campaign_id, mode=mode, reason=reason, by=by, at=at)
            except SQLAlchemyError as exc:  # stopping what can be stopped matters more than the record
                log.error("stop of %s not recorded in the store: %s", campaign_id, first_line(exc))
        cancelled = 0
        if mode == StopMode.CANCEL and flows:
            await self._cancel_flows(campaign_id, why, by, before=at)
            cancelled = flows
        log.info("campaign %s %s (%s): %d flow(s) cancelled", campaign_id, why, mode, cancelled)
        result = StopResult(schedule="paused" if paused else "none", cancelled=cancelled)
        return Stopped(campaign_id, mode, why, by, at, result)

    async def finish(
        self, stopped: Stopped, *, progress: Callable[[int], None] | None = None, timeout: float | None = None
    ) -> Finished:
        """Wait until visibility shows no running flow of the stop (started before it); with `cancel`, cancel
        any it still shows once the previous batch is done (flows started just before the stop show up late).

        Ends early when `timeout` seconds have passed, or when the campaign is resumed: from then on its
        flows are no business of this stop (those started before it still send nothing, see the module)."""
        cid = stopped.campaign_id
        deadline = None if timeout is None else time.monotonic() + timeout
        job: str | None = None
        next_batch = time.monotonic() + REBATCH_SECONDS  # `stop` has just started one
        while True:
            running = await running_flows(self.client, cid, started_before=stopped.at)
            if progress is not None:
                progress(running)
            now = time.monotonic()
            if running == 0 or (deadline is not None and now >= deadline):
                return Finished(running, resumed=False)
            if stopped.result.schedule == "paused" and await self._resumed(cid):
                return Finished(running, resumed=True)
            if stopped.mode == StopMode.CANCEL and now >= next_batch and (job is None or await self._batch_done(job)):
                job = await self._cancel_flows(cid, stopped.why, stopped.by, before=stopped.at)
                next_batch = now + REBATCH_SECONDS
            await asyncio.sleep(POLL_SECONDS)

    async def _resumed(self, campaign_id: str) -> bool:
        """Whether the schedule a stop paused runs again (`resume`, or a change of the campaign's file)."""
        description = await describe(self.client, schedule_id(campaign_id))
        return description is not None and not description.schedule.state.paused

    async def resume(self, campaign_id: str, *, by: str) -> str:
        """Unpause the campaign's schedule (its stopped flows stay stopped); says so.

        Raises:
            NoSchedule: no schedule of ours for the campaign.
        """
        if not is_campaign_id(campaign_id) or await managed_schedule(self.client, campaign_id) is None:
            raise NoSchedule(campaign_id)
        await self.schedules.set_paused(campaign_id, paused=False, note=f"resumed by {by}")
        log.info("campaign %s resumed by %s", campaign_id, by)
        return f"Resumed campaign {campaign_id}: schedule {schedule_id(campaign_id)} unpaused"

    async def _pause(self, campaign_id: str, note: str) -> bool:
        """Pause the campaign's schedule if we manage one; whether we did."""
        if await managed_schedule(self.client, campaign_id) is None:
            return False
        await self.schedules.set_paused(campaign_id, paused=True, note=note)
        return True

    async def _stop_runs(self, campaign_id: str, why: str) -> int:
        """Cancel the campaign's running runs and wait (bounded) until they closed; how many there were.

        The schedule knows its running actions at once; visibility adds runs triggered otherwise."""
        ids: set[str] = set()
        description = await describe(self.client, schedule_id(campaign_id))
        if description is not None:
            ids.update(a.workflow_id for a in description.info.running_actions)
        async for execution in self.client.list_workflows(running_query(campaign_id, CAMPAIGN_RUN_TYPE)):
            ids.add(execution.id)
        handles = [self.client.get_workflow_handle(i) for i in sorted(ids)]

        async def cancel_and_wait(handle: WorkflowHandle[Any, Any]) -> None:
            try:
                await handle.cancel(reason=why)
                await handle.result()
            except (WorkflowFailureError, RPCError):  # cancelled (what we want), or already gone
                pass

        try:
            await asyncio.wait_for(asyncio.gather(*(cancel_and_wait(h) for h in handles)), RUNS_CLOSE_WITHIN)
        except TimeoutError:
            log.warning("stop of %s: its runs did not close within %.0f s (is a worker running?)", campaign_id,
                        RUNS_CLOSE_WITHIN)  # fmt: skip
        return len(handles)

    async def _cancel_flows(self, campaign_id: str, why: str, by: str, *, before: datetime) -> str | None:
        """Cancel the running flows started `before` that visibility shows: a batch operation (its job id), or
        one by one (None) when the server already runs as many batch operations as it allows."""
        job = f"stop-{campaign_id}-{uuid.uuid4().hex[:12]}"
        query = running_query(campaign_id, started_before=before)
        request = StartBatchOperationRequest(
            namespace=self.client.namespace,
            job_id=job,
            visibility_query=query,
            reason=why[:MAX_REASON],
            cancellation_operation=BatchOperationCancellation(identity=by),
        )
        try:
            await self.client.workflow_service.start_batch_operation(request)
            return job
        except RPCError as exc:
            if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                raise
            log.info("stop of %s: the server runs its limit of batch operations; cancelling one by one", campaign_id)
        semaphore = asyncio.Semaphore(CANCEL_CONCURRENCY)

        async def cancel(workflow_id: str) -> None:
            async with semaphore:
                try:
                    await self.client.get_workflow_handle(workflow_id).cancel(reason=why)
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise

        ids = [e.id async for e in self.client.list_workflows(query)]
        await asyncio.gather(*(cancel(i) for i in ids))
        return None

    async def _batch_done(self, job: str) -> bool:
        request = DescribeBatchOperationRequest(namespace=self.client.namespace, job_id=job)
        state = (await self.client.workflow_service.describe_batch_operation(request)).state
        return state != BatchOperationState.BATCH_OPERATION_STATE_RUNNING
