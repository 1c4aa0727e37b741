"""`notify_creator`: tell the campaign's owner how a customer's flow went."""

from __future__ import annotations

from scheduler.flow.nodes.registry import register
from scheduler.flow.nodes.send_message import MessageNode, MessageParams

DEFAULT_TEMPLATE = (
    "{{ campaign.name | default(campaign.id, true) }}: customer"
    " {{ customer.name | default(customer.id, true) | default('unknown', true) }}: {{ step.outcome }}"
    " (flow {{ step.workflow_id }})."
)
DEFAULT_SUBJECT = "[{{ campaign.id }}] {{ step.outcome | truncate(60) }}"


class NotifyCreatorParams(MessageParams):
    template: str = DEFAULT_TEMPLATE
    """Jinja2 like `send_message`'s; `step.outcome` says what happened (e.g. "the customer answered: yes")."""
    subject: str = DEFAULT_SUBJECT
    to: str = ""
    """Empty: the campaign's `owner`."""


@register
class NotifyCreator(MessageNode):
    name = "notify_creator"
    Params = NotifyCreatorParams
