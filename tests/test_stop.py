"""A campaign's emergency stop and its resumption, end to end on the dev server (API, CLI, worker, store)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.batch.v1 import BatchOperationSignal
from temporalio.api.workflowservice.v1 import StartBatchOperationRequest, StopBatchOperationRequest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from scheduler.api import create_app
from scheduler.campaigns.reconcile import Reconciler
from scheduler.campaigns.schedules import Action, ScheduleWriter
from scheduler.campaigns.stop import Stopper, StopResult, running_flows
from scheduler.delivery.channels import Outbox
from scheduler.flow.attributes import CAMPAIGN_ID, OUTCOME
from scheduler.flow.models import FlowStatus, flow_input
from scheduler.flow.workflows import CAMPAIGN_RUN_TYPE, FLOW_TYPE
from scheduler.store import Store
from scheduler.store.stops import CampaignStops, StopMode
from scheduler.worker import make_worker
from tests.helpers.campaigns import JSONL_AUDIENCE, WAITING
from tests.helpers.cli import assert_one_line_error, scheduler, write_config
from tests.helpers.flows import outcome_of
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.waiting import eventually

SENDS = 6


def repeating(sends: int = SENDS, every: str = "1s") -> str:
    """A definition that messages the customer `sends` times, `every` apart, then waits an hour for a reply:
    a flow that kept running after a stop would keep adding to the outbox."""
    lines = ["[workflow]", 'start_step = "s1"', ""]
    for i in range(1, sends + 1):
        lines += [f"[workflow.steps.s{i}]", 'node = "send_message"', f'go_to = "w{i}"', ""]
        after = f"s{i + 1}" if i < sends else "wait"
        lines += [f"[workflow.steps.w{i}]", 'node = "explicit_wait"', f'params = {{ duration = "{every}" }}']
        lines += [f'go_to = "{after}"', ""]
    lines += ["[workflow.steps.wait]", 'node = "wait_answer"', 'params = { timeout = "1h" }', ""]
    return "\n".join(lines)


def write_audience(c: Campaigns, carts: int) -> None:
    rows = [{"cart_ref": f"k{i}", "mobile": f"+1 212 555 {i:04d}", "name": f"C{i}"} for i in range(carts)]
    (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


async def flows(c: Campaigns, cid: str, extra: str = "") -> list[Any]:
    query = f"WorkflowType = '{FLOW_TYPE}' AND CampaignId = '{cid}'" + extra
    return [w async for w in c.client.list_workflows(query)]


@dataclass
class Api:
    http: httpx.AsyncClient
    c: Campaigns
    app: Any

    async def stop(self, cid: str, body: dict[str, Any] | None = None) -> httpx.Response:
        # Without a body, `X-Requested-By` says it is no cross-site form (`scheduler.api.browser`).
        return await self.http.post(f"/campaigns/{cid}/stop", json=body, headers={"X-Requested-By": "tests"})


@pytest_asyncio.fixture
async def api(campaigns: Campaigns) -> AsyncIterator[Api]:
    """The app (no reconcile loop) and a worker, over this test's campaigns directory and store."""
    app = create_app(campaigns.settings, client=campaigns.client)
    async with (
        make_worker(campaigns.client, campaigns.settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        yield Api(http, campaigns, app)


async def test_stop_midway_through_a_paced_fanout_ends_every_flow_and_nothing_more_goes_out(api: Api) -> None:
    c = api.c
    carts, rate = 300, 20
    write_audience(c, carts)
    c.write("big", max_starts_per_second=rate, workflow=JSONL_AUDIENCE + repeating())
    await c.sync()
    cid = c.id("big")
    outbox = Outbox(c.settings.channels.outbox)
    try:
        await c.client.get_schedule_handle(c.sid("big")).trigger()

        async def midway() -> None:  # about a third of the carts have a flow (15 s for all at 20/s)
            assert len(outbox.read()) >= 100

        await eventually(midway, timeout=30, interval=0.05)
        response = await api.stop(cid, {"reason": "wrong link"})
        returned = datetime.now(UTC)
        stopped_at = time.monotonic()
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["schedule"] == "paused"
        assert 0 < body["cancelled"] < carts

        async def all_stopped() -> list[Any]:
            assert await running_flows(c.client, cid) == 0
            started = await flows(c, cid)
            ended = await flows(c, cid, " AND Outcome = 'stopped'")
            assert len(ended) == len(started)
            return started

        started = await eventually(all_stopped, timeout=30)
        assert time.monotonic() - stopped_at < 30
        assert 0 < len(started) < carts, "the fan-out went on after the stop"
        assert {w.typed_search_attributes.get(OUTCOME) for w in started} == {"stopped"}

        description = await c.describe("big")
        assert description.schedule.state.paused
        assert description.schedule.state.note == "stopped by the API: wrong link"
        (run,) = [
            w async for w in c.client.list_workflows(f"WorkflowType = '{CAMPAIGN_RUN_TYPE}' AND CampaignId = '{cid}'")
        ]
        assert run.status == WorkflowExecutionStatus.CANCELED

        await asyncio.sleep(2 * 1.0)  # two more sending intervals of the definition: no flow of it may use them
        late = [m for m in outbox.read() if datetime.fromisoformat(m["at"]) > returned]
        in_flight = await _in_flight(c, late, returned)
        print(f"messages after the stop returned: {len(late)}, all handed over before it: {in_flight}")
        assert len(late) == in_flight
        assert len(late) <= 2, late  # a delivery that had passed its checks when the stop was recorded
        assert len(outbox.read()) < carts * SENDS
    finally:
        await terminate_flows(c.client, cid)


async def _in_flight(c: Campaigns, messages: list[dict[str, Any]], before: datetime) -> int:
    """How many of these messages were being delivered already: their send activity started before `before`."""
    count = 0
    for message in messages:
        events = [e async for e in c.client.get_workflow_handle(message["workflow_id"]).fetch_history_events()]
        starts = [e.event_time.ToDatetime(UTC) for e in events if e.HasField("activity_task_started_event_attributes")]
        count += any(start < before for start in starts[-1:])
    return count


async def test_drain_pauses_and_lets_flows_run_and_reconcile_keeps_it_paused_until_resume(api: Api) -> None:
    c = api.c
    c.write("d", workflow=WAITING)
    await c.sync()
    cid = c.id("d")
    try:
        await c.client.get_schedule_handle(c.sid("d")).trigger()
        await eventually(lambda: _running(c, cid, 1), timeout=30)

        response = await api.stop(cid, {"mode": "drain", "reason": "checking the audience"})
        assert (response.status_code, response.json()) == (202, {"schedule": "paused", "cancelled": 0})
        await asyncio.sleep(1)
        (flow,) = await flows(c, cid)
        assert (await c.client.get_workflow_handle(flow.id).describe()).status == WorkflowExecutionStatus.RUNNING

        reconciler = Reconciler(c.client, c.settings)
        outcome = await reconciler.run_once()
        assert not outcome.errors and not outcome.pending
        assert (await c.describe("d")).schedule.state.paused, "reconcile unpaused a stopped campaign"

        resumed = await api.http.post(f"/campaigns/{cid}/resume", json={})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json() == {"message": f"Resumed campaign {cid}: schedule {c.sid('d')} unpaused"}
        state = (await c.describe("d")).schedule.state
        assert (state.paused, state.note) == (False, "resumed by the API")
        assert (await c.client.get_workflow_handle(flow.id).describe()).status == WorkflowExecutionStatus.RUNNING

        store = Store.open(c.settings.store_url)
        try:
            assert CampaignStops(store).barred_before(cid) is None  # a drain bars no flow from sending
        finally:
            store.close()
    finally:
        await terminate_flows(c.client, cid)


async def _running(c: Campaigns, cid: str, n: int) -> None:
    assert await running_flows(c.client, cid) == n


async def test_stop_and_resume_of_an_unknown_campaign_are_404(api: Api) -> None:
    for path in ("/campaigns/nope-nothing/stop", "/campaigns/nope-nothing/resume", "/campaigns/Not%20an%20id/stop"):
        response = await api.http.post(path, headers={"X-Requested-By": "tests"})  # no body at all
        assert response.status_code == 404, (path, response.text)
        assert "nope-nothing" in response.json()["detail"] or "Not an id" in response.json()["detail"]


async def test_stop_body_is_checked(api: Api) -> None:
    c = api.c
    c.write("b", workflow=WAITING)
    await c.sync()
    bad = await api.stop(c.id("b"), {"mode": "halt"})
    assert bad.status_code == 422
    assert "mode" in bad.text
    form = await api.http.post(f"/campaigns/{c.id('b')}/stop", content=b"mode=drain",
                               headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert form.status_code == 415
    assert not (await c.describe("b")).schedule.state.paused  # nothing was stopped by a refused request


async def test_a_flow_started_before_a_cancel_stop_sends_nothing_more_even_uncancelled(campaigns: Campaigns) -> None:
    """The store's record alone bars the send: here no batch runs (the flow is not cancelled)."""
    c = campaigns
    c.write("r", workflow=repeating(sends=2, every="2s"))
    await c.sync()
    cid = c.id("r")
    outbox = Outbox(c.settings.channels.outbox)
    store = Store.open(c.settings.store_url)
    try:
        async with make_worker(c.client, c.settings):
            before = await c.client.start_workflow(
                FLOW_TYPE, _flow_input(c, "r"), id=f"{cid}-before", task_queue=c.settings.temporal.task_queue,
                result_type=FlowStatus,
            )  # fmt: skip
            await eventually(lambda: _sent(outbox, f"{cid}-before", 1))
            CampaignStops(store).record(cid, mode=StopMode.CANCEL, reason="test", by="test")
            await c.client.start_workflow(
                FLOW_TYPE, _flow_input(c, "r"), id=f"{cid}-after", task_queue=c.settings.temporal.task_queue
            )
            await eventually(lambda: _sent(outbox, f"{cid}-after", 2), timeout=30)
            status = await before.result()
            assert (status.path, status.outcome) == (["s1", "w1", "s2"], "stopped")
            assert await outcome_of(before) == "stopped"
            steps = await (await before.describe()).memo_value("steps")
            assert (steps[-1]["step"], steps[-1]["reason"]) == ("s2", "stopped")
            assert await _sent(outbox, f"{cid}-before", 1) is None
    finally:
        store.close()
        await terminate_flows(c.client, cid)


def _flow_input(c: Campaigns, name: str) -> Any:
    return flow_input(c.campaign(name), customer={"id": "c1", "phone": "+12125550100"}, cart={"id": "k1"})


async def _sent(outbox: Outbox, workflow_id: str, n: int) -> None:
    assert len([m for m in outbox.read() if m["workflow_id"] == workflow_id]) == n


def cli_config(c: Campaigns, tmp_path: Path) -> Path:
    """A config file for the CLI: this test's Temporal, task queue and store."""
    config = write_config(tmp_path / "cli.toml", address=c.client.service_client.config.target_host,
                          task_queue=c.settings.temporal.task_queue)  # fmt: skip
    with config.open("a", encoding="utf-8") as f:
        f.write(f'\n[store]\nurl = "{c.settings.store_url}"\n')
    return config


async def test_cli_stop_waits_until_no_flow_runs_and_resume_unpauses(campaigns: Campaigns, tmp_path: Path) -> None:
    c = campaigns
    write_audience(c, 5)
    c.write("cli", max_starts_per_second=100, workflow=JSONL_AUDIENCE + WAITING)
    await c.sync()
    cid = c.id("cli")
    config = cli_config(c, tmp_path)
    try:
        async with make_worker(c.client, c.settings):
            await c.client.get_schedule_handle(c.sid("cli")).trigger()
            await eventually(lambda: _running(c, cid, 5), timeout=30)

            run = await scheduler("stop", cid, "--reason", "typo", "--json", "--config", config)
            assert run.code == 0, run
            assert json.loads(run.stdout) == {"schedule": "paused", "cancelled": 5}
            assert run.stderr.rstrip().endswith(f"no flow of {cid} runs any more")
            assert await running_flows(c.client, cid) == 0  # it returned only once none ran
            ended = await flows(c, cid)
            assert [w.typed_search_attributes.get(OUTCOME) for w in ended] == ["stopped"] * 5
            state = (await c.describe("cli")).schedule.state
            assert state.paused and state.note.startswith("stopped by the CLI") and state.note.endswith(": typo")

            run = await scheduler("resume", cid, "--config", config)
            assert run.code == 0, run
            assert json.loads(run.stdout) == {"message": f"Resumed campaign {cid}: schedule {c.sid('cli')} unpaused"}
            assert not (await c.describe("cli")).schedule.state.paused

            (tmp_path / "file").write_text("not a directory", encoding="utf-8")
            unrecorded = {"SCHEDULER_STORE__URL": f"sqlite:///{tmp_path}/file/scheduler.db"}
            run = await scheduler("stop", cid, "--mode", "drain", "--no-wait", "--config", config, env=unrecorded)
            assert run.code == 0, run
            assert run.stdout == f"stopped campaign {cid}: schedule paused, draining\n"
            assert run.stderr.startswith(f"warning: the stop goes unrecorded: store sqlite:///{tmp_path}/file/")
            assert (await c.describe("cli")).schedule.state.paused  # a store that is down does not hold a stop back

            assert_one_line_error(await scheduler("stop", "no-such-campaign", "--config", config), "no-such-campaign")
            assert_one_line_error(await scheduler("resume", "no-such-campaign", "--config", config), "no-such-campaign")
    finally:
        await terminate_flows(c.client, cid)


async def test_a_pruned_campaign_s_flows_finish_and_plan_and_reconcile_say_how_to_stop_them(
    campaigns: Campaigns, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    c = campaigns
    c.write("p", workflow=WAITING)
    cid = c.id("p")
    reconciler = Reconciler(c.client, c.settings)
    try:
        async with make_worker(c.client, c.settings):
            await reconciler.run_once()
            await c.client.get_schedule_handle(c.sid("p")).trigger()
            await eventually(lambda: _running(c, cid, 1), timeout=30)
            c.path("p").unlink()
            note = f"{cid}: its 1 running flow(s) finish; `scheduler stop {cid}` cancels them"
            config = write_config(tmp_path / "cli.toml", address=c.client.service_client.config.target_host,
                                  task_queue=c.settings.temporal.task_queue)  # fmt: skip
            plan = await scheduler("plan", "--prune", "--config", config, env={"SCHEDULER_CAMPAIGNS__DIR": str(c.dir)})
            assert plan.code == 2, plan
            assert f"delete {cid}" in plan.stdout.splitlines()
            assert note in plan.stderr.splitlines()
            caplog.set_level(logging.INFO, logger="scheduler.campaigns.reconcile")
            outcome = await reconciler.run_once()
            assert [(ch.action, ch.campaign_id) for ch in outcome.pending] == [(Action.DELETE, cid)]
            assert f"reconcile: {note}" in [r.getMessage() for r in caplog.records]
            await asyncio.sleep(1)
            assert await running_flows(c.client, cid) == 1  # deleting the schedule left the flow alone

            stopped = await Stopper(c.client, reconciler.schedules, None).stop(
                cid, mode=StopMode.CANCEL, reason="", by="test"
            )
            assert stopped.result == StopResult(schedule="none", cancelled=1)  # no schedule left, the flow all the same
            await eventually(lambda: _running(c, cid, 0), timeout=30)
    finally:
        await terminate_flows(c.client, cid)


async def test_while_the_server_runs_its_limit_of_batches_a_stop_cancels_flows_one_by_one(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    c = api.c
    write_audience(c, 3)
    c.write("f", max_starts_per_second=100, workflow=JSONL_AUDIENCE + WAITING)
    await c.sync()
    cid = c.id("f")
    hold = await _hold_the_batch_slot(c, f"{cid}-hold")
    try:
        await c.client.get_schedule_handle(c.sid("f")).trigger()
        await eventually(lambda: _running(c, cid, 3), timeout=30)
        caplog.set_level(logging.INFO, logger="scheduler.campaigns.stop")

        response = await api.stop(cid)
        assert (response.status_code, response.json()) == (202, {"schedule": "paused", "cancelled": 3})
        assert any("cancelling one by one" in r.getMessage() for r in caplog.records)
        await eventually(lambda: _running(c, cid, 0), timeout=10)
        assert [w.typed_search_attributes.get(OUTCOME) for w in await flows(c, cid)] == ["stopped"] * 3
    finally:
        request = StopBatchOperationRequest(namespace=c.client.namespace, job_id=hold, reason="test over")
        await c.client.workflow_service.stop_batch_operation(request)
        await terminate_flows(c.client, cid)


async def _hold_the_batch_slot(c: Campaigns, tag: str) -> str:
    """Start a slow batch operation (the dev server runs one at a time): signals, one a second, to 60 closed
    workflows of a type no worker runs (each fails, nothing changes). Its job id, to stop it."""
    for i in range(60):
        handle = await c.client.start_workflow(
            "Placeholder", id=f"{tag}-{i}", task_queue=f"{tag}-none",
            search_attributes=TypedSearchAttributes([SearchAttributePair(CAMPAIGN_ID, tag)]),
        )  # fmt: skip
        await handle.terminate("only holds a place")
    await eventually(lambda: _closed(c, tag, 60))
    request = StartBatchOperationRequest(
        namespace=c.client.namespace,
        job_id=tag,
        visibility_query=f"CampaignId = '{tag}'",
        reason="holds the slot",
        max_operations_per_second=1,
        signal_operation=BatchOperationSignal(signal="ignored", identity="test"),
    )
    await c.client.workflow_service.start_batch_operation(request)
    return tag


async def _closed(c: Campaigns, tag: str, n: int) -> None:
    assert (await c.client.count_workflows(f"CampaignId = '{tag}' AND ExecutionStatus != 'Running'")).count == n


TWO_SENDS = """\
[workflow]
start_step = "s1"

[workflow.steps.s1]
node = "send_message"
go_to = "w1"

[workflow.steps.w1]
node = "explicit_wait"
params = { duration = "7s" }
go_to = "s2"

[workflow.steps.s2]
node = "send_message"
"""
"""Two messages 7 s apart: longer than a stop's follow-up takes to cancel again what visibility shows running."""


async def _start(c: Campaigns, name: str, tag: str) -> Any:
    return await c.client.start_workflow(
        FLOW_TYPE, _flow_input(c, name), id=f"{c.id(name)}-{tag}", task_queue=c.settings.temporal.task_queue,
        result_type=FlowStatus,
    )  # fmt: skip


async def _stopped_with_one_flow_cancelled(api: Api, name: str, outbox: Outbox) -> Any:
    """Start a flow, stop the campaign once the flow has sent its first message; that flow."""
    c, cid = api.c, api.c.id(name)
    before = await _start(c, name, "before")
    await eventually(lambda: _sent(outbox, before.id, 1))
    await eventually(lambda: _running(c, cid, 1))
    response = await api.stop(cid, {})
    assert (response.status_code, response.json()) == (202, {"schedule": "paused", "cancelled": 1})
    return before


async def _ran_as_usual(outbox: Outbox, flow: Any) -> None:
    status = await asyncio.wait_for(flow.result(), timeout=30)
    assert (status.path, status.outcome) == (["s1", "w1", "s2"], "completed")
    assert await outcome_of(flow) == "completed"
    await _sent(outbox, flow.id, 2)


async def _was_stopped(outbox: Outbox, flow: Any) -> None:
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(flow.result(), timeout=30)
    assert (await flow.describe()).status == WorkflowExecutionStatus.CANCELED
    assert await outcome_of(flow) == "stopped"
    await _sent(outbox, flow.id, 1)


async def test_a_flow_started_after_a_stop_sends_as_usual_while_the_stop_follows_up(api: Api) -> None:
    c = api.c
    c.write("fu", workflow=TWO_SENDS)
    await c.sync()
    cid = c.id("fu")
    outbox = Outbox(c.settings.channels.outbox)
    try:
        before = await _stopped_with_one_flow_cancelled(api, "fu", outbox)
        after = await _start(c, "fu", "after")  # the stop's follow-up runs in the background meanwhile
        await _was_stopped(outbox, before)
        await _ran_as_usual(outbox, after)
        assert not api.app.state.background, "the follow-up of the stop still runs"
        assert (await c.describe("fu")).schedule.state.paused
    finally:
        await terminate_flows(c.client, cid)


async def test_stop_then_resume_then_a_new_flow_within_a_second_the_new_flow_runs(api: Api) -> None:
    c = api.c
    c.write("sr", workflow=TWO_SENDS)
    await c.sync()
    cid = c.id("sr")
    outbox = Outbox(c.settings.channels.outbox)
    try:
        before = await _stopped_with_one_flow_cancelled(api, "sr", outbox)
        stopped_at = time.monotonic()
        follow_up = api.app.state.follow_ups[cid]
        resumed = await api.http.post(f"/campaigns/{cid}/resume", json={})
        assert resumed.status_code == 200, resumed.text
        after = await _start(c, "sr", "after")
        assert time.monotonic() - stopped_at < 1
        await asyncio.sleep(0)
        assert follow_up.cancelled() and cid not in api.app.state.follow_ups  # the resume ended it
        await _was_stopped(outbox, before)
        await _ran_as_usual(outbox, after)
    finally:
        await terminate_flows(c.client, cid)


async def test_cli_stop_stops_waiting_when_the_campaign_is_resumed_elsewhere(
    campaigns: Campaigns, tmp_path: Path
) -> None:
    c = campaigns
    c.write("cw", workflow=WAITING)
    await c.sync()
    cid = c.id("cw")
    config = cli_config(c, tmp_path)
    try:
        async with make_worker(c.client, c.settings):
            await c.client.get_schedule_handle(c.sid("cw")).trigger()
            await eventually(lambda: _running(c, cid, 1), timeout=30)
            waiting = asyncio.create_task(scheduler("stop", cid, "--mode", "drain", "--config", config))

            async def paused() -> None:
                assert (await c.describe("cw")).schedule.state.paused

            await eventually(paused, timeout=20)
            await Stopper(c.client, ScheduleWriter(c.client, c.settings), None).resume(cid, by="test")
            run = await waiting  # without the resume it would wait for the flow's hour-long wait
            assert run.code == 0, run
            assert run.stderr.rstrip().endswith(f"{cid} was resumed; stopped waiting (1 flow(s) of the stop left)")
            assert await running_flows(c.client, cid) == 1  # drained, not cancelled
    finally:
        await terminate_flows(c.client, cid)
