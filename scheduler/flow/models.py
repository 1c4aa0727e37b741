"""Inputs and outputs of the flow workflow and its activities (one object each, so fields can be added)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scheduler.audience import Window
from scheduler.campaign import Campaign
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.nodes.registry import EventType


class FlowInput(BaseModel):
    """What an `AbandonedCartWorkflow` is started with: it runs exactly this definition."""

    definition: WorkflowDefinition
    campaign_id: str = "abandoned-cart"
    campaign_name: str = ""
    """The campaign's `name`, for templates (`campaign.name`)."""
    owner: str = ""
    """Who `notify_creator` tells."""
    customer: dict[str, Any] = Field(default_factory=dict)
    cart: dict[str, Any] = Field(default_factory=dict)


class Reply(BaseModel):
    """Payload of the `client-answered` signal; every field optional."""

    model_config = ConfigDict(extra="ignore")

    reply_id: str | None = None
    text: str | None = None
    channel: str | None = None
    received_at: datetime | None = None


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


class StepRecord(BaseModel):
    """One executed step, as kept in the memo `steps`."""

    step: str
    node: str
    event: EventType
    at: datetime


class FlowStatus(BaseModel):
    """Answer of the `status` query (and the workflow's result)."""

    current_step: str
    path: list[str]
    replies: int
    definition_version: str
    outcome: str | None = None
    """`completed`, `converted` (ended by a `cart-converted` signal, see `exit_on`), `opted_out` (a `wait_answer`
    got an opt-out reply such as STOP) or `failed`; None while running."""
    converted: bool = False
    """A `cart-converted` signal was received (with or without `exit_on`)."""


class ActivityInput(BaseModel):
    """What a side-effecting step's activity gets: the flow it belongs to and the step's params."""

    workflow_id: str
    campaign_id: str
    campaign_name: str = ""
    owner: str = ""
    step: str
    customer: dict[str, Any] = Field(default_factory=dict)
    cart: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    path: list[str] = Field(default_factory=list)
    """Steps executed before this one."""
    previous_node: str = ""
    previous_event: str = ""
    """What the previous step gave (empty for the first step): with `reply`, how the flow got here."""
    reply: str | None = None
    """Text of the latest reply the flow received (None: no reply yet)."""


class ActivityOutcome(BaseModel):
    event: EventType = EventType.SATISFIED
    detail: str = ""


class CampaignRunInput(BaseModel):
    """What a campaign's schedule starts `CampaignRunWorkflow` with: the campaign as applied."""

    campaign: Campaign
    progress: CampaignRunResult | None = None
    """Set by continue-as-new: what the run did so far (and its window)."""
    cursor: str | None = None
    """Set by continue-as-new: where in the audience to go on."""


class RunCounts(BaseModel):
    """What starting flows for a campaign did: a whole run, or one page of its audience."""

    flows: list[str] = Field(default_factory=list)
    """Workflow ids of the flows it started (the first `FLOWS_KEPT`; the counts cover them all)."""
    started: int = 0
    skipped_duplicate: int = 0
    """Carts whose flow of this campaign was already running."""
    skipped_invalid: int = 0
    """Audience rows that could not become a flow (no cart id, bad contact)."""
    failed: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)
    """Why rows were skipped, with how many (reasons never contain a contact)."""

    def plus(self, other: RunCounts, *, keep: int) -> dict[str, Any]:
        """The sums of both, as fields to `model_copy` into either kind (ids capped at `keep`)."""
        return {
            "flows": (self.flows + other.flows)[:keep],
            "started": self.started + other.started,
            "skipped_duplicate": self.skipped_duplicate + other.skipped_duplicate,
            "skipped_invalid": self.skipped_invalid + other.skipped_invalid,
            "failed": self.failed + other.failed,
            "reasons": dict(Counter(self.reasons) + Counter(other.reasons)),
        }


class CampaignRunResult(RunCounts):
    """What one campaign run did (also its memo, so `GET /schedules` reads it from one list call)."""

    window: Window | None = None
    """The time span the run's audience covered (None without an audience)."""


CampaignRunInput.model_rebuild()
