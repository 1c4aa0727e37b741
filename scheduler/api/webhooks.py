"""Where a reply, a purchase or a delivery receipt becomes a signal: `/webhooks/replies` (JSON, Standard Webhooks),
`/webhooks/twilio` (inbound SMS), `/webhooks/conversions` (JSON, Standard Webhooks), and the receipts
`/webhooks/twilio/status` (Twilio's status callback) and `/webhooks/delivery` (JSON, Standard Webhooks), which
`scheduler.delivery.receipts.take_receipt` records and passes on.

Each request is checked in this order, so nothing unauthenticated is parsed: content type (415),
size (413, at most 64 KiB, counted while reading), signature when a secret is configured
(401 / 403), fields (422). Then `scheduler.replies.routing.route_reply` finds and signals the flows
(for a conversion `scheduler.replies.attribution.convert`, which also records and attributes it). A
reply or conversion that matches no flow is logged (contact redacted) and answered 404, or, to Twilio,
with an empty TwiML answer: Twilio has nobody to tell.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from temporalio.client import Client

from scheduler.api.bodies import FORM, JSON, read_body
from scheduler.api.deps import ClientDep, ConsentDep, ConversionsDep, DeliveriesDep, SettingsDep
from scheduler.api.responses import errors
from scheduler.config import Settings
from scheduler.delivery.receipts import TWILIO_STATUSES, Receipt, take_receipt
from scheduler.errors import (
    InvalidContact,
    NoFlowForConversion,
    NoFlowForReply,
    TwilioSignatureInvalid,
    WebhookSignatureInvalid,
)
from scheduler.flow.contacts import normalize_contact, redact
from scheduler.flow.limits import Id, id_problem
from scheduler.flow.signals import DeliveryState, Reply
from scheduler.metrics import UNMATCHED
from scheduler.replies.attribution import convert
from scheduler.replies.keywords import KeywordRules, apply_keyword
from scheduler.replies.routing import FlowTarget, route_reply
from scheduler.signatures import SignatureError, verify_twilio, verify_webhook, webhook_key
from scheduler.store.consent import Consent
from scheduler.store.conversions import ConversionRecord
from scheduler.store.deliveries import Deliveries

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])

EMPTY_TWIML = "<Response/>"
CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a conversion's `occurred_at` may be: the shop's clock may run ahead of ours."""
M = TypeVar("M", bound=BaseModel)


def _one_of(*fields: str) -> dict[str, Any]:
    """JSON Schema for "at least one of `fields` is given, as a string" (the model's `_has_target` rule)."""
    return {"anyOf": [{"required": [f], "properties": {f: {"type": "string"}}} for f in fields]}


def _component_refs(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON Schema for an `openapi_extra`, its nested models referred to under `#/components/schemas/`
    (where the response models put them) instead of its own `$defs`, which a document has no room for."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


class ReplyRequest(BaseModel):
    """A reply to route: by `workflow_id`, else `customer_id`, else `contact` (phone or e-mail); one is required."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra=_one_of("workflow_id", "customer_id", "contact"),
    )

    workflow_id: Id | None = None
    customer_id: Id | None = None
    contact: str | None = Field(None, min_length=1, max_length=320)
    """Any common spelling: `+1 (212) 555-0123`, `2125550123`, `Ann@Example.com`."""
    text: str | None = None
    reply_id: Id | None = None
    """The provider's id of the reply; default: the `webhook-id` header. A repeated id changes nothing."""

    @field_validator("contact")
    @classmethod
    def _normal_contact(cls, value: str | None) -> str | None:
        return None if value is None else normalize_contact(value)

    @model_validator(mode="after")
    def _has_target(self) -> ReplyRequest:
        if self.workflow_id is None and self.customer_id is None and self.contact is None:
            raise ValueError("one of workflow_id, customer_id or contact is required")
        return self


class ConversionRequest(BaseModel):
    """A purchase, recorded; the flows of `cart_id`, else of `customer_id`, get `cart-converted`. One is required."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, json_schema_extra=_one_of("cart_id", "customer_id")
    )

    cart_id: Id | None = None
    customer_id: Id | None = None
    conversion_id: Id | None = None
    """The shop's id of the purchase; default: the `webhook-id` header (without either, every post counts anew).
    A repeated id changes nothing."""
    contact: str | None = Field(None, min_length=1, max_length=320)
    """The buyer's phone or e-mail, kept with the conversion (any common spelling)."""
    amount: Decimal | None = Field(None, ge=0, max_digits=18, decimal_places=6)
    """What the customer paid, in `currency` (both or neither): a JSON number or a string such as `"19.99"`."""
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", validate_default=True)
    """ISO 4217 code, three upper-case letters: `EUR`, `USD`."""
    occurred_at: datetime | None = None
    """When the customer bought (without an offset: UTC); default: now. Attribution counts back from it."""

    @field_validator("contact")
    @classmethod
    def _normal_contact(cls, value: str | None) -> str | None:
        return None if value is None else normalize_contact(value)

    @field_validator("currency")
    @classmethod
    def _with_amount(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "amount" not in info.data:
            return value  # the amount is wrong: that is the error to report
        if (value is None) != (info.data["amount"] is None):
            raise ValueError("amount and currency come together: give both or neither")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _past(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value > datetime.now(UTC) + CLOCK_SKEW:
            raise ValueError("occurred_at is in the future")
        return value

    @model_validator(mode="after")
    def _has_target(self) -> ConversionRequest:
        if self.cart_id is None and self.customer_id is None:
            raise ValueError("one of cart_id or customer_id is required")
        return self

    def record(self, msg_id: str | None) -> ConversionRecord:
        """The conversion to record: its id this request's, else `msg_id` (the `webhook-id`), else a new one."""
        now = datetime.now(UTC)
        return ConversionRecord(
            conversion_id=self.conversion_id or msg_id or f"conversion-{uuid.uuid4()}",
            occurred_at=self.occurred_at or now,
            received_at=now,
            cart_id=self.cart_id,
            customer_id=self.customer_id,
            contact=self.contact,
            amount=self.amount,
            currency=self.currency,
        )


class SignaledResponse(BaseModel):
    signaled: list[str]
    """Workflow ids of the flows the signal went to (for a redelivery: the flows that got it the first time)."""


class TwilioMessage(BaseModel):
    """The fields of Twilio's inbound-message post that routing needs (it sends many more)."""

    model_config = ConfigDict(extra="ignore")

    From: str = Field(min_length=1)
    MessageSid: Id
    Body: str = ""


class TwilioStatus(BaseModel):
    """The fields of Twilio's status callback that a receipt needs (it sends more: `To`, `From`, `AccountSid`, …)."""

    model_config = ConfigDict(extra="ignore")

    MessageSid: str = Field(min_length=1, max_length=64)
    MessageStatus: str
    """accepted, scheduled, queued, sending, sent, delivered, read, undelivered, failed or canceled."""
    ErrorCode: str | None = Field(None, max_length=32)

    @field_validator("MessageStatus")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in TWILIO_STATUSES:
            raise ValueError(f"{value[:40]!r} is not a message status: one of {', '.join(TWILIO_STATUSES)}")
        return value

    @field_validator("ErrorCode")
    @classmethod
    def _no_empty_code(cls, value: str | None) -> str | None:
        return value or None


class DeliveryReceipt(BaseModel):
    """A delivery receipt from any gateway: what became of the message the service sent as `message_id`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    message_id: Id
    """The message's idempotency key: the `Idempotency-Key` header the `http` channel sent with it."""
    status: DeliveryState
    error_code: str | None = Field(None, min_length=1, max_length=32)
    """The gateway's code for a failure, e.g. `30006`; one in `[compliance] undeliverable_codes` with a final status
    suppresses the contact."""
    provider_id: str | None = Field(None, min_length=1, max_length=64)
    """The gateway's own id of the message."""


class ReceiptResponse(BaseModel):
    message_id: str
    status: DeliveryState
    """The furthest status recorded for the message (after this receipt)."""
    error_code: str | None
    changed: bool
    """This receipt moved the status forward (false: a repeat, or a status the message had already passed)."""


_JSON_ERRORS = {
    401: "a missing or wrong signature, when `webhooks.secret` is set",
    404: "no running flow matched (a conversion is recorded all the same)",
    413: "the body is over 64 KiB",
    415: "the body is not `application/json`",
    422: "the body is no such JSON object",
    503: "Temporal is unavailable",
}


@router.post(
    "/replies",
    status_code=202,
    responses=errors(_JSON_ERRORS),
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": ReplyRequest.model_json_schema()}}}},
)
async def replies(request: Request, client: ClientDep, settings: SettingsDep, consent: ConsentDep) -> SignaledResponse:
    """A customer's reply from any provider that posts JSON; Standard Webhooks signed when `webhooks.secret` is set.

    A reply that is one keyword (STOP, START, HELP, … see `[compliance]`) changes consent in every
    campaign and is answered 202 whether or not a flow matched: an opt-out lists the flows it ended,
    an opt-in (YES) is also a reply and lists the flows it reached, HELP leaves them waiting.
    """
    body, msg_id = await read_signed_json(request, settings.webhooks.secret)
    data = _validate(lambda: ReplyRequest.model_validate_json(body))
    target = FlowTarget(workflow_id=data.workflow_id, customer_id=data.customer_id, contact=data.contact)
    reply = Reply(reply_id=data.reply_id or msg_id, text=data.text, channel="webhook", received_at=datetime.now(UTC))
    handled = await apply_keyword(client, consent, KeywordRules.of(settings), target=target, reply=reply)
    if handled is not None:
        return SignaledResponse(signaled=handled.signaled)
    routing = route_reply(client, target=target, reply=reply, timeout=settings.webhooks.route_timeout)
    if (signaled := await _routed("replies", f"reply {reply.reply_id}", target, routing)) is None:
        raise NoFlowForReply(str(target))
    return SignaledResponse(signaled=signaled)


@router.post(
    "/conversions",
    status_code=202,
    responses=errors(_JSON_ERRORS),
    openapi_extra={
        "requestBody": {"required": True, "content": {JSON: {"schema": ConversionRequest.model_json_schema()}}}
    },
)
async def conversions(
    request: Request, client: ClientDep, settings: SettingsDep, store: ConversionsDep
) -> SignaledResponse:
    """The customer bought: record the conversion, signal `cart-converted` to the running flows of the cart
    (or customer), and attribute it to its campaigns' flows, running or ended (see Conversions in the docs).

    Flows whose campaign has `exit_on = ["cart-converted"]` end at once with outcome `converted`;
    others record it. Signed like `/webhooks/replies`. 404 when no flow is running: the conversion is
    recorded and attributed all the same.
    """
    body, msg_id = await read_signed_json(request, settings.webhooks.secret)
    data = _validate(lambda: ConversionRequest.model_validate_json(body))
    try:
        signaled = await convert(client, store, settings, data.record(msg_id))
    except NoFlowForConversion:
        UNMATCHED.labels("conversions").inc()
        raise
    return SignaledResponse(signaled=signaled)


@router.post(
    "/twilio",
    response_class=Response,
    responses={
        200: {"content": {"text/xml": {}}},
        **errors(
            {
                403: "a missing or wrong `X-Twilio-Signature`, when `webhooks.twilio_auth_token` is set; any"
                " request while it is not, `api.host` is not loopback and `webhooks.allow_unsigned` is false",
                413: "the body is over 64 KiB",
                415: "the body is not form-encoded",
                422: "no `From` or `MessageSid`",
                503: "Temporal is unavailable",
            }
        ),
    },
    openapi_extra={"requestBody": {"required": True, "content": {FORM: {"schema": TwilioMessage.model_json_schema()}}}},
)
async def twilio(request: Request, client: ClientDep, settings: SettingsDep, consent: ConsentDep) -> Response:
    """Twilio's inbound SMS webhook; `X-Twilio-Signature` is checked when `webhooks.twilio_auth_token` is set."""
    body = await read_body(request, FORM)
    params = _form(body)
    check_twilio(request, settings, params)
    message = _validate(lambda: TwilioMessage.model_validate(dict(params)))
    reply = Reply(reply_id=message.MessageSid, text=message.Body, channel="sms", received_at=datetime.now(UTC))
    try:
        target = FlowTarget(contact=normalize_contact(message.From))
    except InvalidContact:
        log.warning("SMS %s from %r matched no flow: not a phone number", message.MessageSid, redact(message.From))
        UNMATCHED.labels("twilio").inc()
        return _twiml()
    keyword = await apply_keyword(
        client,
        consent,
        KeywordRules.of(settings),
        target=target,
        reply=reply,
        send_answer=False,
    )
    if keyword is not None:
        return _twiml(keyword.answer)  # Twilio sends the answer back to the sender
    routing = route_reply(client, target=target, reply=reply, timeout=settings.webhooks.route_timeout)
    await _routed("twilio", f"SMS {message.MessageSid}", target, routing)  # Twilio has nobody to tell
    return _twiml()


_TWILIO_STATUS_ERRORS = {
    403: "a missing or wrong `X-Twilio-Signature` (as for `/webhooks/twilio`)",
    404: "no message of this service has that `message_id` (the query parameter the service put in the callback"
    " URL) or `MessageSid`",
    413: "the body is over 64 KiB",
    415: "the body is not form-encoded",
    422: "no `MessageSid` or `MessageStatus`, or a status Twilio does not have",
    503: "Temporal is unavailable: the receipt is recorded, and Twilio's retry passes it on to the flow",
}


@router.post(
    "/twilio/status",
    responses=errors(_TWILIO_STATUS_ERRORS),
    openapi_extra={
        "requestBody": {"required": True, "content": {FORM: {"schema": TwilioStatus.model_json_schema()}}},
        "parameters": [
            {
                "name": "message_id",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "The message's idempotency key, which the `twilio` channel puts in its `StatusCallback`"
                " (without it, the message is found by `MessageSid`).",
            }
        ],
    },
)
async def twilio_status(
    request: Request,
    client: ClientDep,
    settings: SettingsDep,
    consent: ConsentDep,
    deliveries: DeliveriesDep,
) -> ReceiptResponse:
    """Twilio's status callback for a message the `twilio` channel sent (its `StatusCallback`, which names the
    message in `?message_id=`); `X-Twilio-Signature` is checked as for `/webhooks/twilio`.

    `MessageStatus` maps to a delivery state: accepted/scheduled/queued → queued, sending/sent → sent,
    delivered/read → delivered, undelivered, failed/canceled → failed. The furthest state is kept.
    """
    body = await read_body(request, FORM)
    params = _form(body)
    check_twilio(request, settings, params)
    # Read here, after the signature (which covers the query): nothing unauthenticated is parsed.
    message_id = request.query_params.get("message_id")
    if message_id is not None and (problem := id_problem(message_id)):
        raise RequestValidationError([_error(("query", "message_id"), f"message_id {problem}", "value_error")])
    data = _validate(lambda: TwilioStatus.model_validate(dict(params)))
    receipt = Receipt(
        status=TWILIO_STATUSES[data.MessageStatus],
        message_id=message_id,
        provider_id=data.MessageSid,
        error_code=data.ErrorCode,
    )
    return await _take(receipt, client, settings, consent, deliveries)


@router.post(
    "/delivery",
    responses=errors({**_JSON_ERRORS, 404: "no message of this service has that `message_id`"}),
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": _component_refs(DeliveryReceipt)}}}},
)
async def delivery(
    request: Request, client: ClientDep, settings: SettingsDep, consent: ConsentDep, deliveries: DeliveriesDep
) -> ReceiptResponse:
    """A delivery receipt from any gateway, signed like `/webhooks/replies`: the furthest status is kept (receipts
    may come out of order and repeated), and the flow that sent the message gets `delivery-status`."""
    body, _ = await read_signed_json(request, settings.webhooks.secret)
    data = _validate(lambda: DeliveryReceipt.model_validate_json(body))
    receipt = Receipt(
        status=data.status, message_id=data.message_id, provider_id=data.provider_id, error_code=data.error_code
    )
    return await _take(receipt, client, settings, consent, deliveries)


async def _take(
    receipt: Receipt, client: Client, settings: Settings, consent: Consent, deliveries: Deliveries
) -> ReceiptResponse:
    taken = await take_receipt(
        receipt,
        deliveries=deliveries,
        consent=consent,
        client=client,
        undeliverable_codes=settings.compliance.undeliverable_codes,
    )
    record = taken.record
    return ReceiptResponse(
        message_id=record.message_id, status=record.status, error_code=record.error_code, changed=taken.changed
    )


def check_twilio(request: Request, settings: Settings, params: list[tuple[str, str]]) -> None:
    """Check `X-Twilio-Signature` when `webhooks.twilio_auth_token` is set; without it, only on loopback (or with
    `webhooks.allow_unsigned`) is an unsigned post taken.

    Raises:
        TwilioSignatureInvalid: a missing or wrong signature, or no token where one is needed.
    """
    if token := settings.webhooks.twilio_auth_token:
        url = signed_url(request, settings.webhooks.public_url)
        try:
            verify_twilio(
                token,
                url=url,
                params=params,
                signature=request.headers.get("x-twilio-signature"),
                settings_header=request.headers.get("x-twilio-webhooks-signature-settings"),
            )
        except SignatureError as exc:
            log.warning("rejected %s: %s", request.url.path, exc)
            raise TwilioSignatureInvalid(str(exc)) from None
    elif not settings.api.on_loopback and not settings.webhooks.allow_unsigned:
        # Reachable from elsewhere and nothing to check the sender with: a forged STOP must not opt anyone out.
        raise TwilioSignatureInvalid(
            "webhooks.twilio_auth_token is not set and api.host is not loopback: set the token, or set"
            " webhooks.allow_unsigned = true to accept unsigned Twilio requests on purpose"
        )


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise RequestValidationError([_error(("body",), "the form is not UTF-8", "value_error")]) from None


async def _routed(endpoint: str, what: str, target: FlowTarget, routing: Awaitable[list[str]]) -> list[str] | None:
    """The flows `routing` signalled, logged; None when it matched none, logged (contact redacted) and counted."""
    try:
        signaled = await routing
    except NoFlowForReply:
        log.warning("%s for %s matched no running flow", what, target)
        UNMATCHED.labels(endpoint).inc()
        return None
    log.info("%s for %s went to %s", what, target, ", ".join(signaled))
    return signaled


async def read_signed_json(request: Request, secret: str) -> tuple[bytes, str | None]:
    """The JSON body (`read_body`) and its `webhook-id`, the Standard Webhooks signature checked when `secret` is set.

    Raises:
        UnsupportedMediaType, BodyTooLarge: see `read_body`.
        WebhookSignatureInvalid: missing or wrong signature headers, or an old timestamp.
        RequestValidationError: a `webhook-id` that is no id (it may become the reply's id).
    """
    body = await read_body(request, JSON)
    msg_id = request.headers.get("webhook-id")
    if secret:
        try:
            verify_webhook(
                webhook_key(secret),
                body=body,
                msg_id=msg_id,
                timestamp=request.headers.get("webhook-timestamp"),
                signature=request.headers.get("webhook-signature"),
            )
        except SignatureError as exc:
            log.warning("rejected %s: %s", request.url.path, exc)
            raise WebhookSignatureInvalid(str(exc)) from None
    if msg_id is not None and (problem := id_problem(msg_id)):
        raise RequestValidationError([_error(("header", "webhook-id"), f"webhook-id {problem}", "value_error")])
    return body, msg_id


def signed_url(request: Request, public_url: str) -> str:
    """The URL Twilio signed: `public_url` (behind a proxy the request's own host is not it) + path + query."""
    if not public_url:
        return str(request.url)
    query = request.url.query
    return public_url + request.url.path + (f"?{query}" if query else "")


def _validate(parse: Callable[[], M]) -> M:
    """Run `parse`; a validation error becomes FastAPI's 422, located in the body like its own."""
    try:
        return parse()
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _error(loc: tuple[str, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _twiml(answer: str = "") -> Response:
    """Twilio's answer: empty, or one message back to the sender."""
    if not answer:
        return Response(EMPTY_TWIML, media_type="text/xml")
    return Response(f"<Response><Message>{escape(answer)}</Message></Response>", media_type="text/xml")
