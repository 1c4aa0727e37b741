"""Flows (`AbandonedCartWorkflow`) in tests: inputs, starting, querying, waiting for a step, cleaning up."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError

from scheduler.campaigns.start import new_workflow_id
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.workflows import STATUS_QUERY, AbandonedCartWorkflow
from tests.helpers.waiting import eventually

CUSTOMER = {"id": "c1", "name": "Ada", "phone": "+15550001", "email": "ada@example.net"}


def one_step(node: str = "send_message", **params: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {"start_step": "step_1", "steps": {"step_1": {"node": node, "params": params}}}
    )


def wait_then_send(wait: str) -> WorkflowDefinition:
    """`explicit_wait` for `wait`, then two messages: a flow that messages only after a while."""
    return WorkflowDefinition.model_validate(
        {
            "start_step": "wait",
            "steps": {
                "wait": {"node": "explicit_wait", "params": {"duration": wait}, "go_to": "send"},
                "send": {"node": "send_message", "go_to": "again"},
                "again": {"node": "send_message"},
            },
        }
    )


def failure_of(result: FlowStatus | WorkflowFailureError) -> ApplicationError:
    """The activity's error behind a failed flow."""
    assert isinstance(result, WorkflowFailureError), result
    assert isinstance(result.cause, ActivityError)
    assert isinstance(result.cause.cause, ApplicationError)
    return result.cause.cause


def nested_record(levels: int) -> dict[str, Any]:
    """`{"x": {"x": … {}}}`, `levels` objects deep: for the record depth limit."""
    record: dict[str, Any] = {}
    for _ in range(levels - 1):
        record = {"x": record}
    return record


async def start_flow_input(
    client: Client, flow: FlowInput, task_queue: str, **options: Any
) -> WorkflowHandle[Any, FlowStatus]:
    """Start an `AbandonedCartWorkflow` of `flow` with its search attributes, as the API and fan-out do."""
    return await client.start_workflow(
        AbandonedCartWorkflow.run,
        flow,
        id=new_workflow_id(),
        task_queue=task_queue,
        search_attributes=start_attributes(flow),
        result_type=FlowStatus,
        **options,
    )


async def status(handle: WorkflowHandle[Any, Any]) -> FlowStatus:
    """A flow's `status` query."""
    return await handle.query(STATUS_QUERY, result_type=FlowStatus)


async def reaches(handle: WorkflowHandle[Any, Any], step: str) -> None:
    """Until the flow is in `step` (on the time-skipping server, time stands still outside `result()`)."""

    async def check() -> None:
        assert (await status(handle)).current_step == step

    await eventually(check)


async def outcome_of(handle: WorkflowHandle[Any, Any]) -> str:
    """The `outcome` a flow recorded in its memo."""
    return await (await handle.describe()).memo_value("outcome", type_hint=str)


async def terminate(client: Client, *workflow_ids: str) -> None:
    """Cleanup: terminate those of the flows still running."""
    for workflow_id in workflow_ids:
        handle = client.get_workflow_handle(workflow_id)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test cleanup")


async def flows_per_second(
    client: Client,
    task_queue: str,
    flows: list[FlowInput],
    *,
    label: str,
    concurrency: int = 50,
    path: list[str] | None = None,
) -> float:
    """Run `flows` to their ends, `concurrency` at a time (benchmarks); raises unless each one `completed`
    (through `path`, if given)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int, flow: FlowInput) -> None:
        async with semaphore:
            handle = await client.start_workflow(
                AbandonedCartWorkflow.run,
                flow,
                id=f"bench-{label}-{i}-{uuid.uuid4()}",
                task_queue=task_queue,
                search_attributes=start_attributes(flow),
                execution_timeout=timedelta(minutes=2),
            )
            status = await handle.result()
            if status.outcome != "completed" or (path is not None and status.path != path):
                raise RuntimeError(f"{handle.id} ended {status.outcome} through {status.path}")

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(i, flow) for i, flow in enumerate(flows))), timeout=120)
    return len(flows) / (time.perf_counter() - start)
