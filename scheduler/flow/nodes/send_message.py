"""`send_message`: render the step's template and deliver it to the customer."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator
from temporalio.common import RetryPolicy

from scheduler.errors import clip
from scheduler.flow.durations import Duration, format_duration
from scheduler.flow.nodes.registry import EventType, Flow, Node, NodeParams, register
from scheduler.flow.nodes.webhook import LONG_STEP

DEFAULT_TEMPLATE = (
    "Hi {{ customer.name | default('there', true) }}, you left something in your cart"
    "{% if cart.url %}: {{ cart.url }}{% endif %}. Reply to this message if you have a question."
)
DEFAULT_SUBJECT = "{{ campaign.name | default('Your cart is waiting', true) }}"

ChannelName = Literal["console", "http", "smtp", "twilio"]
"""The channels the service delivers messages through (configured under `[channels]`)."""

CONTACT_FIELDS: dict[str, str] = {"http": "phone", "twilio": "phone", "smtp": "email"}
"""The customer field a channel sends to (`console` takes anyone): how a step with a channel list picks the channels
it can reach the customer on, in the workflow, as the channel's own `recipient` would."""
RECEIPT_CHANNELS = frozenset({"http", "twilio"})
"""Channels whose gateways report delivery (the `delivery-status` signal): `await_delivery` waits only after these."""
MAX_CHANNELS = 4
"""Channels a step's list may name."""
MAX_AWAIT_DELIVERY = timedelta(days=1)
"""The longest `await_delivery`: receipts come within minutes, or not at all."""
MESSAGE_WORST_CASE = timedelta(minutes=2, seconds=45)
"""One message's retries at worst (5 attempts of at most 30 s, 15 s of backoff; see `LONG_STEP`)."""

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
    channel: Literal["", ChannelName] | tuple[ChannelName, ...] = ""  # type: ignore[assignment]
    """Empty: `channels.default`. A list (`["twilio", "smtp"]`): the first channel the customer can be reached on
    (`CONTACT_FIELDS`), then the next when a message through it fails for good or, with `await_delivery`, is
    reported undelivered. The activity always gets the one channel of its attempt."""
    await_delivery: Duration | None = Field(None, exclude_if=lambda value: value is None)
    """Wait up to this long after the message went for its delivery receipt (channels in `RECEIPT_CHANNELS`):
    `undelivered`/`failed` give `not_satisfied` (memo `reason = "undelivered"`); delivered or no receipt in time
    (it counts as sent) `satisfied`. None: don't wait, and left out of the activity's params, so a worker of the
    version before (params forbid unknown keys) reads those of a step without it while workers are upgraded."""

    @field_validator("channel", mode="before")
    @classmethod
    def _channel_list(cls, v: Any) -> Any:
        """One clear message for a bad name or list (the union's own errors would list both of its branches)."""
        names = get_args(ChannelName)
        if isinstance(v, str):
            if v and v not in names:
                raise ValueError(f"unknown channel {clip(repr(v), 40)}: use one of {', '.join(names)} (or a list)")
            return v
        if isinstance(v, list | tuple):
            if not 1 <= len(v) <= MAX_CHANNELS:
                raise ValueError(f"a channel list names 1 to {MAX_CHANNELS} channels, got {len(v)}")
            if bad := [c for c in v if not isinstance(c, str) or c not in names]:
                raise ValueError(f"unknown channel {clip(repr(bad[0]), 40)} in the list: use {', '.join(names)}")
            if len(set(v)) != len(v):
                raise ValueError("a channel list names each channel once")
            return tuple(v)
        raise ValueError(f"expected a channel name or a list of them, got {clip(repr(v), 40)}")

    @field_validator("await_delivery")
    @classmethod
    def _await_bounded(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and not timedelta(0) < v <= MAX_AWAIT_DELIVERY:
            raise ValueError(
                f"await_delivery must be more than 0s and at most {format_duration(MAX_AWAIT_DELIVERY)}, got"
                f" {format_duration(v)}"
            )
        return v

    def channels(self) -> tuple[str, ...] | None:
        """The step's channel list; None for a single channel (or the default), which sends as it always has."""
        return self.channel if isinstance(self.channel, tuple) else None

    def worst_case(self) -> timedelta:
        """How long the step may take at worst, holds by quiet hours and caps aside: every channel's retries
        and its wait for a receipt."""
        return len(self.channels() or ("",)) * (MESSAGE_WORST_CASE + (self.await_delivery or timedelta(0)))


@register
class SendMessage(MessageNode):
    """A customer message: `not_satisfied` when a send policy kept it from going (quiet hours past
    `max_delay`, a frequency cap) or the customer is suppressed."""

    name = "send_message"
    Params = SendMessageParams
    events = frozenset({EventType.SATISFIED, EventType.NOT_SATISFIED})

    def writes_state_first(self, params: SendMessageParams, revision: int) -> bool:
        """Only a step that may take longer than `LONG_STEP` (a wait for a receipt, a channel list): a plain message
        writes nothing first, as before those params existed."""
        return params.worst_case() > LONG_STEP

    async def run(self, flow: Flow, params: MessageParams) -> EventType:
        return await flow.send_to_customer(self.name, params, retry=send_retry(params.max_attempts))
