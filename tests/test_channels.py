"""Channels deliver real messages to servers the tests start: an HTTP gateway (stdlib server) and SMTP
(aiosmtpd, plain and with STARTTLS + login), through real flows on the time-skipping server; a failing
gateway is retried with one idempotency key and then fails the flow visibly."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from scheduler.api import create_app
from scheduler.api.bodies import FORM
from scheduler.config import HttpChannelSettings, Settings, SmtpChannelSettings, load_settings
from scheduler.delivery.channels import HttpChannel, Message, Outbox, SmtpChannel, idempotency_key
from scheduler.delivery.unsubscribe import VALID_FOR, Links, Unsubscribe
from scheduler.errors import ConfigError, DeliveryError
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, Reply
from scheduler.http_clients import tls_context
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.worker import make_worker
from tests.helpers.flows import CUSTOMER, failure_of, one_step, outcome_of, start_flow_input
from tests.helpers.servers import QuietHandler, ScriptedServer, free_ports, http_server, scripted_server

OWNER = "growth@example.com"
SENDER = "shop@example.com"
CART = {"id": "k1", "url": "https://shop.example/cart/k1"}
UNSUBSCRIBE_SECRET = "q8ZkX0v3Qf9rL2mN7pT4wY6bC1dE5gHj"  # 32 characters, as compliance.unsubscribe_secret requires


# Servers


@pytest.fixture
def gateway() -> Iterator[ScriptedServer]:
    with scripted_server("/v1/messages") as server:
        yield server


@dataclass
class Mailbox:
    """What an aiosmtpd server received; `refuse` maps a recipient to the RCPT answer refusing it."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    """Each message's DATA as the server received it (CRLF line ends)."""
    logins: list[tuple[str, str]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.original_content)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"s3cret", handled=False)  # handled=False: the server answers 535


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A plain SMTP server (no TLS, no login)."""
    box = Mailbox(port=free_ports(1)[0])
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_mailbox(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    """An SMTP server that refuses mail and login before STARTTLS; the client trusts its certificate."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what ssl.create_default_context() trusts
    box = Mailbox(port=free_ports(1)[0])
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        tls_context=context,
        require_starttls=True,
        authenticator=box.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def raw_headers(data: bytes) -> list[str]:
    """The header lines of a message as sent, continuation lines kept (CRLF split, nothing decoded)."""
    head, _, _ = data.partition(b"\r\n\r\n")
    return head.decode("ascii").split("\r\n")


def unfolded(lines: list[str]) -> dict[str, str]:
    """Raw header lines unfolded (RFC 5322: CRLF before white space is removed), by name; nothing decoded."""
    fields: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return {name: value for name, _, value in (f.partition(": ") for f in fields)}


def use_smtp(settings: Settings, box: Mailbox, **changes: Any) -> None:
    settings.channels.smtp = SmtpChannelSettings(
        **{"host": "127.0.0.1", "port": box.port, "starttls": False, "sender": SENDER, **changes}
    )


# Flows


async def run_flow(
    env: WorkflowEnvironment,
    definition: WorkflowDefinition,
    settings: Settings,
    task_queue: str,
    *,
    customer: dict[str, Any] | None = None,
    reply: Reply | None = None,
) -> tuple[WorkflowHandle[Any, Any], FlowStatus | WorkflowFailureError]:
    """Run a flow to its end: its status, or the failure it ended with."""
    flow = FlowInput(
        definition=definition,
        campaign_id="spring",
        campaign_name="Spring sale",
        owner=OWNER,
        customer=CUSTOMER if customer is None else customer,
        cart=CART,
    )
    async with make_worker(env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(env.client, flow, task_queue)
        if reply is not None:
            await handle.signal(CLIENT_ANSWERED_SIGNAL, reply)
        try:
            return handle, await asyncio.wait_for(handle.result(), timeout=30)
        except WorkflowFailureError as exc:
            return handle, exc


# http


async def test_http_channel_posts_json_with_idempotency_key_and_token(
    ts_env, settings: Settings, task_queue: str, gateway: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GATEWAY_TOKEN", "tok-123")
    settings.channels.http.url = gateway.url
    settings.channels.http.token_env = "TEST_GATEWAY_TOKEN"
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "step_1",
            "steps": {
                "step_1": {
                    "node": "send_message",
                    "go_to": "step_2",
                    "params": {"channel": "http", "template": "Hi {{ customer.name }}: {{ cart.url }}"},
                },
                "step_2": {"node": "notify_creator", "params": {"channel": "http"}},
            },
        }
    )
    handle, result = await run_flow(ts_env, definition, settings, task_queue)
    assert isinstance(result, FlowStatus), result
    assert [r["path"] for r in gateway.requests] == ["/v1/messages", "/v1/messages"]
    where = {"campaign_id": "spring", "workflow_id": handle.id}
    assert gateway.requests[0]["json"] == {
        "to": "+15550001",
        "text": "Hi Ada: https://shop.example/cart/k1",
        **where,
        "step": "step_1",
    }
    assert gateway.requests[1]["json"] == {
        "to": OWNER,
        "text": f"Spring sale: customer Ada: step step_1 (send_message) gave condition_satisfied (flow {handle.id}).",
        **where,
        "step": "step_2",
    }
    headers = [r["headers"] for r in gateway.requests]
    assert [h["Authorization"] for h in headers] == ["Bearer tok-123"] * 2
    assert [h["Content-Type"] for h in headers] == ["application/json"] * 2
    run_id = handle.result_run_id
    assert run_id
    assert [h["Idempotency-Key"] for h in headers] == [
        idempotency_key(workflow_id=handle.id, run_id=run_id, step="step_1"),
        idempotency_key(workflow_id=handle.id, run_id=run_id, step="step_2"),
    ]
    lines = Outbox(settings.channels.outbox).read()
    assert [(line["channel"], line["to"], line["step"], line["text"]) for line in lines] == [
        ("http", r["json"]["to"], r["json"]["step"], r["json"]["text"]) for r in gateway.requests
    ]


async def test_http_channel_verifies_the_gateway_certificate_with_one_shared_context(
    tmp_path: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every outbound client shares one TLS context, built once per process (not per message), and it verifies.

    An untrusted certificate is refused (retryably: the gateway may fix it); trusted through
    `SSL_CERT_FILE`, read when the context is built, the gateway gets the messages.
    """
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    texts: list[str] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            texts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
            self.send_json(200, b"{}")

    tls_context.cache_clear()
    try:
        with http_server(Handler, tls=server_tls) as url:
            channel = HttpChannel(Outbox(tmp_path / "outbox.jsonl"), HttpChannelSettings(url=url))
            with pytest.raises(DeliveryError) as refused:
                await channel.send(message())
            assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
            assert refused.value.retryable
            tls_context.cache_clear()
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            for text in ("first", "second", "third"):
                await channel.send(replace(message(), text=text))
        assert texts == ["first", "second", "third"]
        assert tls_context.cache_info().misses == 1  # one context for the three clients
    finally:
        tls_context.cache_clear()


def test_idempotency_key_is_stable_per_run_and_step() -> None:
    key = idempotency_key(workflow_id="spring-k1", run_id="r1", step="step_1")
    assert key == idempotency_key(workflow_id="spring-k1", run_id="r1", step="step_1")
    others = {
        idempotency_key(workflow_id="spring-k1", run_id="r2", step="step_1"),  # the same cart, a later flow
        idempotency_key(workflow_id="spring-k1", run_id="r1", step="step_6"),
        idempotency_key(workflow_id="spring-k2", run_id="r1", step="step_1"),
    }
    assert key not in others
    assert len(others) == 3
    assert str(uuid.UUID(key)) == key  # header-safe whatever the workflow id holds


async def test_http_channel_5xx_is_retried_with_the_same_key(
    ts_env, settings: Settings, task_queue: str, gateway: ScriptedServer
) -> None:
    gateway.statuses = [503, 500, 202]
    settings.channels.http.url = gateway.url
    _, result = await run_flow(ts_env, one_step(channel="http"), settings, task_queue)
    assert isinstance(result, FlowStatus), result
    assert result.outcome == "completed"
    assert len(gateway.requests) == 3
    assert len({r["headers"]["Idempotency-Key"] for r in gateway.requests}) == 1
    assert [line["channel"] for line in Outbox(settings.channels.outbox).read()] == ["http"]  # recorded once


async def test_http_channel_failing_gateway_fails_the_flow_after_max_attempts(
    ts_env, settings: Settings, task_queue: str, gateway: ScriptedServer
) -> None:
    gateway.statuses = [500]
    settings.channels.http.url = gateway.url
    handle, result = await run_flow(ts_env, one_step(channel="http", max_attempts=3), settings, task_queue)
    error = failure_of(result)
    assert error.type == "GatewayUnavailable"
    assert f"POST {gateway.url}: HTTP 500" in error.message
    assert len(gateway.requests) == 3
    assert len({r["headers"]["Idempotency-Key"] for r in gateway.requests}) == 1
    assert await outcome_of(handle) == "failed"
    assert Outbox(settings.channels.outbox).read() == []  # nothing went out


async def test_http_channel_4xx_fails_the_flow_without_retry(
    ts_env, settings: Settings, task_queue: str, gateway: ScriptedServer
) -> None:
    gateway.statuses = [400, 200]
    settings.channels.http.url = gateway.url
    handle, result = await run_flow(ts_env, one_step(channel="http"), settings, task_queue)
    error = failure_of(result)
    assert error.type == "GatewayRejected"
    assert error.non_retryable
    assert "HTTP 400" in error.message
    assert "invalid number" in error.message  # the gateway's reason reaches the failure
    assert len(gateway.requests) == 1
    assert await outcome_of(handle) == "failed"


@pytest.mark.parametrize(
    ("params", "customer", "kind", "text"),
    [
        ({"channel": "http"}, CUSTOMER, "ChannelNotConfigured", "set channels.http.url"),
        ({"channel": "smtp"}, CUSTOMER, "ChannelNotConfigured", "SCHEDULER_CHANNELS__SMTP__HOST"),
        ({"channel": "http"}, {"id": "c2", "email": "x@example.net"}, "NoContact", "customer 'c2' has none"),
    ],
    ids=["http-unconfigured", "smtp-unconfigured", "no-phone"],
)
async def test_channel_that_cannot_deliver_fails_the_flow_at_once(
    ts_env,
    settings: Settings,
    task_queue: str,
    gateway: ScriptedServer,
    params: dict[str, Any],
    customer: dict[str, Any],
    kind: str,
    text: str,
) -> None:
    if kind == "NoContact":
        settings.channels.http.url = gateway.url
    handle, result = await run_flow(ts_env, one_step(**params), settings, task_queue, customer=customer)
    error = failure_of(result)
    assert (error.type, error.non_retryable) == (kind, True)
    assert text in error.message
    assert gateway.requests == []
    assert await outcome_of(handle) == "failed"


# Length limits


@pytest.mark.parametrize(
    ("channel", "params", "message"),
    [
        ("console", {"template": "{{ 'x' * 1601 }}"}, "(template, channel 'console'): {} 1,600 characters"),
        ("http", {"template": "{{ 'x' * 1601 }}"}, "(template, channel 'http'): {} 1,600 characters"),
        (
            "smtp",
            {"template": "{% for i in range(11) %}{{ 'x' * 10000 }}{% endfor %}"},
            "(template, channel 'smtp'): {} 100,000 characters",
        ),
        ("smtp", {"subject": "{{ 'x' * 999 }}"}, "(subject, channel 'smtp'): {} 998 characters"),
    ],
    ids=["console", "http", "smtp", "smtp-subject"],
)
async def test_channel_text_over_its_limit_fails_the_step_at_once(
    ts_env,
    settings: Settings,
    task_queue: str,
    gateway: ScriptedServer,
    mailbox: Mailbox,
    channel: str,
    params: dict[str, Any],
    message: str,
) -> None:
    """An SMS gateway takes 1,600 characters, an e-mail gets 100,000: more fails the step, naming the limit."""
    settings.channels.http.url = gateway.url
    use_smtp(settings, mailbox)
    handle, result = await run_flow(ts_env, one_step(channel=channel, **params), settings, task_queue)
    error = failure_of(result)
    assert (error.type, error.non_retryable) == ("TemplateError", True)
    assert error.message == "step 'step_1' " + message.format("template failed to render: the text is longer than")
    assert (gateway.requests, mailbox.messages, Outbox(settings.channels.outbox).read()) == ([], [], [])
    assert await outcome_of(handle) == "failed"


async def test_channel_text_at_its_limit_is_sent(
    ts_env, settings: Settings, task_queue: str, gateway: ScriptedServer, mailbox: Mailbox
) -> None:
    settings.channels.http.url = gateway.url
    use_smtp(settings, mailbox)
    email = {
        "channel": "smtp",
        "template": "{% for i in range(10) %}{{ 'x' * 10000 }}{% endfor %}",
        "subject": "{{ ('word ' * 200)[:998] }}",
    }
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "sms",
            "steps": {
                "sms": {
                    "node": "send_message",
                    "go_to": "email",
                    "params": {"channel": "http", "template": "{{ 'x' * 1600 }}"},
                },
                "email": {"node": "send_message", "params": email},
            },
        }
    )
    _, result = await run_flow(ts_env, definition, settings, task_queue)
    assert isinstance(result, FlowStatus), result
    sms, email_line = Outbox(settings.channels.outbox).read()
    assert (len(sms["text"]), len(email_line["text"]), len(email_line["subject"])) == (1_600, 100_000, 998)
    [(_, _, message)] = mailbox.messages
    assert len(message.get_content().strip()) == 100_000


# smtp


async def test_smtp_channel_delivers_email(ts_env, settings: Settings, task_queue: str, mailbox: Mailbox) -> None:
    use_smtp(settings, mailbox)
    definition = one_step(
        channel="smtp", subject="{{ customer.name }}, your cart", template="Still want it? {{ cart.url }}"
    )
    handle, result = await run_flow(ts_env, definition, settings, task_queue)
    assert isinstance(result, FlowStatus), result
    [(sender, recipients, message)] = mailbox.messages
    assert (sender, recipients) == (SENDER, ["ada@example.net"])
    assert (message["From"], message["To"], message["Subject"]) == (SENDER, "ada@example.net", "Ada, your cart")
    assert message.get_content().strip() == "Still want it? https://shop.example/cart/k1"
    key = idempotency_key(workflow_id=handle.id, run_id=handle.result_run_id or "", step="step_1")
    assert message["Message-ID"] == f"<{key}@example.com>"
    [line] = Outbox(settings.channels.outbox).read()
    assert {k: line[k] for k in ("channel", "to", "subject", "text", "step")} == {
        "channel": "smtp",
        "to": "ada@example.net",
        "subject": "Ada, your cart",
        "text": "Still want it? https://shop.example/cart/k1",
        "step": "step_1",
    }


async def test_smtp_channel_starttls_and_login(
    ts_env, settings: Settings, task_queue: str, tls_mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses login and mail before STARTTLS, so a delivered message proves both happened."""
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    use_smtp(settings, tls_mailbox, starttls=True, username="shop", password_env="TEST_SMTP_PASSWORD")
    _, result = await run_flow(ts_env, one_step(channel="smtp"), settings, task_queue)
    assert isinstance(result, FlowStatus), result
    assert tls_mailbox.logins == [("shop", "s3cret")]
    [(_, recipients, message)] = tls_mailbox.messages
    assert recipients == ["ada@example.net"]
    assert message["Subject"] == "Spring sale"  # the default subject: the campaign's name


async def test_notify_creator_emails_the_owner_the_reply(
    ts_env, settings: Settings, task_queue: str, mailbox: Mailbox
) -> None:
    use_smtp(settings, mailbox)
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "step_1",
            "steps": {
                "step_1": {"node": "wait_answer", "condition": {"satisfied": "step_2"}},
                "step_2": {"node": "notify_creator", "params": {"channel": "smtp"}},
            },
        }
    )
    handle, result = await run_flow(
        ts_env, definition, settings, task_queue, reply=Reply(reply_id="r1", text="Is it in blue?")
    )
    assert isinstance(result, FlowStatus), result
    [(_, recipients, message)] = mailbox.messages
    assert recipients == [OWNER]
    assert message["Subject"] == "[spring] the customer answered: Is it in blue?"
    assert message.get_content().strip() == (
        f"Spring sale: customer Ada: the customer answered: Is it in blue? (flow {handle.id})."
    )


async def test_smtp_channel_settings_take_the_default_channel(
    ts_env, settings: Settings, task_queue: str, mailbox: Mailbox
) -> None:
    """A step without `channel` uses `channels.default`."""
    use_smtp(settings, mailbox)
    settings.channels.default = "smtp"
    _, result = await run_flow(ts_env, one_step(), settings, task_queue)
    assert isinstance(result, FlowStatus), result
    assert [m[1] for m in mailbox.messages] == [["ada@example.net"]]


# smtp answers, without Temporal


def message(to: str = "ada@example.net") -> Message:
    return Message(to=to, text="hi", subject="s", campaign_id="spring", workflow_id="wf", step="step_1")


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [("550 5.1.1 no such user", False), ("451 4.3.0 try again later", True)],
    ids=["permanent", "temporary"],
)
async def test_smtp_channel_refused_recipient(tmp_path: Path, mailbox: Mailbox, answer: str, retryable: bool) -> None:
    mailbox.refuse["gone@example.net"] = answer
    channel = SmtpChannel(
        Outbox(tmp_path / "outbox.jsonl"),
        SmtpChannelSettings(host="127.0.0.1", port=mailbox.port, starttls=False, sender=SENDER),
    )
    with pytest.raises(DeliveryError) as info:
        await channel.send(message("gone@example.net"))
    assert info.value.retryable is retryable
    assert answer.split()[0] in str(info.value)
    assert channel.outbox.read() == []


async def test_smtp_channel_without_starttls_on_the_server_is_final(tmp_path: Path, mailbox: Mailbox) -> None:
    channel = SmtpChannel(
        Outbox(tmp_path / "outbox.jsonl"), SmtpChannelSettings(host="127.0.0.1", port=mailbox.port, sender=SENDER)
    )
    with pytest.raises(DeliveryError) as info:
        await channel.send(message())
    assert info.value.retryable is False
    assert "channels.smtp.starttls = false" in str(info.value)
    assert mailbox.messages == []


async def test_smtp_channel_wrong_password_is_final(tmp_path: Path, tls_mailbox: Mailbox, monkeypatch) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "guess")
    settings = SmtpChannelSettings(
        host="127.0.0.1", port=tls_mailbox.port, sender=SENDER, username="shop", password_env="TEST_SMTP_PASSWORD"
    )
    channel = SmtpChannel(Outbox(tmp_path / "outbox.jsonl"), settings)
    with pytest.raises(DeliveryError) as info:
        await channel.send(message())
    assert "535" in str(info.value), info.value
    assert (info.value.kind, info.value.retryable) == ("SmtpRejected", False)


async def test_smtp_channel_unreachable_server_is_retryable(tmp_path: Path) -> None:
    port = free_ports(1)[0]  # free: nothing listens there
    channel = SmtpChannel(
        Outbox(tmp_path / "outbox.jsonl"), SmtpChannelSettings(host="127.0.0.1", port=port, sender=SENDER)
    )
    with pytest.raises(DeliveryError) as info:
        await channel.send(message())
    assert (info.value.kind, info.value.retryable) == ("SmtpUnavailable", True)


# Settings


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[channels]\ndefault = "http"\n', "channels.default is 'http' but channels.http.url is not set"),
        ('[channels]\ndefault = "smtp"\n', "channels.default is 'smtp' but channels.smtp.host is not set"),
        ('[channels]\ndefault = "sms"\n', "channels.default: Input should be 'console', 'http', 'smtp' or 'twilio'"),
        ('[channels.smtp]\nhost = "mail"\n', "channels.smtp.sender (the From address) is required"),
        ("[channels.http]\nurl = 5\n", "channels.http.url: Input should be a valid string"),
    ],
    ids=["http-default-unconfigured", "smtp-default-unconfigured", "unknown-default", "smtp-no-sender", "bad-type"],
)
def test_channels_settings_errors(tmp_path: Path, toml: str, error: str) -> None:
    path = tmp_path / "scheduler.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        load_settings(path)


def test_channels_settings_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scheduler.toml"
    path.write_text(
        '[channels]\ndefault = "smtp"\n[channels.smtp]\nhost = "mail.example.com"\nsender = "shop@example.com"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("SCHEDULER_CHANNELS__SMTP__PORT", "2525")
    monkeypatch.setenv("SCHEDULER_CHANNELS__HTTP__URL", "https://sms.example.com/send")
    channels = load_settings(path).channels
    assert (channels.default, channels.smtp.host, channels.smtp.port, channels.smtp.starttls) == (
        "smtp",
        "mail.example.com",
        2525,
        True,
    )
    assert channels.http.url == "https://sms.example.com/send"
    assert channels.missing("http") is None
    assert channels.missing("smtp") is None


async def test_customer_email_has_a_one_click_unsubscribe_link_that_suppresses(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, mailbox: Mailbox
) -> None:
    """RFC 8058 with a real SMTP server: the headers, the POST that suppresses, a changed or old link refused."""
    use_smtp(settings, mailbox)
    settings.compliance.unsubscribe_secret = UNSUBSCRIBE_SECRET
    settings.compliance.unsubscribe_mailto = "unsubscribe@example.com"
    settings.webhooks.public_url = "https://hooks.example.com/"
    handle, result = await run_flow(ts_env, one_step(channel="smtp"), settings, task_queue)
    assert isinstance(result, FlowStatus), result
    [(_, _, message)] = mailbox.messages
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link, mailto = (part.strip().strip("<>") for part in message["List-Unsubscribe"].split(","))
    assert mailto == "mailto:unsubscribe@example.com?subject=unsubscribe"
    url = urlsplit(link)
    assert (url.scheme, url.netloc, url.path) == ("https", "hooks.example.com", "/unsubscribe")
    token = parse_qs(url.query)["token"][0]

    app = create_app(settings, client=ts_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://hooks.example.com") as http:
        page = await http.get(f"/unsubscribe?{url.query}")
        assert page.status_code == 200 and "ada@example.net" in page.text and 'method="post"' in page.text
        consent = Consent(Store.open(settings.store_url))
        assert consent.get("ada@example.net") is None  # a GET changes nothing
        one_click = {"content": "List-Unsubscribe=One-Click", "headers": {"content-type": FORM}}
        first = await http.post(f"/unsubscribe?{url.query}", **one_click)
        assert first.status_code == 200, first.text
        entry = consent.get("ada@example.net")
        assert entry is not None
        assert (entry.reason, entry.campaign_id, entry.workflow_id) == ("unsubscribe link", "spring", handle.id)
        assert (await http.post(f"/unsubscribe?{url.query}", **one_click)).status_code == 200  # again: a no-op
        assert consent.count() == 1

        links = Links(public_url="https://hooks.example.com", secret=UNSUBSCRIBE_SECRET)
        payload, _, signature = token.partition(".")
        other = links.token(Unsubscribe("bob@example.net"))
        tampered = f"{other.partition('.')[0]}.{signature}"  # someone else's address under this signature
        expired = links.token(Unsubscribe("bob@example.net"), now=time.time() - VALID_FOR - 1)
        forged = Links(public_url="https://x", secret="a-guess-of-the-secret-0123456789abcdef").token(
            Unsubscribe("bob@example.net")
        )
        for bad in (tampered, expired, forged, "nonsense", payload, f"{payload}.\u00e9"):
            refused = await http.post("/unsubscribe", params={"token": bad}, **one_click)
            assert refused.status_code == 400, (bad, refused.text)
            assert "bob@example.net" not in refused.text
        assert consent.suppressed(["bob@example.net"]) == set()
        consent.store.close()


async def test_email_headers_on_the_wire_one_click_unencoded_and_non_ascii_encoded(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, mailbox: Mailbox
) -> None:
    """The raw DATA the server got: `List-Unsubscribe` is `<https://…>, <mailto:…>` as RFC 2369/8058 require
    (never RFC 2047 encoded words, which providers' one-click rules do not read), while a non-ASCII
    Subject and From name are encoded words in lines of at most 78 characters."""
    use_smtp(settings, mailbox, sender="Shöp 🛒 <shop@example.com>")
    settings.compliance.unsubscribe_secret = UNSUBSCRIBE_SECRET
    settings.compliance.unsubscribe_mailto = "unsubscribe@example.com"
    settings.webhooks.public_url = "https://hooks.example.com"
    definition = one_step(channel="smtp", subject="Grüße 🛒 {{ customer.name }}, your cart is waiting for you today")
    handle, result = await run_flow(ts_env, definition, settings, task_queue)
    assert isinstance(result, FlowStatus), result
    [data] = mailbox.raw
    lines = raw_headers(data)
    assert all(len(line) <= 998 for line in lines)
    headers = unfolded(lines)
    links = Links(public_url="https://hooks.example.com", secret=UNSUBSCRIBE_SECRET)
    [(_, _, message)] = mailbox.messages
    token = parse_qs(urlsplit(message["List-Unsubscribe"].split(",")[0].strip("<>")).query)["token"][0]
    assert links.read(token).workflow_id == handle.id
    url = links.url(Unsubscribe("ada@example.net", "spring", handle.id)).split("token=")[0]
    assert headers["List-Unsubscribe"].startswith(f"<{url}token=")
    assert headers["List-Unsubscribe"].endswith(">, <mailto:unsubscribe@example.com?subject=unsubscribe>")
    assert "=?" not in headers["List-Unsubscribe"] and len(headers["List-Unsubscribe"]) > 78
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "=?utf-8?" in headers["Subject"] and "=?utf-8?" in headers["From"]
    assert all(len(line) <= 78 for line in lines if not line.startswith("List-Unsubscribe:"))
    assert message["Subject"] == "Grüße 🛒 Ada, your cart is waiting for you today"
    assert (message["From"].addresses[0].display_name, message["From"].addresses[0].addr_spec) == (
        "Shöp 🛒",
        "shop@example.com",
    )


async def test_a_long_unsubscribe_link_stays_unencoded_within_the_line_limit(tmp_path: Path, mailbox: Mailbox) -> None:
    """A flow id as long as Temporal allows: the link leaves it out rather than outgrow a 998-character line."""
    channel = SmtpChannel(
        Outbox(tmp_path / "outbox.jsonl"),
        SmtpChannelSettings(host="127.0.0.1", port=mailbox.port, starttls=False, sender=SENDER),
    )
    links = Links(public_url="https://hooks.example.com", secret=UNSUBSCRIBE_SECRET, mailto="unsubscribe@example.com")
    long_id = "spring-" + "k" * 993
    header = links.header(Unsubscribe("ada@example.net", "spring", long_id))
    await channel.send(replace(message(), list_unsubscribe=header))
    [data] = mailbox.raw
    lines = raw_headers(data)
    assert all(len(line) <= 998 for line in lines)
    value = unfolded(lines)["List-Unsubscribe"]
    assert "=?" not in value and value.startswith("<https://hooks.example.com/unsubscribe?token=")
    token = parse_qs(urlsplit(value.split(",")[0].strip("<>")).query)["token"][0]
    assert links.read(token) == Unsubscribe("ada@example.net", "spring", None)

    # Both URIs too long for one line: folded at the white space between them, nothing encoded.
    https, mailto = "<https://hooks.example.com/" + "a" * 940 + ">", "<mailto:unsubscribe@example.com>"
    await channel.send(replace(message(), list_unsubscribe=f"{https}, {mailto}"))
    lines = raw_headers(mailbox.raw[1])
    at = lines.index(f"List-Unsubscribe: {https},")
    assert lines[at + 1] == f" {mailto}"


async def test_header_injection_from_campaign_data_is_neutralised(tmp_path: Path, mailbox: Mailbox) -> None:
    """A subject rendered from customer data with CR/LF stays one Subject line: no header of its own on the wire."""
    channel = SmtpChannel(
        Outbox(tmp_path / "outbox.jsonl"),
        SmtpChannelSettings(host="127.0.0.1", port=mailbox.port, starttls=False, sender=SENDER),
    )
    await channel.send(replace(message(), subject="x\r\nBcc: victim@example.com\nX-Evil: 1"))
    [data] = mailbox.raw
    lines = raw_headers(data)
    assert not [line for line in lines if line.lower().startswith(("bcc:", "x-evil:"))], lines
    assert unfolded(lines)["Subject"] == "x Bcc: victim@example.com X-Evil: 1"
    assert [m[1] for m in mailbox.messages] == [["ada@example.net"]]
    assert channel.outbox.read()[0]["subject"] == "x Bcc: victim@example.com X-Evil: 1"


async def test_a_recipient_with_a_line_break_is_refused_for_good(tmp_path: Path, mailbox: Mailbox) -> None:
    channel = SmtpChannel(
        Outbox(tmp_path / "outbox.jsonl"),
        SmtpChannelSettings(host="127.0.0.1", port=mailbox.port, starttls=False, sender=SENDER),
    )
    with pytest.raises(DeliveryError) as info:
        await channel.send(message("ada@example.net\r\nBcc: victim@example.com"))
    assert (info.value.kind, info.value.retryable) == ("InvalidMessage", False)
    assert "To" in str(info.value) and "line break" in str(info.value)
    assert mailbox.raw == []


async def test_without_an_unsubscribe_secret_email_has_no_link(
    ts_env: WorkflowEnvironment, settings: Settings, task_queue: str, mailbox: Mailbox
) -> None:
    use_smtp(settings, mailbox)
    settings.webhooks.public_url = "https://hooks.example.com"
    _, result = await run_flow(ts_env, one_step(channel="smtp"), settings, task_queue)
    assert isinstance(result, FlowStatus), result
    [(_, _, message)] = mailbox.messages
    assert message["List-Unsubscribe"] is None


async def test_an_idn_address_goes_out_with_its_domain_in_ascii(tmp_path: Path, mailbox: Mailbox) -> None:
    """`Ann@Bücher.de` (as a customer typed it) is sent to `Ann@xn--bcher-kva.de`: the envelope and the `To`
    line a server without SMTPUTF8 takes, the local part as given; an address that is none fails for good."""
    channel = SmtpChannel(
        Outbox(tmp_path / "outbox.jsonl"),
        SmtpChannelSettings(host="127.0.0.1", port=mailbox.port, starttls=False, sender=SENDER),
    )
    await channel.send(message(to="Ann@Bücher.de\u200b"))
    [(_, recipients, _)] = mailbox.messages
    assert recipients == ["Ann@xn--bcher-kva.de"]
    assert "To: Ann@xn--bcher-kva.de" in raw_headers(mailbox.raw[0])
    await channel.send(message(to="Growth Team <growth@Bücher.de>"))  # an owner with a display name
    assert mailbox.messages[1][1] == ["growth@xn--bcher-kva.de"]
    assert "To: Growth Team <growth@xn--bcher-kva.de>" in raw_headers(mailbox.raw[1])
    with pytest.raises(DeliveryError) as exc:
        await channel.send(message(to="ann@bücher..de"))
    assert (exc.value.kind, exc.value.retryable) == ("InvalidMessage", False)
    assert len(mailbox.messages) == 2
