"""`/webhooks/replies` and `/webhooks/twilio` end to end on the real dev server (routing needs visibility).

Requests are signed by the reference implementations (`standardwebhooks`, `twilio`); outcomes are read
from Temporal: the flows signalled, the `status` query's distinct replies, the flow's result.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from twilio.request_validator import RequestValidator

from scheduler.api import create_app
from scheduler.campaigns.start import start_flow
from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.attributes import CUSTOMER_CONTACT, REPLY_IDS, reply_key
from scheduler.flow.contacts import redact
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.workflows import AbandonedCartWorkflow
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.visibility import quote
from scheduler.worker import make_worker
from tests.helpers.flows import reaches, start_flow_input, status, terminate, wait_then_send
from tests.helpers.metrics import metric
from tests.helpers.signing import PUBLIC_URL, TWILIO_TOKEN, WEBHOOK_SECRET, signed_headers, sms_form, twilio_request
from tests.helpers.waiting import eventually

TWIML = "<Response/>"


def new_phone() -> str:
    """A phone number no other test's flow has (they share one dev server), spelled as a person would."""
    n = random.randrange(2_000_000, 9_999_999)
    return f"+1 (646) {n // 10_000:03d}-{n % 10_000:04d}"


def e164(phone: str) -> str:
    return "+" + "".join(c for c in phone if c.isdigit())


@dataclass
class Hooks:
    http: httpx.AsyncClient
    client: Client
    settings: Settings
    started: list[str]

    async def start(self, **customer: Any) -> str:
        response = await self.http.post("/start-workflow", json={"customer": customer})
        assert response.status_code == 200, response.text
        workflow_id: str = response.json()["workflow_id"]
        self.started.append(workflow_id)
        return workflow_id

    async def reply(self, body: dict[str, Any], *, msg_id: str | None = None, **sign: Any) -> httpx.Response:
        """POST /webhooks/replies, signed by `standardwebhooks` when `msg_id` is given."""
        content = httpx.Request("POST", "http://x", json=body).content
        headers = {"content-type": "application/json"}
        if msg_id is not None:
            headers |= signed_headers(content, msg_id=msg_id, **sign)
        return await self.http.post("/webhooks/replies", content=content, headers=headers)

    async def sms(self, form: dict[str, str], *, url: str | None = None, token: str = TWILIO_TOKEN) -> httpx.Response:
        """POST /webhooks/twilio as Twilio does, signed by `twilio` over `url` (default: the public URL)."""
        content, headers = twilio_request(form, url=url, token=token)
        return await self.http.post("/webhooks/twilio", content=content, headers=headers)

    async def status(self, workflow_id: str) -> FlowStatus:
        return await status(self.client.get_workflow_handle(workflow_id))

    async def result(self, workflow_id: str) -> FlowStatus:
        return await self.client.get_workflow_handle(workflow_id, result_type=FlowStatus).result()


@pytest_asyncio.fixture
async def hooks(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> AsyncIterator[Hooks]:
    """The app with both secrets set, and a worker on a fresh queue; flows it started are ended afterwards."""
    settings.temporal.task_queue = task_queue
    settings.webhooks.secret = WEBHOOK_SECRET
    settings.webhooks.twilio_auth_token = TWILIO_TOKEN
    settings.webhooks.public_url = PUBLIC_URL
    settings.webhooks.route_timeout = timedelta(seconds=5)
    app = create_app(settings, client=dev_env.client)
    hooks = Hooks(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost"),
        dev_env.client,
        settings,
        [],
    )
    try:
        async with make_worker(dev_env.client, settings), hooks.http:
            yield hooks
    finally:
        await terminate(dev_env.client, *hooks.started)


# Routing


async def test_twilio_reply_from_number_in_another_format_reaches_flow(hooks: Hooks) -> None:
    """The issue's example: `+1 (212) 555-0123` at the start, `+12125550123` from Twilio."""
    workflow_id = await hooks.start(id="c-212", phone="+1 (212) 555-0123")
    attributes = (await hooks.client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
    assert attributes.get(CUSTOMER_CONTACT) == ["+12125550123"]

    response = await hooks.sms(sms_form("+12125550123"))

    assert response.status_code == 200, response.text
    assert response.text == TWIML
    assert response.headers["content-type"].startswith("text/xml")
    result = await hooks.result(workflow_id)
    assert result.replies == 1
    assert result.path == ["step_1", "step_2", "step_3"]


async def test_replies_by_contact_customer_id_and_workflow_id(hooks: Hooks) -> None:
    phone, email, customer_id = new_phone(), f"Ann.{uuid.uuid4().hex[:8]}@Example.com", f"c-{uuid.uuid4()}"
    by_phone = await hooks.start(phone=phone)
    by_email = await hooks.start(email=email)
    by_id = await hooks.start(id=customer_id)
    by_workflow = await hooks.start()

    answers = [
        await hooks.reply({"contact": e164(phone), "text": "yes please"}, msg_id=f"msg_{uuid.uuid4().hex}"),
        await hooks.reply({"contact": email.upper()}, msg_id=f"msg_{uuid.uuid4().hex}"),
        await hooks.reply({"customer_id": customer_id}, msg_id=f"msg_{uuid.uuid4().hex}"),
        await hooks.reply({"workflow_id": by_workflow, "reply_id": "r1"}, msg_id=f"msg_{uuid.uuid4().hex}"),
    ]

    assert [(a.status_code, a.json()) for a in answers] == [
        (202, {"signaled": [by_phone]}),
        (202, {"signaled": [by_email]}),
        (202, {"signaled": [by_id]}),
        (202, {"signaled": [by_workflow]}),
    ]
    for workflow_id in (by_phone, by_email, by_id, by_workflow):
        assert (await hooks.result(workflow_id)).replies == 1
    # `reply_id` in the body wins over the webhook-id header: it is what the flow recorded.
    recorded = (await hooks.client.get_workflow_handle(by_workflow).describe()).typed_search_attributes
    assert recorded.get(REPLY_IDS) == ["r1"]


async def test_replies_every_matching_running_flow_is_signaled(hooks: Hooks) -> None:
    phone = new_phone()
    first, second = await hooks.start(phone=phone), await hooks.start(phone=phone)
    await hooks.start(phone=new_phone())  # someone else
    # Both listed first: a reply while only one is (visibility lags a moment) goes to that one alone.
    await eventually(lambda: _visible(hooks.client, [first, second]))

    response = await hooks.reply({"contact": phone}, msg_id=f"msg_{uuid.uuid4().hex}")

    assert response.status_code == 202, response.text
    assert response.json() == {"signaled": sorted([first, second])}
    assert [(await hooks.result(w)).replies for w in (first, second)] == [1, 1]


async def test_replies_100ms_after_start_are_routed(hooks: Hooks) -> None:
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)
    await asyncio.sleep(0.1)  # the scenario, not a wait for something

    response = await hooks.reply({"contact": phone}, msg_id=f"msg_{uuid.uuid4().hex}")

    assert response.status_code == 202, response.text
    assert response.json() == {"signaled": [workflow_id]}
    assert (await hooks.result(workflow_id)).path == ["step_1", "step_2", "step_3"]


async def test_replies_before_the_flow_is_listed_wait_for_it(hooks: Hooks) -> None:
    """Visibility lags behind a start: the lookup retries (up to `route_timeout`) instead of answering 404.

    The dev server lists a new flow within milliseconds, so the reply is sent before the flow even
    starts: without the retry it finds nothing.
    """
    phone = new_phone()

    async def start_later() -> str:
        await asyncio.sleep(0.3)
        return await hooks.start(phone=phone)

    response, workflow_id = await asyncio.gather(
        hooks.reply({"contact": phone}, msg_id=f"msg_{uuid.uuid4().hex}"), start_later()
    )

    assert response.status_code == 202, response.text
    assert response.json() == {"signaled": [workflow_id]}
    assert (await hooks.result(workflow_id)).replies == 1


async def test_replies_before_the_first_step_ran_still_count(hooks: Hooks, settings: Settings) -> None:
    """A flow no worker has picked up yet (so before `send_message`) is found, and its wait counts the reply."""
    phone = new_phone()
    settings.temporal.task_queue = queue = f"tq-later-{uuid.uuid4()}"
    handle = await start_flow(hooks.client, settings, customer={"phone": phone})
    hooks.started.append(handle.id)

    response = await hooks.reply({"contact": phone}, msg_id=f"msg_{uuid.uuid4().hex}")
    assert response.status_code == 202, response.text
    assert response.json() == {"signaled": [handle.id]}

    async with make_worker(hooks.client, settings, task_queue=queue):
        result = await hooks.result(handle.id)
    assert result.path == ["step_1", "step_2", "step_3"]
    assert result.replies == 1


# Exactly once


async def test_replies_same_reply_five_times_counts_once(hooks: Hooks, dev_env: WorkflowEnvironment) -> None:
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)
    body = {"contact": phone, "text": "yes please"}
    msg_id = f"msg_{uuid.uuid4().hex}"

    answers = await asyncio.gather(*(hooks.reply(body, msg_id=msg_id) for _ in range(5)))

    assert [(a.status_code, a.json()) for a in answers] == [(202, {"signaled": [workflow_id]})] * 5
    result = await hooks.result(workflow_id)
    assert result.replies == 1
    assert (await hooks.status(workflow_id)).replies == 1

    # After the flow ended, and from another API replica (nothing kept in the process): the same answer.
    replica = create_app(hooks.settings, client=dev_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=replica), base_url="http://localhost") as other:
        again = await other.post(
            "/webhooks/replies",
            content=(content := httpx.Request("POST", "http://x", json=body).content),
            headers={"content-type": "application/json", **signed_headers(content, msg_id=msg_id)},
        )
    assert (again.status_code, again.json()) == (202, {"signaled": [workflow_id]})
    assert (await hooks.status(workflow_id)).replies == 1


async def test_twilio_same_message_five_times_counts_once(hooks: Hooks) -> None:
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)
    form = sms_form(e164(phone))

    answers = [await hooks.sms(form) for _ in range(5)]

    assert [(a.status_code, a.text) for a in answers] == [(200, TWIML)] * 5
    assert (await hooks.result(workflow_id)).replies == 1
    recorded = (await hooks.client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
    assert recorded.get(REPLY_IDS) == [form["MessageSid"]]


async def test_replies_redelivery_by_workflow_id_after_the_flow_ended(hooks: Hooks) -> None:
    workflow_id = await hooks.start()
    body = {"workflow_id": workflow_id}
    first = await hooks.reply(body, msg_id="msg_redelivered")
    await hooks.result(workflow_id)

    again = await hooks.reply(body, msg_id="msg_redelivered")
    other = await hooks.reply(body, msg_id="msg_a_new_one")

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() == {"signaled": [workflow_id]}
    assert other.status_code == 404
    assert other.json() == {"detail": f"no running flow for workflow {workflow_id!r}"}
    assert (await hooks.status(workflow_id)).replies == 1


async def test_reply_ids_keep_the_last_20_within_the_attribute_size_limit(
    hooks: Hooks, dev_env: WorkflowEnvironment
) -> None:
    """25 replies with long ids: `ReplyIds` holds the last 20 and the flow's upserts keep succeeding.

    A search attribute value over the server's size limit (2 KiB) would fail the workflow task and
    stall the flow; long or unusual ids are stored hashed, so 20 keys always fit.
    """
    sleepy = WorkflowDefinition.model_validate(
        {"start_step": "nap", "steps": {"nap": {"node": "explicit_wait", "params": {"duration": "1h"}}}}
    )
    flow = FlowInput(definition=sleepy, customer={"phone": new_phone()})
    handle = await start_flow_input(dev_env.client, flow, hooks.settings.temporal.task_queue)
    hooks.started.append(handle.id)
    ids = [f"{n:02d}-" + "x" * 61 for n in range(20)] + [f"long {n} " + "y" * 200 for n in range(5)]

    for reply_id in ids:
        response = await hooks.reply({"workflow_id": handle.id, "reply_id": reply_id}, msg_id=f"msg_{uuid.uuid4().hex}")
        assert response.status_code == 202, response.text

    async def recorded() -> list[str]:
        keys: list[str] = (await handle.describe()).typed_search_attributes.get(REPLY_IDS) or []
        assert keys == [reply_key(i) for i in ids[-20:]]
        return keys

    keys = await eventually(recorded)
    assert keys[:15] == ids[5:20]  # short plain ids as they are
    assert all(k.startswith("sha256:") and len(k) <= 64 for k in keys[15:])
    assert (await hooks.status(handle.id)).replies == 25


# Authenticity


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"secret": "whsec_" + base64.b64encode(b"not-our-secret-0123456789abc").decode()},
            "no matching signature in webhook-signature",
        ),
        ({"shift": timedelta(minutes=-6)}, "webhook-timestamp is more than 5 minutes old"),
        ({"shift": timedelta(minutes=6)}, "webhook-timestamp is more than 5 minutes in the future"),
        ({"tamper": True}, "no matching signature in webhook-signature"),
        ({"unsigned": True}, "missing header(s): webhook-id, webhook-timestamp, webhook-signature"),
    ],
    ids=["wrong-secret", "stale", "future", "tampered-body", "unsigned"],
)
async def test_replies_bad_signature_is_401_and_signals_nothing(
    hooks: Hooks, change: dict[str, Any], reason: str
) -> None:
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)
    content = httpx.Request("POST", "http://x", json={"contact": phone}).content
    headers = {"content-type": "application/json"}
    if not change.get("unsigned"):
        sign = {k: v for k, v in change.items() if k == "secret"}
        if "shift" in change:  # from the moment the request is made, not when tests were collected
            sign["at"] = datetime.now(UTC) + change["shift"]
        headers |= signed_headers(content, msg_id=f"msg_{uuid.uuid4().hex}", **sign)
    if change.get("tamper"):
        content = content.replace(phone.encode(), e164(new_phone()).encode())

    rejected = {"method": "POST", "route": "/webhooks/replies", "status": "401"}
    before = await metric(hooks.http, "scheduler_http_requests_total", **rejected)
    response = await hooks.http.post("/webhooks/replies", content=content, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"detail": f"invalid webhook signature: {reason}"}
    assert (await hooks.status(workflow_id)).replies == 0
    assert await metric(hooks.http, "scheduler_http_requests_total", **rejected) == before + 1


async def test_replies_without_secret_need_no_signature(hooks: Hooks) -> None:
    hooks.settings.webhooks.secret = ""
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)

    response = await hooks.reply({"contact": phone, "reply_id": "r-unsigned"})

    assert (response.status_code, response.json()) == (202, {"signaled": [workflow_id]})


@pytest.mark.parametrize(
    ("signed_for", "token"),
    [
        ("https://evil.example.com/webhooks/twilio", TWILIO_TOKEN),
        ("http://test/webhooks/twilio", TWILIO_TOKEN),  # the request's own URL, but public_url says otherwise
        (f"{PUBLIC_URL}/webhooks/twilio", "another-token"),
    ],
    ids=["other-host", "internal-url", "wrong-token"],
)
async def test_twilio_signature_for_another_url_or_token_is_403(hooks: Hooks, signed_for: str, token: str) -> None:
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)

    response = await hooks.sms(sms_form(e164(phone)), url=signed_for, token=token)

    assert response.status_code == 403
    assert response.json()["detail"].startswith("invalid Twilio signature: X-Twilio-Signature does not match")
    assert (await hooks.status(workflow_id)).replies == 0


async def test_twilio_signed_url_is_public_url_plus_path_and_query(hooks: Hooks) -> None:
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)
    form = sms_form(e164(phone))
    query = "?campaign=spring&x=%2F"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"{PUBLIC_URL}/webhooks/twilio{query}", form)

    response = await hooks.http.post(
        f"/webhooks/twilio{query}",
        content=urlencode(form),
        headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
    )

    assert (response.status_code, response.text) == (200, TWIML)
    assert (await hooks.result(workflow_id)).replies == 1


async def test_twilio_without_public_url_signs_the_request_url(hooks: Hooks) -> None:
    hooks.settings.webhooks.public_url = ""
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)

    response = await hooks.sms(sms_form(e164(phone)), url="http://localhost/webhooks/twilio")

    assert (response.status_code, response.text) == (200, TWIML)
    assert (await hooks.result(workflow_id)).replies == 1


# No match


async def test_replies_no_flow_is_404_logged_with_contact_redacted(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    hooks.settings.webhooks.route_timeout = timedelta(milliseconds=300)
    phone = e164(new_phone())
    unmatched = [f"scheduler_webhook_unmatched_total{{endpoint={e!r}}}" for e in ("replies", "twilio")]
    before = [await metric(hooks.http, "scheduler_webhook_unmatched_total", endpoint=e) for e in ("replies", "twilio")]
    with caplog.at_level(logging.WARNING, logger="scheduler"):
        response = await hooks.reply({"contact": phone}, msg_id="msg_nobody")
        sms = await hooks.sms(sms_form(phone, sid="SMnobody"))
    after = [await metric(hooks.http, "scheduler_webhook_unmatched_total", endpoint=e) for e in ("replies", "twilio")]

    redacted = redact(phone)
    assert response.status_code == 404
    assert response.json() == {"detail": f"no running flow for contact {redacted!r}"}
    assert (sms.status_code, sms.text) == (200, TWIML)
    messages = [r.getMessage() for r in caplog.records if "matched no running flow" in r.getMessage()]
    assert len(messages) == 2, caplog.text
    assert all(redacted in m for m in messages)
    assert phone not in caplog.text
    # Counted too, the Twilio one although it was answered 200.
    assert dict(zip(unmatched, [a - b for a, b in zip(after, before, strict=True)], strict=True)) == dict.fromkeys(
        unmatched, 1
    )


async def test_replies_ended_flow_is_not_signaled(hooks: Hooks) -> None:
    hooks.settings.webhooks.route_timeout = timedelta(milliseconds=300)
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)
    await hooks.client.get_workflow_handle(workflow_id).terminate("ended")

    response = await hooks.reply({"contact": phone}, msg_id=f"msg_{uuid.uuid4().hex}")

    assert response.status_code == 404


# Query safety


async def test_replies_quotes_and_backslashes_match_exactly(hooks: Hooks, dev_env: WorkflowEnvironment) -> None:
    """Customer ids and contacts with `'` and `\\` neither break the visibility query nor widen it."""
    hooks.settings.webhooks.route_timeout = timedelta(milliseconds=500)
    tag = uuid.uuid4().hex[:8]
    ids = {
        "quote": f"{tag}-o'brien",
        "plain": f"{tag}-obrien",
        "injection": f"{tag}' OR CustomerId != 'x",
        "trailing-quote": f"{tag}-x'",
        "no-quote": f"{tag}-x",
        "backslash": f"{tag}-a\\b",
        "two-backslashes": f"{tag}-a\\\\b",
    }
    flows = {name: await hooks.start(id=customer_id) for name, customer_id in ids.items()}
    apostrophe, plain = f"o'brien.{tag}@example.com", f"obrien.{tag}@example.com"
    by_email = {"apostrophe": await hooks.start(email=apostrophe), "plain-email": await hooks.start(email=plain)}
    await eventually(lambda: _visible(hooks.client, [*flows.values(), *by_email.values()]))

    async def reply(body: dict[str, Any]) -> tuple[int, Any]:
        response = await hooks.reply(body, msg_id=f"msg_{uuid.uuid4().hex}")
        return response.status_code, response.json()

    async def listed(customer_id: str) -> list[str]:
        return [e.id async for e in hooks.client.list_workflows(f"CustomerId = {quote(customer_id)}")]

    assert await reply({"customer_id": ids["quote"]}) == (202, {"signaled": [flows["quote"]]})
    assert await reply({"customer_id": ids["injection"]}) == (202, {"signaled": [flows["injection"]]})
    assert await reply({"contact": apostrophe.upper()}) == (202, {"signaled": [by_email["apostrophe"]]})
    # Two server quirks (Temporal 1.32), both correctly quoted queries: the server trims quotes at the
    # ends of a value (`x'` lists the flow of `x`), and its SQLite store re-escapes a backslash
    # MySQL-style (`a\b` lists the flow of `a\\b`). The exact re-check keeps such replies from the
    # wrong flow: nobody gets them, and the sender hears 404.
    assert await listed(ids["trailing-quote"]) == [flows["no-quote"]]
    assert await listed(ids["backslash"]) == [flows["two-backslashes"]]
    for name in ("trailing-quote", "backslash", "two-backslashes"):
        assert await reply({"customer_id": ids[name]}) == (
            404,
            {"detail": f"no running flow for customer {ids[name]!r}"},
        )
    counts = {name: (await hooks.status(w)).replies for name, w in {**flows, **by_email}.items()}
    assert counts == {
        "quote": 1,
        "plain": 0,
        "injection": 1,
        "trailing-quote": 0,
        "no-quote": 0,
        "backslash": 0,
        "two-backslashes": 0,
        "apostrophe": 1,
        "plain-email": 0,
    }


async def _visible(client: Client, workflow_ids: list[str]) -> None:
    query = " OR ".join(f"WorkflowId = {quote(w)}" for w in workflow_ids)
    assert len([e async for e in client.list_workflows(query)]) == len(workflow_ids)


@pytest.mark.parametrize(
    "contact", ['ann"x@example.com', "ann\\x@example.com", "not a contact"], ids=["dquote", "backslash", "words"]
)
async def test_replies_contact_that_is_no_contact_is_422(hooks: Hooks, contact: str) -> None:
    response = await hooks.reply({"contact": contact}, msg_id="msg_bad_contact")
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "contact"]]


# Limits


@pytest.mark.parametrize("path", ["/webhooks/replies", "/webhooks/twilio"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_webhooks_body_over_64_kib_is_413(hooks: Hooks, path: str, declared: bool) -> None:
    kind = "application/json" if path.endswith("replies") else "application/x-www-form-urlencoded"
    body = b"x" * (64 * 1024 + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    response = await hooks.http.post(path, content=body if declared else chunks(), headers={"content-type": kind})

    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 65536 bytes"}


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/webhooks/replies", "application/x-www-form-urlencoded"),
        ("/webhooks/replies", "text/plain"),
        ("/webhooks/twilio", "application/json"),
        ("/webhooks/twilio", ""),
    ],
    ids=["replies-form", "replies-text", "twilio-json", "twilio-none"],
)
async def test_webhooks_wrong_content_type_is_415(hooks: Hooks, path: str, kind: str) -> None:
    response = await hooks.http.post(path, content=b"{}", headers={"content-type": kind} if kind else {})
    assert response.status_code == 415
    assert response.json()["detail"].startswith(f"unsupported content type {kind!r}")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body"]),
        ({"text": "yes"}, ["body"]),
        ({"contact": "+12125550123", "colour": "red"}, ["body", "colour"]),
        ({"workflow_id": ""}, ["body", "workflow_id"]),
    ],
    ids=["empty", "no-target", "unknown-field", "empty-workflow-id"],
)
async def test_replies_missing_or_bad_fields_are_422(hooks: Hooks, body: dict[str, Any], loc: list[str]) -> None:
    hooks.settings.webhooks.secret = ""
    response = await hooks.reply(body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [e["loc"] for e in detail] == [loc]
    if loc == ["body"]:
        assert "one of workflow_id, customer_id or contact is required" in detail[0]["msg"]


async def test_replies_not_json_is_422(hooks: Hooks) -> None:
    hooks.settings.webhooks.secret = ""
    response = await hooks.http.post(
        "/webhooks/replies", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("missing", ["From", "MessageSid"])
async def test_twilio_missing_field_is_422(hooks: Hooks, missing: str) -> None:
    form = {k: v for k, v in sms_form(e164(new_phone())).items() if k != missing}
    response = await hooks.sms(form)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", missing]]


# Determinism


async def test_flow_that_recorded_a_reply_id_replays(hooks: Hooks) -> None:
    """The `ReplyIds` upsert is deterministic: a flow's history with it replays against today's code."""
    phone = new_phone()
    workflow_id = await hooks.start(phone=phone)
    await hooks.reply({"contact": phone}, msg_id=f"msg_{uuid.uuid4().hex}")
    await hooks.result(workflow_id)
    history = await hooks.client.get_workflow_handle(workflow_id).fetch_history()

    replayer = Replayer(workflows=[AbandonedCartWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None


# Ids Temporal cannot take


@pytest.mark.parametrize(
    ("path", "body", "msg_id", "loc"),
    [
        ("/webhooks/replies", {"customer_id": "c\x00"}, None, ["body", "customer_id"]),
        ("/webhooks/replies", {"contact": "ann\x00@example.com"}, None, ["body", "contact"]),
        ("/webhooks/replies", {"workflow_id": "w\x00"}, None, ["body", "workflow_id"]),
        ("/webhooks/replies", {"customer_id": "c" * 256}, None, ["body", "customer_id"]),
        ("/webhooks/replies", {"customer_id": "c1", "reply_id": "r\x1f"}, None, ["body", "reply_id"]),
        ("/webhooks/replies", {"customer_id": "c1"}, "m" * 300, ["header", "webhook-id"]),
        ("/webhooks/conversions", {"cart_id": "k\x00"}, None, ["body", "cart_id"]),
        ("/webhooks/conversions", {"customer_id": "ü" * 128}, None, ["body", "customer_id"]),
        ("/webhooks/conversions", {"cart_id": "k1", "conversion_id": "o\x7f"}, None, ["body", "conversion_id"]),
    ],
    ids=[
        "nul-customer-id",
        "nul-contact",
        "nul-workflow-id",
        "customer-id-over-255",
        "control-reply-id",
        "long-webhook-id",
        "nul-cart-id",
        "customer-id-over-255-bytes",
        "control-conversion-id",
    ],
)
async def test_webhooks_ids_temporal_cannot_take_are_422_at_once(
    hooks: Hooks, path: str, body: dict[str, Any], msg_id: str | None, loc: list[str]
) -> None:
    """Before, a NUL reached the visibility query (503 "Temporal is unavailable" after 7 s) or an id over
    Temporal's limits was looked up until `route_timeout`; now nothing is looked up or signalled."""
    content = httpx.Request("POST", "http://x", json=body).content
    headers = {"content-type": "application/json", **signed_headers(content, msg_id=msg_id or f"msg_{uuid.uuid4()}")}
    started = time.monotonic()

    response = await hooks.http.post(path, content=content, headers=headers)

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    assert time.monotonic() - started < 1  # no lookup: routing retries for `route_timeout` (5 s) before a 404


async def test_openapi_webhook_bodies_say_which_target_is_required(hooks: Hooks) -> None:
    """The models' "one of" rules, in the schema: at least one target, given as a string."""
    paths = (await hooks.http.get("/openapi.json")).json()["paths"]

    def one_of(path: str) -> list[tuple[str, Any]]:
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return [(alt["required"][0], alt["properties"][alt["required"][0]]) for alt in schema["anyOf"]]

    assert one_of("/webhooks/replies") == [(f, {"type": "string"}) for f in ("workflow_id", "customer_id", "contact")]
    assert one_of("/webhooks/conversions") == [(f, {"type": "string"}) for f in ("cart_id", "customer_id")]
    responses = paths["/webhooks/replies"]["post"]["responses"]
    assert {status for status, answer in responses.items() if answer["content"]} >= {"401", "404", "413", "415", "422"}


# Consent keywords


async def start_other_campaign(hooks: Hooks, phone: str) -> str:
    """A flow of campaign `b` for `phone`, waiting ten minutes before it messages."""
    flow = FlowInput(definition=wait_then_send("10m"), campaign_id="b", customer={"id": "cb", "phone": phone})
    handle = await start_flow_input(hooks.client, flow, hooks.settings.temporal.task_queue)
    hooks.started.append(handle.id)
    return handle.id


def twiml_message(text: str) -> str:
    return f"<Response><Message>{text}</Message></Response>"


async def test_stop_by_twilio_ends_every_flow_of_that_phone_and_start_lifts_it(hooks: Hooks) -> None:
    compliance = hooks.settings.compliance
    compliance.stop_confirmation = "You are unsubscribed & will get no more messages. Reply START to resubscribe."
    compliance.start_confirmation = "Welcome back."
    compliance.help_reply = "Reply STOP to stop."
    phone = new_phone()
    seed = await hooks.start(phone=phone)
    await reaches(hooks.client.get_workflow_handle(seed), "step_2")  # its wait_answer is waiting
    other = await start_other_campaign(hooks, phone)
    await reaches(hooks.client.get_workflow_handle(other), "wait")

    stop = await hooks.sms(sms_form(e164(phone), body=" stop "))
    assert (stop.status_code, stop.text) == (200, twiml_message(escape(compliance.stop_confirmation)))
    consent = Consent(Store.open(hooks.settings.store_url))
    entry = consent.get(e164(phone))
    assert entry is not None and entry.reason == "keyword STOP"

    other_result = await hooks.result(other)
    assert (other_result.outcome, other_result.path) == ("opted_out", [])  # ended in its wait: nothing sent
    seed_result = await hooks.result(seed)
    assert (seed_result.outcome, seed_result.path) == ("opted_out", ["step_1", "step_2"])
    sent = [r["workflow_id"] for r in Outbox(hooks.settings.channels.outbox).read() if r["to"] == phone]
    assert sent == [seed]  # step_1, before the STOP

    again = await hooks.sms(sms_form(e164(phone), body="STOP"))
    assert again.text == TWIML  # one confirmation per opt-out
    help_ = await hooks.sms(sms_form(e164(phone), body="help"))
    assert help_.text == twiml_message("Reply STOP to stop.")
    assert consent.get(e164(phone)) is not None
    start = await hooks.sms(sms_form(e164(phone), body="Start"))
    assert start.text == twiml_message("Welcome back.")
    assert consent.get(e164(phone)) is None
    consent.store.close()


async def test_keywords_from_someone_without_a_flow_are_recorded_not_unmatched(hooks: Hooks) -> None:
    phone = new_phone()
    stop = await hooks.reply({"contact": phone, "text": "UNSUBSCRIBE"}, msg_id=f"msg_{uuid.uuid4().hex}")
    assert (stop.status_code, stop.json()) == (202, {"signaled": []})
    consent = Consent(Store.open(hooks.settings.store_url))
    assert consent.suppressed([e164(phone)]) == {e164(phone)}
    start = await hooks.reply({"contact": phone, "text": "unstop"}, msg_id=f"msg_{uuid.uuid4().hex}")
    assert (start.status_code, start.json()) == (202, {"signaled": []})
    assert consent.suppressed([e164(phone)]) == set()
    consent.store.close()


async def test_stop_by_customer_id_suppresses_that_customers_contacts_and_confirms_by_the_channel(
    hooks: Hooks,
) -> None:
    hooks.settings.compliance.stop_confirmation = "Unsubscribed."
    phone, customer_id = new_phone(), f"c-{uuid.uuid4()}"
    workflow_id = await hooks.start(id=customer_id, phone=phone, email=f"{customer_id}@example.com")
    await reaches(hooks.client.get_workflow_handle(workflow_id), "step_2")
    msg_id = f"msg_{uuid.uuid4().hex}"
    stop = await hooks.reply({"customer_id": customer_id, "text": "quit"}, msg_id=msg_id)
    assert (stop.status_code, stop.json()) == (202, {"signaled": [workflow_id]})
    consent = Consent(Store.open(hooks.settings.store_url))
    assert consent.suppressed([e164(phone), f"{customer_id}@example.com"]) == {
        e164(phone),
        f"{customer_id}@example.com",
    }
    consent.store.close()
    # The worker sends it, to contacts now suppressed: the answer to the customer's own message is exempt.
    await hooks.client.get_workflow_handle(f"keyword-answer-{msg_id}").result()
    confirmations = [r for r in Outbox(hooks.settings.channels.outbox).read() if r["text"] == "Unsubscribed."]
    assert sorted(r["to"] for r in confirmations) == sorted([e164(phone), f"{customer_id}@example.com"])
    result = await hooks.result(workflow_id)
    assert (result.outcome, result.replies) == ("opted_out", 1)  # reached by contact and by customer id: once


async def test_help_redelivered_with_the_same_webhook_id_is_answered_once(hooks: Hooks) -> None:
    """Before, each delivery sent the help text itself: a provider's redelivery answered the customer twice."""
    hooks.settings.compliance.help_reply = "Reply STOP to stop."
    phone, msg_id = new_phone(), f"msg_{uuid.uuid4().hex}"

    for _ in range(2):
        response = await hooks.reply({"contact": phone, "text": "HELP"}, msg_id=msg_id)
        assert (response.status_code, response.json()) == (202, {"signaled": []})

    def answers() -> list[str]:
        return [r["text"] for r in Outbox(hooks.settings.channels.outbox).read() if r["to"] == e164(phone)]

    async def answered() -> None:
        assert answers()

    await eventually(answered)
    assert answers() == ["Reply STOP to stop."]
    await hooks.client.get_workflow_handle(f"keyword-answer-{msg_id}").result()
    assert answers() == ["Reply STOP to stop."]
