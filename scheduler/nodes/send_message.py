"""`send_message`: render the step's template and deliver it to the customer."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from temporalio.common import RetryPolicy

from scheduler.nodes.registry import EventType, Flow, Node, NodeParams, register

DEFAULT_TEMPLATE = (
    "Hi {{ customer.name | default('there', true) }}, you left something in your cart"
    "{% if cart.url %}: {{ cart.url }}{% endif %}. Reply to this message if you have a question."
)
DEFAULT_SUBJECT = "{{ campaign.name | default('Your cart is waiting', true) }}"

ChannelName = Literal["", "console", "http", "smtp"]


def check_template(text: str, info: ValidationInfo) -> str:
    """Reject templates that do not compile or use unknown variables; skipped inside flows.

    Inside a flow the definition was fully validated before it started, and Jinja must stay out of
    the workflow sandbox.
    """
    if not (info.context or {}).get("in_flow"):
        from scheduler.templates import compile_template

        compile_template(text)
    return text


def send_retry(max_attempts: int) -> RetryPolicy:
    """Retries for a message: bounded, so a gateway that stays down fails the step visibly.

    Five attempts back off 1+2+4+8s: short enough that the node need not write the flow's state
    before it like nodes that wait do (`Node.waits`).
    """
    return RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1), maximum_attempts=max_attempts
    )


class SendMessageParams(NodeParams):
    template: str = DEFAULT_TEMPLATE
    """Jinja2 (sandboxed) with `customer`, `cart`, `campaign`, `step`."""
    subject: str = DEFAULT_SUBJECT
    """The e-mail subject (smtp only), a template like `template`."""
    channel: ChannelName = ""
    """Empty: `channels.default` of the service config."""
    max_attempts: int = Field(5, ge=1, le=100)
    """Delivery attempts before the step, and with it the flow, fails."""

    _check_template = field_validator("template", "subject")(check_template)


@register
class SendMessage(Node):
    name = "send_message"
    Params = SendMessageParams

    async def run(self, flow: Flow, params: SendMessageParams) -> EventType:
        return (await flow.call_activity(self.name, params, retry=send_retry(params.max_attempts))).event
