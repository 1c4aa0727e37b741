"""Temporal workflows. Sandbox-safe: no IO here, helpers imported as pass-through."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from scheduler.errors import DefinitionError
    from scheduler.fanout import run_campaign
    from scheduler.flow.attributes import CAMPAIGN_ID
    from scheduler.flow.definition import CART_CONVERTED
    from scheduler.flow.engine import FLOW_TYPE, FlowRun
    from scheduler.flow.models import CampaignRunInput, CampaignRunResult, Conversion, FlowInput, FlowStatus, Reply

CLIENT_ANSWERED_SIGNAL = "client-answered"
CART_CONVERTED_SIGNAL = CART_CONVERTED
STATUS_QUERY = "status"


@workflow.defn(name=FLOW_TYPE, failure_exception_types=[DefinitionError])
class AbandonedCartWorkflow:
    """Runs the definition it was started with, step by step (so a run is pinned to it).

    Signal `client-answered` (optional `Reply` payload; a repeated `reply_id` is ignored) feeds
    `wait_answer` steps. Signal `cart-converted` (optional `Conversion` payload; only the first
    counts) says the customer bought: a definition with `exit_on = ["cart-converted"]` ends at once
    with outcome `converted`, any other records it and carries on. Query `status` gives the current
    step, the path so far, the number of distinct replies, the definition version, whether a
    conversion came and, at the end, the outcome (`completed`, `converted`, `opted_out` or `failed`).
    The memo `steps` and the search attribute `CurrentStep` are brought up to date before every step
    that waits (a timer, a signal, webhook retries) and when the flow ends.
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

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> FlowStatus:
        return self._flow.status()


@workflow.defn(name="CampaignRunWorkflow")
class CampaignRunWorkflow:
    """One firing of a campaign's schedule: starts the campaign's flows and records what it started.

    Without an `[audience]` it starts one flow, like the seed; with one, a flow per cart of the window
    since the previous successful run (see `fanout`). Its result and memo hold the counts.
    """

    @workflow.run
    async def run(self, run: CampaignRunInput) -> CampaignRunResult:
        if CAMPAIGN_ID not in workflow.info().typed_search_attributes:
            workflow.upsert_search_attributes([CAMPAIGN_ID.value_set(run.campaign.id)])
        return await run_campaign(run)


SIGNALS = frozenset({CLIENT_ANSWERED_SIGNAL, CART_CONVERTED_SIGNAL})
"""Signal names the API accepts for `/send-signal`."""
