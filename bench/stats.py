"""Campaign stats: how long `GET /campaigns/{id}/stats` takes to count a campaign of 10 steps and 10,000 flows.

`scheduler.campaigns.stats.campaign_stats` makes one `count_workflows` call per step, per outcome and for starts and
answers, all at once, plus one for flows at steps the definition does not have (none here). This puts
10,000 running `AbandonedCartWorkflow` flows spread over 10 steps (`CurrentStep`, 1 in 4 with
`ClientAnswered`) and 1,000 ended ones (an `Outcome` each) on a dev server, on a task queue no worker
polls (so they stay where they were started), and times the whole stats call against one `count_workflows`
of the campaign's running flows (the baseline: the cheapest question one can ask), median of 7 rounds
each, alternating. It checks the counts are exact first. Target: under 1 s.

Run: `.venv/bin/python bench/stats.py` (no arguments; about a minute). The last line printed is one JSON
object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the project root, for `tests.helpers`

import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from scheduler.campaigns.stats import campaign_stats
from scheduler.flow.attributes import CAMPAIGN_ID, CLIENT_ANSWERED, CURRENT_STEP, OUTCOME
from scheduler.flow.models import FlowOutcome
from scheduler.flow.workflows import FLOW_TYPE
from tests.helpers.servers import local_environment

CAMPAIGN = "bench-stats"
STEPS = [f"step_{i}" for i in range(10)]
RUNNING = 10_000
ENDED = 1_000
IN_FLIGHT = 64
ROUNDS = 7
TASK_QUEUE = "bench-stats-nobody-polls"


async def start_all(client: Client) -> None:
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int, *, ended: bool) -> None:
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(CAMPAIGN_ID, CAMPAIGN),
            SearchAttributePair(CURRENT_STEP, STEPS[i % len(STEPS)]),
            SearchAttributePair(CLIENT_ANSWERED, i % 4 == 0),
        ]
        if ended:
            pairs.append(SearchAttributePair(OUTCOME, list(FlowOutcome)[i % len(FlowOutcome)]))
        async with semaphore:
            handle = await client.start_workflow(
                FLOW_TYPE,
                id=f"{CAMPAIGN}-{'ended' if ended else 'running'}-{i}",
                task_queue=TASK_QUEUE,
                search_attributes=TypedSearchAttributes(pairs),
            )
            if ended:
                await handle.terminate("bench: ended with its outcome")

    await asyncio.gather(*(one(i, ended=False) for i in range(RUNNING)), *(one(i, ended=True) for i in range(ENDED)))


async def visible(client: Client) -> None:
    query = f"CampaignId = '{CAMPAIGN}'"
    for _ in range(600):
        if (await client.count_workflows(query)).count == RUNNING + ENDED:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("visibility never showed every flow")


async def timed(make: Any) -> float:
    start = time.perf_counter()
    await make()
    return time.perf_counter() - start


async def main() -> None:
    env = await local_environment()
    try:
        client = env.client
        since = datetime.now(UTC) - timedelta(minutes=5)
        t0 = time.perf_counter()
        await start_all(client)
        await visible(client)
        print(f"started {RUNNING} running and {ENDED} ended flows in {time.perf_counter() - t0:.1f}s")

        stats = await campaign_stats(client, CAMPAIGN, steps=STEPS, since=since)
        assert stats.running == {s: RUNNING // len(STEPS) for s in STEPS}, stats.running
        assert stats.outcomes == {o: ENDED // len(FlowOutcome) for o in FlowOutcome}, stats.outcomes
        assert stats.started == RUNNING + ENDED
        assert stats.answered == (RUNNING + ENDED) // 4

        running = f"WorkflowType = '{FLOW_TYPE}' AND CampaignId = '{CAMPAIGN}' AND ExecutionStatus = 'Running'"
        stats_s, baseline_s = [], []
        for _ in range(ROUNDS):
            stats_s.append(await timed(lambda: campaign_stats(client, CAMPAIGN, steps=STEPS, since=since)))
            baseline_s.append(await timed(lambda: client.count_workflows(running)))
        value, baseline = statistics.median(stats_s), statistics.median(baseline_s)
        rounds = ", ".join(f"{s * 1000:.0f}" for s in stats_s)
        print(f"  stats (18 counts at once): {value * 1000:7.1f} ms  (rounds, ms: {rounds})")
        print(f"  one count_workflows      : {baseline * 1000:7.1f} ms")
        print(f"  ratio stats/one count: {value / baseline:.2f}  (target: stats under 1 s)")
        print(json.dumps({
            "name": "campaign_stats_10_steps_10k_flows",
            "value": round(value, 4),
            "unit": "s",
            "baseline": round(baseline, 4),
            "ratio": round(value / baseline, 3),
        }))  # fmt: skip
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
