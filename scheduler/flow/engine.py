"""The interpreter: walks a definition step by step inside `AbandonedCartWorkflow`.

Workflow-side code only: deterministic (workflow.now/sleep/wait_condition), side effects go
through activities called by name.

Ending early: the steps run in a task that races a wait for a signal that ends the flow: a
`cart-converted` signal when the definition has `exit_on = ["cart-converted"]` (outcome `converted`),
or an opt-out reply (`Reply.opt_out`) that no `wait_answer` is waiting for (outcome `opted_out`).
An opt-out that comes while the step right before a `wait_answer` runs is kept for that wait instead, as any
reply is: the path must not depend on whether it came a moment before the wait or in it (`add_reply`).
The signal cancels the task wherever it is (a timer, an activity in flight: Temporal turns the
cancellation into cancel commands), and no later step starts. The race itself issues no command, so
histories of flows that never got such a signal replay unchanged; where one comes, the
`opt-out-exit` patch keeps flows started by older workers on their old course.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from scheduler.errors import DefinitionError
from scheduler.flow.attributes import (
    CAMPAIGN_ID,
    CART_ID,
    CLIENT_ANSWERED,
    CLIENT_ANSWERED_AT,
    CURRENT_STEP,
    CUSTOMER_CONTACT,
    CUSTOMER_ID,
    DEFINITION_VERSION,
    MAX_REPLY_IDS,
    MESSAGED,
    NO_INTENT,
    OUTCOME,
    REPLY_IDS,
    REPLY_INTENT,
    VARIANT,
    conversion_key,
    reply_key,
)
from scheduler.flow.contacts import customer_contacts
from scheduler.flow.definition import WorkflowDefinition, validate_definition
from scheduler.flow.intents import REPLY_SHOWN, match_intent
from scheduler.flow.models import (
    ActivityInput,
    DeliveryPolicy,
    FlowInput,
    FlowOutcome,
    FlowStatus,
    MessageEvent,
    StepRecord,
)
from scheduler.flow.nodes import ActivityResult, EventType, NodeParams, get_node
from scheduler.flow.nodes.send_message import CONTACT_FIELDS, RECEIPT_CHANNELS, SendMessageParams
from scheduler.flow.nodes.split import assign_variant, assignment_unit
from scheduler.flow.nodes.wait_answer import WaitAnswer
from scheduler.flow.quiet_hours import allowed_at, customer_zones, parse_quiet_hours
from scheduler.flow.signals import (
    CART_CONVERTED_SIGNAL,
    OPT_OUT_EXIT_PATCH,
    Conversion,
    DeliveryState,
    DeliveryStatus,
    Reply,
)

ACTIVITY_TIMEOUT = timedelta(seconds=30)
REPLY_IDS_PATCH = "reply-ids-attribute"
"""Flows started before `ReplyIds` existed replay without the upsert (their histories have none)."""
CONVERSION_IDS_PATCH = "conversion-ids-attribute"
"""A `cart-converted` signal sent to a flow on a worker without this code left no upsert in its history."""
OPTED_OUT_PATCH = "opted-out-outcome"
"""Flows that got an opt-out before it had an outcome of its own were marked answered and ended `completed`."""
OUTCOME_ATTRIBUTE_PATCH = "outcome-attribute"
"""Flows that ended before the `Outcome` search attribute existed did not upsert it. Asked only of inputs older
than `FlowInput.revision` 1: the check costs every flow a marker and a `TemporalChangeVersion` upsert."""
OPT_OUT_BEFORE_WAIT_PATCH = "opt-out-before-wait"
"""An opt-out during the step before a `wait_answer` ended the flow at once, skipping the wait's `not_satisfied`."""
STOPPED_OUTCOME_PATCH = "stopped-outcome"
"""Flows cancelled before the `stopped` outcome existed ended with no outcome (no memo or attribute upsert)."""
DELIVERY_MEMO_PATCH = "delivery-memo"
"""A `delivery-status` signal for a step whose memo entry was written already rewrites the memo `steps`. Asked only
then: a worker without the handler left the signal without that upsert in its history."""
MAX_EARLY_RECEIPTS = 16
"""Receipts kept for messages the flow does not know yet (one that came before its activity's result)."""
MIN_HOLD = timedelta(seconds=1)
"""The shortest hold: a cap that frees "now" by the worker's clock may not yet have by the server's."""
MAX_HOLDS = 10
"""Holds one message may go through (quiet hours, then a cap, …) before it is given up as capped."""
COUNT_MESSAGE = "count_message"
"""The local activity that counts a customer message the flow held or did not send (`_count_message`)."""
DELIVERY_DEFAULTS = "delivery_defaults"
"""The local activity that tells a flow the service's `compliance.quiet_hours` (see `FlowRun._quiet_hours`).

The API and the fan-out pass the window at start; this second way stays for a schedule's one-flow run (a
campaign without an audience), whose stored input would keep a stale copy after `compliance.quiet_hours` changes."""


def start_attributes(
    flow: FlowInput, *, version: str | None = None, contacts: list[str] | None = None
) -> TypedSearchAttributes:
    """Search attributes a flow starts with, so it is findable before its first step ends.

    `version` and `contacts` (the customer's normalized contacts), when the caller has them already,
    spare hashing the definition and normalizing the contacts again: fan-out starts thousands of flows.
    """
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(CAMPAIGN_ID, flow.campaign_id),
        SearchAttributePair(DEFINITION_VERSION, version or flow.definition.version),
        SearchAttributePair(CURRENT_STEP, flow.definition.start_step),
    ]
    for key, value in ((CART_ID, flow.cart.get("id")), (CUSTOMER_ID, flow.customer.get("id"))):
        if value is not None:
            pairs.append(SearchAttributePair(key, str(value)))
    # phonenumbers imports a region's metadata on first use; inside the sandbox (CampaignRunWorkflow)
    # that import must reach the real module, or the metadata lands in a sandbox copy (and fails there).
    if contacts is None:
        with workflow.unsafe.imports_passed_through():
            contacts = customer_contacts(flow.customer)
    if contacts:
        pairs.append(SearchAttributePair(CUSTOMER_CONTACT, contacts))
    return TypedSearchAttributes(pairs)


class FlowRun:
    """The state of one flow: where it is, what it did, the replies it got."""

    def __init__(self, flow: FlowInput) -> None:
        self.input = flow
        self.definition = flow.definition
        self.version = flow.definition.version
        self.current_step = flow.definition.start_step
        self.records: list[StepRecord] = []
        self.outcome: FlowOutcome | None = None
        self._replies: list[Reply] = []
        self._reply_ids: set[str] = set()
        self._reply_keys: list[str] = []
        """The `ReplyIds` search attribute as last written."""
        self._consumed = 0
        self._answered_at: datetime | None = None
        self.opted_out = False
        """A `wait_answer` got an opt-out reply: the flow ends `opted_out`, and it does not count as answered."""
        self.suppressed = False
        """A message step found the customer's contact suppressed: no later step runs, the flow ends `opted_out`."""
        self.stopped = False
        """An activity found the campaign stopped since the flow started: no later step runs; ends `stopped`."""
        self.opt_out_exit = False
        """An opt-out reply came while no `wait_answer` waited for it: the flow ends at once, `opted_out`."""
        self._opt_out_for_wait = False
        """An opt-out reply came while a step that may lead to a `wait_answer` ran: kept for that wait (`add_reply`)."""
        self._waiting_for_replies = False
        self._written_records = 0
        self._written_step = flow.definition.start_step  # set at start (start_attributes)
        self.messaged = False
        """A customer message of the flow went (a `send_message` delivered it)."""
        self._written_messaged = False
        self.conversion: Conversion | None = None
        """The first `cart-converted` signal's payload (later ones are ignored)."""
        self._exit_on_conversion = CART_CONVERTED_SIGNAL in flow.definition.exit_on
        self.waiting_until: datetime | None = None
        """A message of the current step is held until then."""
        self._notes: dict[str, Any] = {}
        """What the current step's memo entry records besides its event (`StepRecord`'s optional fields)."""
        self._service_quiet_hours: str | None = None
        """The worker's `compliance.quiet_hours`, once asked (`_quiet_hours`)."""
        self.variants: dict[str, str] = {}
        """Experiment → the variant its `split` step put the flow in."""
        self.held_out = False
        """A `split` put the flow in a holdout (a variant without `go_to`): it ends there, `held_out`."""
        self._variant: str | None = None
        """The `Variant` search attribute's value: the latest split's `experiment:variant`."""
        self._written_variant: str | None = None
        self._intent: str | None = None
        """The `ReplyIntent` search attribute's value: the intent the latest `wait_answer` with intents took."""
        self._written_intent: str | None = None
        self._deliveries: dict[str, DeliveryStatus] = {}
        """Message id → the furthest state its receipts reported (`add_delivery`)."""
        self._message_steps: dict[str, str] = {}
        """Message id → the step that sent it: the flow's messages, whose receipts count."""
        self._step_messages: dict[str, str] = {}
        """Step → the id of its message that went last: the one its memo entry's `delivery` tells of."""
        self._early: dict[str, DeliveryStatus] = {}
        """Receipts for ids the flow does not know yet (at most `MAX_EARLY_RECEIPTS`): a receipt may come in the
        workflow task that also brings its message's activity result, and be handled first."""
        self._channel_attempt = 0
        """The position of the channel being tried in the current step's channel list (`ActivityInput`)."""
        self.variant_overrides: dict[str, str] = {}
        """Split step → the variant to take instead of the assigned one: set only by `scheduler simulate
        --all-paths` (`scheduler.flow.simulation`), which walks every variant."""

    # Signals and queries

    def add_reply(self, reply: Reply) -> None:
        """Keep a reply for the current or next wait; a repeated `reply_id` is ignored.

        An opt-out ends the flow at once, unless a `wait_answer` waits for it or comes next: during the step
        right before one it counts for that wait, as any reply does, so the wait's `not_satisfied` edge runs
        whether it came a moment before the wait or in it. Which edge that step takes is known when it ends
        (`_run_step`): if not to the wait, the flow ends then.

        A new id is written to `ReplyIds` at once (not with the next state write, which may be days
        away), so the API recognises a redelivery, also after the flow has ended.
        """
        if reply.reply_id is not None:
            if reply.reply_id in self._reply_ids:
                return
            self._reply_ids.add(reply.reply_id)
            if workflow.patched(REPLY_IDS_PATCH):
                self._record_key(reply_key(reply.reply_id))
        if reply.received_at is None:
            reply = reply.model_copy(update={"received_at": workflow.now()})
        self._replies.append(reply)
        if reply.opt_out and not self._waiting_for_replies and workflow.patched(OPT_OUT_EXIT_PATCH):
            if self._may_lead_to_wait() and workflow.patched(OPT_OUT_BEFORE_WAIT_PATCH):
                self._opt_out_for_wait = True
            else:
                self.opt_out_exit = True

    def _may_lead_to_wait(self) -> bool:
        """Whether an edge of the current step leads to a `wait_answer` (the definition is not validated yet
        when a signal comes before the first step); a split's: any variant's."""
        if (step := self.definition.steps.get(self.current_step)) is None or (node := get_node(step.node)) is None:
            return False
        targets = [step.next_step(event) for event in node.events] + [v.go_to for v in step.variants.values()]
        targets += [i.go_to for i in step.intents.values()]
        return any(_is_wait(self.definition, target) for target in targets)

    def add_conversion(self, conversion: Conversion) -> None:
        """Record that the customer bought; only the first conversion counts.

        Its id is written to `ReplyIds` (as a `conversion_key`) at once, so the API answers a
        redelivered conversion as the first, also after the flow ended. With `exit_on` the flow
        then ends (see `run`); without, nothing else changes.
        """
        if self.conversion is not None:
            return
        if conversion.received_at is None:
            conversion = conversion.model_copy(update={"received_at": workflow.now()})
        self.conversion = conversion
        if conversion.conversion_id is not None and workflow.patched(CONVERSION_IDS_PATCH):
            self._record_key(conversion_key(conversion.conversion_id))

    def add_delivery(self, status: DeliveryStatus) -> None:
        """Keep the furthest state a receipt reports for one of the flow's messages; never blocks the flow.

        A status no further than the one known (a repeat, or `sent` after `delivered`) changes nothing; a receipt
        for an id the flow never sent is ignored (a few are kept in case their message's result is on its way).
        Once the step that sent the message has its memo entry written, a change rewrites the memo `steps`: one
        upsert per receipt that changes something; before that, the entry takes it when it is written.
        """
        message_id = status.message_id
        step = self._message_steps.get(message_id)
        if step is None:
            known = self._early.get(message_id)
            if known is None and len(self._early) >= MAX_EARLY_RECEIPTS:
                return
            if known is None or status.status.rank > known.status.rank:
                self._early[message_id] = status
            return
        known = self._deliveries.get(message_id)
        if known is not None and status.status.rank <= known.status.rank:
            return
        self._deliveries[message_id] = status
        if self._step_messages.get(step) != message_id:
            return  # an earlier channel's message of a step that fell back: its entry tells of the later one
        for index, record in enumerate(self.records):
            if record.step == step:
                record.delivery = _delivery_entry(status)
                if index < self._written_records and workflow.patched(DELIVERY_MEMO_PATCH):
                    workflow.upsert_memo({"steps": self._steps_memo()})
                    self._written_records = len(self.records)
                return

    def _message_went(self, message_id: str) -> None:
        """Note a message of the current step: its receipts now count (and any that came before its result)."""
        self._message_steps[message_id] = self.current_step
        self._step_messages[self.current_step] = message_id
        if (early := self._early.pop(message_id, None)) is not None:
            self.add_delivery(early)

    def _record_key(self, key: str) -> None:
        """Add `key` to `ReplyIds` now (keeping the newest `MAX_REPLY_IDS`): the API looks there for repeats."""
        self._reply_keys = [*self._reply_keys, key][-MAX_REPLY_IDS:]
        workflow.upsert_search_attributes([REPLY_IDS.value_set(self._reply_keys)])

    def status(self) -> FlowStatus:
        return FlowStatus(
            current_step=self.current_step,
            path=[r.step for r in self.records],
            replies=len(self._replies),
            definition_version=self.version,
            outcome=self.outcome,
            converted=self.conversion is not None,
            waiting_until=self.waiting_until,
            variants=dict(self.variants),
        )

    # What nodes use (the `nodes.Flow` protocol)

    async def wait_for_replies(self, timeout: timedelta) -> list[Reply] | None:
        """Replies received since the previous wait ended, or None if none came within `timeout`."""
        self._waiting_for_replies = True
        try:
            await workflow.wait_condition(
                lambda: len(self._replies) > self._consumed,
                timeout=timeout,
                timeout_summary=f"{self.current_step}: wait_answer timeout",
            )
        except TimeoutError:
            return None
        finally:
            self._waiting_for_replies = False
        new = self._replies[self._consumed :]
        self._consumed = len(self._replies)
        return new

    def mark_answered(self) -> None:
        """Set `ClientAnswered`/`ClientAnsweredAt`, upserted with the step's other attributes."""
        self._answered_at = workflow.now()

    def choose_variant(self, experiment: str | None) -> None:
        """Assign the flow to a variant of the current `split` step (`assign_variant`: sticky, no randomness); the
        step's memo entry, `variants` and the `Variant` attribute (written with the state) record it."""
        name = experiment or self.current_step
        overridden = self.variant_overrides.get(self.current_step)
        unit = assignment_unit(self.input.customer, self.input.cart, workflow.info().workflow_id)
        weights = self.definition.steps[self.current_step].weights()
        variant = overridden or assign_variant(self.input.campaign_id, name, unit, weights)
        self.variants[name] = self._notes["variant"] = variant
        self._variant = f"{name}:{variant}"

    def take_intent(self, replies: list[Reply]) -> None:
        """Of the current `wait_answer` step's intents (if it has any), the one the first reply to match one asks
        for; the step's memo entry records it, or the first reply's text when none matched (`StepRecord.reply`)."""
        intents = self.definition.steps[self.current_step].intents
        if not intents:
            return
        phrases = {name: intent.match for name, intent in intents.items()}
        for reply in replies:
            if (name := match_intent(reply.text, phrases)) is not None:
                self._intent = self._notes["intent"] = name
                return
        self._intent = NO_INTENT
        self._notes["reply"] = (replies[0].text or "")[:REPLY_SHOWN]

    def mark_opted_out(self) -> None:
        if workflow.patched(OPTED_OUT_PATCH):
            self.opted_out = True
        else:
            self.mark_answered()

    async def call_activity(
        self,
        name: str,
        params: NodeParams,
        *,
        timeout: timedelta = ACTIVITY_TIMEOUT,
        retry: RetryPolicy,
        frequency_capped: bool = True,
    ) -> ActivityResult:
        info = workflow.info()
        previous = self.records[-1] if self.records else None
        outcome = await workflow.execute_activity(
            name,
            ActivityInput(
                workflow_id=info.workflow_id,
                campaign_id=self.input.campaign_id,
                campaign_name=self.input.campaign_name,
                owner=self.input.owner,
                step=self.current_step,
                customer=self.input.customer,
                cart=self.input.cart,
                params=params.model_dump(mode="json"),
                path=[r.step for r in self.records],
                previous_node=previous.node if previous else "",
                previous_event=previous.event.value if previous else "",
                reply=(self._replies[-1].text or "") if self._replies else None,
                frequency_capped=frequency_capped,
                flow_started_at=info.start_time,
                channel_attempt=self._channel_attempt,
            ),
            result_type=ActivityResult,
            start_to_close_timeout=timeout,
            retry_policy=retry,
            summary=f"{self.current_step}: {name}",
        )
        if outcome.suppressed and workflow.patched(OPT_OUT_EXIT_PATCH):
            self.opted_out = True
            # Suppressed by the opt-out kept for the next wait: the flow goes on to that wait (`_run_step`).
            self.suppressed = not self._opt_out_for_wait
        if outcome.stopped:
            self.stopped = True
            self._notes["reason"] = "stopped"
        return outcome

    async def send_to_customer(self, name: str, params: NodeParams, *, retry: RetryPolicy) -> EventType:
        """Deliver a customer message under the flow's `DeliveryPolicy` (`_deliver`); with `await_delivery`, wait for
        its receipt; with a channel list, fall back from channel to channel (`_send_through`)."""
        assert isinstance(params, SendMessageParams)  # the only node that messages the customer
        channels, awaited = params.channels(), params.await_delivery
        if channels is not None:
            return await self._send_through(name, params, channels, awaited, retry=retry)
        event, outcome = await self._deliver(name, params, self.input.customer, retry=retry)
        if awaited is not None and outcome is not None and await self._undelivered(outcome, awaited):
            self._notes["reason"] = "undelivered"
            return EventType.NOT_SATISFIED
        return event

    async def _send_through(
        self, name: str, params: NodeParams, channels: tuple[str, ...], awaited: timedelta | None, *, retry: RetryPolicy
    ) -> EventType:
        """Send through the first of `channels` the customer can be reached on, then the next while an attempt fails:
        the activity failed for good (its retries spent, or a final error), the message was reported undelivered
        (with `awaited`), the contact of that channel is suppressed, or a policy kept it from going (quiet hours
        in the zone of that contact, a frequency cap). Ends at the first message that went and was not reported
        undelivered. An opt-out reply ends the trying (the customer said stop, whatever the channel). The memo
        entry records the channels `tried` and the `channel` the message went through.

        When every channel failed, the last one's failure stands: its error fails the step, as with one channel.
        """
        customer = self.input.customer
        reachable = [c for c in channels if _reaches(c, customer)] or [channels[0]]  # none: fails as one would
        tried: list[str] = []
        event = EventType.NOT_SATISFIED
        for attempt, channel in enumerate(reachable):
            last = attempt == len(reachable) - 1
            tried.append(channel)
            self._notes["tried"] = list(tried)
            for note in ("reason", "channel"):  # the previous attempt's
                self._notes.pop(note, None)
            self._channel_attempt = channels.index(channel)
            opted_out = self.opted_out
            try:
                event, outcome = await self._deliver(
                    name, params.model_copy(update={"channel": channel}), _contact_of(customer, channel), retry=retry
                )
            except ActivityError as exc:
                if last or is_cancelled_exception(exc) or _misconfigured(exc):
                    raise
                continue
            finally:
                self._channel_attempt = 0
            if self._opt_out_for_wait or self.opt_out_exit or self.stopped:
                return event
            if outcome is None:  # a policy kept it from going (`reason` says which)
                continue
            if outcome.suppressed:  # this contact is suppressed: the next channel's may not be
                if last or outcome.carrier_opt_out:  # the customer said STOP (to the carrier): as an opt-out reply
                    return event
                self.opted_out, self.suppressed = opted_out, False
                self._notes["reason"] = "suppressed"
                continue
            self._notes["channel"] = outcome.channel or channel
            if awaited is not None and await self._undelivered(outcome, awaited):
                self._notes["reason"] = "undelivered"
                event = EventType.NOT_SATISFIED
                continue
            return event
        return event

    async def _undelivered(self, outcome: ActivityResult, timeout: timedelta) -> bool:
        """Wait up to `timeout` for a final receipt of the message that went (only from channels whose gateways send
        them, `RECEIPT_CHANNELS`): True if it says undelivered or failed. No receipt in time: sent, False.

        An opt-out kept for the next wait ends the waiting at once (False: nothing more goes to the customer, and the
        wait's `not_satisfied` edge runs now, as in `_hold`)."""
        message_id = outcome.message_id
        if message_id is None or outcome.event != EventType.SATISFIED or outcome.channel not in RECEIPT_CHANNELS:
            return False

        def final() -> bool:
            known = self._deliveries.get(message_id)
            return known is not None and known.status.final

        try:
            await workflow.wait_condition(
                lambda: final() or self._opt_out_for_wait,
                timeout=timeout,
                timeout_summary=f"{self.current_step}: await delivery",
            )
        except TimeoutError:
            return False
        return final() and not self._opt_out_for_wait and self._deliveries[message_id].status != DeliveryState.DELIVERED

    async def _deliver(
        self, name: str, params: NodeParams, customer: dict[str, Any], *, retry: RetryPolicy
    ) -> tuple[EventType, ActivityResult | None]:
        """Deliver a customer message under the flow's `DeliveryPolicy`: held through the customer's quiet
        hours and, with `on_cap = "delay"`, until a frequency cap frees (durable timers); not sent when that
        would take longer than `max_delay` (`not_satisfied`, memo `reason`). `customer`: whose zones count.

        The event, and the activity's result when the activity decided (None: a policy held it back).

        A flow started before policies existed has none (`FlowInput.delivery`), so its history never
        reaches the new commands here: the input field versions the change.
        """
        policy = self.input.delivery
        if policy is None:
            outcome = self._sent(await self.call_activity(name, params, retry=retry))
            return outcome.event, outcome
        deadline = workflow.now() + policy.max_delay
        quiet = parse_quiet_hours(await self._quiet_hours(policy))
        if quiet is not None:
            zones, rule = customer_zones(customer, policy.timezone)
            self._notes["zone"] = f"{rule}: {', '.join(zones)}"
        for _ in range(MAX_HOLDS):
            if quiet is not None:
                until = allowed_at(workflow.now(), quiet, zones)
                if until is None or until > deadline:
                    return await self._not_sent("quiet_hours", params), None
                if until > workflow.now():
                    await self._hold(until, params)
            if self._opt_out_for_wait:  # it came while the message was held: nothing more goes to the customer
                self.opted_out = True
                self._notes["reason"] = "opted_out"
                await self._count_message(params, "suppressed")
                return EventType.NOT_SATISFIED, None
            outcome = self._sent(
                await self.call_activity(name, params, retry=retry, frequency_capped=policy.frequency_capped)
            )
            if outcome.capped_until is None:
                return outcome.event, outcome
            if policy.on_cap == "skip" or outcome.capped_until > deadline:
                return await self._not_sent("frequency_cap", params), None
            await self._hold(outcome.capped_until, params)
        return await self._not_sent("frequency_cap", params), None

    def _sent(self, outcome: ActivityResult) -> ActivityResult:
        """Note whether the customer's message went (written as `Messaged` with the state)."""
        went = outcome.event == EventType.SATISFIED and outcome.capped_until is None
        self.messaged |= went and not (outcome.suppressed or outcome.stopped)
        if went and outcome.message_id is not None:
            self._message_went(outcome.message_id)
        return outcome

    async def _count_message(self, params: NodeParams, result: str) -> None:
        """Count a held or skipped message in the worker's `scheduler_messages_total` (a local activity:
        counted once, not again when the history replays)."""
        event = MessageEvent(channel=getattr(params, "channel", ""), result=result, run_id=self.input.run_id)
        await workflow.execute_local_activity(COUNT_MESSAGE, event, start_to_close_timeout=timedelta(seconds=10))

    async def _quiet_hours(self, policy: DeliveryPolicy) -> str:
        """The policy's window; the service's (asked of the worker once, recorded in history) when it has none."""
        if policy.quiet_hours is not None:
            return policy.quiet_hours
        if self._service_quiet_hours is None:
            self._service_quiet_hours = await workflow.execute_local_activity(
                DELIVERY_DEFAULTS, result_type=str, start_to_close_timeout=timedelta(seconds=10)
            )
        return self._service_quiet_hours

    async def _hold(self, until: datetime, params: NodeParams) -> None:
        """Wait until `until` (a durable timer), showing it in `status` and the memo.

        An opt-out kept for the next wait ends the hold at once: the message will not go, and the owner
        hears of it (the wait's `not_satisfied` edge) now, not when the quiet hours end.
        """
        self.waiting_until = self._notes["held_until"] = until
        self._write_state()
        await self._count_message(params, "held")
        try:
            summary = f"{self.current_step}: held until {until:%Y-%m-%d %H:%M}Z"
            await workflow.wait_condition(
                lambda: self._opt_out_for_wait, timeout=max(until - workflow.now(), MIN_HOLD), timeout_summary=summary
            )
        except TimeoutError:
            pass
        finally:
            self.waiting_until = None

    async def _not_sent(self, reason: str, params: NodeParams) -> EventType:
        self._notes["reason"] = reason
        await self._count_message(params, f"skipped_{reason}")
        return EventType.NOT_SATISFIED

    # The interpreter

    async def run(self) -> FlowStatus:
        if DEFINITION_VERSION not in workflow.info().typed_search_attributes:
            workflow.upsert_search_attributes(
                [p.key.value_set(p.value) for p in start_attributes(self.input, version=self.version)]
            )
        try:
            exited = await self._steps_until_exit()
        except asyncio.CancelledError:  # cancelled (a campaign stopped): the step in progress was cancelled
            if workflow.patched(STOPPED_OUTCOME_PATCH):
                self._finish(FlowOutcome.STOPPED)
            raise
        except Exception:
            self._finish(FlowOutcome.FAILED)
            raise
        self._finish((exited and self._exit_reason()) or self._end_reason())
        return self.status()

    def _end_reason(self) -> FlowOutcome:
        if self.stopped:
            return FlowOutcome.STOPPED
        if self.held_out:
            return FlowOutcome.HELD_OUT
        return FlowOutcome.OPTED_OUT if self.opted_out else FlowOutcome.COMPLETED

    def _exit_reason(self) -> FlowOutcome | None:
        """Why the flow must end now, before its steps do: `converted` (with `exit_on`) or `opted_out`."""
        if self._exit_on_conversion and self.conversion is not None:
            return FlowOutcome.CONVERTED
        return FlowOutcome.OPTED_OUT if self.opt_out_exit else None

    async def _steps(self) -> bool:
        """Validate, then run the steps from the start step until one leads nowhere; True if told to exit first."""
        problems = [p for p in validate_definition(self.definition) if not p.warning]
        if problems:
            raise DefinitionError("; ".join(f"{p.key}: {p.message}" for p in problems))
        step_name: str | None = self.definition.start_step
        while step_name is not None:
            if self._exit_reason():
                return True
            step_name = await self._run_step(step_name)
        return False

    async def _steps_until_exit(self) -> bool:
        """`_steps`, cut short by a signal that ends the flow (`_exit_reason`); True if it was.

        The check between steps stops a flow whose signal came with the event that ended a step
        (both in one workflow task) before the next step starts; the race covers the waits.
        """
        steps = asyncio.create_task(self._steps())
        signal = asyncio.create_task(workflow.wait_condition(lambda: self._exit_reason() is not None))
        try:
            await workflow.wait([steps, signal], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the workflow is cancelled: so is its step, as without exit_on
            await _cancel(steps)
            raise
        if steps.done():  # the last step ended (or failed) first, perhaps in the signal's own workflow task
            signal.cancel()
            return steps.result()
        await _cancel(steps)
        return True

    async def _run_step(self, name: str) -> str | None:
        self.current_step = name
        self._notes = {}
        step = self.definition.steps[name]
        node = get_node(step.node)
        assert node is not None  # `_steps` validated the definition, which rejects unknown nodes
        params = node.Params.model_validate(step.params)
        if node.writes_state_first(params, self.input.revision):
            self._write_state()
        event = await node.run(self, params)
        if (message_id := self._step_messages.get(name)) is not None and message_id in self._deliveries:
            self._notes["delivery"] = _delivery_entry(self._deliveries[message_id])
        self.records.append(StepRecord(step=name, node=node.name, event=event, at=workflow.now(), **self._notes))
        if self.suppressed or self.stopped:
            return None
        variant = self._notes.get("variant")
        next_name = step.next_step(event, variant, self._notes.get("intent"))
        if variant is not None and next_name is None:
            self.held_out = True
        if self._opt_out_for_wait:  # an opt-out came during this step: its wait takes it, or the flow ends here
            self._opt_out_for_wait = False
            if not _is_wait(self.definition, next_name):
                self.opted_out = True
                return None
        return next_name

    def _write_state(self, *, outcome: FlowOutcome | None = None) -> None:
        """Upsert what changed since the last write: memo `steps` (and `outcome`), `CurrentStep`, `ClientAnswered*`,
        `Variant`, `ReplyIntent`, `Messaged`.

        Called before a step that waits and at the end, not after every step: steps in between
        take milliseconds, and each write is a history event and a visibility update, which would
        cost a fifth of the engine's throughput (see bench/engine.py).
        """
        memo: dict[str, Any] = {}
        if len(self.records) != self._written_records:
            memo["steps"] = self._steps_memo()
            self._written_records = len(self.records)
        if outcome is not None:
            memo["outcome"] = outcome
        if memo:
            workflow.upsert_memo(memo)
        updates: list[SearchAttributeUpdate[Any]] = []
        if self._answered_at is not None:
            updates += [CLIENT_ANSWERED.value_set(True), CLIENT_ANSWERED_AT.value_set(self._answered_at)]
            self._answered_at = None
        if self.current_step != self._written_step:
            updates.append(CURRENT_STEP.value_set(self.current_step))
            self._written_step = self.current_step
        if self._variant is not None and self._variant != self._written_variant:
            updates.append(VARIANT.value_set(self._variant))
            self._written_variant = self._variant
        if self._intent is not None and self._intent != self._written_intent:  # only definitions with intents
            updates.append(REPLY_INTENT.value_set(self._intent))
            self._written_intent = self._intent
        if self.messaged and not self._written_messaged and self.input.revision >= 3:
            updates.append(MESSAGED.value_set(True))
            self._written_messaged = True
        if outcome is not None and (self.input.revision >= 1 or workflow.patched(OUTCOME_ATTRIBUTE_PATCH)):
            updates.append(OUTCOME.value_set(outcome))
        if updates:
            workflow.upsert_search_attributes(updates)

    def _steps_memo(self) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json", exclude_none=True) for r in self.records]

    def _finish(self, outcome: FlowOutcome) -> None:
        self.outcome = outcome
        self._write_state(outcome=outcome)


def _delivery_entry(status: DeliveryStatus) -> dict[str, Any]:
    """A step's memo `delivery`: what its receipts said."""
    return status.model_dump(mode="json", exclude={"message_id"}, exclude_none=True)


MISCONFIGURED = frozenset({"ChannelNotConfigured", "UnknownChannel"})
"""Activity failures no other channel of a list may stand in for: the service's config is wrong, and every message
through that channel fails until it is mended (a fallback would hide it)."""


def _misconfigured(exc: ActivityError) -> bool:
    return isinstance(exc.cause, ApplicationError) and exc.cause.type in MISCONFIGURED


def _reaches(channel: str, customer: dict[str, Any]) -> bool:
    """Whether `channel` can reach the customer: it has the field the channel sends to (`console`: anyone)."""
    field = CONTACT_FIELDS.get(channel)
    return field is None or bool(customer.get(field))


def _contact_of(customer: dict[str, Any], channel: str) -> dict[str, Any]:
    """The customer as an attempt through `channel` sees them for quiet hours: an e-mail's time zone is the
    customer's `timezone` or the campaign's, never their phone number's area."""
    if CONTACT_FIELDS.get(channel, "phone") == "phone":
        return customer
    return {key: value for key, value in customer.items() if key != "phone"}


def _is_wait(definition: WorkflowDefinition, name: str | None) -> bool:
    step = definition.steps.get(name) if name else None
    return step is not None and isinstance(get_node(step.node), WaitAnswer)


async def _cancel(steps: asyncio.Task[bool]) -> None:
    """Cancel the running step (its timer, its activity) and wait until it has stopped."""
    steps.cancel()
    try:
        await steps
    except asyncio.CancelledError:
        pass
    except ActivityError as exc:  # an activity in flight, cancelled (a late result is dropped)
        if not is_cancelled_exception(exc):
            raise
