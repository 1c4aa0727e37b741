"""Replay the recorded histories (tests/histories, made by tests/record_histories.py) against today's code.

A failure here means a change to the workflows, the engine or the nodes is not deterministic for flows,
campaign runs or keyword answers already running: they would break when the new worker picks them up.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from scheduler.flow.models import ActivityInput, FlowInput, FlowStatus
from scheduler.flow.nodes import ActivityResult
from scheduler.flow.workflows import AbandonedCartWorkflow, CampaignRunWorkflow, KeywordAnswerWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
# history name: (workflow id it was recorded under, activities scheduled in order, timer events in order)
EXPECTED = {
    # step_2's 1m wait is cut short by the reply
    "satisfied": ("abandoned_cart-replay-satisfied", ["send_message", "notify_creator"], ["started", "canceled"]),
    # step_2's 1m wait times out, then step_5 sleeps 1m
    "timeout": (
        "abandoned_cart-replay-timeout",
        ["send_message", "webhook", "send_message"],
        ["started", "fired", "started", "fired"],
    ),
    # the same, started at revision 2: no state written before the webhook step
    "timeout-revision-2": (
        "abandoned_cart-replay-timeout-revision-2",
        ["send_message", "webhook", "send_message"],
        ["started", "fired", "started", "fired"],
    ),
    # step_2's wait is cut short by a STOP (recorded when an opt-out still set ClientAnswered and outcome completed)
    "opt-out": ("abandoned_cart-replay-opt-out", ["send_message"], ["started", "canceled"]),
    # an opt-out ends a flow in its 1m explicit_wait: nothing sent, outcome opted_out
    "opt-out-in-wait": ("abandoned_cart-replay-opt-out-in-wait", [], ["started", "canceled"]),
    # a STOP while step_1's message goes counts for step_2's wait (no timer): not_satisfied, the owner is told,
    # step_8's message finds the customer suppressed
    "opt-out-before-wait": (
        "abandoned_cart-replay-opt-out-before-wait",
        ["send_message", "notify_creator", "send_message"],
        [],
    ),
    # the same STOP in step_2's wait: the same path
    "opt-out-in-wait-answer": (
        "abandoned_cart-replay-opt-out-in-wait-answer",
        ["send_message", "notify_creator", "send_message"],
        ["started", "canceled"],
    ),
    # a split (revision 2) puts the flow in its `message` variant: the message, then a 1m wait
    "split": ("abandoned_cart-replay-split", ["send_message"], ["started", "fired"]),
    # "Yes please!" in step_2's 1m wait takes its intent `yes` to a second message (revision 3)
    "intent": ("abandoned_cart-replay-intent", ["send_message", "send_message"], ["started", "canceled"]),
    # the same split holds the flow out: nothing sent, outcome held_out
    "split-holdout": ("abandoned_cart-replay-split-holdout", [], []),
    # step_1's message finds the customer suppressed: nothing sent, the flow ends opted_out
    "suppressed-send": ("abandoned_cart-replay-suppressed-send", ["send_message"], []),
    # the message waits out quiet hours (the service's window, asked by local activity): one hold, then the send
    "quiet-hold": ("abandoned_cart-replay-quiet-hold", ["send_message"], ["started", "fired"]),
    # cancelled while step_2 waits (its campaign stopped): the wait's timer is cancelled, outcome stopped
    "stopped": ("abandoned_cart-replay-stopped", ["send_message"], ["started", "canceled"]),
    # the campaign is stopped while step wait's 1m timer runs: the message is not sent, outcome stopped
    "stopped-send": ("abandoned_cart-replay-stopped-send", ["send_message"], ["started", "fired"]),
    # step send's SMS awaits its receipt (a 2m wait), which says delivered: step wait's 1m (revision 3)
    "await-delivered": (
        "abandoned_cart-replay-await-delivered",
        ["send_message"],
        ["started", "canceled", "started", "fired"],
    ),
    # the receipt says undelivered: the not_satisfied edge tells the owner
    "await-undelivered": (
        "abandoned_cart-replay-await-undelivered",
        ["send_message", "notify_creator"],
        ["started", "canceled"],
    ),
    # the gateway refuses the number (400, final): the message goes by the list's next channel, then a 1m wait
    "fallback": ("abandoned_cart-replay-fallback", ["send_message", "send_message"], ["started", "fired"]),
    # no await_delivery: the receipt comes in step wait's 1m, after the step's memo entry was written
    "receipt-after-step": ("abandoned_cart-replay-receipt-after-step", ["send_message"], ["started", "fired"]),
    # a campaign run cancelled while its page activity starts flows: the activity is cancelled, then the run
    "campaign-run-stopped": ("campaign-run-replay-stopped", ["start_audience_page"], []),
    # a campaign run cancelled after its page activity started its last flow: the page ends, the run completes
    "campaign-run-stopped-late": ("campaign-run-replay-stopped-late", ["start_audience_page"], []),
    # a campaign run reading a 3-row audience in one page (2 flows, 1 row skipped)
    "campaign-run": ("campaign-run-replay-audience", ["start_audience_page"], []),
    # a campaign run without an audience: one child flow
    "campaign-run-one": ("campaign-run-replay-one", [], []),
    # a HELP's answer to a phone and an address: one activity each
    "keyword-answer": ("keyword-answer-replay", ["send_keyword_answer", "send_keyword_answer"], []),
}

PATCHES = {
    "opt-out": ["reply-ids-attribute"],
    "intent": ["reply-ids-attribute"],
    "opt-out-in-wait": ["reply-ids-attribute", "opt-out-exit", "outcome-attribute"],
    "opt-out-before-wait": [
        "reply-ids-attribute",
        "opt-out-exit",
        "opt-out-before-wait",
        "opted-out-outcome",
        "outcome-attribute",
    ],
    "opt-out-in-wait-answer": ["reply-ids-attribute", "opted-out-outcome", "opt-out-exit", "outcome-attribute"],
    "suppressed-send": ["opt-out-exit", "outcome-attribute"],
    "quiet-hold": ["outcome-attribute"],
    "stopped": ["stopped-outcome", "outcome-attribute"],
    "stopped-send": ["outcome-attribute"],
    "receipt-after-step": ["delivery-memo"],
    "campaign-run-stopped": ["run-waits-for-its-page"],
    "campaign-run-stopped-late": ["run-waits-for-its-page"],
}
"""The `workflow.patched` markers a history holds (none where not named): the patched branches it covers."""
HOLDS = {"quiet-hold"}
"""Histories whose timers are holds of their own length (the others' are the seed's 1m waits)."""
TIMERS = {"await-delivered": ["120s", "60s"], "await-undelivered": ["120s"]}
"""Histories with timers besides 1m waits: their lengths in order (`await_delivery = "2m"`)."""


def load(name: str) -> tuple[WorkflowHistory, dict[str, Any]]:
    workflow_id = EXPECTED[name][0]
    text = (HISTORIES / f"{name}.json").read_text(encoding="utf-8")
    return WorkflowHistory.from_json(workflow_id, text), json.loads(text)


def events_of(raw: dict[str, Any], event_type: str) -> list[dict[str, Any]]:
    return [e for e in raw["events"] if e["eventType"] == f"EVENT_TYPE_{event_type}"]


def replayer(*workflows: type) -> Replayer:
    workflows = workflows or (AbandonedCartWorkflow, CampaignRunWorkflow, KeywordAnswerWorkflow)
    return Replayer(workflows=list(workflows), data_converter=pydantic_data_converter)


# Same workflow type name as the real one, but it calls other activities: replaying a real history must fail.
@workflow.defn(name="AbandonedCartWorkflow", sandboxed=False)
class ChangedWorkflow:
    @workflow.run
    async def run(self, flow: FlowInput) -> FlowStatus:
        # The recorded flow sent a message first; this one calls the webhook instead.
        await workflow.execute_activity(
            "webhook",
            ActivityInput(workflow_id=workflow.info().workflow_id, campaign_id=flow.campaign_id, step="step_1"),
            result_type=ActivityResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
        return FlowStatus(current_step="step_1", path=["step_1"], replies=0, definition_version="changed")

    @workflow.signal(name="client-answered")
    def client_answered(self, reply: Any = None) -> None:
        pass


def test_replay_histories_cover_every_expected_file() -> None:
    assert sorted(p.stem for p in HISTORIES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_replay_history_replays_with_current_workflow(name: str) -> None:
    history, raw = load(name)
    _, activities, timers = EXPECTED[name]
    # The history is the flow we think it is: these activities and timers, in this order, then completion.
    scheduled = events_of(raw, "ACTIVITY_TASK_SCHEDULED")
    assert [e["activityTaskScheduledEventAttributes"]["activityType"]["name"] for e in scheduled] == activities
    timer_events = [
        e["eventType"].removeprefix("EVENT_TYPE_TIMER_").lower() for e in raw["events"] if "_TIMER_" in e["eventType"]
    ]
    assert timer_events == timers
    if name not in HOLDS:
        lengths = [e["timerStartedEventAttributes"]["startToFireTimeout"] for e in events_of(raw, "TIMER_STARTED")]
        assert lengths == TIMERS.get(name, ["60s"] * len(lengths))
    else:  # the local activities that ask for the service's quiet hours and count the hold
        markers = [e["markerRecordedEventAttributes"]["markerName"] for e in events_of(raw, "MARKER_RECORDED")]
        assert markers.count("core_local_activity") == 2
    ending = "CANCELED" if name in ("stopped", "campaign-run-stopped") else "COMPLETED"
    assert raw["events"][-1]["eventType"] == f"EVENT_TYPE_WORKFLOW_EXECUTION_{ending}"
    markers = [
        e["markerRecordedEventAttributes"]["details"]["patch-data"]
        for e in events_of(raw, "MARKER_RECORDED")
        if e["markerRecordedEventAttributes"]["markerName"] == "core_patch"
    ]
    assert [json.loads(base64.b64decode(m["payloads"][0]["data"]))["id"] for m in markers] == PATCHES.get(name, [])

    result = await replayer().replay_workflow(history)
    assert result.replay_failure is None


async def test_replay_workflow_with_different_activities_is_nondeterministic() -> None:
    """The replayer does catch a change: a workflow of the same name that calls other activities."""

    history, _ = load("satisfied")
    with pytest.raises(NondeterminismError):
        await replayer(ChangedWorkflow).replay_workflow(history)
    result = await replayer(ChangedWorkflow).replay_workflow(history, raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, NondeterminismError)
    # The same history still replays cleanly with the real workflow, so the failure is the change's.
    assert (await replayer().replay_workflow(history, raise_on_replay_failure=False)).replay_failure is None
