"""A campaign's funnel (`GET /campaigns/{id}/stats`, `scheduler stats`) against flows on the dev server."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle

from scheduler.api import create_app
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import FlowOutcome, flow_input
from scheduler.flow.signals import CART_CONVERTED_SIGNAL, CLIENT_ANSWERED_SIGNAL, Conversion, Reply
from scheduler.flow.workflows import FLOW_TYPE
from scheduler.worker import make_worker
from tests.helpers.campaigns import FUNNEL
from tests.helpers.cli import assert_one_line_error, scheduler, write_config
from tests.helpers.flows import reaches
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.waiting import eventually


@pytest_asyncio.fixture
async def http(campaigns: Campaigns) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(campaigns.settings, client=campaigns.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        yield client


async def start(
    c: Campaigns, name: str, key: str, definition: WorkflowDefinition | None = None
) -> WorkflowHandle[Any, Any]:
    flow = flow_input(c.campaign(name), customer={"id": key, "phone": "+12125550100"}, cart={"id": key})
    if definition is not None:
        flow = flow.model_copy(update={"definition": definition})
    return await c.client.start_workflow(
        FLOW_TYPE, flow, id=f"{c.id(name)}-{key}", task_queue=c.settings.temporal.task_queue,
        search_attributes=start_attributes(flow),
    )  # fmt: skip


async def test_stats_count_flows_at_each_step_and_by_outcome(
    campaigns: Campaigns, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    c = campaigns
    c.write("f", workflow=FUNNEL)
    await c.sync()
    cid = c.id("f")
    before = datetime.now(UTC) - timedelta(seconds=5)
    legacy = WorkflowDefinition.model_validate(
        {"start_step": "legacy", "steps": {"legacy": {"node": "explicit_wait", "params": {"duration": "1h"}}}}
    )
    try:
        async with make_worker(c.client, c.settings):
            waiting = [await start(c, "f", f"w{i}") for i in range(2)]
            answered, opted_out, stopped, converted = [await start(c, "f", k) for k in ("a", "o", "s", "c")]
            await start(c, "f", "old", legacy)  # a flow of an older definition, at a step the current one lacks
            for handle in (*waiting, answered, opted_out, stopped, converted):
                await reaches(handle, "wait")
            await answered.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="yes"))
            await opted_out.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r2", text="STOP", opt_out=True))
            await converted.signal(CART_CONVERTED_SIGNAL, Conversion())
            await stopped.cancel()
            await reaches(answered, "pause")

            expected = {
                "campaign_id": cid,
                "running": {"send": 0, "wait": 2, "pause": 1, "legacy": 1},
                "outcomes": dict.fromkeys(FlowOutcome, 0) | {"converted": 1, "opted_out": 1, "stopped": 1},
                "answered": 1,
                "started": 7,
                "intents": {},  # no wait_answer of the definition has intents
                "deliveries": {},  # the six messages went to the console, which sends no receipts: not kept
            }

            async def counted() -> dict[str, Any]:
                response = await http.get(f"/campaigns/{cid}/stats", params={"since": before.isoformat()})
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                assert {k: v for k, v in body.items() if k != "since"} == expected
                return body

            body = await eventually(counted, timeout=20)
            assert datetime.fromisoformat(body["since"]) == before
            assert list(body["running"]) == ["send", "wait", "pause", "legacy"]  # the definition's order first

            later = await http.get(f"/campaigns/{cid}/stats", params={"since": datetime.now(UTC).isoformat()})
            assert later.json()["started"] == 0 and later.json()["outcomes"] == dict.fromkeys(FlowOutcome, 0)
            assert later.json()["running"] == expected["running"]  # running flows are counted whatever `since`

            config = write_config(tmp_path / "cli.toml", address=c.client.service_client.config.target_host,
                                  task_queue=c.settings.temporal.task_queue)  # fmt: skip
            run = await scheduler("stats", cid, "--since", before.isoformat(), "--json", "--config", config)
            assert run.code == 0, run
            assert {k: v for k, v in json.loads(run.stdout).items() if k != "since"} == expected
            table = await scheduler("stats", cid, "--since", before.isoformat(), "--config", config)
            assert table.code == 0, table
            lines = table.stdout.splitlines()
            assert lines[0] == f"campaign {cid}: since {before:%Y-%m-%d %H:%M} UTC"
            assert lines[1].split() == ["RUNNING", "AT", "STEP", "FLOWS"]
            assert lines[3].split() == ["wait", "2"]
            assert lines[-1] == "started 7, answered 1 (14 %)"
            assert_one_line_error(await scheduler("stats", cid, "--since", "yesterday", "--config", config), "--since")
    finally:
        await terminate_flows(c.client, cid)


async def test_stats_of_a_campaign_without_flows_are_zeros_and_of_an_unknown_one_404(
    campaigns: Campaigns, http: httpx.AsyncClient
) -> None:
    c = campaigns
    c.write("empty", workflow=FUNNEL)
    await c.sync()
    response = await http.get(f"/campaigns/{c.id('empty')}/stats")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["running"] == {"send": 0, "wait": 0, "pause": 0}
    assert body["outcomes"] == dict.fromkeys(FlowOutcome, 0)
    assert (body["started"], body["answered"]) == (0, 0)
    assert datetime.now(UTC) - datetime.fromisoformat(body["since"]) - timedelta(days=7) < timedelta(minutes=1)

    for path in (f"/campaigns/{c.id('nothing')}/stats", "/campaigns/Not%20an%20id/stats"):
        missing = await http.get(path)
        assert missing.status_code == 404, missing.text
    assert (await http.get(f"/campaigns/{c.id('empty')}/stats", params={"since": "soon"})).status_code == 422


async def test_a_since_without_an_offset_is_utc_whatever_the_machine_s_zone(
    campaigns: Campaigns, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = campaigns
    c.write("tz", workflow=FUNNEL)
    await c.sync()
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        response = await http.get(f"/campaigns/{c.id('tz')}/stats", params={"since": "2026-11-01T00:00:00"})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["since"]) == datetime(2026, 11, 1, tzinfo=UTC)


ODD_STEPS = """\
[workflow]
start_step = "it's"

[workflow.steps."it's"]
node = "explicit_wait"
params = { duration = "1h" }
go_to = 'say "hi"'

[workflow.steps.'say "hi"']
node = "explicit_wait"
params = { duration = "1h" }
go_to = 'back\\slash'

[workflow.steps.'back\\slash']
node = "explicit_wait"
params = { duration = "1h" }
"""
"""Steps whose names hold a quote, a double quote, a backslash: visibility's literals must quote them."""


async def test_steps_named_with_quotes_and_backslashes_are_counted_in_stats_and_on_the_dashboard(
    campaigns: Campaigns, http: httpx.AsyncClient
) -> None:
    c = campaigns
    c.write("odd", workflow=ODD_STEPS)
    await c.sync()
    cid = c.id("odd")
    base = c.campaign("odd").workflow
    older = WorkflowDefinition.model_validate(
        {"start_step": "mix'\"\\", "steps": {"mix'\"\\": {"node": "explicit_wait", "params": {"duration": "1h"}}}}
    )
    at = {"it's": 1, 'say "hi"': 2, "back\\slash": 3}
    try:
        async with make_worker(c.client, c.settings):
            for step, n in at.items():
                for i in range(n):
                    await start(c, "odd", f"{len(step)}-{i}", base.model_copy(update={"start_step": step}))
            await start(c, "odd", "older", older)  # an older definition's step, named as badly
            expected = {**at, "mix'\"\\": 1}

            async def counted() -> None:
                response = await http.get(f"/campaigns/{cid}/stats")
                assert response.status_code == 200, response.text
                assert response.json()["running"] == expected

            await eventually(counted, timeout=20)
            page = await http.get(f"/ui/campaigns/{cid}")
            assert page.status_code == 200, page.text
            rows = re.findall(r'<tr data-step="([^"]*)"><td>[^<]*</td><td class="n">(\d+)</td></tr>', page.text)
            assert {html.unescape(step): int(n) for step, n in rows} == expected
    finally:
        await terminate_flows(c.client, cid)
