"""The signals a flow handles: their names (part of the contract: renaming one strands running flows) and payloads."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict

CLIENT_ANSWERED_SIGNAL: Final = "client-answered"
"""The customer replied (`POST /webhooks/replies`, `/webhooks/twilio`, `/send-signal`): feeds `wait_answer`."""
CART_CONVERTED_SIGNAL: Final = "cart-converted"
"""The customer bought (`POST /webhooks/conversions`): ends flows whose definition has it in `exit_on`."""
DELIVERY_STATUS_SIGNAL: Final = "delivery-status"
"""A gateway reported what became of a message the flow sent (`/webhooks/twilio/status`, `/webhooks/delivery`)."""
SIGNALS = frozenset({CLIENT_ANSWERED_SIGNAL, CART_CONVERTED_SIGNAL})
"""Signal names the API accepts for `/send-signal`."""
EXIT_SIGNALS = (CART_CONVERTED_SIGNAL,)
"""Signals a definition may end its flows on (`exit_on`)."""
OPT_OUT_EXIT_PATCH = "opt-out-exit"
"""A worker without this code took an opt-out reply (`Reply.opt_out`) or a suppressed send
(`ActivityResult.suppressed`) for an ordinary one. Asked (`workflow.patched`) only when one comes,
so it costs other flows nothing."""


class Reply(BaseModel):
    """Payload of the `client-answered` signal; every field optional."""

    model_config = ConfigDict(extra="ignore")

    reply_id: str | None = None
    text: str | None = None
    channel: str | None = None
    received_at: datetime | None = None
    opt_out: bool = False
    """The reply is an opt-out keyword of the service (`[compliance] opt_out_keywords`), already on the
    suppression list: the flow ends at once, `opted_out`, unless a `wait_answer` is waiting for it or comes
    right after the step in progress (then that wait takes its `not_satisfied` edge, `engine.FlowRun.add_reply`)."""


class Conversion(BaseModel):
    """Payload of the `cart-converted` signal (the customer bought); every field optional.

    A flow keeps the first one it gets and ignores any later one.
    """

    model_config = ConfigDict(extra="ignore")

    conversion_id: str | None = None
    """The shop's id of the purchase (or of the webhook message): how a redelivery is recognised."""
    cart_id: str | None = None
    customer_id: str | None = None
    received_at: datetime | None = None


class DeliveryState(StrEnum):
    """What became of a message, as its gateway reports it (Twilio's statuses map onto these)."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        """How far the message got: a status never replaces one of a higher rank (receipts come out of order and
        repeated), so nothing goes back from `delivered`."""
        return _RANK[self]

    @property
    def final(self) -> bool:
        """No later receipt will change it."""
        return self.rank >= _RANK[DeliveryState.UNDELIVERED]


_RANK = {
    DeliveryState.QUEUED: 0,
    DeliveryState.SENT: 1,
    DeliveryState.UNDELIVERED: 2,
    DeliveryState.FAILED: 2,
    DeliveryState.DELIVERED: 3,
}


class DeliveryStatus(BaseModel):
    """Payload of the `delivery-status` signal: the furthest state the store holds for one of the flow's messages."""

    model_config = ConfigDict(extra="ignore")

    message_id: str
    """The message's idempotency key (`ActivityResult.message_id`)."""
    status: DeliveryState
    error_code: str | None = None
    """The gateway's code for a failure (Twilio's `ErrorCode`, e.g. `30006`)."""
    channel: str | None = None
    at: datetime | None = None
