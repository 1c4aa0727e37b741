"""Fan-out: flows/s a campaign run starts over a 2,000-cart audience against a plain loop of `start_workflow`.

Why: a run (`CampaignRunWorkflow`) reaches its flows through a schedule trigger, a workflow that
sequences pages, one `start_audience_page` activity per 500 rows that reads the page, builds each
flow's input and search attributes, starts it and heartbeats its progress. All of that is overhead on
top of the starts themselves, which the baseline measures: a sequential loop of `client.start_workflow`
(the activity starts one flow at a time too) for the same carts, with the same `FlowInput`
(`scheduler.flow.models.flow_input` over the same audience rows), search attributes (`start_attributes`),
id reuse policy and task queue, built in the loop as the activity builds them. `max_starts_per_second`
is set far above both rates so pacing never waits.

The flows go to a task queue of their own that no worker polls (the run's worker is `make_worker`'s
CampaignRunWorkflow and fan-out activity, on the schedule's queue), so neither measurement pays for
the flows' own workflow tasks: with a flow worker on the same 2 cores, its first workflow task per
flow (~20 ms of CPU) competes with the starts and both rates drop to ~40 flows/s, hiding the fan-out's
own overhead. The definition waits an hour for an answer anyway, should a worker pick the flows up.

The baseline runs before and after the campaign run (the mean is used), so drift such as a growing
store hits both alike. The run's history length covers every run of its continue-as-new chain.

Run: `.venv/bin/python bench/fanout.py` (no arguments; under a minute). The last line printed is
one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the project root, for `tests.helpers`

import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.worker import Worker

from scheduler.audience import Target, read_page
from scheduler.campaigns.campaign import Campaign, load_campaign
from scheduler.campaigns.fanout import FanoutActivities
from scheduler.campaigns.reconcile import sync
from scheduler.campaigns.schedules import schedule_id
from scheduler.config import load_settings
from scheduler.flow.engine import start_attributes
from scheduler.flow.models import CampaignRunResult, flow_input, next_window
from scheduler.flow.workflows import CampaignRunWorkflow
from tests.helpers.servers import local_environment

CARTS = 2_000
WARMUP_STARTS = 50
PHASE_TIMEOUT = 180.0
"""Bound on every timed phase."""
CAMPAIGN_ID = "bench-fanout"
CAMPAIGN_TOML = f"""\
[campaign]
id = "{CAMPAIGN_ID}"
name = "Bench fan-out"
owner = "owner@example.com"
enabled = true
max_starts_per_second = 10000

[schedule]
cron = ["0 0 1 1 *"]
timezone = "UTC"

[audience]
source = "jsonl"
path = "carts.jsonl"

[audience.fields]
"cart.id" = "cart_ref"
"customer.id" = "customer_ref"
"customer.phone" = "mobile"
"customer.name" = "name"

[workflow]
start_step = "wait"

[workflow.steps.wait]
node = "wait_answer"
params = {{ timeout = "1h" }}
"""


def write_campaign(directory: Path) -> Path:
    rows = [
        {"cart_ref": f"k{i}", "customer_ref": f"c{i}", "mobile": f"+1 212 555 {i % 10_000:04d}", "name": f"C{i}"}
        for i in range(CARTS)
    ]
    (directory / "carts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = directory / "fanout.toml"
    path.write_text(CAMPAIGN_TOML, encoding="utf-8")
    return path


async def audience_targets(campaign: Campaign, directory: Path) -> list[Target]:
    """Every target of the audience, read as the activity reads it (so the baseline starts the same flows)."""
    assert campaign.audience is not None
    window = next_window(campaign.audience, now=datetime.now(UTC))
    targets: list[Target] = []
    cursor: str | None = None
    while True:
        page = await read_page(campaign.audience, base_dir=directory, window=window, cursor=cursor)
        targets += page.targets
        if page.skipped:
            raise SystemExit(f"the bench audience has rows that cannot become flows: {page.skipped[:3]}")
        if (cursor := page.next_cursor) is None:
            return targets


async def start_loop(client: Client, campaign: Campaign, targets: list[Target], task_queue: str, label: str) -> float:
    """The baseline: one `start_workflow` after another. Returns flows/s."""
    prefix = f"base-{label}-{uuid.uuid4().hex[:6]}-{campaign.id}"
    started = time.perf_counter()
    for target in targets:
        flow = flow_input(campaign, customer=target.customer, cart=target.cart)
        await client.start_workflow(
            "AbandonedCartWorkflow",
            flow,
            id=f"{prefix}-{target.cart['id']}",
            task_queue=task_queue,
            search_attributes=start_attributes(flow),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    return len(targets) / (time.perf_counter() - started)


async def campaign_run(client: Client, campaign: Campaign) -> tuple[float, CampaignRunResult, int, float]:
    """Trigger the schedule and wait for its run: flows/s, result, history events of all its runs, seconds."""
    schedule = client.get_schedule_handle(schedule_id(campaign.id))
    started = time.perf_counter()
    await schedule.trigger()
    recent = (await schedule.describe()).info.recent_actions
    for _ in range(1000):  # the trigger is asynchronous: the run shows up a moment later
        if recent:
            break
        await asyncio.sleep(0.01)
        recent = (await schedule.describe()).info.recent_actions
    action = recent[-1].action
    run_id = str(getattr(action, "workflow_id", ""))
    first_run = str(getattr(action, "first_execution_run_id", ""))
    result = await client.get_workflow_handle(run_id, result_type=CampaignRunResult).result()
    elapsed = time.perf_counter() - started
    # Follow the continue-as-new chain from the first run.
    events, execution = 0, first_run
    while execution:
        handle = client.get_workflow_handle(run_id, run_id=execution)
        history = (await handle.fetch_history()).events
        events += len(history)
        last = history[-1]
        execution = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else ""
        )
    described = await client.get_workflow_handle(run_id).describe()
    if described.status != WorkflowExecutionStatus.COMPLETED:
        raise SystemExit(f"the run ended {described.status}")
    return result.started / elapsed, result, events, elapsed


async def bench(workdir: Path) -> dict[str, float]:
    directory = workdir / "campaigns"
    directory.mkdir()
    campaign, problems = load_campaign(write_campaign(directory))
    if campaign is None:
        raise SystemExit(f"the bench campaign is invalid: {problems}")
    targets = await audience_targets(campaign, directory)
    assert len(targets) == CARTS
    settings = load_settings()
    settings.channels.outbox = workdir / "outbox.jsonl"
    settings.store.url = f"sqlite:///{workdir / 'scheduler.db'}"  # not the dev data's
    settings.campaigns.dir = directory
    settings.temporal.task_queue = f"bench-fanout-runs-{uuid.uuid4()}"
    task_queue = f"bench-fanout-flows-{uuid.uuid4()}"
    """Where the run's activity and the baseline start flows: no worker polls it."""
    env = await local_environment()
    try:
        client = env.client
        outcome = await sync(client, settings)
        if outcome.errors:
            raise SystemExit(f"sync failed: {outcome.errors}")
        fanout = FanoutActivities(client, campaigns_dir=directory, task_queue=task_queue)
        worker = Worker(
            client,
            task_queue=settings.temporal.task_queue,
            workflows=[CampaignRunWorkflow],
            activities=fanout.all(),
        )
        async with worker:
            await start_loop(client, campaign, targets[:WARMUP_STARTS], task_queue, "warmup")
            print(f"warm-up done ({WARMUP_STARTS} starts); {CARTS} carts per measurement")
            before = await asyncio.wait_for(start_loop(client, campaign, targets, task_queue, "before"), PHASE_TIMEOUT)
            print(f"  baseline (before): {before:7.1f} flows/s")
            rate, result, events, elapsed = await asyncio.wait_for(campaign_run(client, campaign), PHASE_TIMEOUT)
            if (result.started, result.skipped_duplicate, result.skipped_invalid) != (CARTS, 0, 0):
                raise SystemExit(f"the run did not start every cart once: {result.model_dump(exclude={'flows'})}")
            print(f"  campaign run     : {rate:7.1f} flows/s  ({elapsed:.1f}s, {events} history events)")
            after = await asyncio.wait_for(start_loop(client, campaign, targets, task_queue, "after"), PHASE_TIMEOUT)
            print(f"  baseline (after) : {after:7.1f} flows/s")
    finally:
        await env.shutdown()  # in-memory server: the waiting flows go with it
    return {"run": rate, "baseline": (before + after) / 2, "history_events": events}


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        figures = asyncio.run(bench(Path(tmp)))
    ratio = figures["run"] / figures["baseline"]
    print(f"  ratio run/baseline: {ratio:.3f}  (target >= 0.7; total {time.perf_counter() - started:.0f}s)")
    result = {
        "name": "fanout_flows_per_second",
        "value": round(figures["run"], 2),
        "unit": "flows/s",
        "baseline": round(figures["baseline"], 2),
        "ratio": round(ratio, 4),
        "history_events": int(figures["history_events"]),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
