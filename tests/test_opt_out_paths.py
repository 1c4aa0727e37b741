"""One opt-out, one path: however it comes (an SMS or e-mail STOP, a one-click unsubscribe link), a flow's
customer who opts out takes the same edge, and only once (dev server: opt-outs find flows through visibility)."""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.delivery.unsubscribe import Unsubscribe, links
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.visibility import quote
from tests.helpers.api import Api, running_api
from tests.helpers.campaigns import STOP_THEN_TELL
from tests.helpers.flows import reaches, start_flow_input
from tests.helpers.waiting import eventually

ONE_CLICK = {"content": "List-Unsubscribe=One-Click", "headers": {"content-type": "application/x-www-form-urlencoded"}}


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> AsyncIterator[Api]:
    settings.compliance.unsubscribe_secret = "k3VbQm9ZpT2xW7rN4cY8fH1jL6sD0gAe"
    settings.webhooks.public_url = "https://hooks.example.com"
    async with running_api(dev_env.client, settings, task_queue) as api:
        yield api


async def waiting_flow(api: Api, email: str) -> WorkflowHandle[FlowStatus, FlowStatus]:
    """A flow that e-mailed `email` and waits for the answer, listed in visibility by its contact."""
    definition = WorkflowDefinition.model_validate(tomllib.loads(STOP_THEN_TELL)["workflow"])
    flow = FlowInput(definition=definition, campaign_id="spring", owner="owner@example.com", customer={"email": email})
    handle = await start_flow_input(api.client, flow, api.settings.temporal.task_queue)
    await reaches(handle, "wait")

    async def listed() -> None:
        query = f"WorkflowId = {quote(handle.id)} AND CustomerContact = {quote(email)}"
        assert [e.id async for e in api.client.list_workflows(query)] == [handle.id]

    await eventually(listed)
    return api.client.get_workflow_handle(handle.id, result_type=FlowStatus)


@pytest.mark.parametrize("by", ["unsubscribe-link", "stop-reply"])
async def test_every_opt_out_takes_the_waits_not_satisfied_edge_at_once(api: Api, by: str) -> None:
    """A waiting flow whose customer clicks the unsubscribe link ends as after a STOP: the owner is told now,
    not when the hour's wait runs out, and the customer's next message is refused. A second click changes
    nothing."""
    email = f"ann.{uuid.uuid4().hex[:8]}@example.com"
    handle = await waiting_flow(api, email)
    if by == "unsubscribe-link":
        configured = links(api.settings)
        assert configured is not None
        token = configured.token(Unsubscribe(email, "spring", handle.id))
        for _ in range(2):
            answer = await api.http.post("/unsubscribe", params={"token": token}, **ONE_CLICK)
            assert answer.status_code == 200, answer.text
    else:
        answer = await api.http.post("/webhooks/replies", json={"contact": email, "text": "Stop", "reply_id": "r1"})
        assert (answer.status_code, answer.json()) == (202, {"signaled": [handle.id]})
    result = await asyncio.wait_for(handle.result(), timeout=20)
    assert (result.path, result.outcome, result.replies) == (["send", "wait", "owner", "sorry"], "opted_out", 1)
    consent = Consent(Store.open(api.settings.store_url))
    try:
        assert consent.suppressed([email]) == {email}
    finally:
        consent.store.close()
    steps = [r["step"] for r in Outbox(api.settings.channels.outbox).read() if r["workflow_id"] == handle.id]
    assert steps == ["send", "owner"]  # "sorry" found the contact suppressed
