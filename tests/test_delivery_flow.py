"""Delivery receipts in real flows (time-skipping server): the `delivery-status` signal kept in the memo,
`send_message`'s `await_delivery`, and a channel list that falls back from an SMS gateway (a local HTTP server)
to e-mail (aiosmtpd) when a message fails for good, is reported undelivered, or cannot go by policy."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from scheduler.config import FrequencyCap, Settings
from scheduler.delivery.channels import idempotency_key
from scheduler.flow.definition import WorkflowDefinition, validate_definition
from scheduler.flow.models import DeliveryPolicy, FlowInput
from scheduler.flow.nodes.send_message import SendMessage, SendMessageParams
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, DELIVERY_STATUS_SIGNAL, DeliveryStatus, Reply
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.worker import make_worker
from tests.helpers.flows import failure_of, start_flow_input, status
from tests.helpers.servers import ScriptedServer, free_ports, scripted_server
from tests.test_channels import Mailbox, use_smtp

PHONE_NY = "+1 212 555 0142"
EMAIL = "ada@example.net"
CUSTOMER = {"id": "c1", "name": "Ada", "phone": PHONE_NY, "email": EMAIL}


@pytest.fixture
def gateway(settings: Settings) -> Iterator[ScriptedServer]:
    """The `http` channel's SMS gateway: 200 unless a test scripts otherwise."""
    with scripted_server("/v1/messages") as server:
        settings.channels.http.url = server.url
        yield server


@pytest.fixture
def mailbox(settings: Settings) -> Iterator[Mailbox]:
    box = Mailbox(port=free_ports(1)[0])
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    use_smtp(settings, box)
    try:
        yield box
    finally:
        controller.stop()


def send_then(params: dict[str, Any], *, then: str = "owner") -> WorkflowDefinition:
    """A message; `satisfied` waits 1m (`done`), `not_satisfied` tells the owner."""
    return WorkflowDefinition.model_validate(
        {
            "start_step": "send",
            "steps": {
                "send": {
                    "node": "send_message",
                    "params": params,
                    "condition": {"satisfied": "done", "not_satisfied": then},
                },
                "done": {"node": "explicit_wait", "params": {"duration": "1m"}},
                "owner": {"node": "notify_creator", "params": {"channel": "console"}},
            },
        }
    )


def flow_of(definition: WorkflowDefinition, customer: dict[str, Any] = CUSTOMER, **policy: Any) -> FlowInput:
    return FlowInput(
        definition=definition,
        campaign_id="receipts",
        owner="growth@example.com",
        customer=customer,
        cart={"id": "k1"},
        delivery=DeliveryPolicy(**{"quiet_hours": "", "timezone": "UTC", **policy}),
        revision=3,
    )


def receipt(message_id: str, state: str, **fields: Any) -> DeliveryStatus:
    return DeliveryStatus.model_validate({"message_id": message_id, "status": state, **fields})


async def steps_of(handle: WorkflowHandle[Any, Any]) -> list[dict[str, Any]]:
    return await (await handle.describe()).memo_value("steps", type_hint=list)


async def history_events(handle: WorkflowHandle[Any, Any], kind: int) -> list[Any]:
    return [e for e in (await handle.fetch_history()).events if e.event_type == kind]


async def patches_of(handle: WorkflowHandle[Any, Any]) -> list[str]:
    markers = await history_events(handle, HistoryEventType.EVENT_TYPE_MARKER_RECORDED)
    ids = []
    for marker in markers:
        attributes = marker.marker_recorded_event_attributes
        if attributes.marker_name == "core_patch":
            ids.append(json.loads(attributes.details["patch-data"].payloads[0].data)["id"])
    return ids


async def until(predicate: Any, what: str) -> None:
    for _ in range(300):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gateway_key(gateway: ScriptedServer, index: int = 0) -> str:
    """The idempotency key (= message id) of the gateway's `index`th request."""
    return gateway.requests[index]["headers"]["Idempotency-Key"]


async def sent_through_gateway(handle: WorkflowHandle[Any, Any], gateway: ScriptedServer) -> str:
    """Once the gateway has the flow's message: its id (the flow may not have the activity's result yet)."""

    async def posted() -> bool:
        return bool(gateway.requests)

    await until(posted, "the gateway's request")
    key = gateway_key(gateway)
    assert key == idempotency_key(workflow_id=handle.id, run_id=handle.result_run_id or "", step="send")
    return key


# Params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"await_delivery": "2d"}, "await_delivery must be more than 0s and at most 1d, got 2d"),
        ({"await_delivery": "0s"}, "await_delivery must be more than 0s and at most 1d, got 0s"),
        ({"await_delivery": "soon"}, "invalid duration 'soon'"),
        ({"channel": []}, "a channel list names 1 to 4 channels, got 0"),
        ({"channel": ["http", "http"]}, "a channel list names each channel once"),
        ({"channel": ["http", "fax"]}, "unknown channel 'fax' in the list"),
        ({"channel": "fax"}, "unknown channel 'fax': use one of"),
        ({"channel": 5}, "expected a channel name or a list of them, got 5"),
    ],
)
def test_bad_delivery_params_are_refused_naming_the_key(params: dict[str, Any], message: str) -> None:
    definition = WorkflowDefinition.model_validate(
        {"start_step": "a", "steps": {"a": {"node": "send_message", "params": params}}}
    )
    [problem] = validate_definition(definition)
    assert problem.key == f"steps.a.params.{next(iter(params))}"
    assert message in problem.message


def test_only_a_long_message_step_writes_state_first() -> None:
    """A plain message writes nothing before it, as before the params existed; a wait for a receipt does."""
    node = SendMessage()
    assert not node.writes_state_first(SendMessageParams(), 3)
    assert not node.writes_state_first(SendMessageParams(await_delivery=timedelta(seconds=10)), 3)
    assert node.writes_state_first(SendMessageParams(await_delivery=timedelta(minutes=2)), 3)
    assert node.writes_state_first(SendMessageParams.model_validate({"channel": ["http", "smtp"]}), 3)


# Receipts in the memo


async def test_receipts_after_the_step_land_in_its_memo_entry_once_each(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer
) -> None:
    """No await_delivery: the step ends at once; receipts in the next step's wait update its memo entry. The
    furthest state stays (delivered, then a late `sent` and `undelivered`, then delivered again): one memo upsert
    for the receipt that changed something, none for the others or for an id the flow never sent."""
    definition = send_then({"channel": "http"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        message_id = await sent_through_gateway(handle, gateway)

        async def waiting() -> bool:
            return (await status(handle)).current_step == "done"

        await until(waiting, "the flow in step done")
        before = len(await history_events(handle, HistoryEventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED))
        at = datetime(2026, 1, 1, tzinfo=UTC)
        for state in ("delivered", "sent", "undelivered", "delivered"):
            await handle.signal(DELIVERY_STATUS_SIGNAL, receipt(message_id, state, channel="http", at=at))
        await handle.signal(DELIVERY_STATUS_SIGNAL, receipt(str(uuid.uuid4()), "failed"))

        async def recorded() -> bool:
            return any("delivery" in s for s in await steps_of(handle))

        await until(recorded, "the delivery in the memo")
        result = await handle.result()
    assert result.path == ["send", "done"]
    # One upsert for the receipt that changed something, one at the end.
    assert len(await history_events(handle, HistoryEventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED)) == before + 2
    signals = await history_events(handle, HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    assert len(signals) == 5  # all of them reached the flow before it ended
    [send, _] = await steps_of(handle)
    assert send["delivery"] == {"status": "delivered", "channel": "http", "at": "2026-01-01T00:00:00Z"}
    assert "channel" not in send and "tried" not in send  # a single channel's entry is as it always was
    assert await patches_of(handle) == ["delivery-memo"]


async def test_a_flow_without_receipts_writes_no_delivery_and_asks_no_patch(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(send_then({"channel": "http"})), task_queue)
        result = await handle.result()
    assert result.path == ["send", "done"]
    assert all("delivery" not in s for s in await steps_of(handle))
    assert await patches_of(handle) == []
    assert len(await history_events(handle, HistoryEventType.EVENT_TYPE_TIMER_STARTED)) == 1  # step done's only


# await_delivery


@pytest.mark.parametrize(
    ("receipts", "path", "reason", "delivery"),
    [
        (["sent", "delivered"], ["send", "done"], None, "delivered"),
        (["undelivered"], ["send", "owner"], "undelivered", "undelivered"),
        (["failed", "sent"], ["send", "owner"], "undelivered", "failed"),
        ([], ["send", "done"], None, None),
    ],
    ids=["delivered", "undelivered", "failed", "no-receipt"],
)
async def test_await_delivery_routes_by_the_receipt(
    ts_env: WorkflowEnvironment,
    settings: Settings,
    task_queue: str,
    gateway: ScriptedServer,
    receipts: list[str],
    path: list[str],
    reason: str | None,
    delivery: str | None,
) -> None:
    """Undelivered or failed: `not_satisfied` with reason `undelivered`; delivered or no receipt within the 2m
    (time skips through it): `satisfied`. Receipts may come before the flow has the send's result."""
    definition = send_then({"channel": "http", "await_delivery": "2m"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        message_id = await sent_through_gateway(handle, gateway)
        for state in receipts:
            await handle.signal(DELIVERY_STATUS_SIGNAL, receipt(message_id, state, error_code="30006"))
        result = await handle.result()
    assert result.path == path
    [send, _] = await steps_of(handle)
    assert send.get("reason") == reason
    assert (send.get("delivery") or {}).get("status") == delivery
    fired = await history_events(handle, HistoryEventType.EVENT_TYPE_TIMER_FIRED)
    if not receipts:  # the wait ran out (2m), then step done's 1m
        timers = await history_events(handle, HistoryEventType.EVENT_TYPE_TIMER_STARTED)
        wait = timers[0].timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        assert (wait, len(fired)) == (timedelta(minutes=2), 2)
    else:  # a final receipt ended the wait (or came before it began, with the send's result): its timer never fired
        assert len(fired) == int(path[-1] == "done")


# Channel lists


async def test_a_final_failure_falls_back_to_email(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    """The gateway refuses the number (400, final): the message goes by e-mail, with a key of its own."""
    gateway.statuses = [400]
    definition = send_then({"channel": ["http", "smtp"], "template": "Hi {{ customer.name }}"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        result = await handle.result()
    assert result.path == ["send", "done"]
    assert len(gateway.requests) == 1  # a 400 is not retried
    [(_, recipients, message)] = mailbox.messages
    assert recipients == [EMAIL] and message.get_content().strip() == "Hi Ada"
    assert message["Message-ID"].strip("<>").partition("@")[0] not in {gateway_key(gateway)}
    [send, _] = await steps_of(handle)
    assert (send["tried"], send["channel"], send["event"]) == (["http", "smtp"], "smtp", "condition_satisfied")


async def test_an_undelivered_sms_falls_back_to_email_with_await_delivery(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    definition = send_then({"channel": ["http", "smtp"], "await_delivery": "2m"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        message_id = await sent_through_gateway(handle, gateway)
        await handle.signal(DELIVERY_STATUS_SIGNAL, receipt(message_id, "undelivered", error_code="30003"))
        result = await handle.result()
    assert result.path == ["send", "done"]
    assert len(mailbox.messages) == 1
    [send, _] = await steps_of(handle)
    assert (send["tried"], send["channel"]) == (["http", "smtp"], "smtp")
    assert "delivery" not in send  # its entry tells of the e-mail, which gets no receipts
    # The e-mail is not awaited (smtp sends no receipts): the step ended before a 2m wait could have. (Counting
    # timers would not tell: a receipt that comes before the SMS's result ends its wait before its timer is sent.)
    started = (await handle.describe()).start_time
    assert datetime.fromisoformat(send["at"]) - started < timedelta(minutes=1)


async def test_a_delivered_sms_sends_no_email(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    definition = send_then({"channel": ["http", "smtp"], "await_delivery": "2m"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        message_id = await sent_through_gateway(handle, gateway)
        await handle.signal(DELIVERY_STATUS_SIGNAL, receipt(message_id, "delivered", channel="http"))
        result = await handle.result()
    assert result.path == ["send", "done"] and mailbox.messages == []
    [send, _] = await steps_of(handle)
    assert (send["tried"], send["channel"], send["delivery"]["status"]) == (["http"], "http", "delivered")


async def test_a_customer_without_a_phone_goes_straight_to_email(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    customer = {"id": "c2", "name": "Bo", "email": EMAIL}
    definition = send_then({"channel": ["http", "smtp"], "await_delivery": "2m"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition, customer), task_queue)
        result = await handle.result()
    assert result.path == ["send", "done"]
    assert gateway.requests == [] and len(mailbox.messages) == 1
    [send, _] = await steps_of(handle)
    assert (send["tried"], send["channel"]) == (["smtp"], "smtp")


async def test_quiet_hours_count_per_attempt_in_the_zone_of_its_contact(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    """Quiet now in New York (the phone's area) but not in the campaign's UTC: the SMS would be held past
    `max_delay`, so it is not sent; the e-mail, whose zone is the campaign's, goes at once."""
    now = await ts_env.get_current_time()
    local = now.astimezone(ZoneInfo("America/New_York"))
    window = f"{local - timedelta(hours=1):%H:%M}-{local + timedelta(hours=1):%H:%M}"
    definition = send_then({"channel": ["http", "smtp"]})
    flow = flow_of(definition, quiet_hours=window, max_delay=timedelta(minutes=30))
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow, task_queue)
        result = await handle.result()
    assert result.path == ["send", "done"]
    assert gateway.requests == [] and len(mailbox.messages) == 1
    [send, _] = await steps_of(handle)
    assert (send["tried"], send["channel"], send["zone"]) == (["http", "smtp"], "smtp", "campaign timezone: UTC")

    # The same window with one channel: the message is not sent, as before channel lists.
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(
            ts_env.client, flow.model_copy(update={"definition": send_then({})}), task_queue
        )
        result = await handle.result()
    assert result.path == ["send", "owner"]
    [send, _] = await steps_of(handle)
    assert (send["reason"], send["zone"]) == ("quiet_hours", "phone: America/New_York")


async def test_when_every_channel_fails_the_step_fails_with_the_last_error(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    gateway.statuses = [400]
    mailbox.refuse[EMAIL] = "550 no such user"
    definition = send_then({"channel": ["http", "smtp"]})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    error = failure_of(failed.value)
    assert error.type == "SmtpRejected" and "550" in str(error)
    assert len(gateway.requests) == 1
    assert await (await handle.describe()).memo_value("outcome", type_hint=str) == "failed"


async def test_a_single_channel_that_fails_fails_the_step_as_before(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    gateway.statuses = [400]
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(send_then({"channel": "http"})), task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure_of(failed.value).type == "GatewayRejected"
    assert mailbox.messages == []


async def test_a_suppressed_phone_falls_back_to_the_customers_email(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    """Suppression is per contact: the phone's (an undeliverable number, a STOP to another campaign) does not
    keep the e-mail from going; with both suppressed the flow ends `opted_out` as a single channel's does."""
    store = Store.open(settings.store.url)
    try:
        consent = Consent(store)
        consent.suppress(PHONE_NY, reason="undeliverable")
        definition = send_then({"channel": ["http", "smtp"]})
        async with make_worker(ts_env.client, settings, task_queue=task_queue, store=store):
            handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
            result = await handle.result()
            assert (result.path, result.outcome) == (["send", "done"], "completed")
            [send, _] = await steps_of(handle)
            assert (send["tried"], send["channel"]) == (["http", "smtp"], "smtp")
            assert gateway.requests == [] and len(mailbox.messages) == 1

            consent.suppress(EMAIL, reason="keyword STOP")
            handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
            result = await handle.result()
        assert (result.path, result.outcome) == (["send"], "opted_out")
        [send] = await steps_of(handle)
        assert send["tried"] == ["http", "smtp"] and "channel" not in send
    finally:
        store.close()


async def test_an_opt_out_reply_while_the_sms_awaits_its_receipt_ends_the_flow_without_email(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    """The customer said stop: no other channel is tried, even when the SMS is then reported undelivered."""
    definition = send_then({"channel": ["http", "smtp"], "await_delivery": "2m"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        message_id = await sent_through_gateway(handle, gateway)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="STOP", opt_out=True))
        await handle.signal(DELIVERY_STATUS_SIGNAL, receipt(message_id, "undelivered"))
        result = await handle.result()
    assert result.outcome == "opted_out"
    assert mailbox.messages == []


async def test_a_cap_on_sms_sends_the_capped_customer_email(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    """Caps count per contact and channel: a second SMS within the cap's window is skipped, so the list's e-mail
    goes instead. (Both flows send before any result is awaited: the time-skipping clock stands still.)"""
    settings.compliance.frequency_caps = [FrequencyCap.model_validate({"channels": ["http"], "max": 1, "per": "24h"})]
    definition = send_then({"channel": ["http", "smtp"]})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handles = []
        for campaign in ("first", "second"):
            flow = flow_of(definition).model_copy(update={"campaign_id": campaign})
            handle = await start_flow_input(ts_env.client, flow, task_queue)

            async def sent(handle: WorkflowHandle[Any, Any] = handle) -> bool:
                return (await status(handle)).path[:1] == ["send"]

            await until(sent, f"{campaign}'s send step")
            handles.append(handle)
        results = [await h.result() for h in handles]
    assert [r.path for r in results] == [["send", "done"], ["send", "done"]]
    assert len(gateway.requests) == 1 and len(mailbox.messages) == 1
    entries = [(await steps_of(h))[0] for h in handles]
    assert [(e["tried"], e["channel"]) for e in entries] == [(["http"], "http"), (["http", "smtp"], "smtp")]


async def test_an_opt_out_reply_while_the_sms_awaits_its_receipt_goes_to_the_next_wait_at_once(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    """A STOP kept for the `wait_answer` that follows ends the wait for the receipt now, not when `await_delivery`
    runs out: the wait's `not_satisfied` edge tells the owner at once, and no other channel is tried."""
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "send",
            "steps": {
                "send": {
                    "node": "send_message",
                    "params": {"channel": ["http", "smtp"], "await_delivery": "12h"},
                    "go_to": "listen",
                },
                "listen": {"node": "wait_answer", "params": {"timeout": "1d"}, "condition": {"not_satisfied": "owner"}},
                "owner": {"node": "notify_creator", "params": {"channel": "console"}},
            },
        }
    )
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        await sent_through_gateway(handle, gateway)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="STOP", opt_out=True))
        result = await handle.result()
    assert (result.path, result.outcome) == (["send", "listen", "owner"], "opted_out")
    send, listen, _ = await steps_of(handle)
    started = (await handle.describe()).start_time
    assert datetime.fromisoformat(send["at"]) - started < timedelta(minutes=1)  # not 12h later
    assert (send["tried"], listen["event"]) == (["http"], "condition_not_satisfied")
    assert mailbox.messages == []


async def test_a_channel_the_service_lacks_fails_the_step_instead_of_falling_back(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, mailbox: Mailbox
) -> None:
    """Every message through it would fail until the config is mended: a fallback would hide that for good."""
    assert settings.channels.missing("twilio")
    definition = send_then({"channel": ["twilio", "smtp"]})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow_of(definition), task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    error = failure_of(failed.value)
    assert error.type == "ChannelNotConfigured" and "channels.twilio" in str(error)
    assert mailbox.messages == []
