"""Inputs and outputs of the workflows (a flow, a campaign run, a keyword's answer) and their activities (one
object each, so fields can be added)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.durations import Duration
from scheduler.flow.nodes.registry import EventType

FLOW_REVISION = 3
"""`FlowInput.revision` of the flows started now."""
PAGE_SIZE = 500
"""Audience rows a run reads per activity call: small enough to heartbeat often."""


class DeliveryTerms(BaseModel):
    """When customer messages may go: a campaign's `[delivery]` (`RunDelivery`), and each of its flows' policy."""

    quiet_hours: str | None = None
    """`HH:MM-HH:MM` in the customer's local time, or "" for none; None: the service's `compliance.quiet_hours`
    (which a flow without it asks its worker for once, a local activity, before its first message)."""
    max_delay: Duration = timedelta(hours=12)
    """A message that would be held longer than this (quiet hours, a cap's `delay`) is not sent."""
    frequency_capped: bool = True
    """False (transactional messages): sends neither count toward `compliance.frequency_caps` nor are capped."""
    on_cap: Literal["skip", "delay"] = "skip"
    """A capped message: not sent (`skip`), or held until the cap frees, within `max_delay` (`delay`)."""


class DeliveryPolicy(DeliveryTerms):
    """A flow's: its campaign's terms over the service's `[compliance]`, and where its customer is."""

    timezone: str = "UTC"
    """The campaign's schedule timezone: the customer's, when neither they nor their phone tell."""


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
    delivery: DeliveryPolicy | None = None
    """None: a flow started before send policies existed, which keeps running without them."""
    run_id: str | None = None
    """The campaign run that started the flow (its workflow id), which counts the messages it held or skipped."""
    revision: int = 0
    """What every flow of this engine does, so the flow need not ask `workflow.patched` (each check records a marker
    and an upsert). From 1: it ends with the `Outcome` attribute (0, an input from before, whose history may lack
    it: the flow asks). From 2: a webhook step that cannot take long writes no state before it
    (`Webhook.writes_state_first`). From 3 (`FLOW_REVISION`, what `flow_input` sets): it writes `Messaged`."""


class StepRecord(BaseModel):
    """One executed step, as kept in the memo `steps` (fields that are None are left out)."""

    step: str
    node: str
    event: EventType
    at: datetime
    reason: str | None = None
    """Why a message was not sent: by policy (`quiet_hours`, `frequency_cap`), or its campaign was `stopped`."""
    held_until: datetime | None = None
    """The last instant a message was held until (quiet hours, a cap's `delay`)."""
    zone: str | None = None
    """The customer's time zones for quiet hours and the rule that gave them, e.g. `phone: America/New_York`."""
    variant: str | None = None
    """The variant a `split` step put the flow in."""
    intent: str | None = None
    """The intent a `wait_answer` step with intents took (`scheduler.flow.intents`)."""
    reply: str | None = None
    """In a `wait_answer` step with intents whose reply matched none: the reply's first `REPLY_SHOWN` characters,
    so the owner sees what customers write (nowhere else: search attributes never hold a reply's text)."""
    delivery: dict[str, Any] | None = None
    """What became of the step's message, once a receipt said (`delivery-status`): `{"status", "error_code"?,
    "channel"?, "at"?}`, the furthest state reported."""
    channel: str | None = None
    """A `send_message` step with a channel list: the channel its message went through."""
    tried: list[str] | None = None
    """A `send_message` step with a channel list: the channels it tried, in order (the last one is `channel` when
    the message went)."""


class FlowOutcome(StrEnum):
    """How a flow ended: the memo `outcome`, the search attribute `Outcome`, `FlowStatus.outcome`, the stats."""

    COMPLETED = "completed"
    CONVERTED = "converted"
    """Ended by a `cart-converted` signal (see `exit_on`)."""
    FAILED = "failed"
    OPTED_OUT = "opted_out"
    """The customer opted out (a STOP, an unsubscribe link, a suppressed contact)."""
    STOPPED = "stopped"
    """Its campaign was stopped."""
    HELD_OUT = "held_out"
    """A `split` step put it in a variant without `go_to` (a holdout): nothing was sent to the customer."""


class FlowStatus(BaseModel):
    """Answer of the `status` query (and the workflow's result)."""

    current_step: str
    path: list[str]
    replies: int
    definition_version: str
    outcome: FlowOutcome | None = None
    """None while running."""
    converted: bool = False
    """A `cart-converted` signal was received (with or without `exit_on`)."""
    waiting_until: datetime | None = None
    """A message of the current step is held until then (quiet hours, a frequency cap): UTC."""
    variants: dict[str, str] = Field(default_factory=dict)
    """Experiment → the variant its `split` step put the flow in."""


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
    frequency_capped: bool = True
    """Whether this message counts toward, and is held to, `compliance.frequency_caps`."""
    flow_started_at: datetime | None = None
    """When the flow started: a campaign stopped since then lets it send nothing (`scheduler.campaigns.stop`)."""
    channel_attempt: int = Field(0, exclude_if=lambda value: value == 0)
    """A `send_message` step with a channel list: the position of this attempt's channel in it. From 1 the message
    gets an idempotency key of its own (`message_step`), so its receipts and its cap count are not the first's."""


def message_step(inp: ActivityInput) -> str:
    """What a message's idempotency key is made of besides its flow run: the step, and for a fallback channel
    (`channel_attempt` ≥ 1) its position too; the first channel's key is the one a single channel's always was."""
    return inp.step if inp.channel_attempt == 0 else f"{inp.step}#{inp.channel_attempt}"


class MessageEvent(BaseModel):
    """A customer message a flow held or did not send, for the worker's metrics."""

    channel: str
    """The step's `params.channel` ("": the service's default)."""
    result: str
    """`held`, `skipped_quiet_hours` or `skipped_frequency_cap`."""
    run_id: str | None = None
    """The campaign run that started the flow, if one did."""


class KeywordAnswer(BaseModel):
    """What a `KeywordAnswerWorkflow` sends: a confirmation or the HELP text, to each of the sender's contacts."""

    contacts: list[str]
    text: str


class AnswerMessage(BaseModel):
    """One contact's answer: what the activity that sends it gets."""

    to: str
    text: str


class _Carried(BaseModel):
    """A model that keeps the keys it does not declare, so they travel on untouched."""

    model_config = ConfigDict(extra="allow")


class RunCampaignInfo(_Carried):
    id: str
    name: str = ""
    owner: str = ""


class RunAudience(_Carried):
    lookback: Duration


class RunDelivery(_Carried, DeliveryTerms):
    """A campaign's `[delivery]`, as `flow_input` turns it into each flow's `DeliveryPolicy`."""


class RunSchedule(_Carried):
    timezone: str = "UTC"


class RunCampaign(_Carried):
    """A campaign as the workflows read it: the fields they use, and the rest of the file carried along.

    A schedule's input holds the whole campaign (`scheduler.campaigns.campaign.Campaign`, a subclass); inside
    the workflow sandbox only these fields are read, and the others (the audience's source, pacing)
    travel on unread to the activity that reads the audience.
    """

    campaign: RunCampaignInfo
    workflow: WorkflowDefinition
    audience: RunAudience | None = None
    schedule: RunSchedule | None = None
    delivery: RunDelivery | None = None

    @property
    def id(self) -> str:
        return self.campaign.id


def flow_input(
    campaign: RunCampaign,
    *,
    customer: dict[str, Any] | None = None,
    cart: dict[str, Any] | None = None,
    quiet_hours: str | None = None,
    run_id: str | None = None,
) -> FlowInput:
    """A flow of `campaign`; `quiet_hours`: the service's, for a campaign that sets none (None: the flow asks);
    `run_id`: the campaign run starting it."""
    delivery = campaign.delivery or RunDelivery()
    return FlowInput(
        definition=campaign.workflow,
        campaign_id=campaign.id,
        campaign_name=campaign.campaign.name,
        owner=campaign.campaign.owner,
        customer=customer or {},
        cart=cart or {},
        delivery=DeliveryPolicy(
            quiet_hours=quiet_hours if delivery.quiet_hours is None else delivery.quiet_hours,
            timezone=campaign.schedule.timezone if campaign.schedule else "UTC",
            max_delay=delivery.max_delay,
            frequency_capped=delivery.frequency_capped,
            on_cap=delivery.on_cap,
        ),
        run_id=run_id,
        revision=FLOW_REVISION,
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


class StartCounts(BaseModel):
    """How many carts starting flows for a campaign turned into a flow, and why the others did not."""

    started: int = 0
    skipped_duplicate: int = 0
    """Carts whose flow of this campaign was already running."""
    skipped_invalid: int = 0
    """Audience rows that could not become a flow (no cart id, bad contact)."""
    skipped_suppressed: int = 0
    """Carts whose customer has a suppressed (opted-out) contact."""
    failed: int = 0


class RunCounts(StartCounts):
    """What starting flows for a campaign did: a whole run, or one page of its audience."""

    flows: list[str] = Field(default_factory=list)
    """Workflow ids of the flows it started (the first `FLOWS_KEPT`; the counts cover them all)."""
    reasons: dict[str, int] = Field(default_factory=dict)
    """Why rows were skipped, with how many (reasons never contain a contact)."""

    def plus(self, other: RunCounts, *, keep: int) -> dict[str, Any]:
        """The sums of both, as fields to `model_copy` into either kind (ids capped at `keep`)."""
        sums = {name: getattr(self, name) + getattr(other, name) for name in StartCounts.model_fields}
        return {
            **sums,
            "flows": (self.flows + other.flows)[:keep],
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
