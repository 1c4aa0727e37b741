"""The Temporal workflows: a flow (`AbandonedCartWorkflow`), a campaign run (`CampaignRunWorkflow`) and a
keyword's answer (`KeywordAnswerWorkflow`).

Their type names, signal and query names are the contract with running flows and schedules:
renaming one strands them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from scheduler.errors import DefinitionError
    from scheduler.flow.attributes import CAMPAIGN_ID
    from scheduler.flow.contacts import redact
    from scheduler.flow.engine import ACTIVITY_TIMEOUT, FlowRun, start_attributes
    from scheduler.flow.models import (
        AnswerMessage,
        CampaignRunInput,
        CampaignRunResult,
        FlowInput,
        FlowStatus,
        KeywordAnswer,
        PageInput,
        PageResult,
        RunCampaign,
        flow_input,
        next_window,
    )
    from scheduler.flow.nodes.send_message import MESSAGE_RETRY
    from scheduler.flow.signals import (
        CART_CONVERTED_SIGNAL,
        CLIENT_ANSWERED_SIGNAL,
        DELIVERY_STATUS_SIGNAL,
        Conversion,
        DeliveryStatus,
        Reply,
    )

FLOW_TYPE = "AbandonedCartWorkflow"
"""The workflow type name of a flow: what `AbandonedCartWorkflow` registers and every start and lookup uses."""
CAMPAIGN_RUN_TYPE = "CampaignRunWorkflow"
"""The workflow type name of a campaign run: what every campaign's schedule starts."""
KEYWORD_ANSWER_TYPE = "KeywordAnswerWorkflow"
"""The workflow type name of a keyword's answer: what `scheduler.replies.keywords` starts."""
STATUS_QUERY = "status"
PAGES_PER_RUN = 50
"""Pages before continue-as-new, which keeps every run's history bounded."""
FLOWS_KEPT = 100
"""Flow ids listed in a run's result (the counts cover them all)."""
START_AUDIENCE_PAGE = "start_audience_page"
"""The activity that reads one page of a run's audience and starts its flows (`scheduler.campaigns.fanout`)."""
SEND_KEYWORD_ANSWER = "send_keyword_answer"
"""The activity that sends one contact a keyword's answer (`scheduler.delivery.activities`)."""
ANSWER_DEADLINE = timedelta(hours=1)
"""How long an answer is retried (a message's backoff, by time not attempts): a gateway down for minutes still
gets it out, and later than that a confirmation no longer answers the customer's message."""
STOPPED_RUN_PATCH = "run-waits-for-its-page"
"""A cancelled run closes only once its page activity has stopped starting flows (it used not to wait)."""


@workflow.defn(name=FLOW_TYPE, failure_exception_types=[DefinitionError])
class AbandonedCartWorkflow:
    """Runs the definition it was started with, step by step (so a run is pinned to it).

    Signal `client-answered` (optional `Reply` payload; a repeated `reply_id` is ignored) feeds
    `wait_answer` steps. Signal `cart-converted` (optional `Conversion` payload; only the first
    counts) says the customer bought: a definition with `exit_on = ["cart-converted"]` ends at once
    with outcome `converted`, any other records it and carries on. Signal `delivery-status`
    (`DeliveryStatus`) reports what became of one of its messages: the step's memo entry gains `delivery`,
    and a `send_message` step with `await_delivery` stops waiting for it. Query `status` gives the current
    step, the path so far, the number of distinct replies, the definition version, whether a
    conversion came and, at the end, the outcome (`completed`, `converted`, `opted_out`, `stopped` or `failed`).
    The memo `steps` and the search attribute `CurrentStep` are brought up to date before every step
    that waits (a timer, a signal, webhook retries, a message awaiting its receipt) and when the flow ends.
    """

    @workflow.init
    def __init__(self, flow: FlowInput) -> None:
        self._flow = FlowRun(flow)

    @workflow.run
    async def run(self, flow: FlowInput) -> FlowStatus:
        return await self._flow.run()

    @workflow.signal(name=CLIENT_ANSWERED_SIGNAL)
    def client_answered(self, reply: Reply | None = None) -> None:
        self._flow.add_reply(reply or Reply())

    @workflow.signal(name=CART_CONVERTED_SIGNAL)
    def cart_converted(self, conversion: Conversion | None = None) -> None:
        self._flow.add_conversion(conversion or Conversion())

    @workflow.signal(name=DELIVERY_STATUS_SIGNAL)
    def delivery_status(self, status: DeliveryStatus) -> None:
        self._flow.add_delivery(status)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> FlowStatus:
        return self._flow.status()


@workflow.defn(name=CAMPAIGN_RUN_TYPE)
class CampaignRunWorkflow:
    """One firing of a campaign's schedule: starts the campaign's flows and records what it started.

    Without an `[audience]` it starts one flow, like the seed; with one, a flow per cart of the window
    since the previous successful run. It only sequences pages, so its history stays small for 100,000
    carts: one activity per page (`scheduler.campaigns.fanout` reads the page and starts its flows),
    continue-as-new every `PAGES_PER_RUN` pages. Its result and memo hold the counts.
    """

    @workflow.run
    async def run(self, run: CampaignRunInput) -> CampaignRunResult:
        campaign = run.campaign
        if CAMPAIGN_ID not in workflow.info().typed_search_attributes:
            workflow.upsert_search_attributes([CAMPAIGN_ID.value_set(campaign.id)])
        if campaign.audience is None:
            return await _start_one(campaign)
        result = run.progress or CampaignRunResult(window=next_window(
            campaign.audience, now=workflow.now(), previous_until=_previous_until()
        ))  # fmt: skip
        assert result.window is not None
        cursor = run.cursor
        # A stop waits for the run to close, and must know then that no more flows start.
        waits = workflow.patched(STOPPED_RUN_PATCH)
        for _ in range(PAGES_PER_RUN):
            page: PageResult = await workflow.execute_activity(
                START_AUDIENCE_PAGE,
                PageInput(campaign=campaign, window=result.window, cursor=cursor),
                result_type=PageResult,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_attempts=10, non_retryable_error_types=["AudienceError"]),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
                if waits
                else ActivityCancellationType.TRY_CANCEL,
                summary=f"page of {campaign.id}'s audience",
            )
            result = result.model_copy(update=result.plus(page, keep=FLOWS_KEPT))
            cursor = page.next_cursor
            if cursor is None or (waits and _cancel_requested()):
                workflow.upsert_memo(_memo(result))
                if cursor is not None:
                    raise asyncio.CancelledError("the run was cancelled while its page finished")
                return result
        workflow.continue_as_new(CampaignRunInput(campaign=campaign, progress=result, cursor=cursor))


@workflow.defn(name=KEYWORD_ANSWER_TYPE)
class KeywordAnswerWorkflow:
    """Sends a STOP/START confirmation or the HELP text to each of the sender's contacts through the worker's
    channels, retried (`MESSAGE_RETRY`, within `ANSWER_DEADLINE`) until delivered or refused for good.

    Exempt from every policy (suppression, quiet hours, caps, stops): it answers the customer's own message.
    Fails, once every contact has been tried, if one could not be answered.
    """

    @workflow.run
    async def run(self, answer: KeywordAnswer) -> None:
        results = await asyncio.gather(
            *(_send_answer(contact, answer.text) for contact in answer.contacts), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ActivityError):
                raise result
        if failed := [redact(c) for c, r in zip(answer.contacts, results, strict=True) if isinstance(r, ActivityError)]:
            raise ApplicationError(f"could not answer {', '.join(failed)}", type="AnswerNotDelivered")


async def _send_answer(contact: str, text: str) -> None:
    await workflow.execute_activity(
        SEND_KEYWORD_ANSWER,
        AnswerMessage(to=contact, text=text),
        start_to_close_timeout=ACTIVITY_TIMEOUT,
        schedule_to_close_timeout=ANSWER_DEADLINE,
        retry_policy=MESSAGE_RETRY,
        summary=f"answer to {redact(contact)}",
    )


def _cancel_requested() -> bool:
    """Whether the run was cancelled while its page activity finished all the same (it had started the page's
    last flow before it saw the cancellation): the activity's result then arrives, the cancellation does not."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _previous_until() -> Any:
    """Where the previous successful run of this schedule stopped (Temporal hands its result over)."""
    last = workflow.get_last_completion_result(CampaignRunResult)
    return last.window.until if isinstance(last, CampaignRunResult) and last.window else None


def _memo(result: CampaignRunResult) -> dict[str, Any]:
    return result.model_dump(mode="json", exclude={"flows", "reasons"})


async def _start_one(campaign: RunCampaign) -> CampaignRunResult:
    flow = flow_input(campaign, run_id=workflow.info().workflow_id)
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
