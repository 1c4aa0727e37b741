"""Experiment results: how long `GET /campaigns/{id}/experiments` takes for a campaign of 10,000 flows and 1,000
attributed conversions, and how that time grows with the flows.

`scheduler.experiments.results.campaign_experiments` reads the campaign's schedule, makes three
`count_workflows` calls per variant (entered, messaged, answered by `Variant`), all at once, and one store query
(`Conversions.by_variant`); it never lists the flows. This applies a campaign with a three-way split (45/45/10),
puts its flows on a dev server with the search attributes a split gives them (on a task queue no worker polls,
so they stay as started) and 1,000 attributed conversions in a SQLite store, checks the results are exact, and
times the whole call at 1,000 and at 10,000 flows (median of 7 rounds each) against one `count_workflows` of
the campaign's flows (the baseline: the cheapest question one can ask) and, once, against listing every flow
(what a scan would cost). Target: under 1 s at 10,000 flows.

Run: `.venv/bin/python bench/experiments.py` (no arguments; about two minutes). The last line printed is one
JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the project root, for `tests.helpers`

import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from scheduler.campaigns.reconcile import sync
from scheduler.config import load_settings
from scheduler.experiments.results import campaign_experiments
from scheduler.flow.attributes import CAMPAIGN_ID, CLIENT_ANSWERED, MESSAGED, VARIANT
from scheduler.flow.nodes.split import assign_variant
from scheduler.flow.workflows import FLOW_TYPE
from scheduler.store import Store
from scheduler.store.conversions import AttributedFlow, ConversionRecord, Conversions
from scheduler.visibility import campaign_query
from tests.helpers.campaigns import SPLIT
from tests.helpers.servers import local_environment

CAMPAIGN = "bench-experiments"
EXPERIMENT = "copy-2031-01"
WEIGHTS = {"friendly": 45, "discount": 45, "holdout": 10}
FLOWS = (1_000, 10_000)
CONVERSIONS = 1_000
IN_FLIGHT = 64
ROUNDS = 7
TASK_QUEUE = "bench-experiments-nobody-polls"
CAMPAIGN_FILE = f'[campaign]\nid = "{CAMPAIGN}"\n\n[schedule]\ncron = ["0 9 1 1 *"]\n\n{SPLIT}'


def variant_of(i: int) -> str:
    return assign_variant(CAMPAIGN, EXPERIMENT, f"cart:k{i}", WEIGHTS)


async def start_flows(client: Client, numbers: range) -> None:
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        variant = variant_of(i)
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(CAMPAIGN_ID, CAMPAIGN),
            SearchAttributePair(VARIANT, f"{EXPERIMENT}:{variant}"),
            SearchAttributePair(CLIENT_ANSWERED, i % 10 == 0 and variant != "holdout"),
        ]
        if variant != "holdout":
            pairs.append(SearchAttributePair(MESSAGED, True))
        async with semaphore:
            await client.start_workflow(
                FLOW_TYPE, id=f"{CAMPAIGN}-{i}", task_queue=TASK_QUEUE, search_attributes=TypedSearchAttributes(pairs)
            )

    await asyncio.gather(*(one(i) for i in numbers))
    query = campaign_query(CAMPAIGN)
    for _ in range(600):
        if (await client.count_workflows(query)).count == numbers.stop:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("visibility never showed every flow")


def record_conversions(conversions: Conversions) -> Counter[str]:
    """One conversion of 10 EUR for every tenth flow of the first 10,000: 1,000 in all, attributed."""
    now = datetime.now(UTC)
    converted: Counter[str] = Counter()
    for i in range(0, FLOWS[-1], FLOWS[-1] // CONVERSIONS):
        record = ConversionRecord(
            f"order-{i}", occurred_at=now, received_at=now, cart_id=f"k{i}", amount=Decimal(10), currency="EUR"
        )
        conversions.record(record)
        variant = f"{EXPERIMENT}:{variant_of(i)}"
        conversions.attribute(record, [AttributedFlow(CAMPAIGN, f"{CAMPAIGN}-{i}", variant, now)])
        converted[variant_of(i)] += 1
    return converted


async def timed(make: Any) -> float:
    start = time.perf_counter()
    await make()
    return time.perf_counter() - start


async def main() -> None:
    env = await local_environment()
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        settings = load_settings()
        settings.campaigns.dir = Path(tmp)
        settings.store.url = f"sqlite:///{tmp}/scheduler.db"
        (Path(tmp) / "bench.toml").write_text(CAMPAIGN_FILE, encoding="utf-8")
        store = Store.open(settings.store_url)
        conversions = Conversions(store)
        try:
            client = env.client
            result = await sync(client, settings)
            assert not result.problems, result.problems
            converted = record_conversions(conversions)
            figures: dict[int, tuple[float, float]] = {}
            started = 0
            for flows in FLOWS:
                t0 = time.perf_counter()
                await start_flows(client, range(started, flows))
                started = flows
                print(f"{flows:,} flows on the server ({time.perf_counter() - t0:.1f}s to start and see them)")
                await check(client, conversions, flows, converted)
                results_s, baseline_s = [], []
                for _ in range(ROUNDS):
                    results_s.append(await timed(lambda: campaign_experiments(client, conversions, CAMPAIGN)))
                    baseline_s.append(await timed(lambda: client.count_workflows(campaign_query(CAMPAIGN))))
                figures[flows] = (statistics.median(results_s), statistics.median(baseline_s))
                print(f"  results: {figures[flows][0] * 1000:7.1f} ms, one count: {figures[flows][1] * 1000:7.1f} ms")
            scan = await timed(lambda: _list_all(client))
            value, baseline = figures[FLOWS[-1]]
            growth = value / figures[FLOWS[0]][0]
            print(f"listing every one of {FLOWS[-1]:,} flows (a scan): {scan * 1000:.0f} ms")
            print(f"results at {FLOWS[-1]:,} flows are {growth:.2f}x their time at {FLOWS[0]:,} (10x the flows)")
            print(f"ratio results/one count: {value / baseline:.2f}  (target: results under 1 s)")
            print(json.dumps({
                "name": "experiment_results_10k_flows_1k_conversions",
                "value": round(value, 4),
                "unit": "s",
                "baseline": round(baseline, 4),
                "ratio": round(value / baseline, 3),
                "growth_1k_to_10k": round(growth, 3),
                "scan_s": round(scan, 3),
            }))  # fmt: skip
        finally:
            store.close()
            await env.shutdown()


async def check(client: Client, conversions: Conversions, flows: int, converted: Counter[str]) -> None:
    """The results are exact: entered, messaged and answered per variant, and the attributed conversions."""
    report = await campaign_experiments(client, conversions, CAMPAIGN)
    entered = Counter(variant_of(i) for i in range(flows))
    answered = Counter(variant_of(i) for i in range(0, flows, 10) if variant_of(i) != "holdout")
    for v in report.experiments[0].variants:
        expected = (entered[v.name], 0 if v.holdout else entered[v.name], answered[v.name], converted[v.name])
        assert (v.entered, v.messaged, v.answered, v.converted) == expected, (v, expected)
        assert v.revenue == ({"EUR": Decimal(10 * converted[v.name])} if converted[v.name] else {}), v


async def _list_all(client: Client) -> int:
    return len([e async for e in client.list_workflows(f"WorkflowType = '{FLOW_TYPE}' AND CampaignId = '{CAMPAIGN}'")])


if __name__ == "__main__":
    asyncio.run(main())
