"""`send_message`: render the step's template and deliver it to the customer."""

from __future__ import annotations

from pydantic import ValidationInfo, field_validator

from scheduler.nodes.registry import EventType, Flow, Node, NodeParams, register

DEFAULT_TEMPLATE = (
    "Hi {{ customer.name | default('there') }}, you left something in your cart"
    "{% if cart.url %}: {{ cart.url }}{% endif %}. Reply to this message if you have a question."
)


def check_template(text: str, info: ValidationInfo) -> str:
    """Reject templates that do not compile; skipped inside flows (validated before they start)."""
    if not (info.context or {}).get("in_flow"):
        from scheduler.templates import compile_template

        compile_template(text)
    return text


class SendMessageParams(NodeParams):
    template: str = DEFAULT_TEMPLATE
    """Jinja2 (sandboxed) with `customer`, `cart`, `campaign_id`, `workflow_id`."""
    channel: str = ""
    """Empty: `channels.default` of the service config."""

    _check_template = field_validator("template")(check_template)


@register
class SendMessage(Node):
    name = "send_message"
    Params = SendMessageParams

    async def run(self, flow: Flow, params: SendMessageParams) -> EventType:
        return (await flow.call_activity(self.name, params)).event
