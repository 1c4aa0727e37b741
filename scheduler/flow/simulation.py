"""What `scheduler simulate` adds to a flow: the customer's replies and purchase, at simulated times.

The flow runs its real code; a workflow interceptor (only on the simulator's worker) reads the plan from the
flow's memo `simulation` and, inside the flow, first sleeps until the planned start (`begins_at`: flows of
`scheduler test` cases start at their own instants on one server), then waits until the flow enters each
planned step (or counts from the start, for a reply with no step), sleeps the planned delay on a durable timer
and delivers the reply as the `client-answered` signal handler would; a purchase comes `convert_after` the
start; at a `split` step the flow takes the planned variant; each message of a step in `deliveries` gets its
receipt (`delivered` or `undelivered`) as soon as it went. Deterministic, so the time-skipping server runs it
in an instant.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from scheduler.flow.signals import Conversion, DeliveryState, DeliveryStatus, Reply

SIMULATION_MEMO = "simulation"


class PlannedReply(BaseModel):
    step: str | None
    """The step the reply comes in (`scheduler simulate --reply` takes `wait_answer` steps); None: whatever step
    the flow is in `after` its start."""
    text: str
    after: timedelta = timedelta(0)
    """From the moment the flow enters the step (no step: from the flow's start)."""
    opt_out: bool = False


class SimulationPlan(BaseModel):
    replies: list[PlannedReply] = Field(default_factory=list)
    convert_after: timedelta | None = None
    """From the flow's start: a `cart-converted` signal then (None: no purchase)."""
    webhooks: dict[str, int] = Field(default_factory=dict)
    """Step → the HTTP status its webhook's endpoint answers (default 200; a 5xx: after every retry)."""
    begins_at: datetime | None = None
    """The flow begins then (its workflow sleeps until that instant); None: at once."""
    variants: dict[str, str] = Field(default_factory=dict)
    """Split step → the variant the flow takes there (the others: the one it is assigned)."""
    deliveries: dict[str, DeliveryState] = Field(default_factory=dict)
    """`send_message` step → the receipt each of its messages gets at once (the others': none)."""


class SimulationInterceptor(Interceptor):
    """Register on the simulator's worker only."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _Inbound


class _Inbound(WorkflowInboundInterceptor):
    customer: list[asyncio.Task[None]]
    """What the simulated customer does, alongside the flow (kept, so the tasks are not collected)."""

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        raw = workflow.memo_value(SIMULATION_MEMO, default=None, type_hint=dict)
        if raw is not None:
            plan = SimulationPlan.model_validate(raw)
            if plan.begins_at is not None and plan.begins_at > workflow.now():
                await workflow.sleep(plan.begins_at - workflow.now(), summary="simulated start")
            instance = workflow.instance()
            instance._flow.variant_overrides = plan.variants
            self.customer = [
                asyncio.create_task(_reply(instance, r, f"simulated-{i}")) for i, r in enumerate(plan.replies)
            ]
            if plan.convert_after is not None:
                self.customer.append(asyncio.create_task(_convert(instance, plan.convert_after)))
            if plan.deliveries:
                self.customer.append(asyncio.create_task(_receipts(instance, plan.deliveries)))
        return await super().execute_workflow(input)


async def _reply(instance: Any, reply: PlannedReply, reply_id: str) -> None:
    if reply.step is not None:
        await workflow.wait_condition(lambda: instance._flow.current_step == reply.step)
    if reply.after > timedelta(0):
        await workflow.sleep(reply.after, summary=f"simulated reply in {reply.step}")
    instance.client_answered(Reply(reply_id=reply_id, text=reply.text, channel="simulation", opt_out=reply.opt_out))


async def _convert(instance: Any, after: timedelta) -> None:
    await workflow.sleep(after, summary="simulated purchase")
    instance.cart_converted(Conversion(conversion_id="simulated"))


async def _receipts(instance: Any, deliveries: dict[str, DeliveryState]) -> None:
    """A receipt for each message of a step in `deliveries`, once the flow knows the message went."""
    flow = instance._flow
    seen: set[str] = set()
    while True:
        await workflow.wait_condition(lambda: len(flow._message_steps) > len(seen))
        for message_id, step in list(flow._message_steps.items()):
            if message_id in seen:
                continue
            seen.add(message_id)
            if (state := deliveries.get(step)) is not None:
                instance.delivery_status(DeliveryStatus(message_id=message_id, status=state, channel="simulation"))
