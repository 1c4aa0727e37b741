"""A campaign's emergency stop and its resumption (`scheduler.campaigns.stop`), its funnel (`campaigns.stats`) and
its experiments (`experiments.results`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.auth import ReadAccess, WriteKey, auth_errors
from scheduler.api.bodies import post_json
from scheduler.api.deps import ClientDep, ConversionsDep, SchedulesDep, get_store
from scheduler.api.responses import errors
from scheduler.api.schedules import CampaignId
from scheduler.api.workflows import MessageResponse
from scheduler.campaigns.stats import CampaignStats, known_campaign_stats
from scheduler.campaigns.stop import Stopped, Stopper, StopResult
from scheduler.errors import StoreUnavailable
from scheduler.experiments.results import ExperimentsReport, campaign_experiments
from scheduler.store import MAX_REASON
from scheduler.store.deliveries import Deliveries
from scheduler.store.stops import CampaignStops, StopMode

log = logging.getLogger(__name__)

router = APIRouter(prefix="/campaigns", tags=["campaigns"])
FOLLOW_UP_SECONDS = 600.0
"""How long the API keeps cancelling the flows of a stopped campaign that visibility shows late (a resume ends
it sooner)."""


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    mode: StopMode = StopMode.CANCEL
    """`cancel`: cancel every running flow of the campaign; `drain`: let them finish. Both pause the schedule
    and end a run still starting flows."""
    reason: str = Field("", max_length=MAX_REASON)
    """Why: the schedule's note, the flows' cancel reason and the stop's record say it."""


async def _stopper(request: Request, client: ClientDep, schedules: SchedulesDep) -> Stopper:
    try:
        stops: CampaignStops | None = CampaignStops(await get_store(request))
    except StoreUnavailable as exc:  # an emergency stop still pauses and cancels without its record
        log.error("campaign stop without the store: %s", exc)
        stops = None
    return Stopper(client, schedules, stops)


@post_json(
    router,
    "/{campaign_id}/stop",
    limit=4096,
    optional=True,
    status_code=202,
    responses=errors({**auth_errors("write"), 404: "no schedule, run or running flow of that campaign"}),
)
async def stop(
    request: Request, campaign_id: CampaignId, client: ClientDep, schedules: SchedulesDep, caller: WriteKey,
    body: StopRequest | None = None,
) -> StopResult:  # fmt: skip
    """Pause the campaign's schedule, end a run still starting flows, and cancel its running flows (`drain`: let
    them finish). Answers once the cancellation has begun; flows end `stopped` within seconds, and nothing
    more goes out for a flow started before the stop, but for a message already handed to its channel."""
    body = body or StopRequest()
    stopper = await _stopper(request, client, schedules)
    stopped = await stopper.stop(campaign_id, mode=body.mode, reason=body.reason, by=caller.by)
    if body.mode == StopMode.CANCEL:  # flows that visibility shows late are cancelled in the background
        _end_follow_up(request, campaign_id)  # this stop's covers the flows an earlier one's would
        state = request.app.state
        task = asyncio.create_task(_follow_up(stopper, stopped))
        state.background.add(task)
        state.follow_ups[campaign_id] = task
        task.add_done_callback(state.background.discard)
        task.add_done_callback(lambda t: state.follow_ups.get(campaign_id) is t and state.follow_ups.pop(campaign_id))
    return stopped.result


async def _follow_up(stopper: Stopper, stopped: Stopped) -> None:
    try:
        running, resumed = await stopper.finish(stopped, timeout=FOLLOW_UP_SECONDS)
    except Exception:
        log.exception("stop of %s: cancelling its remaining flows failed", stopped.campaign_id)
        return
    if running and not resumed:
        log.warning("stop of %s: %d flow(s) still running after %.0f s (is a worker running?)", stopped.campaign_id,
                    running, FOLLOW_UP_SECONDS)  # fmt: skip


def _end_follow_up(request: Request, campaign_id: str) -> None:
    """Cancel this process's follow-up of the campaign's last stop, if it still runs (one elsewhere sees the
    schedule unpaused within a second)."""
    if (task := request.app.state.follow_ups.pop(campaign_id, None)) is not None:
        task.cancel()


@router.post("/{campaign_id}/resume", responses=errors({**auth_errors("write"), 404: "no schedule of that campaign"}))
async def resume(
    request: Request, campaign_id: CampaignId, client: ClientDep, schedules: SchedulesDep, caller: WriteKey
) -> MessageResponse:
    """Unpause the campaign's schedule and end the follow-up of its stop; the flows a stop ended stay ended, and
    flows started from now on run as usual."""
    message = await Stopper(client, schedules, None).resume(campaign_id, by=caller.by)
    _end_follow_up(request, campaign_id)
    return MessageResponse(message=message)


@router.get(
    "/{campaign_id}/stats",
    dependencies=[ReadAccess],
    responses=errors({**auth_errors("read"), 404: "no schedule or flow of that campaign"}),
)
async def stats(
    request: Request,
    campaign_id: CampaignId,
    client: ClientDep,
    since: Annotated[
        datetime | None, Query(description="ISO 8601; without an offset, UTC. Default: 7 days ago.")
    ] = None,
) -> CampaignStats:
    """Flows running at each step now, and outcomes, starts and answers since `since`, from Temporal's
    visibility (about a second behind the flows); per message step, its messages by delivery status (from the
    store's delivery receipts)."""
    return await known_campaign_stats(client, campaign_id, since=since, deliveries=await delivery_statuses(request))


async def delivery_statuses(request: Request) -> Deliveries | None:
    """Where messages' delivery statuses are kept; None (and none shown) while the store is down."""
    try:
        return Deliveries(await get_store(request))
    except StoreUnavailable as exc:
        log.warning("campaign stats without delivery statuses: %s", exc)
        return None


@router.get(
    "/{campaign_id}/experiments",
    dependencies=[ReadAccess],
    responses=errors({**auth_errors("read"), 404: "no schedule of that campaign", 503: "the store is unavailable"}),
)
async def experiments(campaign_id: CampaignId, client: ClientDep, conversions: ConversionsDep) -> ExperimentsReport:
    """Per experiment (`split` step) and variant: flows entered, messaged, answered and converted, conversion rate,
    revenue; each variant against the holdout (else the first variant), with an always-valid 95 % interval that
    stays valid however often it is looked at, a decision in words, and a sample ratio mismatch warning."""
    return await campaign_experiments(client, conversions, campaign_id)
