"""The dashboard (`/ui/`): its HTML over ASGI, and the campaign page in a real browser (Debian's Chromium, driven
by Playwright: no browser download) against a real uvicorn server, the dev server and a worker.

The browser tests run when `/usr/bin/chromium` (or `$CHROMIUM`) exists and are skipped, saying so, when not.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
import uvicorn
from temporalio.client import WorkflowHandle

from scheduler.api import create_app
from scheduler.campaigns.stop import running_flows
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import flow_input
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, DeliveryState, Reply
from scheduler.flow.workflows import FLOW_TYPE
from scheduler.store import Store
from scheduler.store.api_keys import Keys
from scheduler.store.deliveries import Deliveries, DeliveryRecord
from scheduler.worker import make_worker
from tests.helpers import ROOT
from tests.helpers.campaigns import FUNNEL
from tests.helpers.flows import reaches
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.servers import free_ports
from tests.helpers.waiting import eventually

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAS_CHROMIUM = Path(CHROMIUM).exists()
SCREENSHOT = os.environ.get("SCHEDULER_DASHBOARD_SCREENSHOT")
"""Set to a path to save the campaign page's screenshot there (the docs' is `docs/dashboard.png`)."""
# The flags Chromium needs as root in a container, and without its background connections on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def start(c: Campaigns, name: str, key: str) -> WorkflowHandle[Any, Any]:
    flow = flow_input(c.campaign(name), customer={"id": key, "phone": "+12125550100"}, cart={"id": key})
    return await c.client.start_workflow(
        FLOW_TYPE, flow, id=f"{c.id(name)}-{key}", task_queue=c.settings.temporal.task_queue,
        search_attributes=start_attributes(flow),
    )  # fmt: skip


@pytest_asyncio.fixture
async def parked(campaigns: Campaigns) -> AsyncIterator[Campaigns]:
    """A campaign whose flows wait at two steps: two at `wait` (for a reply), one at `pause` (it answered)."""
    c = campaigns
    c.write("shop", workflow=FUNNEL)
    await c.sync()
    try:
        async with make_worker(c.client, c.settings):
            handles = [await start(c, "shop", k) for k in ("a", "b", "c")]
            for handle in handles:
                await reaches(handle, "wait")
            await handles[2].signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="yes"))
            await reaches(handles[2], "pause")
            yield c
    finally:
        await terminate_flows(c.client, c.id("shop"))


async def test_pages_need_a_read_key_once_one_exists_and_show_the_counts(parked: Campaigns) -> None:
    c = parked
    cid = c.id("shop")
    app = create_app(c.settings, client=c.client, key_cache_seconds=0)
    store = Store.open(c.settings.store_url)
    try:  # receipts of three texts of step `send` (its own three messages went to the console, which has none)
        deliveries = Deliveries(store)
        for i, status in enumerate((DeliveryState.DELIVERED, DeliveryState.DELIVERED, DeliveryState.UNDELIVERED)):
            deliveries.begin(DeliveryRecord(f"{cid}-{i}", f"{cid}-w{i}", "r", cid, "send", "twilio", None))
            deliveries.report(f"{cid}-{i}", status)
    finally:
        store.close()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        open_page = await http.get(f"/ui/campaigns/{cid}")  # loopback, no key yet: open, with the buttons
        assert open_page.status_code == 200, open_page.text
        assert 'data-step="wait"' in open_page.text and 'data-url="/campaigns/' in open_page.text
        assert "script-src 'self';" in open_page.headers["content-security-policy"]
        assert open_page.text.count("<script") == 1 and '<script src="/ui/dashboard.js">' in open_page.text  # no inline
        sent = '<td class="n" data-status="sent">0</td><td class="n" data-status="delivered">2</td>'
        sent += '<td class="n" data-status="undelivered">1</td>'
        assert (
            '<table id="deliveries">' in open_page.text
            and f'<tr data-step="send"><td>send</td>{sent}' in open_page.text
        )
        store = Store.open(c.settings.store_url)
        try:
            _, read_key = Keys(store).create("viewer", scope="read")
        finally:
            store.close()
        asked = await http.get(f"/ui/campaigns/{cid}")
        assert asked.status_code == 401
        assert 'id="key"' in asked.text and 'data-step="wait"' not in asked.text  # nothing shown without the key
        seen = await http.get(f"/ui/campaigns/{cid}", headers={"Authorization": f"Bearer {read_key}"})
        assert seen.status_code == 200
        assert "data-url=" not in seen.text  # a read key gets no buttons
        index = await http.get("/ui/", headers={"Authorization": f"Bearer {read_key}"})
        assert index.status_code == 200 and f'href="/ui/campaigns/{cid}"' in index.text
        missing = await http.get(f"/ui/campaigns/{c.id('nothing')}", headers={"Authorization": f"Bearer {read_key}"})
        assert missing.status_code == 404

    c.settings.temporal.ui_url = "https://temporal.example.com/"
    c.path("shop").write_text(c.path("shop").read_text().replace('node = "wait_answer"', 'node = "nope"'))
    app = create_app(c.settings, client=c.client, key_cache_seconds=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        page = (await http.get(f"/ui/campaigns/{cid}", headers={"Authorization": f"Bearer {read_key}"})).text
    waiting = f"WorkflowType = 'AbandonedCartWorkflow' AND CampaignId = '{cid}' AND ExecutionStatus = 'Running'"
    at_wait = quote(waiting + " AND CurrentStep = 'wait'")
    link = f"https://temporal.example.com/namespaces/default/workflows?query={at_wait}"
    assert f'<a href="{link}" target="_blank"><g class="step" data-step="wait">' in page
    assert "Its file does not load" in page and "shop.toml:" in page and "nope" in page


@pytest.mark.skipif(not HAS_CHROMIUM, reason=f"no Chromium at {CHROMIUM}: the browser tests need Debian's chromium")
async def test_campaign_page_in_a_browser_shows_both_counts_and_its_stop_button_stops(parked: Campaigns) -> None:
    from playwright.async_api import async_playwright, expect

    c = parked
    cid = c.id("shop")
    store = Store.open(c.settings.store_url)
    try:
        _, key = Keys(store).create("dashboard", scope="write")
    finally:
        store.close()
    (port,) = free_ports(1)
    server = uvicorn.Server(
        uvicorn.Config(create_app(c.settings, client=c.client), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _started(server))
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                await page.goto(f"http://127.0.0.1:{port}/ui/campaigns/{cid}")
                await page.fill("#key-input", key)  # asked once; kept in sessionStorage, never in the URL
                await page.click("#key button[type=submit]")
                await expect(page.locator('g.step[data-step="wait"] text.count')).to_have_text("2")
                await expect(page.locator('g.step[data-step="pause"] text.count')).to_have_text("1")
                await expect(page.locator('g.step[data-step="send"] text.count')).to_have_text("0")
                assert key not in page.url
                assert await page.evaluate("sessionStorage.getItem('scheduler-api-key')") == key
                if SCREENSHOT:
                    await page.screenshot(path=SCREENSHOT, full_page=True)

                await page.click("button.danger")  # Stop, confirmed in the dialog
                await expect(page.locator("#state")).to_have_text("paused", timeout=15_000)
                await expect(page.locator('g.step[data-step="wait"] text.count')).to_have_text("0", timeout=20_000)
                await expect(page.locator('tr[data-outcome="stopped"] td.n')).to_have_text("3", timeout=20_000)
            finally:
                await browser.close()
        assert await running_flows(c.client, cid) == 0
        state = (await c.describe("shop")).schedule.state
        assert state.paused and state.note == "stopped by key dashboard: stopped from the dashboard"
    finally:
        server.should_exit = True
        await serving


async def _started(server: uvicorn.Server) -> None:
    assert server.started


def test_the_docs_show_the_dashboard() -> None:
    assert (ROOT / "docs" / "dashboard.png").stat().st_size > 10_000
    assert "![The campaign page of the dashboard](dashboard.png)" in (ROOT / "docs" / "operations.md").read_text()
