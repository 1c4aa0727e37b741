"""Activities: every side effect of a flow (messages, webhooks) happens here, with retries."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from scheduler.channels import ConsoleChannel, Outbox, make_channels
from scheduler.models import ActivityInput, ActivityOutcome
from scheduler.nodes import EventType
from scheduler.nodes.notify_creator import NotifyCreatorParams
from scheduler.nodes.send_message import SendMessageParams
from scheduler.nodes.webhook import WebhookParams
from scheduler.templates import render

log = logging.getLogger(__name__)

RETRYABLE_4XX = frozenset({408, 425, 429})


class Activities:
    """Holds what activities share (the outbox and channels); register `.all()` on a worker."""

    def __init__(self, *, outbox: Outbox, default_channel: str = "console") -> None:
        self.outbox = outbox
        self.channels = make_channels(outbox)
        self.default_channel = default_channel

    def all(self) -> list[Any]:
        return [self.send_message, self.notify_creator, self.webhook]

    def _channel(self, name: str) -> ConsoleChannel:
        channel = self.channels.get(name or self.default_channel)
        if channel is None:
            raise ApplicationError(f"unknown channel {name!r}", type="UnknownChannel", non_retryable=True)
        return channel

    @activity.defn(name="send_message")
    async def send_message(self, inp: ActivityInput) -> ActivityOutcome:
        params = SendMessageParams.model_validate(inp.params)
        text = render(params.template, _context(inp))
        to = _contact(inp.customer)
        self._channel(params.channel).send(
            to=to, text=text, campaign_id=inp.campaign_id, workflow_id=inp.workflow_id, step=inp.step
        )
        return ActivityOutcome(detail=f"sent to {to}")

    @activity.defn(name="notify_creator")
    async def notify_creator(self, inp: ActivityInput) -> ActivityOutcome:
        params = NotifyCreatorParams.model_validate(inp.params)
        to = params.to or inp.owner or "campaign owner"
        self._channel(params.channel).send(
            to=to, text=render(params.template, _context(inp)), campaign_id=inp.campaign_id,
            workflow_id=inp.workflow_id, step=inp.step,
        )  # fmt: skip
        return ActivityOutcome(detail=f"notified {to}")

    @activity.defn(name="webhook")
    async def webhook(self, inp: ActivityInput) -> ActivityOutcome:
        """2xx: satisfied. 3xx, 4xx (except 408/425/429): not_satisfied. Anything else raises, so it is retried."""
        params = WebhookParams.model_validate(inp.params)
        body = {
            "workflow_id": inp.workflow_id,
            "campaign_id": inp.campaign_id,
            "step": inp.step,
            "customer": inp.customer,
            "cart": inp.cart,
            "attempt": activity.info().attempt,
        }
        if params.url is None:
            self.outbox.append({"channel": "webhook", "to": None, "text": "", "payload": body, **_where(inp)})
            return ActivityOutcome(detail="no url: payload recorded in the outbox")
        url = str(params.url)
        try:
            async with httpx.AsyncClient(follow_redirects=False) as http:  # webhooks are rare: no pool to close
                response = await http.post(
                    url, json=body, headers=params.headers, timeout=params.timeout.total_seconds()
                )
        except httpx.HTTPError as exc:
            raise ApplicationError(f"POST {url} failed: {exc!r}", type="WebhookUnreachable") from None
        status = response.status_code
        if 200 <= status < 300:
            return ActivityOutcome(detail=f"POST {url}: HTTP {status}")
        if 300 <= status < 500 and status not in RETRYABLE_4XX:  # a redirect will not go away by retrying
            log.warning("webhook %s answered HTTP %s: taking the not_satisfied edge", url, status)
            return ActivityOutcome(event=EventType.NOT_SATISFIED, detail=f"POST {url}: HTTP {status}")
        raise ApplicationError(f"POST {url}: HTTP {status}", type="WebhookServerError")


def _context(inp: ActivityInput) -> dict[str, Any]:
    return {
        "customer": inp.customer,
        "cart": inp.cart,
        "campaign_id": inp.campaign_id,
        "workflow_id": inp.workflow_id,
        "step": inp.step,
    }


def _where(inp: ActivityInput) -> dict[str, str]:
    return {"campaign_id": inp.campaign_id, "workflow_id": inp.workflow_id, "step": inp.step}


def _contact(customer: dict[str, Any]) -> str:
    for key in ("phone", "email", "id"):
        if customer.get(key):
            return str(customer[key])
    return "unknown customer"
