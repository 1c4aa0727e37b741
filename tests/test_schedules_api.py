"""`/schedules` end to end: `create_app()` over ASGI against the real dev server.

GET /schedules lists every managed schedule of the shared server, so assertions pick this test's
campaigns out of it (see test_schedules for the per-test ids, directory and task queue).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from scheduler.api import create_app
from scheduler.campaigns.schedules import describe
from scheduler.config import Settings
from scheduler.worker import make_worker
from tests.helpers.campaigns import BOMBS, BROKEN_LINE, WAITING
from tests.helpers.schedules import BERLIN, Campaigns, create_foreign_schedule, own_campaigns, terminate_flows
from tests.helpers.waiting import eventually

FIELDS = {
    "campaign_id",
    "schedule_id",
    "cron",
    "timezone",
    "paused",
    "note",
    "next_runs",
    "recent_runs",
    "running_flows",
    "definition_version",
    "source",
}
RUN_FIELDS = {
    "workflow_id",
    "messages",
    "scheduled_at",
    "status",
    "started",
    "skipped_duplicate",
    "skipped_invalid",
    "skipped_suppressed",
    "failed",
    "window",  # null without an [audience]
}


@dataclass
class Api:
    http: httpx.AsyncClient
    c: Campaigns

    async def schedules(self) -> dict[str, Any]:
        response = await self.http.get("/schedules")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert set(body) == {"schedules", "errors"}
        return body

    async def listed(self, *names: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """GET /schedules once it shows exactly these campaigns of this test (it lists from visibility, which
        lags): the body, and this test's entries by campaign id."""

        async def check() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            body = await self.schedules()
            prefix = f"{self.c.prefix}-"
            mine = {e["campaign_id"]: e for e in body["schedules"] if e["campaign_id"].startswith(prefix)}
            assert set(mine) == {self.c.id(n) for n in names}
            return body, mine

        return await eventually(check)

    async def one(self, name: str) -> dict[str, Any]:
        response = await self.http.get(f"/schedules/{self.c.id(name)}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app with the client given (no lifespan, no reconcile loop) over this test's campaigns directory."""
    async with own_campaigns(dev_env.client, settings, task_queue, tmp_path) as c:
        transport = httpx.ASGITransport(app=create_app(settings, client=dev_env.client))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield Api(http, c)


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str)


async def test_get_schedules_lists_campaigns_with_contract_fields(api: Api) -> None:
    c = api.c
    c.write("berlin", cron=["0 9 * * *"], timezone="Europe/Berlin", workflow=WAITING)
    c.write("off", cron=["0 6 * * 1", "0 18 * * 5"], enabled=False)
    await c.sync()

    body, mine = await api.listed("berlin", "off")

    assert body["errors"] == []
    assert set(mine) == {c.id("berlin"), c.id("off")}
    berlin = mine[c.id("berlin")]
    assert set(berlin) == FIELDS
    next_runs = [datetime.fromisoformat(t) for t in berlin.pop("next_runs")]
    assert berlin == {
        "campaign_id": c.id("berlin"),
        "schedule_id": f"campaign-{c.id('berlin')}",
        "cron": ["0 9 * * *"],
        "timezone": "Europe/Berlin",
        "paused": False,
        "note": "",
        "recent_runs": [],
        "running_flows": 0,
        "definition_version": c.campaign("berlin").workflow.version,
        "source": str(c.path("berlin")),
    }
    assert next_runs
    assert {(t.astimezone(BERLIN).hour, t.astimezone(BERLIN).minute) for t in next_runs} == {(9, 0)}
    assert datetime.now(UTC) < next_runs[0] <= datetime.now(UTC) + timedelta(days=1)

    off = mine[c.id("off")]
    assert set(off) == FIELDS
    assert (off["cron"], off["timezone"], off["paused"]) == (["0 6 * * 1", "0 18 * * 5"], "UTC", True)
    assert "enabled = false" in off["note"]
    assert off["definition_version"] == c.campaign("off").workflow.version


async def test_get_schedules_reports_broken_file(api: Api) -> None:
    c = api.c
    c.write("good")
    await c.sync()
    broken = c.write_broken("broken")

    body, _ = await api.listed("good")

    (error,) = body["errors"]
    assert set(error) == {"source", "line", "message"}
    assert (Path(error["source"]), error["line"]) == (broken, BROKEN_LINE)
    assert error["message"].startswith("workflow.steps.a.node: unknown node 'nope'")


async def test_get_schedule_one_or_404(api: Api) -> None:
    c = api.c
    c.write("a", timezone="Europe/Berlin")
    await c.sync()

    one = await api.one("a")
    listed = (await api.listed("a"))[1][c.id("a")]

    assert set(one) == FIELDS
    assert one == listed
    assert_not_found(await api.http.get(f"/schedules/{c.id('missing')}"))
    for bad in ("Bad Id!", "a'b", "x" * 64, "UPPER", "-a", "a b", "ü"):
        assert_not_found(await api.http.get(f"/schedules/{quote(bad)}"))


async def test_pause_and_unpause_through_api(api: Api) -> None:
    c = api.c
    c.write("a")
    await c.sync()

    paused = await api.http.post(f"/schedules/{c.id('a')}/pause", json={})
    assert paused.status_code == 200, paused.text
    assert paused.json() == {"message": f"Paused schedule {c.sid('a')}"}
    state = (await c.describe("a")).schedule.state
    assert (state.paused, state.note) == (True, "paused through the API")
    entry = await api.one("a")
    assert (entry["paused"], entry["note"]) == (True, "paused through the API")

    unpaused = await api.http.post(f"/schedules/{c.id('a')}/unpause", json={})
    assert unpaused.status_code == 200, unpaused.text
    assert unpaused.json() == {"message": f"Unpaused schedule {c.sid('a')}"}
    assert not (await c.describe("a")).schedule.state.paused
    assert (await api.one("a"))["paused"] is False


async def test_pause_unpause_trigger_unknown_or_unmanaged_404(api: Api) -> None:
    c = api.c
    c.owned.add(c.sid("foreign"))
    await create_foreign_schedule(c.client, c.sid("foreign"))

    for verb in ("pause", "unpause", "trigger"):
        assert_not_found(await api.http.post(f"/schedules/{c.id('missing')}/{verb}", json={}))
        assert_not_found(await api.http.post(f"/schedules/{quote('Bad Id!')}/{verb}", json={}))
        assert_not_found(await api.http.post(f"/schedules/{c.id('foreign')}/{verb}", json={}))

    assert await describe(c.client, c.sid("missing")) is None
    foreign = await c.describe("foreign")
    assert (foreign.schedule.state.paused, foreign.schedule.state.note) == (True, "made by hand")
    assert foreign.info.recent_actions == []


async def test_trigger_through_api_shows_run_and_running_flow(api: Api) -> None:
    c = api.c
    c.write("a", workflow=WAITING)
    await c.sync()
    async with make_worker(c.client, c.settings):
        try:
            triggered = await api.http.post(f"/schedules/{c.id('a')}/trigger", json={})
            assert triggered.status_code == 200, triggered.text
            assert triggered.json() == {"message": f"Triggered schedule {c.sid('a')}"}

            async def run_completed_with_waiting_flow() -> dict[str, Any]:
                entry = await api.one("a")
                assert len(entry["recent_runs"]) == 1
                run = entry["recent_runs"][0]
                assert run["status"] == "Completed"
                assert entry["running_flows"] >= 1
                return entry

            entry = await eventually(run_completed_with_waiting_flow)
            (run,) = entry["recent_runs"]
            assert set(run) == RUN_FIELDS
            assert run["workflow_id"].startswith(f"campaign-run-{c.id('a')}-")
            assert (run["started"], run["skipped_duplicate"], run["skipped_invalid"], run["failed"]) == (1, 0, 0, 0)
            assert run["window"] is None
            assert entry["running_flows"] == 1
            assert (await api.listed("a"))[1][c.id("a")]["recent_runs"] == [run]
        finally:
            await terminate_flows(c.client, c.id("a"))


@asynccontextmanager
async def reconciling_api(c: Campaigns, *, created: str) -> AsyncIterator[Api]:
    """The app with its reconcile loop (one run, at start), once that run has created campaign `created`."""
    c.settings.campaigns.reconcile_every = timedelta(hours=1)
    app = create_app(c.settings, client=c.client, reconcile=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):

        async def ran() -> None:
            assert app.state.reconciler.last is not None
            assert await describe(c.client, c.sid(created)) is not None

        await eventually(ran)
        yield Api(http, c)


async def test_app_reconcile_creates_schedules_and_reports_its_last_errors(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path
) -> None:
    async with own_campaigns(dev_env.client, settings, task_queue, tmp_path) as c:
        c.write("a")
        broken = c.write_broken("broken")
        async with reconciling_api(c, created="a") as api:
            # Fixed on disk after the run: GET /schedules still says what the loop last found.
            c.write("broken")
            body, _ = await api.listed("a")
            (error,) = body["errors"]
            assert (Path(error["source"]), error["line"]) == (broken, BROKEN_LINE)
        assert await describe(c.client, c.sid("broken")) is None


async def test_app_reconcile_with_bomb_files_serves_the_good_campaign(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path
) -> None:
    """Files that once raised out of the loader (and so failed every reconcile and `/start-workflow`)."""
    async with own_campaigns(dev_env.client, settings, task_queue, tmp_path) as c:
        c.write("a")
        bombs = {"nesting-5000", "integer-5000-digits", "duration-99999999999999w", "not-utf8"}
        for key in bombs:
            content = BOMBS[key][1]
            (c.dir / f"{key}.toml").write_bytes(content.encode() if isinstance(content, str) else content)
        async with reconciling_api(c, created="a") as api:
            body, _ = await api.listed("a")
            assert {Path(e["source"]).stem for e in body["errors"]} == bombs
            started = await api.http.post("/start-workflow", json={"campaign": c.id("a")})
            assert started.status_code == 200, started.text
            await c.client.get_workflow_handle(started.json()["workflow_id"]).terminate()
