"""The flow engine on the time-skipping server: both branches, opt-out, early and duplicate replies, memo,
search attributes, outbox, and invalid definitions."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from scheduler.campaigns.start import new_workflow_id
from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.engine import (
    CAMPAIGN_ID,
    CLIENT_ANSWERED,
    CLIENT_ANSWERED_AT,
    CURRENT_STEP,
    CUSTOMER_ID,
    DEFINITION_VERSION,
    MESSAGED,
    OUTCOME,
)
from scheduler.flow.models import FlowInput, RunCampaign, RunCampaignInfo, flow_input
from scheduler.flow.nodes.webhook import LONG_STEP, WebhookParams, worst_case
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, Reply
from scheduler.flow.workflows import AbandonedCartWorkflow
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.worker import make_worker
from tests.helpers.flows import one_step, reaches, start_flow_input, status
from tests.helpers.waiting import eventually

OWNER = "owner@example.com"
PHONE = "+15550001"

# step_2's three edges each lead to a distinct step, so the path says which one was taken.
OPT_OUT = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "send_message", "go_to": "step_2"},
        "step_2": {
            "node": "wait_answer",
            "condition": {"satisfied": "step_3", "not_satisfied": "step_7", "timeout": "step_4"},
        },
        "step_3": {"node": "notify_creator"},
        "step_4": {"node": "send_message"},
        "step_7": {"node": "send_message", "params": {"template": "You will not hear from us again."}},
    },
}
# A 10m explicit wait before a 1m wait_answer: a reply sent during the sleep must still count.
WAIT_THEN_ASK = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "explicit_wait", "params": {"duration": "10m"}, "go_to": "step_2"},
        "step_2": {
            "node": "wait_answer",
            "params": {"timeout": "1m"},
            "condition": {"satisfied": "step_3", "timeout": "step_4"},
        },
        "step_3": {"node": "notify_creator"},
        "step_4": {"node": "send_message"},
    },
}
# Two waits in a row: one reply satisfies the first only.
TWO_WAITS = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "wait_answer", "condition": {"satisfied": "step_2", "timeout": "step_5"}},
        "step_2": {"node": "wait_answer", "condition": {"satisfied": "step_3", "timeout": "step_4"}},
        "step_3": {"node": "notify_creator"},
        "step_4": {"node": "send_message"},
        "step_5": {"node": "send_message"},
    },
}
# An opt-out's way on: step_2's not_satisfied edge tells the owner, then a customer message (suppressed by then).
STOP_PATH = {
    **OPT_OUT,
    "steps": {
        **OPT_OUT["steps"],
        "step_7": {"node": "notify_creator", "go_to": "step_8"},
        "step_8": {"node": "send_message", "params": {"template": "Sorry to see you go."}},
    },
}
# A message that leads to a wait only when it is sent; not sent, the owner is told.
SENT_THEN_ASK = {
    "start_step": "send",
    "steps": {
        "send": {"node": "send_message", "condition": {"satisfied": "ask", "not_satisfied": "owner"}},
        "ask": {"node": "wait_answer", "condition": {"not_satisfied": "owner"}},
        "owner": {"node": "notify_creator"},
    },
}
# A pause, then a message: no wait follows the pause.
WAIT_THEN_SEND = {
    "start_step": "wait",
    "steps": {
        "wait": {"node": "explicit_wait", "params": {"duration": "10m"}, "go_to": "send"},
        "send": {"node": "send_message"},
    },
}


def definition(data: dict[str, Any]) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(data)


async def start(env: WorkflowEnvironment, definition: WorkflowDefinition, task_queue: str) -> WorkflowHandle:
    flow = FlowInput(definition=definition, owner=OWNER, customer={"id": "c1", "phone": PHONE})
    return await start_flow_input(env.client, flow, task_queue)


# Branches


async def test_flow_reply_takes_satisfied_branch(ts_env, seed_definition, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="yes please"))
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_3"]
    assert result.outcome == "completed"
    assert result.definition_version == seed_definition.version


async def test_flow_no_reply_takes_timeout_branch(ts_env, seed_definition, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_4", "step_5", "step_6"]
    assert result.outcome == "completed"
    desc = await handle.describe()
    # wait_answer's 1m timeout plus explicit_wait's 1m, skipped rather than slept.
    assert desc.close_time is not None
    assert desc.close_time - desc.start_time >= timedelta(minutes=2)


@pytest.mark.parametrize("text", ["STOP", " stop! ", "Unsubscribe."])
async def test_wait_answer_opt_out_takes_not_satisfied_edge(
    ts_env, settings: Settings, task_queue: str, text: str
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, definition(OPT_OUT), task_queue)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text=text))
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_7"]
    assert result.outcome == "opted_out"
    desc = await handle.describe()
    steps = await desc.memo_value("steps")
    assert [s["event"] for s in steps] == ["condition_satisfied", "condition_not_satisfied", "condition_satisfied"]
    assert await desc.memo_value("outcome") == "opted_out"
    # An opt-out is not an answer: searches for answered flows must not count it.
    assert CLIENT_ANSWERED not in desc.typed_search_attributes
    assert CLIENT_ANSWERED_AT not in desc.typed_search_attributes


async def test_wait_answer_non_keyword_reply_is_satisfied(ts_env, settings: Settings, task_queue: str) -> None:
    """A reply that merely contains an opt-out word is an answer, not an opt-out."""
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, definition(OPT_OUT), task_queue)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="please don't stop, what's the price?"))
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_3"]
    assert result.outcome == "completed"
    assert (await handle.describe()).typed_search_attributes.get(CLIENT_ANSWERED) is True


# Replies


async def test_wait_answer_reply_before_wait_starts_is_satisfied(ts_env, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, definition(WAIT_THEN_ASK), task_queue)
        # Time only skips while awaiting the result, so the flow is still inside step_1's 10m sleep.
        assert (await status(handle)).current_step == "step_1"
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="early", text="is it still available?"))
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_3"]
    desc = await handle.describe()
    assert desc.close_time is not None
    # Slept the full 10m, then answered at once: no 1m timeout on top.
    assert timedelta(minutes=10) <= desc.close_time - desc.start_time < timedelta(minutes=11)


async def test_wait_answer_reply_counts_for_one_wait_only(ts_env, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, definition(TWO_WAITS), task_queue)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="yes"))
        result = await handle.result()
    assert result.path == ["step_1", "step_2", "step_4"]
    assert result.replies == 1
    steps = await (await handle.describe()).memo_value("steps")
    assert [(s["step"], s["event"]) for s in steps] == [
        ("step_1", "condition_satisfied"),
        ("step_2", "condition_timeout"),
        ("step_4", "condition_satisfied"),
    ]


@pytest.mark.parametrize(
    ("reply_ids", "expected"), [(["r1", "r1"], 1), (["r1", "r2"], 2), (["r1", "r1", "r2", "r2"], 2)]
)
async def test_flow_duplicate_reply_id_counted_once(
    ts_env, settings: Settings, task_queue: str, reply_ids: list[str], expected: int
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        # The 10m sleep keeps the flow open while every signal is sent.
        handle = await start(ts_env, definition(WAIT_THEN_ASK), task_queue)
        for reply_id in reply_ids:
            await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id=reply_id, text="hello"))
        result = await handle.result()
        queried = await status(handle)
    assert queried.replies == expected
    assert result.replies == expected
    assert result.path == ["step_1", "step_2", "step_3"]


# Opt-outs: the same path whenever they come


class HeldSend(Interceptor):
    """Holds a step's `send_message` activity until `release` is set, and says when (`started`): before the real
    activity runs (it then finds the contact suppressed) or after it (the message went, the step has not ended)."""

    def __init__(self, step: str, *, before: bool) -> None:
        self.step, self.before = step, before
        self.started, self.release = asyncio.Event(), asyncio.Event()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        held = self

        class Hold(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                if activity.info().activity_type != "send_message" or input.args[0].step != held.step:
                    return await super().execute_activity(input)
                if held.before:
                    held.started.set()
                    await held.release.wait()
                result = await super().execute_activity(input)
                held.started.set()
                await held.release.wait()
                return result

        return Hold(next)


async def opt_out(handle: WorkflowHandle, consent: Consent) -> None:
    """What an opt-out keyword does: the contact goes on the list, then its flow gets the reply."""
    consent.suppress(PHONE, reason="keyword STOP")
    await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="stop", text="STOP", opt_out=True))

    async def delivered() -> None:
        assert (await status(handle)).replies == 1

    await eventually(delivered)


async def run_with_opt_out(
    env: WorkflowEnvironment, settings: Settings, task_queue: str, data: dict[str, Any], *, during: str
) -> tuple[Any, list[dict[str, Any]], list[str]]:
    """Run `data` with an opt-out that comes while the first step's message is held (`before` or `after` it
    went) or, for any other `during`, once the flow is in that step; the result, memo steps and outbox steps."""
    store = Store.open(settings.store_url)
    held = HeldSend(data["start_step"], before=during == "before")
    try:
        async with make_worker(env.client, settings, task_queue=task_queue, store=store, interceptors=[held]):
            handle = await start(env, definition(data), task_queue)
            if during in ("before", "after"):
                await asyncio.wait_for(held.started.wait(), timeout=15)
                await opt_out(handle, Consent(store))
                held.release.set()
            else:
                held.release.set()
                await reaches(handle, during)
                await opt_out(handle, Consent(store))
            result = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        held.release.set()
        store.close()
    steps = await (await handle.describe()).memo_value("steps", default=[])
    return result, steps, [line["step"] for line in Outbox(settings.channels.outbox).read()]


@pytest.mark.parametrize("during", ["before", "after", "step_2"], ids=["before-send", "after-send", "in-wait"])
async def test_opt_out_during_the_step_before_a_wait_counts_for_the_wait(
    ts_env, settings: Settings, task_queue: str, during: str
) -> None:
    """A STOP while step_1's message goes (before the list check or after the send) takes step_2's
    not_satisfied edge, as the same STOP in step_2 does: the owner is told, the customer gets nothing more."""
    result, steps, sent = await run_with_opt_out(ts_env, settings, task_queue, STOP_PATH, during=during)
    assert (result.path, result.outcome) == (["step_1", "step_2", "step_7", "step_8"], "opted_out")
    assert [s["event"] for s in steps[1:]] == [
        "condition_not_satisfied",
        "condition_satisfied",
        "condition_not_satisfied",
    ]
    assert sent == (["step_7"] if during == "before" else ["step_1", "step_7"])  # the owner's; never step_8


@pytest.mark.parametrize(
    ("data", "during", "path", "sent"),
    [
        (WAIT_THEN_SEND, "wait", [], []),
        (SENT_THEN_ASK, "before", ["send"], []),
        (SENT_THEN_ASK, "after", ["send", "ask", "owner"], ["send", "owner"]),
    ],
    ids=["no-wait-next", "edge-not-to-the-wait", "edge-to-the-wait"],
)
async def test_opt_out_elsewhere_ends_the_flow(
    ts_env, settings: Settings, task_queue: str, data: dict[str, Any], during: str, path: list[str], sent: list[str]
) -> None:
    """Where no wait_answer comes next, the flow ends: at once, or once the step shows its edge leads elsewhere
    (its message found the contact suppressed, so it was not sent, and the owner is not told)."""
    result, _, went = await run_with_opt_out(ts_env, settings, task_queue, data, during=during)
    assert (result.path, result.outcome, went) == (path, "opted_out", sent)


# Memo, search attributes, outbox


async def test_flow_memo_and_search_attributes_record_steps(
    ts_env, seed_definition, settings: Settings, task_queue: str
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="yes"))
        await handle.result()
    desc = await handle.describe()
    steps = await desc.memo_value("steps")
    assert [(s["step"], s["node"], s["event"]) for s in steps] == [
        ("step_1", "send_message", "condition_satisfied"),
        ("step_2", "wait_answer", "condition_satisfied"),
        ("step_3", "notify_creator", "condition_satisfied"),
    ]
    times = [datetime.fromisoformat(s["at"]) for s in steps]
    assert times == sorted(times)
    assert all(desc.start_time <= t for t in times)
    assert await desc.memo_value("outcome") == "completed"

    sa = desc.typed_search_attributes
    assert sa.get(CLIENT_ANSWERED) is True
    answered_at = sa.get(CLIENT_ANSWERED_AT)
    assert answered_at is not None
    assert desc.close_time is not None
    assert desc.start_time <= answered_at <= desc.close_time
    assert sa.get(CAMPAIGN_ID) == "abandoned-cart"
    assert sa.get(CUSTOMER_ID) == "c1"
    assert sa.get(CURRENT_STEP) == "step_3"
    assert sa.get(DEFINITION_VERSION) == seed_definition.version


async def test_flow_started_now_ends_with_outcome_without_patch_marker(
    ts_env, settings: Settings, task_queue: str
) -> None:
    """A flow started as the API and fan-out start them (`flow_input`) always upserts `Outcome`, so it asks no
    `outcome-attribute` patch: no marker and no `TemporalChangeVersion` upsert in its history. An input from
    before (no `revision`) still asks, so the histories of older flows replay."""
    campaign = RunCampaign(campaign=RunCampaignInfo(id="camp-r", owner=OWNER), workflow=one_step("notify_creator"))
    new = flow_input(campaign, customer={"id": "c1", "phone": PHONE}, quiet_hours="")
    old = new.model_copy(update={"revision": 0})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handles = [await start_flow_input(ts_env.client, flow, task_queue) for flow in (new, old)]
        for handle in handles:
            assert (await handle.result()).outcome == "completed"
    markers, upserted = [], []
    for handle in handles:
        events = (await handle.fetch_history()).events
        markers.append(
            [
                e.marker_recorded_event_attributes.marker_name
                for e in events
                if e.HasField("marker_recorded_event_attributes")
            ]
        )
        upserted.append(
            sorted(
                key
                for e in events
                if e.HasField("upsert_workflow_search_attributes_event_attributes")
                for key in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            )
        )
        assert (await handle.describe()).typed_search_attributes.get(OUTCOME) == "completed"
    assert markers == [[], ["core_patch"]]
    assert upserted == [["Outcome"], ["Outcome", "TemporalChangeVersion"]]


@pytest.mark.parametrize(
    ("webhook", "revision", "writes_first"),
    [
        ({}, 2, False),  # the default retries end within LONG_STEP: no write before it
        ({"max_attempts": 20}, 2, True),  # retries that may take an hour: it shows where the flow is
        ({}, 1, True),  # a flow started before revision 2 keeps the write its history has
    ],
)
async def test_webhook_step_writes_state_first_only_when_it_may_take_long(
    ts_env, settings: Settings, task_queue: str, webhook: dict[str, Any], revision: int, writes_first: bool
) -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "start_step": "send",
            "steps": {
                "send": {"node": "send_message", "go_to": "hook"},
                "hook": {"node": "webhook", "params": webhook},
            },
        }
    )
    campaign = RunCampaign(campaign=RunCampaignInfo(id="camp-w", owner=OWNER), workflow=definition)
    flow = flow_input(campaign, customer={"id": "c1", "phone": PHONE}, quiet_hours="")
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start_flow_input(ts_env.client, flow.model_copy(update={"revision": revision}), task_queue)
        assert (await handle.result()).path == ["send", "hook"]
    kinds = [e.WhichOneof("attributes") for e in (await handle.fetch_history()).events]
    scheduled = [i for i, kind in enumerate(kinds) if kind == "activity_task_scheduled_event_attributes"]
    written = [i for i, kind in enumerate(kinds) if kind == "workflow_properties_modified_event_attributes"]
    assert len(scheduled) == 2
    assert [i < scheduled[1] for i in written] == ([True, False] if writes_first else [False])
    steps = await (await handle.describe()).memo_value("steps")
    assert [s["step"] for s in steps] == ["send", "hook"]


def test_webhook_worst_case_counts_every_attempt_and_backoff() -> None:
    assert worst_case(WebhookParams()) == timedelta(seconds=5 * 15 + 1 + 2 + 4 + 8) < LONG_STEP
    assert worst_case(WebhookParams(max_attempts=1, timeout=timedelta(minutes=5))) > LONG_STEP
    capped = WebhookParams(max_attempts=10, timeout=timedelta(seconds=1), initial_interval=timedelta(seconds=1))
    assert worst_case(capped) == timedelta(seconds=10 * 6 + 1 + 2 + 4 + 8 + 16 + 32 + 64 + 100 + 100)


async def test_messaged_is_set_once_a_message_went_not_when_the_contact_is_suppressed(
    ts_env, settings: Settings, task_queue: str
) -> None:
    """What an experiment counts as messaged: a delivered message, never one the suppression list stopped."""
    store = Store.open(settings.store_url)
    Consent(store).suppress("+1 212 555 0142", reason="keyword STOP")
    campaign = RunCampaign(campaign=RunCampaignInfo(id="camp-m", owner=OWNER), workflow=one_step("send_message"))
    flows = [
        flow_input(campaign, customer={"id": "c1", "phone": phone}, quiet_hours="") for phone in (PHONE, "+12125550142")
    ]
    try:
        async with make_worker(ts_env.client, settings, task_queue=task_queue, store=store):
            handles = [await start_flow_input(ts_env.client, flow, task_queue) for flow in flows]
            outcomes = [(await handle.result()).outcome for handle in handles]
    finally:
        store.close()
    messaged = [(await handle.describe()).typed_search_attributes.get(MESSAGED) for handle in handles]
    assert (outcomes, messaged) == (["completed", "opted_out"], [True, None])


async def test_flow_timeout_leaves_client_answered_unset(
    ts_env, seed_definition, settings: Settings, task_queue: str
) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        await handle.result()
    desc = await handle.describe()
    sa = desc.typed_search_attributes
    assert sa.get(CLIENT_ANSWERED) is None
    assert sa.get(CLIENT_ANSWERED_AT) is None
    assert sa.get(CURRENT_STEP) == "step_6"
    assert [s["node"] for s in await desc.memo_value("steps")] == [
        "send_message",
        "wait_answer",
        "webhook",
        "explicit_wait",  # the seed's `explicity_wait` alias, recorded under its canonical name
        "send_message",
    ]


async def test_flow_started_without_search_attributes_upserts_them(
    ts_env, seed_definition, settings: Settings, task_queue: str
) -> None:
    flow = FlowInput(definition=seed_definition, campaign_id="camp-9", customer={"id": "c9"})
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await ts_env.client.start_workflow(
            AbandonedCartWorkflow.run, flow, id=new_workflow_id(), task_queue=task_queue
        )
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply())
        await handle.result()
    sa = (await handle.describe()).typed_search_attributes
    assert sa.get(CAMPAIGN_ID) == "camp-9"
    assert sa.get(DEFINITION_VERSION) == seed_definition.version
    assert sa.get(CUSTOMER_ID) == "c9"
    assert sa.get(CURRENT_STEP) == "step_3"


async def test_flow_outbox_records_messages(ts_env, seed_definition, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="yes"))
        await handle.result()
    lines = Outbox(settings.channels.outbox).read()
    where = {"campaign_id": "abandoned-cart", "workflow_id": handle.id}
    assert [{k: line[k] for k in ("channel", "to", "campaign_id", "workflow_id", "step")} for line in lines] == [
        {"channel": "console", "to": PHONE, **where, "step": "step_1"},
        {"channel": "console", "to": OWNER, **where, "step": "step_3"},
    ]
    assert "you left something in your cart" in lines[0]["text"]
    # The owner learns what happened: the reply that led to notify_creator.
    assert lines[1]["text"] == f"abandoned-cart: customer c1: the customer answered: yes (flow {handle.id})."


async def test_flow_outbox_records_timeout_branch(ts_env, seed_definition, settings: Settings, task_queue: str) -> None:
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, seed_definition, task_queue)
        await handle.result()
    lines = Outbox(settings.channels.outbox).read()
    assert [(line["channel"], line["to"], line["step"]) for line in lines] == [
        ("console", PHONE, "step_1"),
        ("webhook", None, "step_4"),  # no url: the payload is recorded instead of posted
        ("console", PHONE, "step_6"),
    ]
    assert all(line["workflow_id"] == handle.id for line in lines)
    assert lines[1]["payload"]["customer"] == {"id": "c1", "phone": PHONE}


# Invalid definitions


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"start_step": "step_1", "steps": {"step_1": {"node": "send_message", "go_to": "nowhere"}}}, "step_1.go_to"),
        ({"start_step": "step_9", "steps": {"step_1": {"node": "send_message"}}}, "start_step"),
        ({"start_step": "step_1", "steps": {"step_1": {"node": "teleport"}}}, "step_1.node"),
        (
            {
                "start_step": "step_1",
                "steps": {
                    "step_1": {"node": "send_message", "go_to": "step_2"},
                    "step_2": {"node": "send_message", "go_to": "step_1"},
                },
            },
            "cycle",
        ),
        (
            {"start_step": "step_1", "steps": {"step_1": {"node": "wait_answer", "params": {"timeout": "soon"}}}},
            "timeout",
        ),
    ],
    ids=["unknown-target", "unknown-start", "unknown-node", "cycle", "bad-params"],
)
async def test_flow_invalid_definition_fails_run(
    ts_env, settings: Settings, task_queue: str, data: dict[str, Any], where: str
) -> None:
    bad = WorkflowDefinition.model_validate(data)  # pydantic alone checks shape, not targets/nodes/params
    async with make_worker(ts_env.client, settings, task_queue=task_queue):
        handle = await start(ts_env, bad, task_queue)
        with pytest.raises(WorkflowFailureError) as info:
            # A definition error that only fails the workflow task would retry forever: bound the wait.
            await asyncio.wait_for(handle.result(), timeout=15)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "DefinitionError"
    assert where in cause.message
    assert Outbox(settings.channels.outbox).read() == []  # nothing was sent
