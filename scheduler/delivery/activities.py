"""Activities: every side effect of a flow (messages, webhooks) and a keyword's answer happens here, with retries."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from sqlalchemy.exc import SQLAlchemyError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from scheduler.config import ChannelsSettings, ComplianceSettings, env_var
from scheduler.delivery.channels import Channel, Message, Outbox, idempotency_key, make_channels
from scheduler.delivery.renderer import Renderer
from scheduler.delivery.templates import TemplateRenderError
from scheduler.delivery.unsubscribe import Links, Unsubscribe
from scheduler.errors import CarrierOptOut, DeliveryError, InvalidContact, first_line
from scheduler.flow.contacts import normalize_contact, redact
from scheduler.flow.engine import COUNT_MESSAGE, DELIVERY_DEFAULTS
from scheduler.flow.models import ActivityInput, AnswerMessage, MessageEvent, message_step
from scheduler.flow.nodes import ActivityResult, EventType
from scheduler.flow.nodes.notify_creator import NotifyCreatorParams
from scheduler.flow.nodes.send_message import RECEIPT_CHANNELS, SendMessageParams
from scheduler.flow.nodes.webhook import WebhookParams
from scheduler.flow.signals import DeliveryState
from scheduler.flow.workflows import SEND_KEYWORD_ANSWER
from scheduler.http_clients import http_client, retryable_status
from scheduler.metrics import DELIVERIES, MESSAGES
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.store.deliveries import Deliveries, DeliveryRecord
from scheduler.store.ledger import Ledger
from scheduler.store.stops import CampaignStops

log = logging.getLogger(__name__)
T = TypeVar("T")
CARRIER_OPT_OUT = "carrier opt-out"
"""The reason a contact is suppressed with when its carrier refuses a message because the customer opted out there."""


class Activities:
    """Holds what activities share (the outbox, channels, template renderer); register `.all()` on a worker.

    Templates render in the renderer's child processes: run the worker inside `renderer.running()`.
    """

    def __init__(
        self,
        settings: ChannelsSettings,
        store: Store | None = None,
        unsubscribe: Links | None = None,
        compliance: ComplianceSettings | None = None,
        consent: Consent | None = None,
        public_url: str = "",
    ) -> None:
        """`store`: None checks no list, counts against no cap, knows no stop and records no delivery. `consent`:
        another view of the store's suppression list (a benchmark's that checks nothing). `public_url`: the
        service's (`webhooks.public_url`), where gateways post delivery receipts."""
        self.settings = settings
        self.compliance = compliance or ComplianceSettings()
        self.consent = consent or (Consent(store) if store is not None else None)
        """The suppression list `send_message` checks right before delivering."""
        self.ledger = Ledger(store) if store is not None else None
        """Counts customer messages against `compliance.frequency_caps`."""
        self.stops = CampaignStops(store) if store is not None else None
        """The campaigns' emergency stops, checked right before anything goes out."""
        self.deliveries = Deliveries(store) if store is not None else None
        """Each customer message sent and what its receipts reported."""
        self.unsubscribe = unsubscribe
        """Signs the one-click unsubscribe link of every customer e-mail (None: not configured)."""
        self.outbox = Outbox(settings.outbox)
        self.channels = make_channels(settings, self.outbox, public_url=public_url)
        self.renderer = Renderer()

    def all(self) -> list[Any]:
        return [
            self.send_message,
            self.notify_creator,
            self.webhook,
            self.delivery_defaults,
            self.count_message,
            self.send_keyword_answer,
        ]

    @activity.defn(name=COUNT_MESSAGE)
    async def count_message(self, event: MessageEvent) -> None:
        """Count a message a flow held or did not send by policy (a local activity), and for its campaign run."""
        MESSAGES.labels(event.channel or self.settings.default, event.result).inc()
        if event.run_id is not None and self.ledger is not None:
            try:
                await asyncio.to_thread(self.ledger.count_run_message, event.run_id, event.result)
            except SQLAlchemyError as exc:  # a count is not worth holding up the message for
                log.warning("could not count a %s message of run %s: %s", event.result, event.run_id, first_line(exc))

    @activity.defn(name=DELIVERY_DEFAULTS)
    async def delivery_defaults(self) -> str:
        """The service's quiet hours, for a flow whose campaign sets none (a local activity, asked once)."""
        return self.compliance.quiet_hours

    @activity.defn(name="send_message")
    async def send_message(self, inp: ActivityInput) -> ActivityResult:
        """Render the step's template for the customer and send it; failures say whether to retry."""
        params = SendMessageParams.model_validate(inp.params)
        channel = self._channel(params.channel)
        with _delivery_errors():
            to = channel.recipient(inp.customer)
        try:
            contact: str | None = normalize_contact(to)
        except InvalidContact:
            contact = None  # not a phone or an address (a console name): nothing to opt out or unsubscribe
        info = activity.info()
        message_id = message_key(inp)
        # Kept only where receipts will come: two writes per message cost a tenth of the worker's throughput.
        delivery = (
            DeliveryRecord(
                message_id=message_id,
                workflow_id=inp.workflow_id,
                run_id=info.workflow_run_id,
                campaign_id=inp.campaign_id,
                step=inp.step,
                channel=channel.name,
                contact=contact,
            )
            if channel.name in RECEIPT_CHANNELS
            else None
        )
        not_sent = await self._send(
            channel,
            inp,
            to=to,
            template=params.template,
            subject=params.subject,
            unless_suppressed=contact,
            capped=inp.frequency_capped and contact is not None,
            list_unsubscribe=self._list_unsubscribe(channel, inp, contact),
            delivery=delivery,
        )
        if not_sent is None:
            MESSAGES.labels(channel.name, "sent").inc()
            return ActivityResult(detail=f"sent to {to} by {channel.name}", message_id=message_id, channel=channel.name)
        if not_sent.suppressed or not_sent.stopped:
            MESSAGES.labels(channel.name, "suppressed" if not_sent.suppressed else "stopped").inc()
        return not_sent

    @activity.defn(name="notify_creator")
    async def notify_creator(self, inp: ActivityInput) -> ActivityResult:
        """Tell the campaign's owner (or `to`) how the flow went."""
        params = NotifyCreatorParams.model_validate(inp.params)
        channel = self._channel(params.channel)
        to = params.to or inp.owner
        if not to:
            if channel.name != "console":
                raise ApplicationError(
                    f"step {inp.step!r}: campaign {inp.campaign_id!r} has no owner to notify (set campaign.owner"
                    " or the step's params.to)",
                    type="NoContact",
                    non_retryable=True,
                )
            to = "campaign owner"
        stopped = await self._send(channel, inp, to=to, template=params.template, subject=params.subject)
        return stopped or ActivityResult(detail=f"notified {to} by {channel.name}")

    @activity.defn(name=SEND_KEYWORD_ANSWER)
    async def send_keyword_answer(self, answer: AnswerMessage) -> None:
        """Send a keyword's answer (a confirmation, the help text) to one of the sender's contacts.

        Exempt from every policy: it answers the customer's own message. A phone gets it through
        `channels.default` unless that is e-mail (then the console); an address through `smtp` when
        configured, else the console.
        """
        email = "@" in answer.to
        name = "smtp" if email else self.settings.default
        if (email and name not in self.channels) or (not email and name == "smtp"):
            name = "console"
        channel = self._channel(name)
        info = activity.info()
        message = Message(
            to=answer.to,
            text=answer.text,
            campaign_id="",
            workflow_id="",
            step="keyword",
            idempotency_key=idempotency_key(workflow_id=info.workflow_id, run_id=info.workflow_run_id, step=answer.to),
        )
        with _delivery_errors():
            await channel.send(message)

    def _channel(self, name: str) -> Channel:
        name = name or self.settings.default
        channel = self.channels.get(name)
        if channel is not None:
            return channel
        if key := self.settings.missing(name):
            message = f"channel {name!r} is not configured: set {key} in the service config (or {env_var(key)})"
            raise ApplicationError(message, type="ChannelNotConfigured", non_retryable=True)
        raise ApplicationError(f"unknown channel {name!r}", type="UnknownChannel", non_retryable=True)

    def _list_unsubscribe(self, channel: Channel, inp: ActivityInput, contact: str | None) -> str:
        if self.unsubscribe is None or channel.name != "smtp" or contact is None:
            return ""
        return self.unsubscribe.header(Unsubscribe(contact, inp.campaign_id, inp.workflow_id))

    async def _send(
        self,
        channel: Channel,
        inp: ActivityInput,
        *,
        to: str,
        template: str,
        subject: str,
        unless_suppressed: str | None = None,
        capped: bool = False,
        list_unsubscribe: str = "",
        delivery: DeliveryRecord | None = None,
    ) -> ActivityResult | None:
        """Render and deliver; None if delivered, else why not: the campaign was stopped, the contact
        `unless_suppressed` names is suppressed, or (`capped`) a frequency cap holds it.

        The suppression list is read last, right before delivery, so an opt-out that came in while the
        template rendered still counts; the contact stays held until the channel has the message, so an
        opt-out is answered only after it (`Consent.sending`). A capped message is counted in the send
        ledger before it goes, and no longer if its delivery fails (the retry counts it again). `delivery`: the
        message's row in the deliveries store (`_deliver`). A carrier opt-out (Twilio 21610) suppresses the contact,
        once the contact is no longer held, and the message counts as not sent to a suppressed contact.
        """
        context = template_context(inp)
        text = await self._render(inp, channel, "template", template, context, channel.max_length)
        if channel.max_subject_length:
            subject = await self._render(inp, channel, "subject", subject, context, channel.max_subject_length)
        else:
            subject = ""
        info = activity.info()
        message = Message(
            to=to,
            text=text,
            subject=subject,
            campaign_id=inp.campaign_id,
            workflow_id=inp.workflow_id,
            step=inp.step,
            idempotency_key=message_key(inp),
            list_unsubscribe=list_unsubscribe,
        )
        if stopped := await self._stopped(inp):
            return stopped
        checked = unless_suppressed is not None and self.consent is not None
        carrier: CarrierOptOut | None = None
        async with self.consent.sending(unless_suppressed) if checked else nullcontext(False) as suppressed:
            if suppressed:
                return ActivityResult(
                    event=EventType.NOT_SATISFIED, detail=f"not sent: {redact(to)} opted out", suppressed=True
                )
            # The ledger counts the message if a cap names its channel (`reserve` decides).
            ledger = self.ledger if capped and self.compliance.frequency_caps else None
            if ledger is not None:
                assert unless_suppressed is not None
                until = await ledger.reserve(
                    contact=unless_suppressed,
                    channel=channel.name,
                    rules=self.compliance.frequency_caps,
                    key=message.idempotency_key,
                    campaign_id=inp.campaign_id,
                    workflow_id=inp.workflow_id,
                    step=inp.step,
                    # The later of the worker's and the server's clocks, so the ledger's time never runs
                    # behind the workflow's (which holds the message until the instant given back).
                    now=max(datetime.now(UTC), info.current_attempt_scheduled_time),
                )
                if until is not None:
                    detail = f"not sent: {redact(to)} reached a frequency cap until {until:%Y-%m-%d %H:%M}Z"
                    return ActivityResult(event=EventType.NOT_SATISFIED, detail=detail, capped_until=until)
            try:
                with _delivery_errors(passing=CarrierOptOut if checked else None):
                    await self._deliver(channel, message, delivery)
            except BaseException as exc:
                if ledger is not None:
                    await asyncio.to_thread(ledger.release, message.idempotency_key)
                if not isinstance(exc, CarrierOptOut):
                    raise
                carrier = exc
        if carrier is not None:  # the contact's hold is released: suppressing waits for every send to it
            assert unless_suppressed is not None and self.consent is not None
            await asyncio.to_thread(
                self.consent.suppress,
                unless_suppressed,
                reason=CARRIER_OPT_OUT,
                campaign_id=inp.campaign_id,
                workflow_id=inp.workflow_id,
            )
            log.warning("%s: %s suppressed (%s)", carrier, redact(to), CARRIER_OPT_OUT)
            detail = f"not sent: {redact(to)} opted out at the carrier (error {carrier.code})"
            return ActivityResult(event=EventType.NOT_SATISFIED, detail=detail, suppressed=True, carrier_opt_out=True)
        return None

    async def _deliver(self, channel: Channel, message: Message, delivery: DeliveryRecord | None) -> None:
        """Send `message`, recording it in the deliveries store when `delivery` is its row.

        The row is written before the message goes (a receipt may come before the gateway's answer is read), and
        a row that says an earlier attempt got the message to its gateway means it is not sent again. The store
        failing never holds a message back nor fails one that went: it is logged.
        """
        deliveries = self.deliveries if delivery is not None else None
        if deliveries is not None and delivery is not None:
            stored = await _bookkeeping(deliveries.begin, delivery)
            if stored is not None and stored.sent_at is not None:
                log.info("message %s went on an earlier attempt (%s): not sent again", stored.message_id, channel.name)
                return
        try:
            provider_id = await channel.send(message)
        except DeliveryError as exc:
            if deliveries is not None and not exc.retryable:
                report = functools.partial(deliveries.report, error_code=exc.code)
                await _bookkeeping(report, message.idempotency_key, DeliveryState.FAILED)
                DELIVERIES.labels(channel.name, DeliveryState.FAILED.value).inc()
            raise
        if deliveries is not None:
            sent = functools.partial(deliveries.sent, provider_id=provider_id, at=datetime.now(UTC))
            await _bookkeeping(sent, message.idempotency_key)
            DELIVERIES.labels(channel.name, DeliveryState.SENT.value).inc()

    async def _stopped(self, inp: ActivityInput) -> ActivityResult | None:
        """Why nothing may go out for this flow: its campaign was stopped (`cancel`) since it started; else None.

        Read right before delivery, so a stop recorded while the activity ran still counts."""
        if self.stops is None:
            return None
        barred = await asyncio.to_thread(self.stops.barred_before, inp.campaign_id)
        if barred is None or (inp.flow_started_at is not None and inp.flow_started_at >= barred):
            return None  # no start time: a flow older than the field, so than any stop
        detail = f"not sent: campaign {inp.campaign_id!r} was stopped at {barred:%Y-%m-%d %H:%M:%S}Z"
        return ActivityResult(event=EventType.NOT_SATISFIED, detail=detail, stopped=True)

    async def _render(
        self, inp: ActivityInput, channel: Channel, what: str, template: str, context: dict[str, Any], max_length: int
    ) -> str:
        """The rendered text, at most `max_length` characters (the channel's); a failure is final."""
        try:
            return await self.renderer.render(template, context, max_length=max_length)
        except TemplateRenderError as exc:
            message = f"step {inp.step!r} ({what}, channel {channel.name!r}): {exc}"
            raise ApplicationError(message, type="TemplateError", non_retryable=True) from None

    @activity.defn(name="webhook")
    async def webhook(self, inp: ActivityInput) -> ActivityResult:
        """2xx: satisfied. 3xx, 4xx (except 408/425/429): not_satisfied. Anything else raises, so it is retried."""
        params = WebhookParams.model_validate(inp.params)
        if stopped := await self._stopped(inp):
            return stopped
        body = {
            "workflow_id": inp.workflow_id,
            "campaign_id": inp.campaign_id,
            "step": inp.step,
            "customer": inp.customer,
            "cart": inp.cart,
            "attempt": activity.info().attempt,
        }
        if params.url is None:
            self.outbox.append({"channel": "webhook", "to": None, "text": "", "payload": body, **_where(inp)})
            return ActivityResult(detail="no url: payload recorded in the outbox")
        url = str(params.url)
        try:
            async with http_client(follow_redirects=False) as http:
                response = await http.post(
                    url, json=body, headers=params.headers, timeout=params.timeout.total_seconds()
                )
        except httpx.HTTPError as exc:
            raise ApplicationError(f"POST {url} failed: {exc!r}", type="WebhookUnreachable") from None
        status = response.status_code
        if 200 <= status < 300:
            return ActivityResult(detail=f"POST {url}: HTTP {status}")
        if status >= 300 and not retryable_status(status):  # a redirect will not go away by retrying
            log.warning("webhook %s answered HTTP %s: taking the not_satisfied edge", url, status)
            return ActivityResult(event=EventType.NOT_SATISFIED, detail=f"POST {url}: HTTP {status}")
        raise ApplicationError(f"POST {url}: HTTP {status}", type="WebhookServerError")


def message_key(inp: ActivityInput) -> str:
    """The idempotency key of the message this activity sends: its id in the deliveries store and its receipts."""
    return idempotency_key(workflow_id=inp.workflow_id, run_id=activity.info().workflow_run_id, step=message_step(inp))


def template_context(inp: ActivityInput) -> dict[str, Any]:
    """What templates see (exactly `templates.VARIABLES`); documented in docs/campaigns.md (Nodes)."""
    return {
        "customer": inp.customer,
        "cart": inp.cart,
        "campaign": {"id": inp.campaign_id, "name": inp.campaign_name, "owner": inp.owner},
        "step": {
            "name": inp.step,
            "workflow_id": inp.workflow_id,
            "path": inp.path,
            "event": inp.previous_event,
            "reply": inp.reply or "",
            "outcome": path_in_words(inp),
        },
    }


def path_in_words(inp: ActivityInput) -> str:
    """How the flow got to this step, in words, for the owner's notice."""
    if not inp.path:
        return "the flow started"
    previous, event, reply = inp.path[-1], inp.previous_event, inp.reply
    if inp.previous_node == "wait_answer":
        if event == EventType.SATISFIED:
            return f"the customer answered: {reply}" if reply else "the customer answered"
        if event == EventType.NOT_SATISFIED:
            return f"the customer opted out ({reply})" if reply else "the customer opted out"
        return "the customer did not answer in time"
    if inp.previous_node == "webhook":
        return "the webhook accepted the flow" if event == EventType.SATISFIED else "the webhook refused the flow"
    return f"step {previous} ({inp.previous_node}) gave {event}"


async def _bookkeeping(call: Callable[..., T], *args: Any) -> T | None:
    """`call(*args)` in a thread; a store error is logged and gives None (a record is not worth a message)."""
    try:
        return await asyncio.to_thread(call, *args)
    except SQLAlchemyError as exc:
        log.warning("deliveries store: %s", first_line(exc))
        return None


@contextmanager
def _delivery_errors(*, passing: type[DeliveryError] | None = None) -> Iterator[None]:
    """Turn a channel's `DeliveryError` into the activity's retry decision (`passing`: one the caller handles)."""
    try:
        yield
    except DeliveryError as exc:
        if passing is not None and isinstance(exc, passing):
            raise
        raise ApplicationError(str(exc), type=exc.kind, non_retryable=not exc.retryable) from None


def _where(inp: ActivityInput) -> dict[str, str]:
    return {"campaign_id": inp.campaign_id, "workflow_id": inp.workflow_id, "step": inp.step}
