"""A campaign run: read the audience page by page and start one flow per cart, never twice.

The workflow side (`run_campaign`, inside `CampaignRunWorkflow`) only sequences pages, so its history
stays small for 100,000 carts (one activity per page, continue-as-new every `PAGES_PER_RUN` pages).
The activity side (`FanoutActivities`) reads a page and starts its flows at the campaign's pace,
heartbeating its progress so a retried page resumes where the crashed attempt stopped. A flow's id
is `<campaign id>-<cart id>` and ids are never reused, so a cart is messaged once per campaign even
when a run is retried or triggered by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from scheduler.audience import PAGE_SIZE, AudienceError, Window, next_window, read_page
    from scheduler.campaign import Campaign
    from scheduler.flow.engine import FLOW_TYPE, start_attributes
    from scheduler.flow.models import CampaignRunInput, CampaignRunResult, FlowInput, RunCounts

PAGES_PER_RUN = 50
"""Pages before continue-as-new, which keeps every run's history bounded."""
FLOWS_KEPT = 100
"""Flow ids listed in a run's result (the counts cover them all)."""


class PageInput(BaseModel):
    campaign: Campaign
    window: Window
    cursor: str | None = None
    limit: int = PAGE_SIZE


class PageResult(RunCounts):
    """What one page of the audience did, and where the next page starts."""

    next_cursor: str | None = None


def flow_input(
    campaign: Campaign, *, customer: dict[str, Any] | None = None, cart: dict[str, Any] | None = None
) -> FlowInput:
    return FlowInput(
        definition=campaign.workflow,
        campaign_id=campaign.id,
        campaign_name=campaign.campaign.name,
        owner=campaign.campaign.owner,
        customer=customer or {},
        cart=cart or {},
    )


# Workflow side


async def run_campaign(run: CampaignRunInput) -> CampaignRunResult:
    """The body of `CampaignRunWorkflow`: one flow without an audience, else one per cart of the window."""
    campaign = run.campaign
    if campaign.audience is None:
        return await _start_one(campaign)
    result = run.progress or CampaignRunResult(window=next_window(
        campaign.audience, now=workflow.now(), previous_until=_previous_until()
    ))  # fmt: skip
    assert result.window is not None
    cursor = run.cursor
    for _ in range(PAGES_PER_RUN):
        page: PageResult = await workflow.execute_activity(
            "start_audience_page",
            PageInput(campaign=campaign, window=result.window, cursor=cursor),
            result_type=PageResult,
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=10, non_retryable_error_types=["AudienceError"]),
            summary=f"page of {campaign.id}'s audience",
        )
        result = result.model_copy(update=result.plus(page, keep=FLOWS_KEPT))
        cursor = page.next_cursor
        if cursor is None:
            workflow.upsert_memo(_memo(result))
            return result
    workflow.continue_as_new(CampaignRunInput(campaign=campaign, progress=result, cursor=cursor))


def _previous_until() -> Any:
    """Where the previous successful run of this schedule stopped (Temporal hands its result over)."""
    last = workflow.get_last_completion_result(CampaignRunResult)
    return last.window.until if isinstance(last, CampaignRunResult) and last.window else None


def _memo(result: CampaignRunResult) -> dict[str, Any]:
    return result.model_dump(mode="json", exclude={"flows", "reasons"})


async def _start_one(campaign: Campaign) -> CampaignRunResult:
    flow = flow_input(campaign)
    flow_id = f"{campaign.id}-{workflow.uuid4()}"
    await workflow.start_child_workflow(
        FLOW_TYPE,
        flow,
        id=flow_id,
        search_attributes=start_attributes(flow),
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
    )
    result = CampaignRunResult(flows=[flow_id], started=1)
    workflow.upsert_memo(_memo(result))
    return result


# Activity side


class FanoutActivities:
    """Starts flows with the worker's client; register `.all()` on the worker."""

    def __init__(self, client: Client, *, campaigns_dir: Path, task_queue: str) -> None:
        self.client = client
        self.campaigns_dir = campaigns_dir
        """Where audience files (and relative SQLite paths) are read from: the campaign files' directory."""
        self.task_queue = task_queue

    def all(self) -> list[Any]:
        return [self.start_audience_page]

    @activity.defn(name="start_audience_page")
    async def start_audience_page(self, inp: PageInput) -> PageResult:
        campaign, audience = inp.campaign, inp.campaign.audience
        assert audience is not None
        try:
            page = await read_page(
                audience, base_dir=self.campaigns_dir, window=inp.window, cursor=inp.cursor, limit=inp.limit
            )
        except AudienceError as exc:
            raise ApplicationError(str(exc), type="AudienceError", non_retryable=not exc.retryable) from None
        if details := activity.info().heartbeat_details:  # a retried page: carry on after the flows already started
            done = PageResult.model_validate(details[0])
        else:
            reasons = Counter(skip.reason for skip in page.skipped)
            done = PageResult(next_cursor=page.next_cursor, skipped_invalid=len(page.skipped), reasons=dict(reasons))
        interval = 1 / campaign.campaign.max_starts_per_second
        next_at = time.monotonic()
        handled = done.started + done.skipped_duplicate + done.failed
        version = campaign.workflow.version
        for target in page.targets[handled:]:
            if (wait := next_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            next_at = max(next_at, time.monotonic()) + interval
            flow = flow_input(campaign, customer=target.customer, cart=target.cart)
            flow_id = f"{campaign.id}-{target.cart['id']}"
            try:
                await self.client.start_workflow(
                    FLOW_TYPE,
                    flow,
                    id=flow_id,
                    task_queue=self.task_queue,
                    search_attributes=start_attributes(flow, version=version, contacts=target.contacts),
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
                done.started += 1
                if len(done.flows) < FLOWS_KEPT:
                    done.flows.append(flow_id)
            except WorkflowAlreadyStartedError:
                done.skipped_duplicate += 1
            activity.heartbeat(done.model_dump(mode="json"))
        return done
