"""The suppression list end to end on the dev server: the `/suppressions` API, and sends it blocks."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from scheduler.api import create_app
from scheduler.config import Settings
from scheduler.flow.attributes import OUTCOME
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.workflows import AbandonedCartWorkflow
from scheduler.worker import make_worker
from tests.helpers.waiting import eventually

WAIT_THEN_SEND = WorkflowDefinition.model_validate(
    {
        "start_step": "wait",
        "steps": {
            "wait": {"node": "explicit_wait", "params": {"duration": "3s"}, "go_to": "send"},
            "send": {"node": "send_message", "go_to": "again"},
            "again": {"node": "send_message"},
        },
    }
)


@dataclass
class Service:
    http: httpx.AsyncClient
    client: Client
    settings: Settings

    def sent_to(self) -> list[str]:
        outbox = self.settings.channels.outbox
        lines = outbox.read_text(encoding="utf-8").splitlines() if outbox.exists() else []
        return [json.loads(line)["to"] for line in lines]

    async def start(self, phone: str) -> str:
        flow = FlowInput(definition=WAIT_THEN_SEND, campaign_id="b", customer={"id": "c1", "phone": phone})
        workflow_id = f"b-{uuid.uuid4()}"
        await self.client.start_workflow(
            AbandonedCartWorkflow.run,
            flow,
            id=workflow_id,
            task_queue=self.settings.temporal.task_queue,
            search_attributes=start_attributes(flow),
        )
        return workflow_id


@pytest_asyncio.fixture
async def service(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> AsyncIterator[Service]:
    settings.temporal.task_queue = task_queue
    app = create_app(settings, client=dev_env.client)
    transport = httpx.ASGITransport(app=app)
    async with (
        make_worker(dev_env.client, settings),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        yield Service(http, dev_env.client, settings)


async def test_suppressions_api_adds_lists_and_removes(service: Service) -> None:
    http = service.http
    created = await http.post("/suppressions", json={"contact": "(212) 555-0142", "reason": "called us"})
    assert created.status_code == 201, created.text
    entry = created.json()
    assert (entry["contact"], entry["kind"], entry["reason"]) == ("+12125550142", "sms", "called us")
    again = await http.post("/suppressions", json={"contact": "+1 212 555 0142"})
    assert (again.status_code, again.json()["reason"]) == (200, "called us")
    for i in range(101):
        assert (await http.post("/suppressions", json={"contact": f"u{i}@example.com"})).status_code == 201

    first = (await http.get("/suppressions")).json()
    assert len(first["items"]) == 100 and first["next"] is not None
    rest = (await http.get("/suppressions", params={"cursor": first["next"]})).json()
    assert (len(rest["items"]), rest["next"]) == (2, None)
    one = (await http.get("/suppressions", params={"contact": "212-555-0142"})).json()
    assert [e["contact"] for e in one["items"]] == ["+12125550142"]

    assert (await http.delete("/suppressions/+12125550142")).status_code == 204
    missing = await http.delete("/suppressions/+12125550142")
    assert (missing.status_code, missing.json()) == (404, {"detail": "+12125550142 is not suppressed"})


async def test_suppressions_api_refuses_what_is_not_a_contact(service: Service) -> None:
    http = service.http
    bad = await http.post("/suppressions", json={"contact": "call me maybe"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "contact"]
    assert (await http.post("/suppressions", json={"contact": "+12125550142", "extra": 1})).status_code == 422
    assert (await http.delete("/suppressions/nobody")).status_code == 422
    assert (await http.get("/suppressions", params={"contact": "nobody"})).status_code == 422
    assert (await http.get("/suppressions", params={"cursor": "x"})).status_code == 422


async def test_send_to_a_suppressed_contact_delivers_nothing_and_ends_the_flow_opted_out(service: Service) -> None:
    """The flow was started (and waiting) before the opt-out: the send right after its wait checks the list."""
    blocked = await service.start("(212) 555-0142")
    allowed = await service.start("(212) 555-0143")
    response = await service.http.post("/suppressions", json={"contact": "+12125550142", "reason": "keyword STOP"})
    assert response.status_code == 201

    result = await service.client.get_workflow_handle(blocked, result_type=FlowStatus).result()
    assert (result.outcome, result.path) == ("opted_out", ["wait", "send"])
    control = await service.client.get_workflow_handle(allowed, result_type=FlowStatus).result()
    assert (control.outcome, control.path) == ("completed", ["wait", "send", "again"])
    assert service.sent_to() == ["(212) 555-0143", "(212) 555-0143"]

    description = await service.client.get_workflow_handle(blocked).describe()
    memo: dict[str, Any] = await description.memo()
    assert memo["outcome"] == "opted_out"
    assert [s["event"] for s in memo["steps"]] == ["condition_satisfied", "condition_not_satisfied"]

    async def outcomes_indexed() -> None:
        for workflow_id, outcome in ((blocked, "opted_out"), (allowed, "completed")):
            attributes = (await service.client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
            assert attributes.get(OUTCOME) == outcome

    await eventually(outcomes_indexed)
