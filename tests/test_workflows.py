"""The flow engine on the time-skipping server: both branches, opt-out, early and duplicate replies."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from scheduler.config import Settings
from scheduler.definition import WorkflowDefinition
from scheduler.engine import start_attributes
from scheduler.models import FlowInput, FlowStatus, Reply
from scheduler.worker import make_worker
from scheduler.workflows import AbandonedCartWorkflow


async def start(env: WorkflowEnvironment, definition: WorkflowDefinition, task_queue: str) -> WorkflowHandle:
    flow = FlowInput(definition=definition, owner="owner@example.com", customer={"id": "c1", "phone": "+15550001"})
    return await env.client.start_workflow(
        AbandonedCartWorkflow.run,
        flow,
        id=f"abandoned_cart-{uuid.uuid4()}",
        task_queue=task_queue,
        search_attributes=start_attributes(flow),
    )


async def test_flow_reply_takes_satisfied_branch(ts_env, seed_definition, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        await handle.signal("client-answered", Reply(reply_id="r1", text="yes please"))
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_3"]
    assert result.outcome == "completed"


async def test_flow_no_reply_takes_timeout_branch(ts_env, seed_definition, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_4", "step_5", "step_6"]
    desc = await handle.describe()
    assert desc.close_time - desc.start_time >= timedelta(minutes=2)
