"""Where a delivery receipt lands: the furthest status in the store, an undeliverable number suppressed, a signal.

Both receipt webhooks (`/webhooks/twilio/status`, `/webhooks/delivery`) end here, in `take_receipt`:

1. the deliveries store moves the message forward (`Deliveries.report`: a status of a lower or equal rank than the
   stored one changes nothing, so repeats and receipts out of order are harmless);
2. if the message's status is final and its error code is in `[compliance] undeliverable_codes`, the contact is
   suppressed with reason `undeliverable <code>` (an opt-in such as START lifts it like any suppression);
3. the flow that sent the message gets the `delivery-status` signal with the furthest state, if it still runs.
   A flow that has ended never fails the receipt. Temporal being away does: the route answers 503, and the
   gateway's retry, a repeat the store does not change, still suppresses and signals when the status is final
   (the flow ignores a status it has), so a flow waiting for its receipt (`await_delivery`) is not left to time out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from scheduler.errors import InvalidContact, UnknownMessage
from scheduler.flow.contacts import redact
from scheduler.flow.signals import DELIVERY_STATUS_SIGNAL, DeliveryState, DeliveryStatus
from scheduler.metrics import DELIVERIES
from scheduler.store.consent import Consent
from scheduler.store.deliveries import Deliveries, DeliveryRecord

log = logging.getLogger(__name__)

TWILIO_STATUSES: dict[str, DeliveryState] = {
    "accepted": DeliveryState.QUEUED,
    "scheduled": DeliveryState.QUEUED,
    "queued": DeliveryState.QUEUED,
    "sending": DeliveryState.SENT,
    "sent": DeliveryState.SENT,
    "delivered": DeliveryState.DELIVERED,
    "read": DeliveryState.DELIVERED,
    "undelivered": DeliveryState.UNDELIVERED,
    "failed": DeliveryState.FAILED,
    "canceled": DeliveryState.FAILED,
}
"""Twilio's `MessageStatus` values and the state each is."""
UNDELIVERABLE = "undeliverable"
"""The reason a contact is suppressed with (followed by the error code) when a receipt says its number is dead."""


@dataclass(frozen=True)
class Receipt:
    """What a gateway reported about one message."""

    status: DeliveryState
    message_id: str | None = None
    """The message's idempotency key; None: found by `provider_id`."""
    provider_id: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class Taken:
    """A receipt taken: the message's record after it, and whether it moved the status forward."""

    record: DeliveryRecord
    changed: bool
    suppressed: bool = False
    """The contact was suppressed as undeliverable by this receipt."""


async def take_receipt(
    receipt: Receipt,
    *,
    deliveries: Deliveries,
    consent: Consent,
    client: Client | None,
    undeliverable_codes: Collection[str],
) -> Taken:
    """Record `receipt` and act on it (see the module's docstring).

    Raises:
        UnknownMessage: no message of this service has that id (or gateway id).
    """
    message_id = receipt.message_id
    if message_id is None and receipt.provider_id is not None:
        found = await asyncio.to_thread(deliveries.by_provider_id, receipt.provider_id)
        message_id = found.message_id if found is not None else None
    if message_id is None:
        raise UnknownMessage(receipt.provider_id or "")
    record, changed = await asyncio.to_thread(
        deliveries.report,
        message_id,
        receipt.status,
        error_code=receipt.error_code,
        provider_id=receipt.provider_id,
    )
    if record is None:
        raise UnknownMessage(message_id)
    if changed:
        DELIVERIES.labels(record.channel, record.status.value).inc()
    elif not (record.status.final and receipt.status == record.status):  # only a final receipt's retry goes on
        return Taken(record, changed=False)
    suppressed = False
    code = record.error_code
    if record.status.final and code is not None and code in undeliverable_codes and record.contact:
        try:
            _, suppressed = await asyncio.to_thread(
                consent.suppress,
                record.contact,
                reason=f"{UNDELIVERABLE} {code}",
                campaign_id=record.campaign_id,
                workflow_id=record.workflow_id,
            )
        except InvalidContact:  # not a phone or an address: nothing to suppress
            log.warning("message %s: undeliverable (%s) to %r", record.message_id, code, redact(record.contact))
        else:
            log.info("message %s: %s is undeliverable (%s): suppressed", message_id, redact(record.contact), code)
    if client is not None:
        await _tell_flow(client, record)
    return Taken(record, changed=changed, suppressed=suppressed)


async def _tell_flow(client: Client, record: DeliveryRecord) -> None:
    """Signal `delivery-status` to the flow run that sent the message; an ended flow is logged.

    Raises:
        RPCError: Temporal did not take the signal (unavailable, a timeout): the route answers 503 or 502.
    """
    status = DeliveryStatus(
        message_id=record.message_id,
        status=record.status,
        error_code=record.error_code,
        channel=record.channel,
        at=record.updated_at or datetime.now(UTC),
    )
    handle = client.get_workflow_handle(record.workflow_id, run_id=record.run_id)
    try:
        await handle.signal(DELIVERY_STATUS_SIGNAL, status)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        # the flow has ended (or its history was deleted), which is no fault of the receipt's
        log.info("delivery-status of %s not signalled to %s: %s", record.message_id, record.workflow_id, exc.message)
