"""Exit on conversion: the `cart-converted` signal and `POST /webhooks/conversions`.

Flow behaviour runs on the time-skipping server (`ts_env`): a conversion ends a flow with
`exit_on = ["cart-converted"]` wherever it waits, and is only recorded by one without. Routing runs on
the dev server (`dev_env`, visibility needed), requests signed by `standardwebhooks`.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from scheduler.api import create_app
from scheduler.campaigns.reconcile import sync
from scheduler.campaigns.schedules import schedule_id
from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.attributes import OUTCOME, REPLY_IDS, VARIANT, conversion_key
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.signals import CART_CONVERTED_SIGNAL, CLIENT_ANSWERED_SIGNAL, SIGNALS, Conversion, Reply
from scheduler.flow.workflows import AbandonedCartWorkflow
from scheduler.store import Store
from scheduler.store.conversions import Conversions, VariantConversions
from scheduler.worker import make_worker
from tests.helpers.flows import outcome_of, reaches, start_flow_input, status, terminate
from tests.helpers.schedules import delete_schedules
from tests.helpers.servers import free_ports
from tests.helpers.signing import WEBHOOK_SECRET, signed_headers

PHONE = "+15550001"
OTHER_SECRET = "whsec_" + base64.b64encode(b"not-the-shop-secret-0123456789").decode()
EXIT = {"exit_on": ["cart-converted"]}
# send, sleep an hour, send again: a conversion during the sleep must stop the second message.
NAP = {
    "start_step": "send",
    "steps": {
        "send": {"node": "send_message", "go_to": "nap"},
        "nap": {"node": "explicit_wait", "params": {"duration": "1h"}, "go_to": "again"},
        "again": {"node": "send_message", "params": {"template": "Still thinking about it?"}},
    },
}
ASK = {
    "start_step": "send",
    "steps": {
        "send": {"node": "send_message", "go_to": "ask"},
        "ask": {
            "node": "wait_answer",
            "params": {"timeout": "1h"},
            "condition": {"satisfied": "tell", "timeout": "again"},
        },
        "tell": {"node": "notify_creator"},
        "again": {"node": "send_message"},
    },
}


def definition(data: dict[str, Any], **extra: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({**data, **extra})


def flow_input(
    data: WorkflowDefinition, *, cart_id: str = "cart-1", customer_id: str = "c1", campaign_id: str = "abandoned-cart"
) -> FlowInput:
    return FlowInput(
        definition=data,
        campaign_id=campaign_id,
        owner="owner@example.com",
        customer={"id": customer_id, "phone": PHONE},
        cart={"id": cart_id, "url": "https://shop.example/cart/1"},
    )


def sent_steps(settings: Settings, workflow_id: str) -> list[str]:
    return [line["step"] for line in Outbox(settings.channels.outbox).read() if line["workflow_id"] == workflow_id]


def timer_events(history: WorkflowHistory) -> list[str]:
    names = (EventType.Name(e.event_type) for e in history.events)
    return [n.removeprefix("EVENT_TYPE_TIMER_") for n in names if n.startswith("EVENT_TYPE_TIMER_")]


# Flow behaviour (time-skipping server)


async def test_conversion_during_explicit_wait_ends_the_flow(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_input(definition(NAP, **EXIT)), task_queue)
        await reaches(handle, "nap")
        await handle.signal(CART_CONVERTED_SIGNAL, Conversion(conversion_id="order-1", cart_id="cart-1"))
        result = await handle.result()
        history = await handle.fetch_history()

    assert (result.outcome, result.converted, result.path, result.current_step) == ("converted", True, ["send"], "nap")
    assert await outcome_of(handle) == "converted"
    assert sent_steps(settings, handle.id) == ["send"]  # no later send_message
    desc = await handle.describe()
    assert desc.close_time is not None
    assert desc.close_time - desc.start_time < timedelta(minutes=59)  # at once, not after the hour
    # The sleep's timer was cancelled rather than left to fire; the conversion id went to ReplyIds.
    assert timer_events(history) == ["STARTED", "CANCELED"]
    assert desc.typed_search_attributes.get(REPLY_IDS) == [conversion_key("order-1")]
    # The cancellation path is deterministic: the history replays against the same code.
    replayer = Replayer(workflows=[AbandonedCartWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_conversion_during_wait_answer_ends_the_flow(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_input(definition(ASK, **EXIT)), task_queue)
        await reaches(handle, "ask")
        await handle.signal(CART_CONVERTED_SIGNAL, Conversion())
        result = await handle.result()
    assert (result.outcome, result.converted, result.path) == ("converted", True, ["send"])
    assert await outcome_of(handle) == "converted"
    assert sent_steps(settings, handle.id) == ["send"]
    steps = await (await handle.describe()).memo_value("steps")
    assert [s["step"] for s in steps] == ["send"]


async def test_conversion_during_an_activity_in_flight_ends_the_flow(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """A webhook retrying an unreachable endpoint (hours between attempts) is cancelled; the next step never runs."""
    port = free_ports(1)[0]  # a port nobody listens on
    data = {
        "start_step": "post",
        "steps": {
            "post": {
                "node": "webhook",
                "params": {"url": f"http://127.0.0.1:{port}/", "initial_interval": "1h", "max_attempts": 3},
                "go_to": "send",
            },
            "send": {"node": "send_message"},
        },
    }
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_input(definition(data, **EXIT)), task_queue)
        await reaches(handle, "post")
        await handle.signal(CART_CONVERTED_SIGNAL, Conversion())
        result = await handle.result()
    assert (result.outcome, result.path) == ("converted", [])
    assert sent_steps(settings, handle.id) == []


async def test_conversion_before_the_first_step_sends_nothing(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(
            ts_env.client,
            flow_input(definition(NAP, **EXIT)),
            task_queue,
            start_signal=CART_CONVERTED_SIGNAL,
            start_signal_args=[Conversion(conversion_id="order-0")],
        )
        result = await handle.result()
    assert (result.outcome, result.path, result.current_step) == ("converted", [], "send")
    assert sent_steps(settings, handle.id) == []


async def test_conversion_flow_with_exit_on_cancelled_cancels_its_timer(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """Cancelling the workflow still reaches the step running in its own task, as without exit_on."""
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_input(definition(NAP, **EXIT)), task_queue)
        await reaches(handle, "nap")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        history = await handle.fetch_history()
    assert isinstance(info.value.cause, CancelledError)
    assert timer_events(history) == ["STARTED", "CANCELED"]
    assert sent_steps(settings, handle.id) == ["send"]
    assert await outcome_of(handle) == "stopped"  # a stopped campaign's flows say so
    assert (await handle.describe()).typed_search_attributes.get(OUTCOME) == "stopped"


async def test_conversion_without_exit_on_is_recorded_and_the_flow_carries_on(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_input(definition(NAP)), task_queue)
        await reaches(handle, "nap")
        await handle.signal(CART_CONVERTED_SIGNAL, Conversion(conversion_id="order-2"))
        assert (await status(handle)).converted is True
        result = await handle.result()
    assert (result.outcome, result.converted, result.path) == ("completed", True, ["send", "nap", "again"])
    assert await outcome_of(handle) == "completed"
    assert sent_steps(settings, handle.id) == ["send", "again"]


async def test_conversion_second_signal_and_replies_after_it_change_nothing(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """Without exit_on: only the first conversion is kept (and recorded in ReplyIds); replies still count."""
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_input(definition(ASK)), task_queue)
        await reaches(handle, "ask")
        await handle.signal(CART_CONVERTED_SIGNAL, Conversion(conversion_id="first"))
        await handle.signal(CART_CONVERTED_SIGNAL, Conversion(conversion_id="second"))
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="thanks"))
        result = await handle.result()
    assert (result.outcome, result.converted, result.replies, result.path) == (
        "completed",
        True,
        1,
        ["send", "ask", "tell"],
    )
    recorded = (await handle.describe()).typed_search_attributes.get(REPLY_IDS)
    assert recorded == [conversion_key("first"), "r1"]


# HTTP routing (dev server)


@dataclass
class Shop:
    http: httpx.AsyncClient
    client: Client
    settings: Settings
    started: list[str] = field(default_factory=list)

    async def start(self, data: dict[str, Any] = NAP, *, exit_on: bool = True, **ids: str) -> str:
        flow = flow_input(definition(data, **(EXIT if exit_on else {})), **ids)
        handle = await start_flow_input(self.client, flow, self.settings.temporal.task_queue)
        self.started.append(handle.id)
        await reaches(handle, "nap")  # sent the first message, now waiting an hour (for real)
        return handle.id

    async def start_in(self, campaign_id: str, variant: str | None = None, **ids: str) -> str:
        """A flow of `campaign_id` (no exit on conversion), with the `Variant` a split would have given it."""
        flow = flow_input(definition(NAP), campaign_id=campaign_id, **ids)
        attributes = start_attributes(flow).search_attributes
        if variant is not None:
            attributes = [*attributes, SearchAttributePair(VARIANT, variant)]
        handle = await self.client.start_workflow(
            AbandonedCartWorkflow.run,
            flow,
            id=f"{campaign_id}-{uuid.uuid4()}",
            task_queue=self.settings.temporal.task_queue,
            search_attributes=TypedSearchAttributes(attributes),
        )
        self.started.append(handle.id)
        await reaches(handle, "nap")
        return handle.id

    async def convert(self, body: dict[str, Any], *, msg_id: str | None = "", **sign: Any) -> httpx.Response:
        """POST /webhooks/conversions, signed by `standardwebhooks` (with a fresh id, unless `msg_id` is None)."""
        content = httpx.Request("POST", "http://x", json=body).content
        headers = {"content-type": "application/json"}
        if msg_id is not None:
            headers |= signed_headers(content, msg_id=msg_id or f"msg_{uuid.uuid4().hex}", **sign)
        return await self.http.post("/webhooks/conversions", content=content, headers=headers)

    async def result(self, workflow_id: str) -> FlowStatus:
        return await asyncio.wait_for(
            self.client.get_workflow_handle(workflow_id, result_type=FlowStatus).result(), timeout=15
        )

    async def status(self, workflow_id: str) -> FlowStatus:
        return await status(self.client.get_workflow_handle(workflow_id))

    async def running(self, workflow_id: str) -> bool:
        return (await self.client.get_workflow_handle(workflow_id).describe()).status == WorkflowExecutionStatus.RUNNING


@pytest_asyncio.fixture
async def shop(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> AsyncIterator[Shop]:
    settings.temporal.task_queue = task_queue
    settings.webhooks.secret = WEBHOOK_SECRET
    settings.webhooks.route_timeout = timedelta(seconds=5)
    app = create_app(settings, client=dev_env.client)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    shop = Shop(http, dev_env.client, settings)
    try:
        async with make_worker(dev_env.client, settings), shop.http:
            yield shop
    finally:
        await terminate(dev_env.client, *shop.started)


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4()}"


async def test_conversions_by_cart_id_end_that_cart_s_flow(shop: Shop) -> None:
    customer = new_id("customer")
    bought, other = new_id("cart"), new_id("cart")
    flow = await shop.start(cart_id=bought, customer_id=customer)
    other_flow = await shop.start(cart_id=other, customer_id=customer)

    response = await shop.convert({"cart_id": bought})

    assert (response.status_code, response.json()) == (202, {"signaled": [flow]})
    result = await shop.result(flow)
    assert (result.outcome, result.path) == ("converted", ["send"])
    assert await outcome_of(shop.client.get_workflow_handle(flow)) == "converted"
    assert sent_steps(shop.settings, flow) == ["send"]
    assert await shop.running(other_flow)
    assert (await shop.status(other_flow)).converted is False


async def test_conversions_by_customer_id_signal_every_running_flow_of_the_customer(shop: Shop) -> None:
    customer = new_id("customer")
    exits = await shop.start(cart_id=new_id("cart"), customer_id=customer)
    carries_on = await shop.start(cart_id=new_id("cart"), customer_id=customer, exit_on=False)
    someone_else = await shop.start(cart_id=new_id("cart"), customer_id=new_id("customer"))

    response = await shop.convert({"customer_id": customer})

    assert (response.status_code, response.json()) == (202, {"signaled": sorted([exits, carries_on])})
    assert (await shop.result(exits)).outcome == "converted"
    assert (await shop.status(carries_on)).converted is True  # recorded, ignored
    assert await shop.running(carries_on)
    assert (await shop.status(someone_else)).converted is False


async def test_conversions_cart_id_wins_over_customer_id(shop: Shop) -> None:
    customer, cart = new_id("customer"), new_id("cart")
    flow = await shop.start(cart_id=cart, customer_id=customer)
    other_cart = await shop.start(cart_id=new_id("cart"), customer_id=customer)

    response = await shop.convert({"cart_id": cart, "customer_id": customer})

    assert (response.status_code, response.json()) == (202, {"signaled": [flow]})
    assert (await shop.status(other_cart)).converted is False


async def test_conversions_redelivery_after_the_flow_ended_is_answered_alike(shop: Shop) -> None:
    cart = new_id("cart")
    flow = await shop.start(cart_id=cart)

    first = await shop.convert({"cart_id": cart}, msg_id="msg_conversion_redelivered")
    await shop.result(flow)
    again = await shop.convert({"cart_id": cart}, msg_id="msg_conversion_redelivered")
    by_body_id = await shop.convert({"cart_id": cart, "conversion_id": "msg_conversion_redelivered"})

    assert first.status_code == again.status_code == by_body_id.status_code == 202
    assert first.json() == again.json() == by_body_id.json() == {"signaled": [flow]}


async def test_conversions_no_running_flow_is_404(shop: Shop) -> None:
    shop.settings.webhooks.route_timeout = timedelta(milliseconds=300)
    cart = new_id("cart")
    flow = await shop.start(cart_id=cart)
    await shop.client.get_workflow_handle(flow).terminate("ended")

    ended = await shop.convert({"cart_id": cart})
    nobody = await shop.convert({"customer_id": "nobody-at-all"})

    recorded = "; the conversion is recorded"
    assert (ended.status_code, ended.json()) == (404, {"detail": f"no running flow for cart {cart!r}{recorded}"})
    assert (nobody.status_code, nobody.json()) == (
        404,
        {"detail": f"no running flow for customer 'nobody-at-all'{recorded}"},
    )


@pytest.mark.parametrize(
    ("body", "loc"),
    [({}, ["body"]), ({"conversion_id": "o-1"}, ["body"]), ({"cart_id": "c", "total": 12}, ["body", "total"])],
    ids=["empty", "no-target", "unknown-field"],
)
async def test_conversions_without_cart_or_customer_is_422(shop: Shop, body: dict[str, Any], loc: list[str]) -> None:
    response = await shop.convert(body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [e["loc"] for e in detail] == [loc]
    if loc == ["body"]:
        assert "one of cart_id or customer_id is required" in detail[0]["msg"]


@pytest.mark.parametrize("how", ["wrong-secret", "unsigned", "tampered"])
async def test_conversions_bad_signature_is_401_and_converts_nothing(shop: Shop, how: str) -> None:
    cart = new_id("cart")
    flow = await shop.start(cart_id=cart)
    content = httpx.Request("POST", "http://x", json={"cart_id": cart}).content
    headers = {"content-type": "application/json"}
    if how != "unsigned":
        secret = OTHER_SECRET if how == "wrong-secret" else WEBHOOK_SECRET
        signed = content
        if how == "tampered":  # signed for another cart
            signed = httpx.Request("POST", "http://x", json={"cart_id": new_id("cart")}).content
        headers |= signed_headers(signed, msg_id=f"msg_{uuid.uuid4().hex}", secret=secret)

    response = await shop.http.post("/webhooks/conversions", content=content, headers=headers)

    assert response.status_code == 401
    assert response.json()["detail"].startswith("invalid webhook signature: ")
    assert (await shop.status(flow)).converted is False
    assert await shop.running(flow)


async def test_conversions_without_secret_need_no_signature(shop: Shop) -> None:
    shop.settings.webhooks.secret = ""
    cart = new_id("cart")
    flow = await shop.start(cart_id=cart)

    response = await shop.convert({"cart_id": cart, "conversion_id": "order-unsigned"}, msg_id=None)

    assert (response.status_code, response.json()) == (202, {"signaled": [flow]})
    assert (await shop.result(flow)).outcome == "converted"


async def test_conversions_not_json_is_415(shop: Shop) -> None:
    response = await shop.http.post(
        "/webhooks/conversions", content=b"cart_id=1", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415


async def test_send_signal_accepts_cart_converted(shop: Shop) -> None:
    assert CART_CONVERTED_SIGNAL in SIGNALS
    flow = await shop.start(cart_id=new_id("cart"))

    response = await shop.http.post("/send-signal", json={"workflow_id": flow, "signal_name": "cart-converted"})

    assert response.status_code == 200, response.text
    result = await shop.result(flow)
    assert (result.outcome, result.converted) == ("converted", True)


async def test_readme_purchases_example_ends_the_shipped_campaign_s_flow(shop: Shop) -> None:
    """The docs' *Purchases* commands on a fresh install: the shipped campaign, started by hand, unsigned."""
    shop.settings.webhooks.secret = ""
    cart = new_id("cart")  # the docs' cart-7, unique here: the dev server is shared
    started = await shop.http.post("/start-workflow", json={"customer": {"id": new_id("c")}, "cart": {"id": cart}})
    assert started.status_code == 200, started.text
    flow = started.json()["workflow_id"]
    shop.started.append(flow)
    await reaches(shop.client.get_workflow_handle(flow), "step_2")

    response = await shop.convert({"cart_id": cart, "conversion_id": "order-1001"}, msg_id=None)

    assert (response.status_code, response.json()) == (202, {"signaled": [flow]})
    result = await shop.result(flow)
    assert (result.outcome, result.path) == ("converted", ["step_1"])


# Conversions kept and attributed (dev server: attribution reads visibility)

WINDOWED = """\
[campaign]
id = "{id}"
attribution_window = "{window}"

[schedule]
cron = ["0 9 * * *"]

[workflow]
start_step = "a"

[workflow.steps.a]
node = "send_message"
"""


def conversions_of(shop: Shop) -> Conversions:
    return Conversions(Store.open(shop.settings.store_url))


async def test_conversions_are_kept_and_attributed_within_each_campaign_s_window(shop: Shop, tmp_path: Path) -> None:
    shop.settings.webhooks.route_timeout = timedelta(milliseconds=300)
    shop.settings.campaigns.dir = tmp_path / "campaigns"
    shop.settings.campaigns.dir.mkdir()
    brief, week = f"brief-{uuid.uuid4().hex[:8]}", f"week-{uuid.uuid4().hex[:8]}"
    (shop.settings.campaigns.dir / "brief.toml").write_text(WINDOWED.format(id=brief, window="5s"))
    (shop.settings.campaigns.dir / "week.toml").write_text(WINDOWED.format(id=week, window="7d"))
    synced = await sync(shop.client, shop.settings)  # the windows are those of the campaigns the schedules run
    assert not synced.problems, synced.problems
    try:
        gone = f"gone-{uuid.uuid4().hex[:8]}"  # no schedule: the default window
        carts = {name: new_id("cart") for name in ("ended", "too-late", "before", "gone")}
        customer = new_id("customer")
        too_late = await shop.start_in(brief, "copy:friendly", cart_id=carts["too-late"])
        await asyncio.sleep(5.5)  # now past brief's window
        ended = await shop.start_in(brief, "copy:friendly", cart_id=carts["ended"])
        await shop.client.get_workflow_handle(ended).terminate("ended before the purchase")
        answers = {"o-ended": await shop.convert({"cart_id": carts["ended"], "conversion_id": "o-ended"})}
        held_out = await shop.start_in(week, "copy:holdout", cart_id=new_id("cart"), customer_id=customer)
        await shop.start_in(week, "copy:discount", cart_id=carts["before"])
        in_gone = await shop.start_in(gone, cart_id=carts["gone"])
        an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        answers |= {
            "o-too-late": await shop.convert({"cart_id": carts["too-late"], "conversion_id": "o-too-late"}),
            "o-holdout": await shop.convert(
                {"customer_id": customer, "conversion_id": "o-holdout", "amount": 19.99, "currency": "EUR"}
            ),
            "o-before": await shop.convert(
                {"cart_id": carts["before"], "conversion_id": "o-before", "occurred_at": an_hour_ago}
            ),
            "o-gone": await shop.convert(
                {
                    "cart_id": carts["gone"],
                    "conversion_id": "o-gone",
                    "amount": "5",
                    "currency": "USD",
                    "contact": "Ann@Example.com",
                }
            ),
        }
        again = await shop.convert(
            {"customer_id": customer, "conversion_id": "o-holdout", "amount": 1, "currency": "EUR"}
        )

        assert {k: r.status_code for k, r in answers.items()} == {
            "o-ended": 404,  # no running flow: recorded and attributed all the same
            "o-too-late": 202,
            "o-holdout": 202,
            "o-before": 202,
            "o-gone": 202,
        }
        assert answers["o-holdout"].json() == again.json() == {"signaled": [held_out]}
        assert answers["o-gone"].json() == {"signaled": [in_gone]}
        assert answers["o-too-late"].json() == {"signaled": [too_late]}  # signalled, but not attributed: too late
        conversions = conversions_of(shop)
        try:
            stored = {cid: await asyncio.to_thread(conversions.get, cid) for cid in answers}
            assert all(stored.values())  # every one kept, whether or not a flow ran or got it
            gone_record = stored["o-gone"]
            assert gone_record is not None
            assert (gone_record.amount, gone_record.currency, gone_record.contact) == (
                Decimal(5),
                "USD",
                "ann@example.com",
            )
            assert await asyncio.to_thread(conversions.by_variant, brief) == [VariantConversions("copy:friendly", 1, 1)]
            assert await asyncio.to_thread(conversions.by_variant, week) == [  # the redelivery counts once
                VariantConversions("copy:holdout", 1, 1, {"EUR": Decimal("19.99")})
            ]
            assert await asyncio.to_thread(conversions.by_variant, gone) == [
                VariantConversions(None, 1, 1, {"USD": Decimal(5)})
            ]
        finally:
            conversions.store.close()
    finally:
        await delete_schedules(shop.client, [schedule_id(brief), schedule_id(week)])


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        ({"amount": -1, "currency": "EUR"}, "amount", "greater than or equal to 0"),
        ({"amount": "1.1234567", "currency": "EUR"}, "amount", "no more than 6 decimal places"),
        ({"amount": "lots", "currency": "EUR"}, "amount", "valid decimal"),
        ({"amount": 5}, "currency", "amount and currency come together"),
        ({"currency": "EUR"}, "currency", "amount and currency come together"),
        ({"amount": 5, "currency": "euro"}, "currency", "should match pattern"),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, "occurred_at", "occurred_at is in the future"),
        ({"contact": "not a contact"}, "contact", "neither a phone number nor an e-mail"),
    ],
    ids=["negative", "too-precise", "not-a-number", "no-currency", "no-amount", "lower-case", "future", "contact"],
)
async def test_conversions_with_a_bad_field_are_422_naming_it_and_record_nothing(
    shop: Shop, fields: dict[str, Any], loc: str, message: str
) -> None:
    conversion_id = new_id("order")

    response = await shop.convert({"cart_id": new_id("cart"), "conversion_id": conversion_id, **fields})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [e["loc"] for e in detail] == [["body", loc]]
    assert message in detail[0]["msg"]
    conversions = conversions_of(shop)
    try:
        assert await asyncio.to_thread(conversions.get, conversion_id) is None
    finally:
        conversions.store.close()
