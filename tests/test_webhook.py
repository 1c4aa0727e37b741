"""The webhook node through a real flow on the time-skipping server, against a real local HTTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.worker import make_worker
from tests.helpers.flows import start_flow_input
from tests.helpers.servers import ScriptedServer, scripted_server

CUSTOMER = {"id": "c1", "phone": "+15550001", "name": "Ada"}
CART = {"id": "cart-7", "url": "https://shop.example/cart/7", "total": 42.5}


@pytest.fixture
def hook() -> Iterator[ScriptedServer]:
    with scripted_server("/hooks/cart") as server:
        yield server


def webhook_flow(**params: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {
            "start_step": "step_1",
            "steps": {
                "step_1": {
                    "node": "webhook",
                    "params": {"initial_interval": "1s", "max_attempts": 3, **params},
                    "condition": {"satisfied": "step_2", "not_satisfied": "step_3"},
                },
                "step_2": {"node": "send_message", "params": {"template": "webhook accepted"}},
                "step_3": {"node": "send_message", "params": {"template": "webhook refused"}},
            },
        }
    )


async def run_flow(
    env: WorkflowEnvironment, definition: WorkflowDefinition, settings: Settings, task_queue: str
) -> tuple[WorkflowHandle, FlowStatus]:
    flow = FlowInput(definition=definition, campaign_id="camp-hook", customer=CUSTOMER, cart=CART)
    async with make_worker(env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(env.client, flow, task_queue)
        return handle, await handle.result()


async def test_webhook_2xx_takes_satisfied_edge(
    ts_env, settings: Settings, task_queue: str, hook: ScriptedServer
) -> None:
    hook.statuses = [201]
    handle, result = await run_flow(
        ts_env, webhook_flow(url=hook.url, headers={"X-Campaign": "camp-hook"}), settings, task_queue
    )
    assert result.path == ["step_1", "step_2"]
    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request["path"] == "/hooks/cart"
    assert request["headers"]["X-Campaign"] == "camp-hook"
    assert request["json"] == {
        "workflow_id": handle.id,
        "campaign_id": "camp-hook",
        "step": "step_1",
        "customer": CUSTOMER,
        "cart": CART,
        "attempt": 1,
    }
    assert [line["text"] for line in Outbox(settings.channels.outbox).read()] == ["webhook accepted"]


@pytest.mark.parametrize("status", [404, 302], ids=["client-error", "redirect"])
async def test_webhook_refusal_takes_not_satisfied_edge_without_retry(
    ts_env, settings: Settings, task_queue: str, hook: ScriptedServer, status: int
) -> None:
    hook.statuses = [status, 200]
    _, result = await run_flow(ts_env, webhook_flow(url=hook.url), settings, task_queue)
    assert result.path == ["step_1", "step_3"]
    assert len(hook.requests) == 1
    assert [line["text"] for line in Outbox(settings.channels.outbox).read()] == ["webhook refused"]


async def test_webhook_429_is_retried(ts_env, settings: Settings, task_queue: str, hook: ScriptedServer) -> None:
    hook.statuses = [429, 200]
    _, result = await run_flow(ts_env, webhook_flow(url=hook.url), settings, task_queue)
    assert result.path == ["step_1", "step_2"]
    assert len(hook.requests) == 2


async def test_webhook_5xx_then_2xx_retries_to_satisfied(
    ts_env, settings: Settings, task_queue: str, hook: ScriptedServer
) -> None:
    hook.statuses = [500, 200]
    _, result = await run_flow(ts_env, webhook_flow(url=hook.url), settings, task_queue)
    assert result.path == ["step_1", "step_2"]
    assert [r["json"]["attempt"] for r in hook.requests] == [1, 2]


async def test_webhook_always_5xx_takes_not_satisfied_after_max_attempts(
    ts_env, settings: Settings, task_queue: str, hook: ScriptedServer
) -> None:
    hook.statuses = [500]
    _, result = await run_flow(ts_env, webhook_flow(url=hook.url, max_attempts=2), settings, task_queue)
    assert result.path == ["step_1", "step_3"]
    assert result.outcome == "completed"
    assert [r["json"]["attempt"] for r in hook.requests] == [1, 2]


async def test_webhook_unreachable_takes_not_satisfied_after_max_attempts(
    ts_env, settings: Settings, task_queue: str
) -> None:
    # A port bound but not listening: every attempt is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        handle, result = await run_flow(ts_env, webhook_flow(url=url, max_attempts=2), settings, task_queue)
    assert result.path == ["step_1", "step_3"]
    history = await handle.fetch_history()
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert [a.attempt for a in started] == [2, 1]  # the webhook's last attempt, then step_3's send_message
    assert [line["text"] for line in Outbox(settings.channels.outbox).read()] == ["webhook refused"]


async def test_webhook_without_url_records_payload_in_outbox(ts_env, settings: Settings, task_queue: str) -> None:
    handle, result = await run_flow(ts_env, webhook_flow(), settings, task_queue)
    assert result.path == ["step_1", "step_2"]
    lines = Outbox(settings.channels.outbox).read()
    hooks = [line for line in lines if line["channel"] == "webhook"]
    assert len(hooks) == 1
    assert hooks[0]["workflow_id"] == handle.id
    assert hooks[0]["campaign_id"] == "camp-hook"
    assert hooks[0]["step"] == "step_1"
    assert hooks[0]["payload"]["customer"] == CUSTOMER
    assert hooks[0]["payload"]["cart"] == CART
    assert [line["channel"] for line in lines] == ["webhook", "console"]
