"""Starting one flow and signalling flows, from outside: the one implementation behind `/start-workflow`,
`/send-signal`, `scheduler start|signal` and reply routing (a campaign run starts its flows in `fanout`)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from scheduler.campaigns.campaign import find_campaign
from scheduler.config import Settings
from scheduler.errors import FlowAlreadyRunning, FlowNotFound, UnknownSignal
from scheduler.flow.engine import start_attributes
from scheduler.flow.limits import check_customer, check_id, check_record
from scheduler.flow.models import flow_input
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, SIGNALS, Conversion, Reply
from scheduler.flow.workflows import AbandonedCartWorkflow
from scheduler.metrics import FLOW_SIGNALS

STARTED = "Workflow started successfully"
"""What `/start-workflow` and `scheduler start` answer (the seed's words)."""


def signal_sent(signal_name: str, workflow_id: str) -> str:
    """What `/send-signal` and `scheduler signal` answer (the seed's words)."""
    return f"Successfully sent '{signal_name}' signal to workflow: {workflow_id}"


SEED_CAMPAIGN = "abandoned-cart"
"""The seed's campaign: flows started for it by hand keep the seed's `abandoned_cart-<uuid>` ids."""


def new_workflow_id(campaign_id: str = SEED_CAMPAIGN) -> str:
    """`<campaign id>-<uuid>`, so a flow started by hand says whose it is (the seed's campaign: `abandoned_cart-`).

    A campaign run names its flows `<campaign id>-<cart id>` instead (see `fanout`).
    """
    prefix = "abandoned_cart" if campaign_id == SEED_CAMPAIGN else campaign_id
    return f"{prefix}-{uuid.uuid4()}"


async def start_flow(
    client: Client,
    settings: Settings,
    *,
    campaign_id: str | None = None,
    workflow_id: str | None = None,
    customer: dict[str, Any] | None = None,
    cart: dict[str, Any] | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start one `AbandonedCartWorkflow` running the campaign's current definition.

    Raises:
        InvalidValue: `workflow_id`, `customer` or `cart` breaks `scheduler.flow.limits` (checked first).
        UnknownCampaign: no valid campaign file has that id.
        FlowAlreadyRunning: a flow with `workflow_id` is running.
    """
    if workflow_id is not None:
        check_id(workflow_id, what="workflow_id")
    customer = check_customer(customer or {})
    cart = check_record(cart or {}, what="cart")
    # In a thread: parsing a changed campaign file may take a second, which the event loop must not wait for.
    campaign = await asyncio.to_thread(find_campaign, settings.campaigns.dir, campaign_id or settings.campaigns.default)
    flow = flow_input(campaign, customer=customer, cart=cart, quiet_hours=settings.compliance.quiet_hours)
    workflow_id = workflow_id or new_workflow_id(campaign.id)
    try:
        return await client.start_workflow(
            AbandonedCartWorkflow.run,
            flow,
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            search_attributes=start_attributes(flow),
        )
    except WorkflowAlreadyStartedError:
        raise FlowAlreadyRunning(workflow_id) from None


async def signal_flow(
    client: Client,
    *,
    workflow_id: str,
    signal_name: str = CLIENT_ANSWERED_SIGNAL,
    run_id: str | None = None,
    reply: Reply | Conversion | None = None,
) -> None:
    """Send a known signal to a running flow, with `reply` as its payload (a `Conversion` for `cart-converted`).

    Raises:
        UnknownSignal: flows do not handle `signal_name`.
        InvalidValue: `workflow_id`, `run_id` or the payload's id breaks `scheduler.flow.limits` (checked first).
        FlowNotFound: no running workflow has that id (or run id).
    """
    if signal_name not in SIGNALS:
        raise UnknownSignal(signal_name, sorted(SIGNALS))
    check_id(workflow_id, what="workflow_id")
    if run_id is not None:
        check_id(run_id, what="run_id")
    if isinstance(reply, Reply) and reply.reply_id is not None:
        check_id(reply.reply_id, what="reply_id")
    if isinstance(reply, Conversion) and reply.conversion_id is not None:
        check_id(reply.conversion_id, what="conversion_id")
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        await handle.signal(signal_name, reply or Reply())
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise FlowNotFound(workflow_id, exc.message) from None
        if exc.status == RPCStatusCode.INVALID_ARGUMENT and run_id:
            raise FlowNotFound(workflow_id, f"invalid run id {run_id!r}") from None
        raise
    FLOW_SIGNALS.labels(signal_name).inc()
