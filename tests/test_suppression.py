"""The suppression list end to end on the dev server: the `/suppressions` API, and sends it blocks."""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from scheduler.api import create_app
from scheduler.config import FrequencyCap, Settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.attributes import OUTCOME
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.worker import make_worker
from tests.helpers.api import Api, running_api
from tests.helpers.campaigns import JSONL_AUDIENCE, WAITING
from tests.helpers.flows import one_step, reaches, start_flow_input, wait_then_send
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.servers import scripted_server
from tests.helpers.signing import PUBLIC_URL, TWILIO_TOKEN, sms_form, twilio_request
from tests.helpers.waiting import eventually

JSON = {"content-type": "application/json"}

WAIT_THEN_MESSAGE = """\
[workflow]
start_step = "wait"

[workflow.steps.wait]
node = "explicit_wait"
params = { duration = "1h" }
go_to = "send"

[workflow.steps.send]
node = "send_message"
"""


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

    assert (await http.delete("/suppressions/+12125550142", headers=JSON)).status_code == 204
    missing = await http.delete("/suppressions/+12125550142", headers=JSON)
    assert (missing.status_code, missing.json()) == (404, {"detail": "+12125550142 is not suppressed"})


async def test_suppressions_api_refuses_what_is_not_a_contact(api: Api) -> None:
    http = api.http
    bad = await http.post("/suppressions", json={"contact": "call me maybe"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "contact"]
    assert (await http.post("/suppressions", json={"contact": "+12125550142", "extra": 1})).status_code == 422
    assert (await http.delete("/suppressions/nobody", headers=JSON)).status_code == 422
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


async def test_once_an_opt_out_is_answered_no_delivery_to_that_contact_starts(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, store_url: str
) -> None:
    """50 flows of five campaigns message one phone through a slow gateway while it opts out: each send
    either saw the opt-out or reached the gateway before the opt-out was answered (the gateway's log)."""
    phone = "+12125550142"
    settings.store.url = store_url
    with scripted_server("/messages", delay=0.2) as gateway:
        settings.channels.http.url = gateway.url
        async with running_api(dev_env.client, settings, task_queue) as api:

            async def start(i: int) -> str:
                customer = {"id": f"u{i}", "phone": phone}
                flow = FlowInput(definition=one_step(channel="http"), campaign_id=f"c{i % 5}", customer=customer)
                return (await start_flow_input(api.client, flow, task_queue)).id

            async def opt_out_once_sending() -> float:
                await eventually(first_delivery, timeout=30)
                response = await api.http.post("/suppressions", json={"contact": phone})
                assert response.status_code == 201, response.text
                return time.monotonic()

            async def first_delivery() -> None:
                assert gateway.requests

            answered, *flows = await asyncio.gather(opt_out_once_sending(), *(start(i) for i in range(50)))
            outcomes = [(await api.result(workflow_id)).outcome for workflow_id in flows]

    delivered = [request["at"] for request in gateway.requests]
    assert outcomes.count("completed") == len(delivered)
    assert outcomes.count("opted_out") == 50 - len(delivered)
    assert delivered and len(delivered) < 50, "the opt-out raced no send"
    late = [round(at - answered, 3) for at in delivered if at > answered]
    assert not late, f"deliveries started after the opt-out was answered (seconds after): {late}"


async def test_stop_in_one_campaign_ends_and_skips_every_campaign_until_start(campaigns: Campaigns) -> None:
    """A signed Twilio STOP answering campaign A ends B's flow of that phone while it waits (nothing sent);
    the next runs of A and B start nothing for the phone; after START, the run after messages it again."""
    c, phone = campaigns, "+12125550142"
    settings = c.settings
    settings.webhooks.twilio_auth_token = TWILIO_TOKEN
    settings.webhooks.public_url = PUBLIC_URL
    outbox = Outbox(settings.channels.outbox)

    def carts(*refs: str) -> None:
        rows = [{"cart_ref": ref, "mobile": "(212) 555-0142", "name": "Ada"} for ref in refs]
        (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    async def sms(body: str) -> str:
        content, headers = twilio_request(sms_form(phone, body=body))
        response = await http.post("/webhooks/twilio", content=content, headers=headers)
        assert response.status_code == 200, response.text
        return response.text

    carts("k1")
    c.write("a", workflow=JSONL_AUDIENCE + WAITING)  # message, then wait for the answer
    c.write("b", workflow=JSONL_AUDIENCE + WAIT_THEN_MESSAGE)
    await c.sync()
    app = create_app(settings, client=c.client)
    try:
        async with (
            make_worker(c.client, settings),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
        ):
            assert [(await c.run(name, 0))["started"] for name in "ab"] == [1, 1]
            a1, b1 = (c.client.get_workflow_handle(f"{c.id(name)}-k1", result_type=FlowStatus) for name in "ab")
            await reaches(a1, "wait")
            await reaches(b1, "wait")
            assert [m["workflow_id"] for m in outbox.read()] == [a1.id]

            assert await sms("Stop") == "<Response/>"  # Twilio confirms opt-outs itself
            a_result, b_result = await a1.result(), await b1.result()
            assert (a_result.outcome, a_result.path) == ("opted_out", ["send", "wait"])
            assert (b_result.outcome, b_result.path) == ("opted_out", [])

            carts("k1", "k2")  # the customer left another cart
            for name in "ab":
                run = await c.run(name, 1)
                assert (run["started"], run["skipped_suppressed"]) == (0, 2), run

            assert await sms("START") == "<Response/>"
            for name in "ab":
                run = await c.run(name, 2)
                assert (run["started"], run["skipped_suppressed"], run["skipped_duplicate"]) == (1, 0, 1), run
            await reaches(c.client.get_workflow_handle(f"{c.id('b')}-k2"), "wait")

            async def messaged_again() -> None:
                assert [m["workflow_id"] for m in outbox.read()] == [a1.id, f"{c.id('a')}-k2"]

            await eventually(messaged_again)
    finally:
        for name in "ab":
            await terminate_flows(c.client, c.id(name))


# One contact, one spelling: an IDN domain and its punycode form, case and invisible characters are one
# contact for suppression, reply routing and frequency caps alike.


async def start_mailing(api: Api, email: str, definition: Any = None) -> str:
    """A flow for a customer known by `email` alone (the console channel sends to it) that messages it after 3 s."""
    flow = FlowInput(
        definition=definition or wait_then_send("3s"), campaign_id="b", customer={"id": "c1", "email": email}
    )
    return (await start_flow_input(api.client, flow, api.settings.temporal.task_queue)).id


async def test_a_suppressed_address_blocks_sends_to_every_spelling_of_it(api: Api) -> None:
    local = f"ann.{uuid.uuid4().hex[:8]}"
    to_punycode = await start_mailing(api, f"{local}@xn--bcher-kva.de")
    to_unicode = await start_mailing(api, f"{local.upper()}@BÜCHER.de")
    other = await start_mailing(api, f"{local}-not@bücher.de")
    response = await api.http.post("/suppressions", json={"contact": f"{local}\u200b@Bücher.de\u200f"})
    assert response.status_code == 201, response.text
    assert response.json()["contact"] == f"{local}@xn--bcher-kva.de"

    for blocked in (to_punycode, to_unicode):
        result = await api.client.get_workflow_handle(blocked, result_type=FlowStatus).result()
        assert (result.outcome, result.path) == ("opted_out", ["wait", "send"])
    control = await api.client.get_workflow_handle(other, result_type=FlowStatus).result()
    assert control.outcome == "completed"
    assert {r["to"] for r in Outbox(api.settings.channels.outbox).read()} == {f"{local}-not@bücher.de"}


async def test_a_reply_from_another_spelling_of_the_address_finds_the_flow(api: Api) -> None:
    local = f"ann.{uuid.uuid4().hex[:8]}"
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(tomllib.loads(WAITING)["workflow"]),
        customer={"id": "c1", "email": f"{local}@XN--BCHER-KVA.de"},
    )
    handle = await start_flow_input(api.client, flow, api.settings.temporal.task_queue)
    await reaches(handle, "wait")

    async def routed() -> None:
        reply = {"contact": f"\u200f{local.title()}\u200b@bücher.de", "text": "yes", "reply_id": "r1"}
        response = await api.http.post("/webhooks/replies", json=reply)
        assert (response.status_code, response.json()) == (202, {"signaled": [handle.id]})

    await eventually(routed)  # visibility indexes the flow's contacts shortly after it starts
    assert (await handle.result()).path == ["send", "wait"]
    assert (await handle.result()).replies == 1


async def test_a_frequency_cap_counts_every_spelling_of_an_address_as_one_contact(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    settings.compliance.frequency_caps = [FrequencyCap.model_validate({"channels": ["console"], "max": 1, "per": "1h"})]
    local = f"ann.{uuid.uuid4().hex[:8]}"
    async with running_api(dev_env.client, settings, task_queue) as api:
        first = await start_mailing(api, f"{local}@bücher.de", one_step())
        assert (await api.client.get_workflow_handle(first, result_type=FlowStatus).result()).path == ["step_1"]
        second = await start_mailing(api, f"{local.upper()}\u200b@xn--bcher-kva.DE", one_step())
        await api.client.get_workflow_handle(second, result_type=FlowStatus).result()
    assert [r["to"] for r in Outbox(settings.channels.outbox).read()] == [f"{local}@bücher.de"]
