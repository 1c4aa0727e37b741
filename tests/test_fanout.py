"""Campaign runs over a real audience on the dev server: one flow per cart, never twice, windows that chain."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus

from scheduler.campaigns.status import schedule_status
from scheduler.flow.attributes import CART_ID, CUSTOMER_CONTACT, DEFINITION_VERSION
from scheduler.flow.models import CampaignRunResult
from scheduler.store import Store
from scheduler.store.consent import Consent
from scheduler.worker import make_worker
from tests.helpers.campaigns import JSONL_AUDIENCE, WAITING
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.waiting import eventually


def write_carts(c: Campaigns) -> None:
    """300 rows: 292 distinct carts, 5 repeats of earlier carts, 2 without a cart id, 1 with a bad phone."""
    rows: list[dict[str, Any]] = [
        {"cart_ref": f"k{i}", "mobile": f"+1 212 555 {i:04d}", "name": f"C{i}"} for i in range(292)
    ]
    rows += [{"cart_ref": f"k{i}", "mobile": "+12125550000", "name": "again"} for i in range(5)]
    rows += [{"mobile": "+12125550001", "name": "no cart"}, {"cart_ref": "", "name": "empty cart"}]
    rows += [{"cart_ref": "k-bad", "mobile": "not a phone", "name": "bad phone"}]
    (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


async def flows_of(client: Client, campaign_id: str) -> list[Any]:
    query = f"WorkflowType = 'AbandonedCartWorkflow' AND CampaignId = '{campaign_id}'"
    return [w async for w in client.list_workflows(query)]


async def test_run_starts_one_flow_per_cart_and_never_twice(campaigns: Campaigns) -> None:
    c = campaigns
    write_carts(c)
    c.write("a", max_starts_per_second=1000, workflow=JSONL_AUDIENCE + WAITING)
    await c.sync()
    try:
        async with make_worker(c.client, c.settings):
            first = await c.run("a", 0)
            assert (first["started"], first["skipped_duplicate"], first["skipped_invalid"]) == (292, 5, 3)

            async def all_flows() -> list[Any]:
                flows = await flows_of(c.client, c.id("a"))
                assert len(flows) == 292
                return flows

            flows = await eventually(all_flows, timeout=30)
            assert {f.id for f in flows} == {f"{c.id('a')}-k{i}" for i in range(292)}
            k7 = next(f for f in flows if f.id == f"{c.id('a')}-k7")
            assert k7.typed_search_attributes.get(CART_ID) == "k7"
            assert k7.typed_search_attributes.get(CUSTOMER_CONTACT) == ["+12125550007"]
            assert k7.typed_search_attributes.get(DEFINITION_VERSION) == c.campaign("a").workflow.version

            second = await c.run("a", 1)
            assert (second["started"], second["skipped_duplicate"], second["skipped_invalid"]) == (0, 297, 3)
            assert second["window"]["since"] == first["window"]["until"]

            async def shown_in_status() -> None:
                status = await schedule_status(c.client, c.id("a"))
                assert status is not None
                newest = status.recent_runs[0]
                assert (newest.status, newest.started, newest.skipped_duplicate) == ("Completed", 0, 297)
                assert newest.window is not None and newest.window["since"].isoformat().startswith(
                    first["window"]["until"][:19]
                )

            await eventually(shown_in_status)
    finally:
        await terminate_flows(c.client, c.id("a"))


async def test_sql_audience_window_covers_each_row_once_across_runs(campaigns: Campaigns) -> None:
    c = campaigns
    db = c.dir / "shop.db"
    now = datetime.now(UTC)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE carts (ref TEXT, phone TEXT, abandoned_at TEXT)")
        conn.execute("INSERT INTO carts VALUES ('old', '+12125550100', ?)", (_db_time(now - timedelta(days=2)),))
        conn.execute("INSERT INTO carts VALUES ('s1', '+12125550101', ?)", (_db_time(now - timedelta(minutes=10)),))
    audience = f"""\
[audience]
source = "sql"
url = "sqlite:///{db}"
query = "SELECT ref, phone FROM carts WHERE abandoned_at >= :since AND abandoned_at < :until ORDER BY ref"

[audience.fields]
"cart.id" = "ref"
"customer.phone" = "phone"

"""
    c.write("s", workflow=audience + WAITING)
    await c.sync()
    try:
        async with make_worker(c.client, c.settings):
            first = await c.run("s", 0)
            assert (first["started"], first["skipped_duplicate"]) == (1, 0)  # 'old' is outside the 1h lookback
            with sqlite3.connect(db) as conn:
                conn.execute("INSERT INTO carts VALUES ('s2', '+12125550102', ?)", (_db_time(datetime.now(UTC)),))
            second = await c.run("s", 1)
            assert (second["started"], second["skipped_duplicate"]) == (1, 0)  # only the new row: s1 is not re-read
            assert second["window"]["since"] == first["window"]["until"]
            ids = {f.id for f in await eventually(lambda: _n_flows(c, "s", 2))}
            assert ids == {f"{c.id('s')}-s1", f"{c.id('s')}-s2"}
    finally:
        await terminate_flows(c.client, c.id("s"))


def _db_time(moment: datetime) -> str:
    """UTC as SQLAlchemy writes a DateTime to SQLite, so the window's bound parameters compare as text."""
    return str(moment.astimezone(UTC).replace(tzinfo=None))


async def _n_flows(c: Campaigns, name: str, n: int) -> list[Any]:
    flows = await flows_of(c.client, c.id(name))
    assert len(flows) == n
    return flows


def write_paced_audience(c: Campaigns, name: str, carts: int, rate: int) -> None:
    """Campaign `name` over `carts` distinct carts k0..k<carts-1>, started at `rate` flows/s."""
    rows = [{"cart_ref": f"k{i}", "mobile": f"+1 212 555 {i:04d}", "name": f"C{i}"} for i in range(carts)]
    (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    c.write(name, max_starts_per_second=rate, workflow=JSONL_AUDIENCE + WAITING)


async def triggered_run(c: Campaigns, name: str) -> str:
    """Trigger the schedule; the id of the run it started."""
    await c.client.get_schedule_handle(c.sid(name)).trigger()

    async def run_id() -> str:
        recent = (await c.describe(name)).info.recent_actions
        assert len(recent) == 1
        return str(getattr(recent[-1].action, "workflow_id", ""))

    return await eventually(run_id)


async def test_worker_stopped_mid_fanout_leaves_every_cart_exactly_one_flow(campaigns: Campaigns) -> None:
    c = campaigns
    carts = 120
    write_paced_audience(c, "r", carts, rate=20)  # one page of 120 takes ~6 s
    await c.sync()
    cid = c.id("r")
    query = f"WorkflowType = 'AbandonedCartWorkflow' AND CampaignId = '{cid}'"
    try:
        async with make_worker(c.client, c.settings):
            run_id = await triggered_run(c, "r")

            async def some_started() -> None:
                assert (await c.client.count_workflows(query)).count > 10

            await eventually(some_started, timeout=30, interval=0.05)
        stopped = time.monotonic()
        partial = (await c.client.count_workflows(query)).count
        assert partial < carts, "worker A finished the page before it was stopped: nothing was resumed"

        async with make_worker(c.client, c.settings):
            handle = c.client.get_workflow_handle(run_id, result_type=CampaignRunResult)
            result = await asyncio.wait_for(handle.result(), timeout=120)
            resumed_in = time.monotonic() - stopped
        d = await handle.describe()
        assert d.status == WorkflowExecutionStatus.COMPLETED
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in (await handle.fetch_history()).events
            if e.HasField("activity_task_started_event_attributes")
        ]
        assert attempts and max(attempts) >= 2  # the page was retried on worker B, not finished by A
        assert result.skipped_invalid == 0 and result.failed == 0
        assert result.started >= 1
        assert result.started + result.skipped_duplicate == carts
        # A graceful shutdown fails the attempt at once: the retry must not wait for the 1-minute heartbeat timeout.
        assert resumed_in < 30, f"the page resumed {resumed_in:.0f}s after worker A stopped"

        async def all_flows() -> list[Any]:
            flows = await flows_of(c.client, cid)
            assert len(flows) == carts
            return flows

        flows = await eventually(all_flows, timeout=30)
        ids = [f.id for f in flows]
        assert len(set(ids)) == len(ids)
        assert set(ids) == {f"{cid}-k{i}" for i in range(carts)}
    finally:
        await terminate_flows(c.client, cid)


async def test_run_paces_starts_at_max_starts_per_second(campaigns: Campaigns) -> None:
    c = campaigns
    write_paced_audience(c, "p", 30, rate=10)  # 30 starts 0.1 s apart: at least 2.9 s
    await c.sync()
    try:
        async with make_worker(c.client, c.settings):
            run_id = await triggered_run(c, "p")
            handle = c.client.get_workflow_handle(run_id, result_type=CampaignRunResult)
            result = await asyncio.wait_for(handle.result(), timeout=60)
            d = await handle.describe()
        assert result.started == 30
        assert d.status == WorkflowExecutionStatus.COMPLETED and d.close_time is not None
        assert (d.close_time - d.start_time).total_seconds() >= 2.5
    finally:
        await terminate_flows(c.client, c.id("p"))


async def test_run_skips_rows_whose_ids_temporal_would_refuse(campaigns: Campaigns) -> None:
    """A NUL or an oversize cart or customer id is a skipped row with its reason; the other carts get their flows.

    Before, a 3,000-byte cart id made a flow id over Temporal's limit: the page failed on every retry.
    """
    c = campaigns
    rows = [
        {"cart_ref": "k1", "name": "fine"},
        {"cart_ref": "k\x002", "name": "nul"},
        {"cart_ref": "k" * 3000, "name": "long cart"},
        {"cart_ref": "k4", "customer": {"id": "c" * 300}, "name": "long customer"},
        {"cart_ref": "k5", "name": "fine too"},
    ]
    (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    c.write("v", workflow=JSONL_AUDIENCE + WAITING)
    await c.sync()
    try:
        async with make_worker(c.client, c.settings):
            run_id = await triggered_run(c, "v")
            handle = c.client.get_workflow_handle(run_id, result_type=CampaignRunResult)
            result = await asyncio.wait_for(handle.result(), timeout=60)
        assert (result.started, result.skipped_invalid, result.failed) == (2, 3, 0)
        assert sorted(result.flows) == [f"{c.id('v')}-k1", f"{c.id('v')}-k5"]
        assert result.reasons == {
            "cart.id contains a control character (U+0000)": 1,
            "cart.id is longer than 255 bytes (UTF-8)": 1,
            "customer.id is longer than 255 bytes (UTF-8)": 1,
        }
    finally:
        await terminate_flows(c.client, c.id("v"))


async def test_run_skips_carts_of_suppressed_customers_until_they_opt_in(campaigns: Campaigns) -> None:
    c = campaigns
    rows = [{"cart_ref": f"s{i}", "mobile": f"+1 212 555 01{i:02d}", "name": f"S{i}"} for i in range(3)]
    (c.dir / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    c.write("s", workflow=JSONL_AUDIENCE + WAITING)
    store = Store.open(c.settings.store_url)
    consent = Consent(store)
    consent.suppress("212-555-0101", reason="keyword STOP")
    await c.sync()
    try:
        async with make_worker(c.client, c.settings, store=store):
            first = await c.run("s", 0)
            assert (first["started"], first["skipped_suppressed"]) == (2, 1)
            assert {f.id for f in await eventually(lambda: flows_counted(c, "s", 2))} == {
                f"{c.id('s')}-s0",
                f"{c.id('s')}-s2",
            }

            async def shown_in_status() -> None:
                status = await schedule_status(c.client, c.id("s"))
                assert status is not None and status.recent_runs[0].skipped_suppressed == 1

            await eventually(shown_in_status)
            consent.lift("+12125550101", reason="keyword START")
            second = await c.run("s", 1)
            assert (second["started"], second["skipped_duplicate"], second["skipped_suppressed"]) == (1, 2, 0)
    finally:
        store.close()
        await terminate_flows(c.client, c.id("s"))


async def flows_counted(c: Campaigns, name: str, count: int) -> list[Any]:
    flows = await flows_of(c.client, c.id(name))
    assert len(flows) == count
    return flows
