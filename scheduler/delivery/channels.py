"""Message delivery: `console` (log), `http` (an SMS/messaging gateway), `smtp` (e-mail), `twilio` (SMS).

Every message a channel delivers is also appended to the outbox file as one JSON line
`{"at","channel","to","text","campaign_id","workflow_id","step"}` (smtp adds `subject`): the outbox
is the record of what went out. Channels know nothing of Temporal; they raise `DeliveryError`,
which says whether trying again can help, and the activity turns that into its retry decision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import smtplib
import ssl
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from scheduler.config import ChannelsSettings, HttpChannelSettings, SmtpChannelSettings, TwilioChannelSettings
from scheduler.errors import CarrierOptOut, DeliveryError, InvalidContact
from scheduler.flow.contacts import mail_address, normalize_contact
from scheduler.http_clients import http_client, retryable_status

log = logging.getLogger(__name__)

LINE_LIMIT = 998
"""Characters a header line may hold (RFC 5322)."""
_EMAIL_POLICY = SMTP.clone(refold_source="none")
"""Encodes and folds at 78 characters what needs it (a non-ASCII Subject or name, RFC 2047), and sends a
header set raw (`set_raw`) as given: `List-Unsubscribe` must stay `<https://…>`, which providers read."""


@dataclass(frozen=True)
class Message:
    to: str
    text: str
    campaign_id: str
    workflow_id: str
    step: str
    subject: str = ""
    """E-mail only."""
    idempotency_key: str = ""
    """The same for every attempt at this message, so a gateway can drop repeats."""
    list_unsubscribe: str = ""
    """E-mail only: the `List-Unsubscribe` header (a one-click HTTPS link, RFC 8058)."""


def idempotency_key(*, workflow_id: str, run_id: str, step: str) -> str:
    """Stable per (flow run, step): a step runs once per flow, and a retried attempt reuses the key.

    The run id is part of it so a later flow reusing a workflow id (a cart a campaign messages again
    next week) is not dropped as a repeat. A UUID, because ids may hold characters headers cannot.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"temporal:{workflow_id}/{run_id}/{step}"))


class Outbox:
    """Append-only JSON-lines record of what went out, so users and tests can see it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"at": datetime.now(UTC).isoformat(), **record}, ensure_ascii=False, default=str)
        with self._lock:
            try:
                f = self.path.open("a", encoding="utf-8")
            except FileNotFoundError:  # no directory yet: made here, not checked before every message
                self.path.parent.mkdir(parents=True, exist_ok=True)
                f = self.path.open("a", encoding="utf-8")
            with f:
                f.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Channel:
    """Base class: `send` delivers (subclasses' `_deliver`), then records the message in the outbox."""

    name: ClassVar[str]
    contact: ClassVar[str]
    """The customer field a message goes to."""
    max_length: ClassVar[int] = 1_600
    """Characters of text it sends at most: ten SMS segments, what SMS gateways (Twilio) accept."""
    max_subject_length: ClassVar[int] = 0
    """Characters of subject; 0: it sends none."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def recipient(self, customer: dict[str, Any]) -> str:
        """The customer's `contact` field.

        Raises:
            DeliveryError: the customer has none (not retryable: the flow's data will not change).
        """
        value = customer.get(self.contact)
        if not value:
            raise DeliveryError(
                f"channel {self.name!r} needs the customer's {self.contact!r}, and customer"
                f" {customer.get('id', '?')!r} has none",
                kind="NoContact",
                retryable=False,
            )
        return str(value)

    async def send(self, message: Message) -> str | None:
        """Deliver and record `message`: the gateway's id of it, if it gives one (Twilio's message SID)."""
        provider_id = await self._deliver(message)
        self.outbox.append(self._record(message))
        return provider_id

    async def _deliver(self, message: Message) -> str | None:
        raise NotImplementedError

    def _record(self, message: Message) -> dict[str, Any]:
        return {
            "channel": self.name,
            "to": message.to,
            "text": message.text,
            "campaign_id": message.campaign_id,
            "workflow_id": message.workflow_id,
            "step": message.step,
        }


class ConsoleChannel(Channel):
    """Delivers by logging: the default channel on one machine."""

    name = "console"
    contact = "phone"

    def recipient(self, customer: dict[str, Any]) -> str:
        # Only a log line: any way of naming the customer will do, so a bare demo flow still runs.
        for key in ("phone", "email", "id"):
            if customer.get(key):
                return str(customer[key])
        return "unknown customer"

    async def _deliver(self, message: Message) -> None:
        log.info("[%s] to %s: %s", self.name, message.to, message.text)
        return None


class HttpChannel(Channel):
    """POSTs `{to, text, campaign_id, workflow_id, step}` to a gateway with an `Idempotency-Key` header.

    2xx: delivered. 408/425/429, 5xx and network errors: retryable. Any other answer (a redirect, a
    4xx such as a bad number) is final: retrying would be refused the same way.
    """

    name = "http"
    contact = "phone"

    def __init__(self, outbox: Outbox, settings: HttpChannelSettings) -> None:
        super().__init__(outbox)
        self.settings = settings

    async def _deliver(self, message: Message) -> None:
        url = self.settings.url
        headers = {"Idempotency-Key": message.idempotency_key}
        if self.settings.token_env:
            headers["Authorization"] = f"Bearer {_secret('channels.http.token_env', self.settings.token_env)}"
        body = {k: v for k, v in self._record(message).items() if k != "channel"}
        try:
            async with http_client(follow_redirects=False) as http:
                response = await http.post(
                    url, json=body, headers=headers, timeout=self.settings.timeout.total_seconds()
                )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"POST {url} failed: {exc!r}", kind="GatewayUnavailable", retryable=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return None
        answer = f"POST {url}: HTTP {status} {response.text[:200]!r}"
        if retryable_status(status):
            raise DeliveryError(answer, kind="GatewayUnavailable", retryable=True)
        raise DeliveryError(answer, kind="GatewayRejected", retryable=False)


class SmtpChannel(Channel):
    """E-mail through an SMTP server: STARTTLS when `starttls`, login when `username` is set.

    smtplib blocks, so each message is sent in a thread. A 5xx answer, a refused login or a server
    without STARTTLS is final; 4xx answers and connection failures are retryable.
    """

    name = "smtp"
    contact = "email"
    max_length = 100_000
    max_subject_length = 998
    """RFC 5322's line limit."""

    def __init__(self, outbox: Outbox, settings: SmtpChannelSettings) -> None:
        super().__init__(outbox)
        self.settings = settings

    async def send(self, message: Message) -> str | None:
        # A subject is one line: line breaks from a template or customer data become spaces, so they
        # cannot start a header of their own (`Bcc: …`).
        return await super().send(replace(message, subject=" ".join(message.subject.split())))

    async def _deliver(self, message: Message) -> None:
        password = ""
        if self.settings.username and self.settings.password_env:
            password = _secret("channels.smtp.password_env", self.settings.password_env)
        email = self._email(message)
        try:
            await asyncio.to_thread(self._send, email, password)
        except Exception as exc:
            raise _smtp_error(exc, self.settings) from None
        return None

    def _email(self, message: Message) -> EmailMessage:
        """The message; a header value with a line break is refused for good (no retry removes it)."""
        email = EmailMessage(policy=_EMAIL_POLICY)
        headers = {"From": self.settings.sender, "To": message.to, "Subject": message.subject}
        for header, value in headers.items():
            if "\r" in value or "\n" in value:
                raise DeliveryError(
                    f"the {header} header {value[:100]!r} holds a line break", kind="InvalidMessage", retryable=False
                )
        name, address = parseaddr(message.to)  # an owner may be written `Growth <growth@example.com>`
        try:
            headers["To"] = formataddr((name, mail_address(address or message.to)))
        except InvalidContact as exc:
            raise DeliveryError(f"the To address: {exc}", kind="InvalidMessage", retryable=False) from None
        for header, value in headers.items():
            email[header] = value
        email["Date"] = formatdate(usegmt=True)
        # Derived from the idempotency key: a retry that re-sends after a lost answer carries the
        # same Message-ID, which mail clients use to drop the duplicate.
        domain = self.settings.sender.rpartition("@")[2] or "scheduler.invalid"
        email["Message-ID"] = f"<{message.idempotency_key or uuid.uuid4()}@{domain}>"
        if message.list_unsubscribe:
            email.set_raw("List-Unsubscribe", _list_unsubscribe(message.list_unsubscribe))
            email.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        email.set_content(message.text)
        return email

    def _send(self, email: EmailMessage, password: str) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout.total_seconds()) as smtp:
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.username:
                smtp.login(s.username, password)
            smtp.send_message(email)

    def _record(self, message: Message) -> dict[str, Any]:
        return {**super()._record(message), "subject": message.subject}


TWILIO_STATUS_PATH = "/webhooks/twilio/status"
"""Where Twilio posts a message's status changes (`StatusCallback`), under `webhooks.public_url`."""
TWILIO_OPT_OUT = "21610"
"""Twilio: the recipient replied STOP to this sender (at the carrier); nothing reaches it until it sends START."""
TWILIO_BAD_NUMBER = {"21211": "invalid 'To' phone number", "21614": "'To' number is not a valid mobile number"}
"""Twilio's codes for a number no retry will make valid: the step fails, naming the code."""


class TwilioChannel(Channel):
    """SMS through Twilio's Programmable Messaging API:
    `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form fields `To`, `From` (or
    `MessagingServiceSid`), `Body` and `StatusCallback`, HTTP basic auth.

    httpx rather than the `twilio` package: the request is one documented form POST, and doing it here keeps
    every decision ours and visible: the shared TLS context and timeout of `http_clients`, which answers are
    retried (429, 5xx and network errors, as the `http` channel), and how Twilio's error codes map. The package's
    client is synchronous (a thread per message) and would be a large runtime dependency for one call.

    Twilio offers no idempotency key for creating a message (its docs say a POST that sends an SMS is not
    idempotent): a 429 is safe to retry (refused before anything was queued), a 5xx or a lost answer may
    send twice. The activity narrows that: the deliveries store keeps the SID of a message that went, and a
    retry of it does not post again.

    `StatusCallback` is `webhooks.public_url` + `/webhooks/twilio/status?message_id=<idempotency key>`, so
    each receipt names the message it is about; without `public_url` it is left out (no receipts).
    """

    name = "twilio"
    contact = "phone"

    def __init__(self, outbox: Outbox, settings: TwilioChannelSettings, *, public_url: str = "") -> None:
        super().__init__(outbox)
        self.settings = settings
        self.public_url = public_url.rstrip("/")
        self.url = f"{settings.api_base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"

    def form(self, message: Message) -> dict[str, str]:
        """The form fields of the request, exactly as Twilio documents them."""
        s = self.settings
        form = {"To": _e164(message.to), "Body": message.text}
        if s.messaging_service_sid:
            form["MessagingServiceSid"] = s.messaging_service_sid
        else:
            form["From"] = s.sender
        if self.public_url:
            query = urlencode({"message_id": message.idempotency_key}) if message.idempotency_key else ""
            form["StatusCallback"] = f"{self.public_url}{TWILIO_STATUS_PATH}" + (f"?{query}" if query else "")
        return form

    async def _deliver(self, message: Message) -> str | None:
        s = self.settings
        auth = (s.api_key_sid or s.account_sid, _secret("channels.twilio.auth_token_env", s.auth_token_env))
        try:
            async with http_client(follow_redirects=False) as http:
                response = await http.post(
                    self.url, data=self.form(message), auth=auth, timeout=s.timeout.total_seconds()
                )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"POST {self.url} failed: {exc!r}", kind="GatewayUnavailable", retryable=True) from None
        status = response.status_code
        answer = _json_object(response)
        if 200 <= status < 300:
            sid = answer.get("sid")
            return sid if isinstance(sid, str) and sid else None
        code = str(answer["code"]) if isinstance(answer.get("code"), int | str) else None
        said = f"Twilio {code}: {str(answer.get('message', ''))[:200]}" if code else repr(response.text[:200])
        where = f"POST {self.url}: HTTP {status} {said}"
        if code == TWILIO_OPT_OUT:
            raise CarrierOptOut(f"{where} (the recipient opted out at the carrier)", code=code)
        if code in TWILIO_BAD_NUMBER:
            raise DeliveryError(
                f"{where} ({TWILIO_BAD_NUMBER[code]}: Twilio error {code})",
                kind="InvalidNumber",
                retryable=False,
                code=code,
            )
        if retryable_status(status):
            raise DeliveryError(where, kind="GatewayUnavailable", retryable=True, code=code)
        raise DeliveryError(where, kind="GatewayRejected", retryable=False, code=code)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _list_unsubscribe(value: str) -> str:
    """`value` as it goes on the wire: one line, or folded between its URIs when that is too long (RFC 5322).

    Raises:
        DeliveryError: not printable ASCII, or a URI longer than a line (the links are made to fit).
    """
    if not (value.isascii() and value.isprintable()):
        raise DeliveryError(
            f"List-Unsubscribe {value[:100]!r} is not printable ASCII", kind="InvalidMessage", retryable=False
        )
    if len("List-Unsubscribe: ") + len(value) > LINE_LIMIT:
        value = value.replace(", <", ",\n <")
    if any(len(line) > LINE_LIMIT - len("List-Unsubscribe: ") for line in value.splitlines()):
        raise DeliveryError(
            f"List-Unsubscribe has a URI over {LINE_LIMIT} characters", kind="InvalidMessage", retryable=False
        )
    return value


def _e164(phone: str) -> str:
    """`phone` as Twilio asks for it, E.164 (`+12125550142`), however the customer's record spells it.

    Raises:
        DeliveryError: not a phone number (not retryable: the customer's record will not change).
    """
    try:
        number = normalize_contact(phone)
    except InvalidContact as exc:
        raise DeliveryError(f"the To number: {exc}", kind="InvalidNumber", retryable=False) from None
    if "@" in number:
        raise DeliveryError(f"the To number {phone[:40]!r} is an e-mail address", kind="InvalidNumber", retryable=False)
    return number


def _secret(key: str, env_name: str) -> str:
    """The value of `env_name`, the variable config `key` names; unset or empty is a config error no retry mends."""
    value = os.environ.get(env_name)
    if not value:
        raise DeliveryError(f"{key} names {env_name!r}, which is not set", kind="ChannelNotConfigured", retryable=False)
    return value


def _smtp_error(exc: Exception, settings: SmtpChannelSettings) -> DeliveryError:
    where = f"SMTP {settings.host}:{settings.port}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        hint = " (set channels.smtp.starttls = false for a server without it)" if settings.starttls else ""
        return DeliveryError(f"{where}: {exc}{hint}", kind="SmtpRejected", retryable=False)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        final = any(code >= 500 for code in codes)
        return DeliveryError(f"{where}: recipient refused: {exc.recipients}", kind="SmtpRejected", retryable=not final)
    if isinstance(exc, smtplib.SMTPResponseException) and not isinstance(exc, smtplib.SMTPConnectError):
        # Also a refused login (SMTPAuthenticationError): a 535 will not turn into a 235 by retrying.
        final = exc.smtp_code >= 500
        message = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return DeliveryError(
            f"{where}: {exc.smtp_code} {message}",
            kind="SmtpRejected" if final else "SmtpUnavailable",
            retryable=not final,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(f"{where}: STARTTLS certificate: {exc}", kind="SmtpRejected", retryable=False)
    return DeliveryError(f"{where}: {exc!r}", kind="SmtpUnavailable", retryable=True)


def make_channels(settings: ChannelsSettings, outbox: Outbox, *, public_url: str = "") -> dict[str, Channel]:
    """The channels `settings` configures (console always); `public_url`: the service's (`webhooks.public_url`),
    where Twilio's status callbacks go."""
    channels: dict[str, Channel] = {"console": ConsoleChannel(outbox)}
    if not settings.missing("http"):
        channels["http"] = HttpChannel(outbox, settings.http)
    if not settings.missing("smtp"):
        channels["smtp"] = SmtpChannel(outbox, settings.smtp)
    if not settings.missing("twilio"):
        channels["twilio"] = TwilioChannel(outbox, settings.twilio, public_url=public_url)
    return channels
