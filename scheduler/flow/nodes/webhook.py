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


LONG_STEP = timedelta(minutes=3)
"""A webhook step that may take longer writes the flow's state first. A message's retries (5 attempts of at
most 30 s, 15 s of backoff) take up to 2 min 45 s, and nobody asks a message step to write first."""


def worst_case(params: WebhookParams) -> timedelta:
    """Every attempt timing out, every backoff at its full length (Temporal's default cap: 100 times the first)."""
    first = params.initial_interval
    backoffs = sum((min(first * 2**n, first * 100) for n in range(params.max_attempts - 1)), timedelta(0))
    return params.max_attempts * _attempt_timeout(params) + backoffs


def _attempt_timeout(params: WebhookParams) -> timedelta:
    return params.timeout + timedelta(seconds=5)


@register
class Webhook(Node):
    name = "webhook"
    Params = WebhookParams
    events = frozenset({EventType.SATISFIED, EventType.NOT_SATISFIED})

    def writes_state_first(self, params: WebhookParams, revision: int) -> bool:
        """Only if every attempt failing could take longer than `LONG_STEP`: not with the default params
        (5 attempts of at most 15 s, 15 s of backoff). Before revision 2 every webhook step did."""
        return revision < 2 or worst_case(params) > LONG_STEP

    async def run(self, flow: Flow, params: WebhookParams) -> EventType:
        retry = RetryPolicy(initial_interval=params.initial_interval, maximum_attempts=params.max_attempts)
        try:
            outcome = await flow.call_activity(self.name, params, timeout=_attempt_timeout(params), retry=retry)
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            # The endpoint stayed down through every retry: take the not_satisfied edge rather
            # than failing the customer's whole flow.
            return EventType.NOT_SATISFIED
        return outcome.event
