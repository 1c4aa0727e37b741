"""The `twilio` channel against a local stand-in that checks each request as Twilio documents it: the request
itself (path, basic auth, form fields, `StatusCallback`), retries and final errors, Twilio's error codes (21610
suppresses the contact and ends the flow `opted_out`; 21211/21614 fail the step naming the code), and the
deliveries store's record of each message. Flows run on the time-skipping server, the opt-out on the dev server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from scheduler.config import ConfigError, Settings, TwilioChannelSettings, load_settings
from scheduler.delivery.activities import Activities
from scheduler.delivery.channels import Message, Outbox, TwilioChannel, idempotency_key
from scheduler.errors import DeliveryError
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.signals import DeliveryState
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.store.deliveries import Deliveries, DeliveryRecord
from scheduler.worker import make_worker
from tests.helpers.flows import failure_of, one_step, outcome_of, start_flow_input
from tests.helpers.signing import PUBLIC_URL
from tests.helpers.twilio import ACCOUNT_SID, AUTH_TOKEN, SENDER, TOKEN_ENV, TwilioStandIn, twilio_stand_in
from tests.test_channels import Mailbox
from tests.test_delivery_flow import mailbox  # noqa: F401 (the fixture: an aiosmtpd server as channels.smtp)

SERVICE_SID = "MG" + "2e" * 16


def new_phone() -> str:
    """A mobile number of its own (flows on the shared dev server must not meet another test's customer)."""
    return f"+1646{random.randrange(2_000_000, 9_999_999)}"


@pytest.fixture
def twilio(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwilioStandIn]:
    """The stand-in, and the settings' `twilio` channel pointed at it (the token in the environment)."""
    with twilio_stand_in() as stand_in:
        settings.channels.twilio = TwilioChannelSettings(
            account_sid=ACCOUNT_SID, sender=SENDER, auth_token_env=TOKEN_ENV, api_base=stand_in.url
        )
        settings.webhooks.public_url = PUBLIC_URL
        monkeypatch.setenv(TOKEN_ENV, AUTH_TOKEN)
        yield stand_in


async def run_flow(
    env: WorkflowEnvironment, settings: Settings, task_queue: str, *, phone: str, **params: Any
) -> tuple[Any, FlowStatus | WorkflowFailureError]:
    flow = FlowInput(
        definition=one_step(channel="twilio", template="Your cart: {{ cart.url }}", **params),
        campaign_id="spring",
        customer={"id": "c1", "name": "Ada", "phone": phone},
        cart={"id": "k1", "url": "https://shop.example/cart/k1"},
    )
    async with make_worker(env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(env.client, flow, task_queue)
        try:
            return handle, await asyncio.wait_for(handle.result(), timeout=60)
        except WorkflowFailureError as exc:
            return handle, exc


def deliveries(settings: Settings) -> Deliveries:
    return Deliveries(Store.open(settings.store_url))


async def test_twilio_channel_posts_the_documented_request(
    ts_env, settings: Settings, task_queue: str, twilio: TwilioStandIn
) -> None:
    phone = new_phone()
    handle, result = await run_flow(ts_env, settings, task_queue, phone=phone)

    assert isinstance(result, FlowStatus), result
    assert result.outcome == "completed"
    assert twilio.problems == []
    [request] = twilio.requests
    key = idempotency_key(workflow_id=handle.id, run_id=handle.result_run_id, step="step_1")
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request["auth"] == (ACCOUNT_SID, AUTH_TOKEN)
    assert request["content_type"] == "application/x-www-form-urlencoded"
    assert request["form"] == {
        "To": phone,
        "From": SENDER,
        "Body": "Your cart: https://shop.example/cart/k1",
        "StatusCallback": f"{PUBLIC_URL}/webhooks/twilio/status?message_id={key}",
    }
    record = deliveries(settings).get(key)
    assert record is not None
    assert (record.provider_id, record.status, record.channel, record.contact) == (
        twilio.sids[0],
        DeliveryState.SENT,
        "twilio",
        phone,
    )
    assert (record.workflow_id, record.run_id, record.campaign_id, record.step) == (
        handle.id,
        handle.result_run_id,
        "spring",
        "step_1",
    )
    assert record.sent_at is not None
    assert [line["channel"] for line in Outbox(settings.channels.outbox).read()] == ["twilio"]


async def test_twilio_channel_with_a_messaging_service_and_no_public_url(
    ts_env, settings: Settings, task_queue: str, twilio: TwilioStandIn
) -> None:
    settings.channels.twilio = TwilioChannelSettings(
        account_sid=ACCOUNT_SID, messaging_service_sid=SERVICE_SID, auth_token_env=TOKEN_ENV, api_base=twilio.url
    )
    settings.webhooks.public_url = ""
    phone = new_phone()
    _, result = await run_flow(ts_env, settings, task_queue, phone=phone)

    assert isinstance(result, FlowStatus), result
    assert twilio.problems == []
    assert twilio.requests[0]["form"] == {
        "To": phone,
        "MessagingServiceSid": SERVICE_SID,
        "Body": "Your cart: https://shop.example/cart/k1",
    }  # no StatusCallback: the service has no public URL to be called at


async def test_twilio_429_and_5xx_are_retried_and_the_message_goes_once(
    ts_env, settings: Settings, task_queue: str, twilio: TwilioStandIn
) -> None:
    twilio.failures = [(503, 20500), (429, 20429), None]
    _, result = await run_flow(ts_env, settings, task_queue, phone=new_phone())

    assert isinstance(result, FlowStatus), result
    assert result.outcome == "completed"
    assert len(twilio.requests) == 3
    assert len(twilio.sids) == 1
    assert len({r["form"]["StatusCallback"] for r in twilio.requests}) == 1  # one message id throughout
    assert len(Outbox(settings.channels.outbox).read()) == 1


@pytest.mark.parametrize(
    ("failure", "kind", "text"),
    [
        ((400, 21211), "InvalidNumber", "invalid 'To' phone number: Twilio error 21211"),
        ((400, 21614), "InvalidNumber", "not a valid mobile number: Twilio error 21614"),
        ((400, 21408), "GatewayRejected", "Twilio 21408"),
        ((401, 20003), "GatewayRejected", "HTTP 401 Twilio 20003"),
    ],
    ids=["21211-invalid", "21614-not-mobile", "other-4xx", "wrong-credentials"],
)
async def test_twilio_final_errors_fail_the_step_at_once_naming_the_code(
    ts_env,
    settings: Settings,
    task_queue: str,
    twilio: TwilioStandIn,
    failure: tuple[int, int],
    kind: str,
    text: str,
) -> None:
    twilio.failures = [failure]
    handle, result = await run_flow(ts_env, settings, task_queue, phone=new_phone())

    error = failure_of(result)
    assert (error.type, error.non_retryable) == (kind, True)
    assert text in error.message
    assert len(twilio.requests) == 1
    assert await outcome_of(handle) == "failed"
    key = idempotency_key(workflow_id=handle.id, run_id=handle.result_run_id, step="step_1")
    record = deliveries(settings).get(key)
    assert record is not None
    assert (record.status, record.error_code, record.sent_at) == (DeliveryState.FAILED, str(failure[1]), None)


async def test_twilio_21610_suppresses_the_contact_and_the_flow_ends_opted_out(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, twilio: TwilioStandIn
) -> None:
    twilio.failures = [(400, 21610)]
    phone = new_phone()
    handle, result = await run_flow(dev_env, settings, task_queue, phone=phone)

    assert isinstance(result, FlowStatus), result
    assert result.outcome == "opted_out"
    assert await outcome_of(handle) == "opted_out"
    entry = Consent(Store.open(settings.store_url)).get(phone)
    assert entry is not None
    assert (entry.reason, entry.campaign_id, entry.workflow_id) == ("carrier opt-out", "spring", handle.id)
    assert len(twilio.requests) == 1
    assert Outbox(settings.channels.outbox).read() == []


async def test_a_retry_after_the_message_went_does_not_send_it_again(settings: Settings, twilio: TwilioStandIn) -> None:
    store = Store.open(settings.store_url)
    activities = Activities(settings.channels, store=store, public_url=PUBLIC_URL)
    channel = activities.channels["twilio"]
    assert isinstance(channel, TwilioChannel)
    phone = new_phone()
    message = Message(to=phone, text="hi", campaign_id="spring", workflow_id="w1", step="s1", idempotency_key="k-1")
    record = DeliveryRecord("k-1", "w1", "r1", "spring", "s1", "twilio", phone)

    await activities._deliver(channel, message, record)
    await activities._deliver(channel, message, record)  # as an activity retried after a lost answer would

    assert len(twilio.requests) == 1
    stored = Deliveries(store).get("k-1")
    assert stored is not None and stored.provider_id == twilio.sids[0]


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        (f'[channels.twilio]\naccount_sid = "{ACCOUNT_SID}"\n', "channels.twilio.from (the sending number)"),
        ('[channels.twilio]\naccount_sid = "AC123"\nfrom = "+15005550006"\n', "account_sid"),
        (f'[channels.twilio]\naccount_sid = "{ACCOUNT_SID}"\nfrom = "+1"\napi_base = "ftp://x"\n', "api_base"),
        ('[channels]\ndefault = "twilio"\n', "channels.default is 'twilio' but channels.twilio.account_sid is not set"),
        ('[compliance]\nundeliverable_codes = [""]\n', "undeliverable_codes"),
    ],
    ids=["no-sender", "bad-sid", "bad-api-base", "default-unconfigured", "empty-code"],
)
def test_twilio_settings_errors(tmp_path, toml: str, error: str) -> None:
    path = tmp_path / "scheduler.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert error in str(caught.value)


def test_twilio_settings_from_file_and_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scheduler.toml"
    path.write_text(
        f'[channels]\ndefault = "twilio"\n[channels.twilio]\naccount_sid = "{ACCOUNT_SID}"\nfrom = "{SENDER}"\n'
    )
    monkeypatch.setenv("SCHEDULER_CHANNELS__TWILIO__API_BASE", "http://127.0.0.1:9/")
    settings = load_settings(path)
    twilio = settings.channels.twilio
    assert (twilio.account_sid, twilio.sender, twilio.api_base, twilio.auth_token_env) == (
        ACCOUNT_SID,
        SENDER,
        "http://127.0.0.1:9",
        "TWILIO_AUTH_TOKEN",
    )
    assert settings.channels.missing("twilio") is None
    assert settings.compliance.undeliverable_codes == ["30005", "30006"]


async def test_a_carrier_opt_out_ends_the_flow_also_where_the_step_lists_another_channel(
    mailbox: Mailbox,  # noqa: F811
    dev_env: WorkflowEnvironment,
    settings: Settings,
    task_queue: str,
    twilio: TwilioStandIn,
) -> None:
    """21610 is the customer's STOP, given to the carrier: like an opt-out reply it ends the flow, so the e-mail the
    step's list names next does not go (a contact suppressed before only skips its own channel)."""
    twilio.failures = [(400, 21610)]
    flow = FlowInput(
        definition=one_step(channel=["twilio", "smtp"]),
        campaign_id="spring",
        customer={"id": "c1", "name": "Ada", "phone": new_phone(), "email": "ada@example.net"},
        cart={},
    )
    async with make_worker(dev_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(dev_env.client, flow, task_queue)
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.outcome == "opted_out"
    assert len(twilio.requests) == 1
    assert mailbox.messages == []


def test_twilio_gets_the_number_in_e164_however_the_customer_s_record_spells_it(
    settings: Settings, twilio: TwilioStandIn
) -> None:
    channel = Activities(settings.channels, public_url=PUBLIC_URL).channels["twilio"]
    assert isinstance(channel, TwilioChannel)

    def to(phone: str) -> str:
        return channel.form(Message(to=phone, text="hi", campaign_id="c", workflow_id="w", step="s"))["To"]

    assert to("+1 (646) 555-0142") == to("tel:+16465550142") == "+16465550142"
    with pytest.raises(DeliveryError) as refused:
        to("ada@example.net")
    assert (refused.value.kind, refused.value.retryable) == ("InvalidNumber", False)
