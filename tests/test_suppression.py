"""The suppression list end to end on the dev server: the `/suppressions` API, and sends it blocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from scheduler.channels import Outbox
from scheduler.config import Settings
from scheduler.flow.attributes import OUTCOME
from scheduler.flow.models import FlowInput, FlowStatus
from tests.helpers.api import Api, running_api
from tests.helpers.flows import start_flow_input, wait_then_send
from tests.helpers.waiting import eventually


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> AsyncIterator[Api]:
    async with running_api(dev_env.client, settings, task_queue) as api:
        yield api


async def start_waiting(api: Api, phone: str) -> str:
    """A flow for `phone` that messages it after a 3 s wait, twice."""
    flow = FlowInput(definition=wait_then_send("3s"), campaign_id="b", customer={"id": "c1", "phone": phone})
    return (await start_flow_input(api.client, flow, api.settings.temporal.task_queue)).id


async def test_suppressions_api_adds_lists_and_removes(api: Api) -> None:
    http = api.http
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


async def test_suppressions_api_refuses_what_is_not_a_contact(api: Api) -> None:
    http = api.http
    bad = await http.post("/suppressions", json={"contact": "call me maybe"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "contact"]
    assert (await http.post("/suppressions", json={"contact": "+12125550142", "extra": 1})).status_code == 422
    assert (await http.delete("/suppressions/nobody")).status_code == 422
    assert (await http.get("/suppressions", params={"contact": "nobody"})).status_code == 422
    assert (await http.get("/suppressions", params={"cursor": "x"})).status_code == 422


async def test_send_to_a_suppressed_contact_delivers_nothing_and_ends_the_flow_opted_out(api: Api) -> None:
    """The flow was started (and waiting) before the opt-out: the send right after its wait checks the list."""
    blocked = await start_waiting(api, "(212) 555-0142")
    allowed = await start_waiting(api, "(212) 555-0143")
    response = await api.http.post("/suppressions", json={"contact": "+12125550142", "reason": "keyword STOP"})
    assert response.status_code == 201

    result = await api.client.get_workflow_handle(blocked, result_type=FlowStatus).result()
    assert (result.outcome, result.path) == ("opted_out", ["wait", "send"])
    control = await api.client.get_workflow_handle(allowed, result_type=FlowStatus).result()
    assert (control.outcome, control.path) == ("completed", ["wait", "send", "again"])
    assert [r["to"] for r in Outbox(api.settings.channels.outbox).read()] == ["(212) 555-0143", "(212) 555-0143"]

    description = await api.client.get_workflow_handle(blocked).describe()
    memo: dict[str, Any] = await description.memo()
    assert memo["outcome"] == "opted_out"
    assert [s["event"] for s in memo["steps"]] == ["condition_satisfied", "condition_not_satisfied"]

    async def outcomes_indexed() -> None:
        for workflow_id, outcome in ((blocked, "opted_out"), (allowed, "completed")):
            attributes = (await api.client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
            assert attributes.get(OUTCOME) == outcome

    await eventually(outcomes_indexed)
