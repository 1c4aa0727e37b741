"""Inputs and outputs of the workflows (a flow, a campaign run) and their activities (one object each, so
fields can be added)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.durations import Duration
from scheduler.flow.nodes.registry import EventType

PAGE_SIZE = 500
"""Audience rows a run reads per activity call: small enough to heartbeat often."""


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


class _Carried(BaseModel):
    """A model that keeps the keys it does not declare, so they travel on untouched."""

    model_config = ConfigDict(extra="allow")


class RunCampaignInfo(_Carried):
    id: str
    name: str = ""
    owner: str = ""


class RunAudience(_Carried):
    lookback: Duration


class RunCampaign(_Carried):
    """A campaign as the workflows read it: the fields they use, and the rest of the file carried along.

    A schedule's input holds the whole campaign (`scheduler.campaign.Campaign`, a subclass); inside
    the workflow sandbox only these fields are read, and the others (the audience's source, pacing)
    travel on unread to the activity that reads the audience.
    """

    campaign: RunCampaignInfo
    workflow: WorkflowDefinition
    audience: RunAudience | None = None

    @property
    def id(self) -> str:
        return self.campaign.id


def flow_input(
    campaign: RunCampaign, *, customer: dict[str, Any] | None = None, cart: dict[str, Any] | None = None
) -> FlowInput:
    return FlowInput(
        definition=campaign.workflow,
        campaign_id=campaign.id,
        campaign_name=campaign.campaign.name,
        owner=campaign.campaign.owner,
        customer=customer or {},
        cart=cart or {},
    )


class Window(BaseModel):
    """The time span one run covers, `[since, until)` in UTC: consecutive runs neither overlap nor leave gaps."""

    model_config = ConfigDict(frozen=True)

    since: AwareDatetime
    until: AwareDatetime

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.since > self.until:
            raise ValueError("since must not be after until")
        return self


def next_window(audience: RunAudience, *, now: datetime, previous_until: datetime | None = None) -> Window:
    """The window of a run at `now`: from where the previous successful run stopped, else `lookback` back.

    `now` should be the workflow's time (`workflow.now()`) so a replay computes the same window.
    """
    since = previous_until if previous_until is not None else now - audience.lookback
    return Window(since=min(since, now), until=now)


class CampaignRunInput(BaseModel):
    """What a campaign's schedule starts `CampaignRunWorkflow` with: the campaign as applied."""

    campaign: SerializeAsAny[RunCampaign]
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
    skipped_suppressed: int = 0
    """Carts whose customer has a suppressed (opted-out) contact."""
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
            "skipped_suppressed": self.skipped_suppressed + other.skipped_suppressed,
            "failed": self.failed + other.failed,
            "reasons": dict(Counter(self.reasons) + Counter(other.reasons)),
        }


class CampaignRunResult(RunCounts):
    """What one campaign run did (also its memo, so `GET /schedules` reads it from one list call)."""

    window: Window | None = None
    """The time span the run's audience covered (None without an audience)."""


class PageInput(BaseModel):
    """What the activity that reads one page of a run's audience and starts its flows gets."""

    campaign: SerializeAsAny[RunCampaign]
    window: Window
    cursor: str | None = None
    limit: int = PAGE_SIZE


class PageResult(RunCounts):
    """What one page of the audience did, and where the next page starts."""

    next_cursor: str | None = None


CampaignRunInput.model_rebuild()
