"""`plan` and `apply` on an update with flows in flight: the change in words, and the running flows per definition
version and step with what becomes of them, in text and in `--json` (the dev server, a worker, the console script).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns import review as review_module
from scheduler.campaigns.reconcile import Reconciler
from scheduler.campaigns.review import FlowsInFlight, Review, StepFlows, VersionFlows, flows_in_flight
from scheduler.campaigns.schedules import Action
from scheduler.config import Settings
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import flow_input
from scheduler.flow.workflows import FLOW_TYPE
from scheduler.visibility import in_flight_query
from scheduler.worker import make_worker
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.waiting import eventually
from tests.test_plan_cli import Cli, cli_for

ASK_THEN_BYE = """\
[workflow]
start_step = "ask"

[workflow.steps.ask]
node = "send_message"
params = {{ template = "Your cart is waiting" }}
go_to = "listen"

[workflow.steps.listen]
node = "wait_answer"
params = {{ timeout = "1h" }}
go_to = "bye"

[workflow.steps.bye]
node = "send_message"
params = {{ template = "{bye}" }}
"""
"""Ask, listen an hour, say bye (whatever the answer): flows wait at `listen`."""
REMINDER = """
[workflow.steps.reminder]
node = "send_message"
params = { template = "Still thinking about it?" }
go_to = "bye"
"""


@pytest_asyncio.fixture
async def cli(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path) -> AsyncIterator[Cli]:
    async with cli_for(dev_env.client, settings, task_queue, tmp_path) as cli:
        yield cli


async def start_flows(c: Campaigns, name: str, n: int, tag: str) -> None:
    """`n` flows of the campaign as its file is now, with ids of their own; returns once they are started."""
    campaign = c.campaign(name)
    for i in range(n):
        cart = f"{tag}-{i}"
        await c.client.start_workflow(
            FLOW_TYPE,
            flow_input(campaign, customer={"id": f"cu-{cart}", "phone": "+12125550100"}, cart={"id": cart}),
            id=f"{c.id(name)}-{cart}",
            task_queue=c.settings.temporal.task_queue,
        )


async def waiting_at(c: Campaigns, cid: str, version: str, step: str, n: int) -> None:
    count = await c.client.count_workflows(in_flight_query(cid, version=version, step=step))
    assert count.count == n


async def test_plan_and_apply_show_the_diff_and_the_flows_in_flight_per_version_and_step(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cli.c
    cid = c.id("r")
    c.write("r", workflow=ASK_THEN_BYE.format(bye="See you"))
    await c.sync()
    older = c.campaign("r").workflow.version
    try:
        async with make_worker(c.client, c.settings):
            await start_flows(c, "r", 1, "older")
            c.write("r", workflow=ASK_THEN_BYE.format(bye="Bye"))
            await c.sync()
            applied_definition = c.campaign("r").workflow
            applied = applied_definition.version
            await start_flows(c, "r", 2, "applied")
            await eventually(lambda: waiting_at(c, cid, older, "listen", 1), timeout=30)
            await eventually(lambda: waiting_at(c, cid, applied, "listen", 2), timeout=30)
            changed = ASK_THEN_BYE.format(bye="Bye now").replace(
                'go_to = "bye"', 'condition = { timeout = "reminder" }\ngo_to = "bye"', 1
            )
            c.write("r", workflow=changed + REMINDER)
            new = c.campaign("r").workflow.version

            planned, as_json = await cli("plan"), await cli("plan", "--json")
            monkeypatch.setattr(review_module, "MAX_VERSIONS", 1)
            capped = await flows_in_flight(c.client, cid, applied_definition, c.campaign("r").workflow)
            applied_run = await cli("apply")
    finally:
        await terminate_flows(c.client, cid)

    review = [
        "  changes:",
        "    step reminder added: send_message, leads to bye",
        "    listen: timeout → reminder (was bye)",
        "    bye: template changed",
        "      - Bye",
        "      + Bye now",
        "  flows in flight: 3 running",
        f"    2 flows wait at listen on {applied}: they finish on their own definition"
        " (listen still leads to bye on timeout there)",
        f"    1 flow waits at listen on {older}: they finish on their own definition",
    ]
    assert planned.code == 2, planned
    assert planned.stdout.splitlines() == [f"update {cid}", *review, "plan: 1 update"], planned.stdout
    assert planned.stderr == ""
    assert applied_run.code == 0, applied_run
    assert applied_run.stdout.splitlines() == [f"update {cid}", *review, "applied: 1 update"], applied_run.stdout

    assert as_json.code == 2, as_json
    assert as_json.stdout.count("\n") == 1
    (entry,) = json.loads(as_json.stdout)
    assert (entry["action"], entry["campaign_id"]) == ("update", cid)
    assert [(d["kind"], d["step"]) for d in entry["diff"]] == [
        ("step_added", "reminder"),
        ("edge", "listen"),
        ("template", "bye"),
    ]
    assert entry["diff"][2]["lines"] == ["- Bye", "+ Bye now"]
    flows = entry["flows_in_flight"]
    assert (flows["running"], flows["other_versions"], flows["error"]) == (3, 0, None)
    assert [(v["version"], v["definition"], v["count"], v["other_steps"]) for v in flows["versions"]] == [
        (applied, "applied", 2, 0),
        (older, "older", 1, 0),
    ]
    steps: list[dict[str, Any]] = flows["versions"][0]["steps"]
    assert [(s["step"], s["count"]) for s in steps] == [("listen", 2)]
    assert "listen still leads to bye on timeout there" in steps[0]["note"]
    assert new not in {v["version"] for v in flows["versions"]}

    assert (capped.running, [v.version for v in capped.versions], capped.other_versions) == (3, [applied], 1)
    assert Review([], capped).lines()[-1] == "    …and 1 flow on other definition versions"


async def test_plan_of_an_update_without_running_flows_shows_the_diff_and_zero(cli: Cli) -> None:
    c = cli.c
    c.write("q", workflow=ASK_THEN_BYE.format(bye="Bye"))
    await c.sync()
    c.write("q", workflow=ASK_THEN_BYE.format(bye="Bye"), cron=["0 10 * * *"])

    planned = await cli("plan")

    assert planned.code == 2, planned
    assert planned.stdout.splitlines() == [
        f"update {c.id('q')}",
        "  changes:",
        '    schedule.cron: ["0 10 * * *"] (was ["0 9 * * *"])',
        "  flows in flight: 0 running",
        "plan: 1 update",
    ]


async def test_flows_in_flight_when_temporal_does_not_answer_say_so() -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        client = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter, lazy=True)
        definition = WorkflowDefinition.model_validate({"start_step": "a", "steps": {"a": {"node": "send_message"}}})
        flows = await flows_in_flight(client, "some-campaign", definition, definition, timeout=10)

    assert flows.running is None
    assert flows.error is not None
    assert flows.error.startswith("Temporal did not answer the counts"), flows.error
    assert flows.to_json()["running"] is None


def test_review_lines_say_what_is_left_out_and_when_counts_are_unavailable() -> None:
    version = VersionFlows("9f2c1a7e03b4", 3_216, "applied", [StepFlows("listen", 3_214, "they finish")], 2)
    flows = FlowsInFlight(running=3_219, versions=[version], other_versions=3, notes=["a note"])
    assert Review([], flows).lines() == [
        "  flows in flight: 3,219 running",
        "    3,214 flows wait at listen on 9f2c1a7e03b4: they finish",
        "    …and 2 flows on 9f2c1a7e03b4 at other steps",
        "    …and 3 flows on other definition versions",
        "    a note",
    ]
    unavailable = FlowsInFlight(error="Temporal did not answer the counts within 20s")
    assert Review([], unavailable).lines() == [
        "  flows in flight: unavailable (Temporal did not answer the counts within 20s)"
    ]


async def test_the_reconcile_loop_logs_an_update_in_words(
    campaigns: Campaigns, caplog: pytest.LogCaptureFixture
) -> None:
    c = campaigns
    c.write("l", workflow=ASK_THEN_BYE.format(bye="Bye"))
    reconciler = Reconciler(c.client, c.settings)
    await reconciler.run_once()
    c.write("l", workflow=ASK_THEN_BYE.format(bye="Bye").replace('timeout = "1h"', 'timeout = "2h"'))

    with caplog.at_level(logging.INFO, logger="scheduler.campaigns.reconcile"):
        result = await reconciler.run_once()

    assert [(ch.action, ch.campaign_id) for ch in result.pending] == [(Action.UPDATE, c.id("l"))]
    assert [r.getMessage() for r in caplog.records] == [
        f"reconcile: update {c.id('l')}",
        f'reconcile: {c.id("l")}: listen: params.timeout "2h" (was "1h")',
    ]
