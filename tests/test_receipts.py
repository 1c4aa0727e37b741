"""Delivery receipts: the deliveries store (SQLite and PostgreSQL: migration 0008, the furthest state kept), and
`/webhooks/twilio/status` and `/webhooks/delivery` end to end on the dev server with the local Twilio stand-in:
receipts out of order and repeated, forged or unsigned ones refused, an undeliverable number suppressed (a second
campaign then skips it, START lifts it), the flow signalled, the counts in the stats and the metric."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import inspect
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, Interceptor, OutboundInterceptor, SignalWorkflowInput, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from scheduler.api import create_app
from scheduler.config import Settings, TwilioChannelSettings
from scheduler.delivery.channels import idempotency_key
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.signals import DELIVERY_STATUS_SIGNAL, DeliveryState
from scheduler.store import Store, head_revision
from scheduler.store.consent import Consent
from scheduler.store.deliveries import Deliveries, DeliveryRecord
from scheduler.worker import make_worker
from tests.helpers.flows import one_step, reaches, start_flow_input, terminate
from tests.helpers.metrics import metric
from tests.helpers.signing import PUBLIC_URL, WEBHOOK_SECRET, signed_headers, sms_form, twilio_request
from tests.helpers.store import migrations as store_migrations
from tests.helpers.twilio import ACCOUNT_SID, AUTH_TOKEN, SENDER, TOKEN_ENV, TwilioStandIn, twilio_stand_in
from tests.helpers.waiting import eventually
from tests.test_channels import Mailbox
from tests.test_delivery_flow import mailbox  # noqa: F401 (the fixture: an aiosmtpd server as channels.smtp)

# The store


def test_migration_0008_downgrades_and_upgrades_again(store_url: str) -> None:
    with store_migrations(store_url) as migrations:
        connection = migrations.connection
        assert head_revision() == "0008"
        migrations.downgrade("0007")
        assert not inspect(connection).has_table("deliveries")
        assert inspect(connection).has_table("conversions")
        migrations.upgrade()
        schema = inspect(connection)
        assert schema.get_pk_constraint("deliveries")["constrained_columns"] == ["message_id"]
        indexes = {i["name"]: i["column_names"] for i in schema.get_indexes("deliveries")}
        assert indexes == {
            "deliveries_provider_id": ["provider_id"],
            "deliveries_campaign_step": ["campaign_id", "step"],
        }


@pytest.fixture
def deliveries(store_url: str):
    store = Store.open(store_url)
    try:
        yield Deliveries(store)
    finally:
        store.close()


def record(message_id: str, *, step: str = "s1", campaign_id: str = "spring") -> DeliveryRecord:
    return DeliveryRecord(message_id, "w1", "r1", campaign_id, step, "twilio", "+16465550100")


S = DeliveryState


@pytest.mark.parametrize(
    ("receipts", "final"),
    [
        ([S.QUEUED, S.SENT, S.DELIVERED], S.DELIVERED),
        ([S.DELIVERED, S.SENT, S.QUEUED], S.DELIVERED),
        ([S.SENT, S.DELIVERED, S.UNDELIVERED, S.FAILED], S.DELIVERED),
        ([S.UNDELIVERED, S.SENT, S.FAILED, S.UNDELIVERED], S.UNDELIVERED),
        ([S.SENT, S.SENT, S.SENT], S.SENT),
    ],
    ids=["in-order", "reversed", "never-back-from-delivered", "first-final-stands", "repeated"],
)
def test_receipts_keep_the_furthest_state(deliveries: Deliveries, receipts: list[DeliveryState], final) -> None:
    deliveries.begin(record("m1"))
    changes = []
    for status in receipts:
        after, changed = deliveries.report("m1", status, error_code="30006" if status.final else None)
        changes.append(changed)
        assert after is not None
    stored = deliveries.get("m1")
    assert stored is not None and stored.status == final
    ranks = [S.QUEUED.rank]  # `begin` records a message queued
    for status, changed in zip(receipts, changes, strict=True):
        assert changed == (status.rank > max(ranks))  # only a status past the stored rank changes the row
        ranks.append(status.rank)


def test_a_receipt_before_the_gateway_s_answer_is_kept_and_the_answer_adds_the_sid(deliveries: Deliveries) -> None:
    at = datetime(2031, 1, 10, 12, tzinfo=UTC)
    assert deliveries.begin(record("m2")).status == S.QUEUED
    deliveries.report("m2", S.DELIVERED)
    after = deliveries.sent("m2", provider_id="SM1", at=at)
    assert after is not None
    assert (after.status, after.provider_id, after.sent_at) == (S.DELIVERED, "SM1", at)
    assert deliveries.by_provider_id("SM1") == after
    assert deliveries.begin(record("m2")) == after  # a retried delivery finds the first record
    assert deliveries.report("nope", S.SENT) == (None, False)


def test_counts_per_step_and_status(deliveries: Deliveries) -> None:
    for i, status in enumerate([S.SENT, S.DELIVERED, S.DELIVERED, S.UNDELIVERED, S.FAILED]):
        deliveries.begin(record(f"a{i}", step="first"))
        deliveries.report(f"a{i}", status)
    deliveries.begin(record("b0", step="second"))  # not reported yet: counted as sent
    deliveries.begin(record("c0", campaign_id="other"))
    assert deliveries.by_step("spring") == {
        "first": {"sent": 1, "delivered": 2, "undelivered": 1, "failed": 1},
        "second": {"sent": 1, "delivered": 0, "undelivered": 0, "failed": 0},
    }
    assert deliveries.by_step("spring", since=datetime.now(UTC) + timedelta(minutes=1)) == {}


# End to end


WAITS = WorkflowDefinition.model_validate(
    {
        "start_step": "text",
        "steps": {
            "text": {"node": "send_message", "params": {"channel": "twilio"}, "go_to": "wait"},
            "wait": {"node": "wait_answer", "params": {"timeout": "1h"}},
        },
    }
)


def new_phone() -> str:
    return f"+1646{random.randrange(2_000_000, 9_999_999)}"


@dataclass
class Shop:
    http: httpx.AsyncClient
    client: Client
    settings: Settings
    twilio: TwilioStandIn
    store: Store
    task_queue: str
    started: list[str] = field(default_factory=list)

    async def flow(
        self, phone: str, *, campaign_id: str, definition: WorkflowDefinition = WAITS, email: str | None = None
    ) -> WorkflowHandle[Any, FlowStatus]:
        customer = {"id": f"c-{phone}", "phone": phone} | ({"email": email} if email else {})
        flow = FlowInput(definition=definition, campaign_id=campaign_id, customer=customer, cart={})
        handle = await start_flow_input(self.client, flow, self.task_queue)
        self.started.append(handle.id)
        return handle

    def message_id(self, handle: WorkflowHandle[Any, Any], step: str) -> str:
        assert handle.result_run_id is not None
        return idempotency_key(workflow_id=handle.id, run_id=handle.result_run_id, step=step)

    def stored(self, message_id: str) -> DeliveryRecord:
        found = Deliveries(self.store).get(message_id)
        assert found is not None
        return found

    async def receipt(self, body: dict[str, Any], *, signed: bool = True) -> httpx.Response:
        content = httpx.Request("POST", "http://x", json=body).content
        headers = {"content-type": "application/json"}
        if signed:
            headers |= signed_headers(content, msg_id=f"msg_{uuid.uuid4().hex}")
        return await self.http.post("/webhooks/delivery", content=content, headers=headers)


@pytest_asyncio.fixture
async def shop(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Shop]:
    """The API (both webhook secrets set; Twilio's requests signed with the account's token) and a worker whose
    `twilio` channel posts to the stand-in."""
    with twilio_stand_in() as twilio:
        monkeypatch.setenv(TOKEN_ENV, AUTH_TOKEN)
        settings.channels.twilio = TwilioChannelSettings(
            account_sid=ACCOUNT_SID, sender=SENDER, auth_token_env=TOKEN_ENV, api_base=twilio.url
        )
        settings.temporal.task_queue = task_queue
        settings.webhooks.secret = WEBHOOK_SECRET
        settings.webhooks.twilio_auth_token = AUTH_TOKEN
        settings.webhooks.public_url = PUBLIC_URL
        store = Store.open(settings.store_url)
        app = create_app(settings, client=dev_env.client, store=store)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
        shop = Shop(http, dev_env.client, settings, twilio, store, task_queue)
        try:
            async with make_worker(dev_env.client, settings, store=store), http:
                yield shop
        finally:
            await terminate(dev_env.client, *shop.started)
            store.close()


async def test_twilio_receipts_out_of_order_and_repeated_keep_the_furthest_state(shop: Shop) -> None:
    handle = await shop.flow(new_phone(), campaign_id=f"receipts-{uuid.uuid4().hex[:8]}")
    await reaches(handle, "wait")
    message_id = shop.message_id(handle, "text")
    before = await metric(shop.http, "scheduler_deliveries_total", channel="twilio", status="delivered")

    answers = []
    for status in ("sent", "delivered", "sending", "queued", "delivered", "undelivered"):
        response = await shop.twilio.post_status(shop.http, 0, status)
        assert response.status_code == 200, response.text
        answers.append((response.json()["status"], response.json()["changed"]))

    assert answers == [
        ("sent", False),  # the activity had recorded it sent already
        ("delivered", True),
        ("delivered", False),
        ("delivered", False),
        ("delivered", False),
        ("delivered", False),
    ]
    stored = shop.stored(message_id)
    assert (stored.status, stored.provider_id) == (DeliveryState.DELIVERED, shop.twilio.sids[0])
    assert await metric(shop.http, "scheduler_deliveries_total", channel="twilio", status="delivered") == before + 1

    async def signalled() -> None:
        signals = [
            e.workflow_execution_signaled_event_attributes.signal_name
            async for e in handle.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        # the furthest state, and again at the repeat of that final receipt (it may be the retry of one Temporal did
        # not take); never for the statuses the message had passed
        assert signals == [DELIVERY_STATUS_SIGNAL] * 2

    await eventually(signalled)


async def test_a_forged_twilio_status_callback_is_refused(shop: Shop) -> None:
    handle = await shop.flow(new_phone(), campaign_id=f"receipts-{uuid.uuid4().hex[:8]}")
    await reaches(handle, "wait")

    forged = await shop.twilio.post_status(shop.http, 0, "failed", error_code="30006", token="not-the-token")
    assert forged.status_code == 403, forged.text
    path, body, headers = shop.twilio.status_callback(0, "failed", error_code="30006")
    unsigned = await shop.http.post(path, content=body, headers={"content-type": headers["content-type"]})
    assert unsigned.status_code == 403, unsigned.text
    other_message = path.replace("message_id=", "message_id=x")  # the signature covers the query too
    assert (await shop.http.post(other_message, content=body, headers=headers)).status_code == 403
    assert shop.stored(shop.message_id(handle, "text")).status == DeliveryState.SENT


async def test_twilio_status_callback_errors(shop: Shop) -> None:
    handle = await shop.flow(new_phone(), campaign_id=f"receipts-{uuid.uuid4().hex[:8]}")
    await reaches(handle, "wait")
    path, _, _ = shop.twilio.status_callback(0, "sent")

    async def post(form: dict[str, str], url_path: str = path) -> httpx.Response:
        content, headers = twilio_request(form, url=PUBLIC_URL + url_path, token=AUTH_TOKEN)
        return await shop.http.post(url_path, content=content, headers=headers)

    sid = shop.twilio.sids[0]
    bad_status = await post({"MessageSid": sid, "MessageStatus": "teleported"})
    assert bad_status.status_code == 422
    assert bad_status.json()["detail"][0]["loc"] == ["body", "MessageStatus"]
    assert "not a message status" in bad_status.json()["detail"][0]["msg"]
    assert (await post({"MessageStatus": "sent"})).json()["detail"][0]["loc"] == ["body", "MessageSid"]
    unknown = await post({"MessageSid": "SM" + "0" * 32, "MessageStatus": "sent"}, "/webhooks/twilio/status")
    assert unknown.status_code == 404
    assert "unknown message_id" in unknown.json()["detail"]
    by_sid = await post({"MessageSid": sid, "MessageStatus": "delivered"}, "/webhooks/twilio/status")
    assert by_sid.status_code == 200 and by_sid.json()["status"] == "delivered"  # found by its SID
    big = await shop.http.post(
        path, content=b"Body=" + b"x" * 70_000, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert big.status_code == 413


async def test_delivery_receipts_from_any_gateway_are_signed_and_checked(shop: Shop) -> None:
    handle = await shop.flow(new_phone(), campaign_id=f"receipts-{uuid.uuid4().hex[:8]}")
    await reaches(handle, "wait")
    message_id = shop.message_id(handle, "text")

    unsigned = await shop.receipt({"message_id": message_id, "status": "failed"}, signed=False)
    assert unsigned.status_code == 401, unsigned.text
    assert shop.stored(message_id).status == DeliveryState.SENT

    bad = await shop.receipt({"message_id": message_id, "status": "lost"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "status"]
    missing = await shop.receipt({"status": "sent"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "message_id"]
    unknown = await shop.receipt({"message_id": "no-such-message", "status": "sent"})
    assert unknown.status_code == 404 and "'no-such-message'" in unknown.json()["detail"]
    big = await shop.receipt({"message_id": message_id, "status": "sent", "provider_id": "x" * 70_000})
    assert big.status_code == 413

    delivered = await shop.receipt({"message_id": message_id, "status": "delivered", "provider_id": "gw-1"})
    assert delivered.status_code == 200, delivered.text
    assert delivered.json() == {"message_id": message_id, "status": "delivered", "error_code": None, "changed": True}
    again = await shop.receipt({"message_id": message_id, "status": "failed", "error_code": "30006"})
    assert again.json()["status"] == "delivered" and again.json()["changed"] is False
    assert Consent(shop.store).get(shop.stored(message_id).contact or "") is None  # nothing undeliverable here


async def test_an_undeliverable_number_is_suppressed_a_second_campaign_skips_it_and_start_lifts_it(
    shop: Shop,
) -> None:
    phone = new_phone()
    first = await shop.flow(phone, campaign_id=f"first-{uuid.uuid4().hex[:8]}")
    await reaches(first, "wait")

    response = await shop.twilio.post_status(shop.http, 0, "undelivered", error_code="30006")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "message_id": shop.message_id(first, "text"),
        "status": "undelivered",
        "error_code": "30006",
        "changed": True,
    }
    entry = Consent(shop.store).get(phone)
    assert entry is not None
    assert (entry.reason, entry.workflow_id) == ("undeliverable 30006", first.id)

    second = await shop.flow(phone, campaign_id=f"second-{uuid.uuid4().hex[:8]}")
    assert (await second.result()).outcome == "opted_out"
    assert len(shop.twilio.requests) == 1  # nothing went to the dead number

    content, headers = twilio_request(sms_form(phone, body="START"), token=AUTH_TOKEN)
    assert (await shop.http.post("/webhooks/twilio", content=content, headers=headers)).status_code == 200
    assert Consent(shop.store).get(phone) is None
    third = await shop.flow(phone, campaign_id=f"third-{uuid.uuid4().hex[:8]}")
    await reaches(third, "wait")
    assert len(shop.twilio.sids) == 2


async def test_a_code_not_listed_does_not_suppress_and_an_ended_flow_does_not_fail_the_receipt(shop: Shop) -> None:
    phone = new_phone()
    handle = await shop.flow(phone, campaign_id=f"ended-{uuid.uuid4().hex[:8]}", definition=one_step(channel="twilio"))
    assert (await handle.result()).outcome == "completed"

    response = await shop.twilio.post_status(shop.http, 0, "undelivered", error_code="30003")
    assert response.status_code == 200, response.text
    assert response.json()["changed"] is True
    assert Consent(shop.store).get(phone) is None  # 30003 is often temporary: not in the default list


async def test_stats_show_each_message_step_s_delivery_counts(shop: Shop) -> None:
    campaign_id = f"stats-{uuid.uuid4().hex[:8]}"
    handles = [await shop.flow(new_phone(), campaign_id=campaign_id) for _ in range(3)]
    for handle in handles:
        await reaches(handle, "wait")
    order = {sid: i for i, sid in enumerate(shop.twilio.sids)}
    assert len(order) == 3
    for index, (status, code) in enumerate([("delivered", None), ("undelivered", "30005"), ("sent", None)]):
        assert (await shop.twilio.post_status(shop.http, index, status, error_code=code)).status_code == 200

    async def counted() -> None:
        response = await shop.http.get(f"/campaigns/{campaign_id}/stats")
        assert response.status_code == 200, response.text
        assert response.json()["deliveries"] == {"text": {"sent": 1, "delivered": 1, "undelivered": 1, "failed": 0}}

    await eventually(counted)


def test_the_receipt_routes_openapi_schema_resolves_every_reference(settings: Settings) -> None:
    """ReDoc shows nothing at all for a document with a `$ref` that leads nowhere (an inline model's `$defs`)."""
    document = create_app(settings).openapi()
    text = str(document)
    assert "$defs" not in text
    schemas = document["components"]["schemas"]
    refs = set(re.findall(r"'#/components/schemas/([^']+)'", text))
    assert refs <= set(schemas), refs - set(schemas)
    body = document["paths"]["/webhooks/delivery"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["status"] == {"$ref": "#/components/schemas/DeliveryState"}


FALLS_BACK = WorkflowDefinition.model_validate(
    {
        "start_step": "text",
        "steps": {
            "text": {
                "node": "send_message",
                "params": {"channel": ["twilio", "smtp"], "await_delivery": "2m"},
                "go_to": "wait",
            },
            "wait": {"node": "wait_answer", "params": {"timeout": "1h"}},
        },
    }
)


async def test_a_text_twilio_reports_undelivered_falls_back_to_email_and_a_delivered_one_does_not(
    mailbox: Mailbox,  # noqa: F811
    shop: Shop,
) -> None:
    """The whole seam: Twilio takes the SMS, its signed status callback reaches the API, the API signals the flow
    waiting for that receipt, and the flow sends the e-mail instead (to the SMTP server) or, delivered, goes on."""
    landline, mobile = new_phone(), new_phone()
    campaign_id = f"fallback-{uuid.uuid4().hex[:8]}"
    dead = await shop.flow(landline, campaign_id=campaign_id, definition=FALLS_BACK, email="ada@example.net")

    async def texted(n: int) -> None:
        assert len(shop.twilio.sids) == n

    await eventually(lambda: texted(1))
    response = await shop.twilio.post_status(shop.http, 0, "undelivered", error_code="30006")
    assert response.status_code == 200, response.text
    await reaches(dead, "wait")
    [(_, recipients, email)] = mailbox.messages
    assert recipients == ["ada@example.net"] and "cart" in email.get_content()
    [text] = await (await dead.describe()).memo_value("steps", type_hint=list)
    assert (text["event"], text["tried"], text["channel"]) == ("condition_satisfied", ["twilio", "smtp"], "smtp")
    entry = Consent(shop.store).get(landline)
    assert entry is not None and entry.reason == "undeliverable 30006"

    alive = await shop.flow(mobile, campaign_id=campaign_id, definition=FALLS_BACK, email="bo@example.net")
    await eventually(lambda: texted(2))
    for status in ("delivered", "sent", "delivered"):  # out of order and repeated
        assert (await shop.twilio.post_status(shop.http, 1, status)).status_code == 200
    await reaches(alive, "wait")
    [text] = await (await alive.describe()).memo_value("steps", type_hint=list)
    assert (text["tried"], text["channel"], text["delivery"]["status"]) == (["twilio"], "twilio", "delivered")
    assert len(mailbox.messages) == 1  # no e-mail to the customer whose text arrived


class TemporalAway(Interceptor):
    """A client whose signals Temporal does not take, as while it restarts."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        class Away(OutboundInterceptor):
            async def signal_workflow(self, input: SignalWorkflowInput) -> None:
                raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

        return Away(next)


async def test_a_receipt_temporal_did_not_take_is_answered_503_and_the_gateway_s_retry_reaches_the_flow(
    mailbox: Mailbox,  # noqa: F811
    shop: Shop,
) -> None:
    """Recorded but not signalled (Temporal away): a 200 would leave the flow waiting out `await_delivery` and the
    gateway with no reason to retry. The retry is a repeat the store does not change, and still reaches the flow."""
    landline = new_phone()
    campaign_id = f"away-{uuid.uuid4().hex[:8]}"
    handle = await shop.flow(landline, campaign_id=campaign_id, definition=FALLS_BACK, email="c@example.net")

    async def texted() -> None:
        assert len(shop.twilio.sids) == 1

    await eventually(texted)
    away = Client(**{**shop.client.config(), "interceptors": [TemporalAway()]})
    app = create_app(shop.settings, client=away, store=shop.store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        first = await shop.twilio.post_status(http, 0, "undelivered", error_code="30006")
    assert first.status_code == 503, first.text
    assert shop.stored(shop.message_id(handle, "text")).status == DeliveryState.UNDELIVERED
    retried = await shop.twilio.post_status(shop.http, 0, "undelivered", error_code="30006")
    assert retried.status_code == 200 and retried.json()["changed"] is False
    await reaches(handle, "wait")  # well before the 2m: the retry's signal ended the wait
    assert len(mailbox.messages) == 1
    assert Consent(shop.store).get(landline) is not None
