"""`send_message`: render the step's template and deliver it to the customer."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from temporalio.common import RetryPolicy

from scheduler.flow.nodes.registry import EventType, Flow, Node, NodeParams, register

DEFAULT_TEMPLATE = (
    "Hi {{ customer.name | default('there', true) }}, you left something in your cart"
    "{% if cart.url %}: {{ cart.url }}{% endif %}. Reply to this message if you have a question."
)
DEFAULT_SUBJECT = "{{ campaign.name | default('Your cart is waiting', true) }}"

ChannelName = Literal["console", "http", "smtp", "twilio"]
"""The channels the service delivers messages through (configured under `[channels]`)."""

MESSAGE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
"""The backoff of message deliveries; `send_retry` bounds its attempts."""


def check_template(text: str, info: ValidationInfo) -> str:
    """Run the template check the caller passed (`validate_definition(check_template=…)`), if any.

    The check (Jinja) lives outside the workflow sandbox; inside a flow there is none, and none is
    needed: the definition was fully validated before the flow started.
    """
    if check := (info.context or {}).get("check_template"):
        check(text)
    return text


def send_retry(max_attempts: int) -> RetryPolicy:
    """Retries for a message: bounded, so a gateway that stays down fails the step visibly.

    Five attempts back off 1+2+4+8s: short enough that the node need not write the flow's state
    before it like nodes that wait do (`Node.waits`).
    """
    return dataclasses.replace(MESSAGE_RETRY, maximum_attempts=max_attempts)


class MessageParams(NodeParams):
    """What every message node takes; subclasses give `template` and `subject` their defaults."""

    template: str
    subject: str
    """The e-mail subject (smtp only), a template like `template`."""
    channel: Literal["", ChannelName] = ""
    """Empty: `channels.default` of the service config."""
    max_attempts: int = Field(5, ge=1, le=100)
    """Delivery attempts before the step, and with it the flow, fails."""

    _check_template = field_validator("template", "subject")(check_template)


class MessageNode(Node):
    """Base of nodes whose activity (named like the node) delivers one message, with `send_retry`."""

    async def run(self, flow: Flow, params: MessageParams) -> EventType:
        return (await flow.call_activity(self.name, params, retry=send_retry(params.max_attempts))).event


class SendMessageParams(MessageParams):
    template: str = DEFAULT_TEMPLATE
    """Jinja2 (sandboxed) with `customer`, `cart`, `campaign`, `step`."""
    subject: str = DEFAULT_SUBJECT


@register
class SendMessage(MessageNode):
    """A customer message: `not_satisfied` when a send policy kept it from going (quiet hours past
    `max_delay`, a frequency cap) or the customer is suppressed."""

    name = "send_message"
    Params = SendMessageParams
    events = frozenset({EventType.SATISFIED, EventType.NOT_SATISFIED})

    async def run(self, flow: Flow, params: MessageParams) -> EventType:
        return await flow.send_to_customer(self.name, params, retry=send_retry(params.max_attempts))
