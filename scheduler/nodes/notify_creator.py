"""`notify_creator`: tell the campaign's owner how a customer's flow went."""

from __future__ import annotations

from pydantic import Field, field_validator

from scheduler.nodes.registry import EventType, Flow, Node, NodeParams, register
from scheduler.nodes.send_message import ChannelName, check_template, send_retry

DEFAULT_TEMPLATE = (
    "{{ campaign.name | default(campaign.id, true) }}: customer"
    " {{ customer.name | default(customer.id, true) | default('unknown', true) }}: {{ step.outcome }}"
    " (flow {{ step.workflow_id }})."
)
DEFAULT_SUBJECT = "[{{ campaign.id }}] {{ step.outcome | truncate(60) }}"


class NotifyCreatorParams(NodeParams):
    template: str = DEFAULT_TEMPLATE
    """Jinja2 like `send_message`'s; `step.outcome` says what happened (e.g. "the customer answered: yes")."""
    subject: str = DEFAULT_SUBJECT
    to: str = ""
    """Empty: the campaign's `owner`."""
    channel: ChannelName = ""
    max_attempts: int = Field(5, ge=1, le=100)

    _check_template = field_validator("template", "subject")(check_template)


@register
class NotifyCreator(Node):
    name = "notify_creator"
    Params = NotifyCreatorParams

    async def run(self, flow: Flow, params: NotifyCreatorParams) -> EventType:
        return (await flow.call_activity(self.name, params, retry=send_retry(params.max_attempts))).event
