"""The activity side of a campaign run: read a page of the audience and start one flow per cart, never twice.

`CampaignRunWorkflow` (in `scheduler.flow.workflows`) sequences the pages; the activity reads one
and starts its flows at the campaign's pace, heartbeating its progress so a retried page resumes
where the crashed attempt stopped. A flow's id is `<campaign id>-<cart id>` and ids are never reused,
so a cart is messaged once per campaign even when a run is retried or triggered by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from scheduler.audience import read_page
from scheduler.campaigns.campaign import Campaign
from scheduler.errors import AudienceError
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import PageInput, PageResult, flow_input
from scheduler.flow.workflows import FLOW_TYPE, FLOWS_KEPT, START_AUDIENCE_PAGE
from scheduler.store.consent import Consent


class FanoutActivities:
    """Starts flows with the worker's client; register `.all()` on the worker."""

    def __init__(
        self,
        client: Client,
        *,
        campaigns_dir: Path,
        task_queue: str,
        consent: Consent | None = None,
        quiet_hours: str = "",
    ) -> None:
        self.client = client
        self.quiet_hours = quiet_hours
        """The service's `compliance.quiet_hours`, for flows of campaigns that set none."""
        self.consent = consent
        """The suppression list: a cart whose customer has an opted-out contact gets no flow (None: no check)."""
        self.campaigns_dir = campaigns_dir
        """Where audience files (and relative SQLite paths) are read from: the campaign files' directory."""
        self.task_queue = task_queue

    def all(self) -> list[Any]:
        return [self.start_audience_page]

    @activity.defn(name=START_AUDIENCE_PAGE)
    async def start_audience_page(self, inp: PageInput) -> PageResult:
        # The workflow carried the campaign through unread: read it whole here.
        campaign = Campaign.model_validate(inp.campaign.model_dump(mode="json"))
        audience = campaign.audience
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
        handled = done.started + done.skipped_duplicate + done.failed + done.skipped_suppressed
        todo = page.targets[handled:]
        suppressed = await self._suppressed(c for target in todo for c in target.contacts)
        version = campaign.workflow.version
        run_id = activity.info().workflow_id
        for target in todo:
            if suppressed.intersection(target.contacts):
                done.skipped_suppressed += 1
                continue
            if (wait := next_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            next_at = max(next_at, time.monotonic()) + interval
            flow = flow_input(
                campaign, customer=target.customer, cart=target.cart, quiet_hours=self.quiet_hours, run_id=run_id
            )
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

    async def _suppressed(self, contacts: Iterable[str]) -> set[str]:
        """Which of these contacts opted out, read once per page attempt (a retry reads it again)."""
        if self.consent is None:
            return set()
        return await asyncio.to_thread(self.consent.suppressed, list(contacts))
