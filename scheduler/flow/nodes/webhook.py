"""`webhook`: POST a JSON body about the flow to `url`, retrying 5xx and network errors."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AnyHttpUrl, Field
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

from scheduler.flow.durations import Duration
from scheduler.flow.nodes.registry import EventType, Flow, Node, NodeParams, register


class WebhookParams(NodeParams):
    url: AnyHttpUrl | None = None
    """None: the payload is recorded in the outbox instead of posted."""
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    """Per attempt."""
    max_attempts: int = Field(5, ge=1, le=100)
    initial_interval: Duration = timedelta(seconds=1)


@register
class Webhook(Node):
    name = "webhook"
    Params = WebhookParams
    events = frozenset({EventType.SATISFIED, EventType.NOT_SATISFIED})
    waits = True

    async def run(self, flow: Flow, params: WebhookParams) -> EventType:
        retry = RetryPolicy(initial_interval=params.initial_interval, maximum_attempts=params.max_attempts)
        try:
            outcome = await flow.call_activity(
                self.name, params, timeout=params.timeout + timedelta(seconds=5), retry=retry
            )
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            # The endpoint stayed down through every retry: take the not_satisfied edge rather
            # than failing the customer's whole flow.
            return EventType.NOT_SATISFIED
        return outcome.event
