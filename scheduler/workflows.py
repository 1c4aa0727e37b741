"""Temporal workflows. Sandbox-safe: no IO here, helpers imported as pass-through."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from scheduler.attributes import CAMPAIGN_ID
    from scheduler.engine import FlowRun, start_attributes
    from scheduler.errors import DefinitionError
    from scheduler.models import CampaignRunInput, CampaignRunResult, FlowInput, FlowStatus, Reply

CLIENT_ANSWERED_SIGNAL = "client-answered"
STATUS_QUERY = "status"


@workflow.defn(name="AbandonedCartWorkflow", failure_exception_types=[DefinitionError])
class AbandonedCartWorkflow:
    """Runs the definition it was started with, step by step (so a run is pinned to it).

    Signal `client-answered` (optional `Reply` payload; a repeated `reply_id` is ignored) feeds
    `wait_answer` steps. Query `status` gives the current step, the path so far, the number of
    distinct replies, the definition version and, at the end, the outcome. The memo `steps` and the
    search attribute `CurrentStep` are brought up to date before every step that waits (a timer, a
    signal, webhook retries) and when the flow ends.
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

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> FlowStatus:
        return self._flow.status()


@workflow.defn(name="CampaignRunWorkflow")
class CampaignRunWorkflow:
    """One firing of a campaign's schedule: starts the campaign's flows and records what it started.

    Without an `[audience]` it starts one flow, like the seed. Flows are children that outlive the
    run (parent close policy ABANDON), so a run ends as soon as its flows have started.
    """

    @workflow.run
    async def run(self, run: CampaignRunInput) -> CampaignRunResult:
        campaign = run.campaign
        if CAMPAIGN_ID not in workflow.info().typed_search_attributes:
            workflow.upsert_search_attributes([CAMPAIGN_ID.value_set(campaign.id)])
        flow = FlowInput(
            definition=campaign.workflow,
            campaign_id=campaign.id,
            campaign_name=campaign.campaign.name,
            owner=campaign.campaign.owner,
        )
        flow_id = f"{campaign.id}-{workflow.uuid4()}"
        await workflow.start_child_workflow(
            AbandonedCartWorkflow.run,
            flow,
            id=flow_id,
            search_attributes=start_attributes(flow),
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
        result = CampaignRunResult(flows=[flow_id], started=1)
        workflow.upsert_memo(result.model_dump(exclude={"flows"}))
        return result


SIGNALS = frozenset({CLIENT_ANSWERED_SIGNAL})
"""Signal names the API accepts for `/send-signal`."""
