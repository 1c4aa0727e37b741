"""`notify_creator`: tell the campaign's owner that a customer answered."""

from __future__ import annotations

from pydantic import field_validator

from scheduler.nodes.registry import EventType, Flow, Node, NodeParams, register
from scheduler.nodes.send_message import check_template

DEFAULT_TEMPLATE = (
    "Campaign {{ campaign_id }}: customer {{ customer.name | default(customer.id | default('unknown')) }}"
    " answered (flow {{ workflow_id }})."
)


class NotifyCreatorParams(NodeParams):
    template: str = DEFAULT_TEMPLATE
    to: str = ""
    """Empty: the campaign's `owner`."""
    channel: str = ""

    _check_template = field_validator("template")(check_template)


@register
class NotifyCreator(Node):
    name = "notify_creator"
    Params = NotifyCreatorParams

    async def run(self, flow: Flow, params: NotifyCreatorParams) -> EventType:
        return (await flow.call_activity(self.name, params)).event
