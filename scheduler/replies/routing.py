"""Where a reply or a purchase finds its flows: visibility lookups, redelivery detection, one signal per flow.

A reply names its flow directly (`workflow_id`: signalled at once, no lookup) or by who sent it: the
search attribute `CustomerId`, else `CustomerContact` (normalized phones and e-mails, see
`scheduler.flow.contacts`). A conversion (the customer bought) names the cart (`CartId`) or the customer
(`CustomerId`). Every running `AbandonedCartWorkflow` that matches is signalled: `client-answered`
with a `Reply` (`route_reply`), `cart-converted` with a `Conversion` (`route_conversion`).

Exactly once: the provider's id is the signal's `reply_id` (`conversion_id`). A flow ignores an id
it has seen, and records the ids it handled in the search attribute `ReplyIds` (a conversion's as
`engine.conversion_key`, apart from reply ids); a reply whose id a matching flow already handled is
a redelivery, answered with those flows and signalled to none, also after they ended. That state
lives in Temporal, so API restarts and replicas agree.

Visibility is eventually consistent: a flow started a moment ago, or a reply handled a moment ago,
may not be listed yet. Lookups are therefore retried for a bounded time (`webhooks.route_timeout`)
before a reply is declared unmatched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from scheduler.campaigns.start import signal_flow
from scheduler.errors import FlowNotFound, NoFlowForReply
from scheduler.flow.attributes import CART_ID, CUSTOMER_CONTACT, CUSTOMER_ID, REPLY_IDS, conversion_key, reply_key
from scheduler.flow.contacts import redact
from scheduler.flow.signals import CART_CONVERTED_SIGNAL, CLIENT_ANSWERED_SIGNAL, Conversion, Reply
from scheduler.flow.workflows import FLOW_TYPE
from scheduler.visibility import lookup_query

log = logging.getLogger(__name__)

MAX_FLOWS = 100
"""At most this many flows are signalled for one reply (a contact in more flows than that is a mistake)."""
_FIRST_PAUSE, _MAX_PAUSE = 0.05, 1.0


@dataclass(frozen=True)
class FlowTarget:
    """Whose flows a reply or conversion is for; the first field set wins, in this order."""

    workflow_id: str | None = None
    cart_id: str | None = None
    customer_id: str | None = None
    contact: str | None = None
    """Normalized (`scheduler.flow.contacts.normalize_contact`)."""

    def __str__(self) -> str:
        """How logs and error messages name it (a contact redacted)."""
        if self.workflow_id is not None:
            return f"workflow {self.workflow_id!r}"
        if self.cart_id is not None:
            return f"cart {self.cart_id!r}"
        if self.customer_id is not None:
            return f"customer {self.customer_id!r}"
        return f"contact {redact(self.contact or '')!r}"

    def attribute(self) -> tuple[SearchAttributeKey[Any], str]:
        """The search attribute and value its flows are listed by (not for a `workflow_id`, which needs no lookup)."""
        if self.cart_id is not None:
            return CART_ID, self.cart_id
        if self.customer_id is not None:
            return CUSTOMER_ID, self.customer_id
        if self.contact is not None:
            return CUSTOMER_CONTACT, self.contact
        raise ValueError("a FlowTarget needs a workflow_id, cart_id, customer_id or contact")


async def route_reply(client: Client, *, target: FlowTarget, reply: Reply, timeout: timedelta) -> list[str]:
    """Signal `client-answered` with `reply` to every running flow of `target`; their workflow ids, sorted.

    A redelivery (a flow of `target` already handled `reply.reply_id`) signals nothing and returns
    the flows that handled it, so it is answered as the first delivery was.

    Raises:
        NoFlowForReply: no flow matched within `timeout` (or the named workflow is not running).
    """
    key = reply_key(reply.reply_id) if reply.reply_id is not None else None
    return await _route(client, target, CLIENT_ANSWERED_SIGNAL, reply, reply.reply_id, key, timeout)


async def route_conversion(
    client: Client, *, target: FlowTarget, conversion: Conversion, timeout: timedelta
) -> list[str]:
    """Signal `cart-converted` with `conversion` to every running flow of `target`; like `route_reply`.

    A redelivery (a flow of `target` already handled `conversion.conversion_id`) signals nothing and
    returns the flows that handled it, also when they ended because of it (`exit_on`).

    Raises:
        NoFlowForReply: no flow matched within `timeout`.
    """
    cid = conversion.conversion_id
    key = conversion_key(cid) if cid is not None else None
    return await _route(client, target, CART_CONVERTED_SIGNAL, conversion, cid, key, timeout)


async def _route(
    client: Client,
    target: FlowTarget,
    signal_name: str,
    payload: Reply | Conversion,
    payload_id: str | None,
    key: str | None,
    timeout: timedelta,
) -> list[str]:
    """Look up the running flows of `target` (retrying while visibility lags) and signal each; see `route_reply`."""
    if target.workflow_id is not None:
        return await _route_to_workflow(client, target.workflow_id, signal_name, payload, key)
    attribute, value = target.attribute()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout.total_seconds()
    pause = _FIRST_PAUSE
    while True:
        handled, running = await _lookup(client, attribute, value, key)
        if handled:
            log.info("%s %s for %s is a redelivery, handled by %s", signal_name, payload_id, target, ", ".join(handled))
            return handled
        if running and (signaled := await _signal_each(client, running, signal_name, payload)):
            return signaled
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise NoFlowForReply(str(target))
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, _MAX_PAUSE)


async def _route_to_workflow(
    client: Client, workflow_id: str, signal_name: str, payload: Reply | Conversion, key: str | None
) -> list[str]:
    """One signal; only if it finds no running flow, ask whether that flow already handled this id."""
    if await _signaled(client, workflow_id, signal_name, payload) or (
        key is not None and await _handled_by(client, workflow_id, key)
    ):
        return [workflow_id]
    raise NoFlowForReply(f"workflow {workflow_id!r}")


async def _signaled(client: Client, workflow_id: str, signal_name: str, payload: Reply | Conversion) -> bool:
    """Signal the flow; False if it is not running (it ended, perhaps since it was listed)."""
    try:
        await signal_flow(client, workflow_id=workflow_id, signal_name=signal_name, reply=payload)
    except FlowNotFound:
        return False
    return True


async def _handled_by(client: Client, workflow_id: str, key: str) -> bool:
    """Did the flow (its latest run) record `key`? `describe` reads the flow itself, not lagging visibility."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.workflow_type == FLOW_TYPE and key in (description.typed_search_attributes.get(REPLY_IDS) or [])


async def flows_of(client: Client, target: FlowTarget) -> list[TypedSearchAttributes]:
    """The search attributes of `target`'s flows, running or not (at most `MAX_FLOWS`), from one lookup."""
    attribute, value = target.attribute()
    query = lookup_query(attribute.name, value)
    found: list[TypedSearchAttributes] = []
    async for execution in client.list_workflows(query, limit=MAX_FLOWS):
        attributes = execution.typed_search_attributes
        recorded = attributes.get(attribute)
        if value in recorded if isinstance(recorded, list) else recorded == value:  # exact: see `visibility.quote`
            found.append(attributes)
    return found


async def _lookup(
    client: Client, attribute: SearchAttributeKey[Any], value: str, key: str | None
) -> tuple[list[str], list[str]]:
    """Flows of `attribute = value` that handled `key` (any status), and the running ones that did not."""
    query = lookup_query(attribute.name, value, running=True, handled=key)
    handled: set[str] = set()
    running: set[str] = set()
    async for execution in client.list_workflows(query, limit=MAX_FLOWS):
        attributes = execution.typed_search_attributes
        recorded = attributes.get(attribute)
        # Exact re-check: a SQL visibility store may match more than asked (see `scheduler.visibility.quote`), and a
        # SQLite KeywordList match ignores case.
        if not (value in recorded if isinstance(recorded, list) else recorded == value):
            continue
        if key is not None and key in (attributes.get(REPLY_IDS) or []):
            handled.add(execution.id)
        elif execution.status == WorkflowExecutionStatus.RUNNING:
            running.add(execution.id)
    return sorted(handled), sorted(running)


async def _signal_each(
    client: Client, workflow_ids: Sequence[str], signal_name: str, payload: Reply | Conversion
) -> list[str]:
    """Signal all at once; the ones that ended since they were listed are left out."""
    results = await asyncio.gather(*(_signaled(client, w, signal_name, payload) for w in workflow_ids))
    return [w for w, ok in zip(workflow_ids, results, strict=True) if ok]
