"""Keywords that are also answers: "YES" opts a contact back in *and* answers its waiting flows; HELP is
answered and leaves them waiting. The same on every reply path (`/webhooks/replies`, `/webhooks/twilio`,
`/send-signal`, `scheduler signal`), on the real dev server; outcomes are read from the flows.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.start import signal_sent, start_flow
from scheduler.config import Settings, load_settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.attributes import REPLY_INTENT
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FLOW_REVISION, FlowInput, FlowStatus
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.worker import make_worker
from tests.helpers.api import Api, running_api
from tests.helpers.cli import scheduler, write_config
from tests.helpers.flows import reaches, start_flow_input, status, terminate
from tests.helpers.servers import scripted_server
from tests.helpers.signing import PUBLIC_URL, TWILIO_TOKEN, sms_form, twilio_request
from tests.helpers.waiting import eventually

SATISFIED = ["step_1", "step_2", "step_3"]
"""The seed campaign's path when its `wait_answer` (step_2) gets a reply."""
WELCOME, HELP = "Welcome back.", "Reply STOP to stop."
ANSWER_THEN_SEND = WorkflowDefinition.model_validate(
    {
        "start_step": "wait",
        "steps": {
            "wait": {"node": "wait_answer", "params": {"timeout": "10m"}, "condition": {"satisfied": "send"}},
            "send": {"node": "send_message", "go_to": "wait2"},
            "wait2": {"node": "wait_answer", "params": {"timeout": "10m"}},
        },
    }
)
"""Waits for the answer, messages the customer at once when it comes, then waits for another answer."""


def new_phone() -> str:
    """A phone number no other test's flow has (they share one dev server), spelled as a person would."""
    n = random.randrange(2_000_000, 9_999_999)
    return f"+1 (646) {n // 10_000:03d}-{n % 10_000:04d}"


def e164(phone: str) -> str:
    return "+" + "".join(c for c in phone if c.isdigit())


class Replies:
    """The API (`tests.helpers.api.Api`) with the reply paths, and the flows it started (ended afterwards)."""

    def __init__(self, api: Api) -> None:
        self.api, self.http, self.client, self.settings = api, api.http, api.client, api.settings
        self.started: list[str] = []

    async def start(self, phone: str, *, wait: bool = True) -> str:
        """A flow of the seed campaign for `phone`; `wait`: until its `wait_answer` (step_2) waits."""
        response = await self.api.start(customer={"id": f"c-{uuid.uuid4()}", "phone": phone})
        assert response.status_code == 200, response.text
        workflow_id: str = response.json()["workflow_id"]
        self.started.append(workflow_id)
        if wait:
            await reaches(self.client.get_workflow_handle(workflow_id), "step_2")
        return workflow_id

    async def start_answer_then_send(self, phone: str) -> str:
        flow = FlowInput(definition=ANSWER_THEN_SEND, campaign_id="b", customer={"id": "cb", "phone": phone})
        handle = await start_flow_input(self.client, flow, self.settings.temporal.task_queue)
        self.started.append(handle.id)
        await reaches(handle, "wait")
        return handle.id

    async def json(self, text: str, **target: str) -> httpx.Response:
        """POST /webhooks/replies (unsigned: no secret is set), a new reply id each time."""
        body = {**target, "text": text, "reply_id": f"r-{uuid.uuid4().hex}"}
        return await self.http.post("/webhooks/replies", json=body)

    async def sms(self, phone: str, text: str, *, sid: str | None = None) -> httpx.Response:
        """POST /webhooks/twilio as Twilio does, signed."""
        content, headers = twilio_request(sms_form(e164(phone), body=text, sid=sid))
        response = await self.http.post("/webhooks/twilio", content=content, headers=headers)
        assert response.status_code == 200, response.text
        return response

    async def reply(self, path: str, phone: str, text: str) -> list[str]:
        """`text` from `phone` by `path` ("json" or "twilio"); the flows it went to (Twilio: none said)."""
        if path == "twilio":
            assert (await self.sms(phone, text)).text == "<Response/>"  # nothing to confirm or explain
            return []
        response = await self.json(text, contact=phone)
        assert response.status_code == 202, response.text
        signaled: list[str] = response.json()["signaled"]
        return signaled

    def consent(self) -> Consent:
        return Consent(Store.open(self.settings.store_url))

    def sent_to(self, contact: str) -> list[dict[str, Any]]:
        return [r for r in Outbox(self.settings.channels.outbox).read() if r["to"] == contact]

    async def answered(self, contact: str, texts: list[str]) -> None:
        """Until the worker has sent `contact` exactly `texts` (keyword answers go a moment after the request)."""

        async def sent() -> None:
            assert [r["text"] for r in self.sent_to(contact)] == texts

        await eventually(sent)


@pytest_asyncio.fixture
async def replies(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> AsyncIterator[Replies]:
    settings.webhooks.twilio_auth_token = TWILIO_TOKEN
    settings.webhooks.public_url = PUBLIC_URL
    settings.webhooks.route_timeout = timedelta(seconds=5)
    settings.compliance.start_confirmation = WELCOME
    settings.compliance.help_reply = HELP
    async with running_api(dev_env.client, settings, task_queue) as api:
        r = Replies(api)
        try:
            yield r
        finally:
            await terminate(dev_env.client, *r.started)


TEXTS = ["YES", "Yes", "yes!", "Yes please!", "START", " unstop "]


@pytest.mark.parametrize("path", ["json", "twilio"])
@pytest.mark.parametrize("text", TEXTS, ids=[t.strip() for t in TEXTS])
async def test_reply_yes_answers_the_waiting_flow(replies: Replies, path: str, text: str) -> None:
    """Before, a one-word opt-in was taken for an opt-in only: `202 {"signaled": []}`, the flow timed out."""
    phone = new_phone()
    workflow_id = await replies.start(phone)

    signaled = await replies.reply(path, phone, text)

    assert signaled == ([] if path == "twilio" else [workflow_id])
    result = await replies.api.result(workflow_id)
    assert (result.path, result.outcome, result.replies) == (SATISFIED, "completed", 1)


async def test_reply_yes_to_a_flow_started_a_moment_ago_waits_for_it_like_any_reply(replies: Replies) -> None:
    """Visibility lists a new flow a moment late: "YES" gets the same wait (`route_timeout`) as "Yes please"."""
    for text in ("Yes please", "YES"):
        phone = new_phone()
        workflow_id = await replies.start(phone, wait=False)
        assert await replies.reply("json", phone, text) == [workflow_id], text
        result = await replies.api.result(workflow_id)
        assert (result.path, result.outcome) == (SATISFIED, "completed"), text


async def test_reply_yes_by_workflow_id_answers_that_flow(replies: Replies) -> None:
    workflow_id = await replies.start(new_phone())
    response = await replies.json("YES", workflow_id=workflow_id)
    assert (response.status_code, response.json()) == (202, {"signaled": [workflow_id]})
    assert (await replies.api.result(workflow_id)).path == SATISFIED


async def test_sms_yes_from_a_suppressed_contact_lifts_it_before_the_flow_sends(replies: Replies) -> None:
    """Suppressed (`POST /suppressions`) while its flow waits: the "YES" lifts the suppression first, so the
    message the answered flow sends at once is delivered; a redelivered "YES" changes nothing."""
    phone = new_phone()
    workflow_id = await replies.start_answer_then_send(phone)
    added = await replies.http.post("/suppressions", json={"contact": phone, "reason": "called us"})
    assert added.status_code == 201, added.text

    sid = f"SM{uuid.uuid4().hex}"
    answer = await replies.sms(phone, "YES", sid=sid)

    assert answer.text == f"<Response><Message>{WELCOME}</Message></Response>"
    consent = replies.consent()
    try:
        assert consent.suppressed([e164(phone)]) == set()
    finally:
        consent.store.close()
    handle = replies.client.get_workflow_handle(workflow_id)
    await reaches(handle, "wait2")  # it took `satisfied` and sent its message
    assert [r["workflow_id"] for r in replies.sent_to(phone)] == [workflow_id]

    again = await replies.sms(phone, "YES", sid=sid)
    assert again.text == "<Response/>"  # nothing lifted: nothing to confirm
    now = await status(handle)
    assert (now.current_step, now.replies) == ("wait2", 1)  # the redelivery did not answer wait2

    assert await replies.reply("twilio", phone, "Thanks") == []
    result = await replies.api.result(workflow_id)
    assert (result.path, result.outcome, result.replies) == (["wait", "send", "wait2"], "completed", 2)


async def test_reply_yes_without_a_flow_is_answered_202_and_lifts_a_suppression(replies: Replies) -> None:
    """Never opted out: "YES" waits for a flow as long as any reply (`route_timeout`). Opted out: no flow
    can have started a moment ago (runs skip suppressed contacts), so it is answered after one lookup."""
    replies.settings.webhooks.route_timeout = timedelta(seconds=2)
    never, suppressed = new_phone(), new_phone()
    consent = replies.consent()
    try:
        consent.suppress(suppressed, reason="keyword STOP")
        took = []
        for phone in (never, suppressed):
            started = time.monotonic()
            response = await replies.json("YES", contact=phone)
            took.append(time.monotonic() - started)
            assert (response.status_code, response.json()) == (202, {"signaled": []})
        assert consent.suppressed([e164(suppressed)]) == set()
    finally:
        consent.store.close()
    assert 2 <= took[0] < 4 and took[1] < 1, took
    await replies.answered(e164(suppressed), [WELCOME])
    assert replies.sent_to(e164(never)) == []  # nothing was lifted: nothing to confirm


async def test_help_is_answered_and_the_flow_keeps_waiting_for_a_real_reply(replies: Replies) -> None:
    phone = new_phone()
    workflow_id = await replies.start(phone)
    handle = replies.client.get_workflow_handle(workflow_id)

    by_json = await replies.json("help", contact=phone)
    assert (by_json.status_code, by_json.json()) == (202, {"signaled": []})
    by_sms = await replies.sms(phone, "HELP")
    assert by_sms.text == f"<Response><Message>{HELP}</Message></Response>"
    await replies.answered(e164(phone), [HELP])  # the JSON path has the worker send it

    now = await status(handle)
    assert (now.current_step, now.replies) == ("step_2", 0)
    assert await replies.reply("json", phone, "Yes please!") == [workflow_id]
    result = await replies.api.result(workflow_id)
    assert (result.path, result.outcome, result.replies) == (SATISFIED, "completed", 1)


async def test_send_signal_yes_answers_the_flow_and_says_so(replies: Replies) -> None:
    plain, lifted = new_phone(), new_phone()
    first = await replies.start(plain)
    response = await replies.api.signal(first, text="YES")
    assert (response.status_code, response.json()) == (200, {"message": signal_sent("client-answered", first)})
    assert (await replies.api.result(first)).path == SATISFIED

    second = await replies.start(lifted)
    assert (await replies.http.post("/suppressions", json={"contact": lifted})).status_code == 201
    response = await replies.api.signal(second, text="Yes")
    assert response.status_code == 200, response.text
    assert response.json()["message"] == f"{signal_sent('client-answered', second)}; opted 1 contact(s) back in"
    assert (await replies.api.result(second)).path == SATISFIED


async def test_cli_signal_text_yes_answers_the_flow_and_says_so(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    address = dev_env.client.service_client.config.target_host
    config = write_config(tmp_path / "scheduler.toml", address=address, task_queue=task_queue)
    settings = load_settings(config)
    plain, lifted = new_phone(), new_phone()
    async with make_worker(dev_env.client, settings):
        flows = [
            await start_flow(dev_env.client, settings, customer={"id": f"c-{uuid.uuid4()}", "phone": phone})
            for phone in (plain, lifted)
        ]
        try:
            for flow in flows:
                await reaches(flow, "step_2")
            added = await scheduler("suppress", "add", lifted, "--config", config)
            assert added.code == 0, added

            runs = [await scheduler("signal", f.id, "--text", "YES", "--config", config) for f in flows]

            assert [r.code for r in runs] == [0, 0], runs
            assert json.loads(runs[0].stdout) == {"message": signal_sent("client-answered", flows[0].id)}
            assert json.loads(runs[1].stdout) == {
                "message": f"{signal_sent('client-answered', flows[1].id)}; opted 1 contact(s) back in"
            }
            for flow in flows:
                result = await dev_env.client.get_workflow_handle(flow.id, result_type=FlowStatus).result()
                assert (result.path, result.outcome) == (SATISFIED, "completed")
            listed = await scheduler("suppress", "list", "--json", "--config", config)
            assert [e["contact"] for e in json.loads(listed.stdout)] == []
        finally:
            await terminate(dev_env.client, *(f.id for f in flows))


@pytest.mark.parametrize(("statuses", "delivered"), [([503, 200], True), ([400], False)], ids=["retried", "final"])
async def test_help_answer_is_retried_by_the_worker_unless_refused_for_good(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, statuses: list[int], delivered: bool
) -> None:
    """Before, the API sent the answer once itself: a gateway's 503 lost it (logged). Now the worker's
    delivery retries it like a flow's message (same idempotency key), and a refusal (400) is final."""
    settings.compliance.help_reply = HELP
    phone, reply_id = new_phone(), f"r-{uuid.uuid4().hex}"
    with scripted_server("/messages") as gateway:
        gateway.statuses = statuses
        settings.channels.http.url = gateway.url
        settings.channels.default = "http"
        async with running_api(dev_env.client, settings, task_queue) as api:
            response = await api.http.post(
                "/webhooks/replies", json={"contact": phone, "text": "HELP", "reply_id": reply_id}
            )
            assert (response.status_code, response.json()) == (202, {"signaled": []})
            handle = api.client.get_workflow_handle(f"keyword-answer-{reply_id}")
            if delivered:
                await handle.result()
            else:
                with pytest.raises(WorkflowFailureError) as failed:
                    await handle.result()
                assert "could not answer" in str(failed.value.cause)
    sent = [r for r in Outbox(settings.channels.outbox).read() if r["to"] == e164(phone)]
    assert [(r["channel"], r["text"]) for r in sent] == ([("http", HELP)] if delivered else [])
    assert [r["json"]["text"] for r in gateway.requests] == [HELP] * len(statuses)
    assert len({r["headers"]["Idempotency-Key"] for r in gateway.requests}) == 1


LINK_ON_YES = WorkflowDefinition.model_validate(
    {
        "start_step": "wait",
        "steps": {
            "wait": {
                "node": "wait_answer",
                "params": {"timeout": "10m"},
                "condition": {"satisfied": "owner"},
                "intents": {"yes": {"match": ["yes", "sure"], "go_to": "link"}},
            },
            "link": {"node": "send_message", "params": {"template": "Here is your cart"}},
            "owner": {"node": "notify_creator"},
        },
    }
)
"""YES (an opt-in keyword and, here, an intent phrase) → the cart link; any other answer → the owner."""


async def test_sms_yes_from_a_suppressed_contact_lifts_it_and_takes_the_yes_intent(replies: Replies) -> None:
    """Where a keyword meets an intent: "YES" opts the contact back in first, then reaches the flow as a reply
    whose intent is `yes`: the link goes out, to a contact no longer suppressed."""
    phone = new_phone()
    flow = FlowInput(
        definition=LINK_ON_YES, campaign_id="b", customer={"id": "cy", "phone": phone}, revision=FLOW_REVISION
    )
    handle = await start_flow_input(replies.client, flow, replies.settings.temporal.task_queue)
    replies.started.append(handle.id)
    await reaches(handle, "wait")
    added = await replies.http.post("/suppressions", json={"contact": phone, "reason": "called us"})
    assert added.status_code == 201, added.text

    answer = await replies.sms(phone, "YES")

    assert answer.text == f"<Response><Message>{WELCOME}</Message></Response>"
    result = await replies.api.result(handle.id)
    assert (result.path, result.outcome) == (["wait", "link"], "completed")
    assert [(r["step"], r["text"]) for r in replies.sent_to(phone)] == [("link", "Here is your cart")]
    assert (await handle.describe()).typed_search_attributes.get(REPLY_INTENT) == "yes"
