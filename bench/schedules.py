"""Schedules: seconds to `apply` a directory of 500 campaigns against a plain loop of `create_schedule`.

Why: `apply` (`scheduler.campaigns.reconcile.sync`) loads and validates every file, plans (one list call, and a
describe for each schedule the list does not show) and only then creates. All of that is overhead on
top of the creates themselves, which the baseline measures: a sequential loop of `client.create_schedule`
with the same Schedule objects (`build_schedule`), memo and `CampaignSha256`, built beforehand. It also
times a plan with nothing to do, which the reconcile loop runs every `campaigns.reconcile_every`: that
should be one list call, with describes only for schedules visibility has not caught up with yet.

Both kinds start from an empty server (the other's schedules are deleted, and visibility has caught up
with that) and run in alternating order over the rounds.

Run: `.venv/bin/python bench/schedules.py` (no arguments). The last line printed is one JSON object.
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
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from scheduler.campaigns.campaign import Campaign, load_campaign_dir
from scheduler.campaigns.reconcile import sync
from scheduler.campaigns.schedules import APPLY_CONCURRENCY, MANAGED_BY, Action, build_schedule, schedule_id
from scheduler.config import Settings, load_settings
from scheduler.flow.attributes import CAMPAIGN_SHA256
from tests.helpers.servers import local_environment

CAMPAIGNS = 500
ROUNDS = 3
"""Rounds of (baseline, apply), alternating which goes first."""
PHASE_TIMEOUT = 120.0
"""Bound on every timed phase and every wait for visibility."""
CLEANUP_CONCURRENCY = 8
COUNTED_RPCS = ("list_schedules", "describe_schedule", "create_schedule", "update_schedule", "delete_schedule")
T = TypeVar("T")

# Varied on purpose (different strides, so the combinations differ): none of these fires more than a
# few times a day, so runs the schedules start (no worker picks them up) barely load the server.
CRONS = (
    '"0 9 * * 1-5"',
    '"30 18 * * *"',
    '"@daily"',
    '["15 */6 * * *", "45 11 * * 6"]',
    '"0 12 1 * *"',
    '"@every 8h"',
    '["0 8 * * 1", "0 16 * * 5"]',
    '"20 7 * * *"',
)
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo")
OVERLAPS = ("skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all")
JITTERS = ("0s", "30s", "2m", "10m")

# A small [workflow] like the shipped campaigns/abandoned_cart.toml.
CAMPAIGN_TOML = """\
[campaign]
id = "{id}"
name = "Bench campaign {n}"
owner = "owner{n}@example.com"
enabled = {enabled}

[schedule]
cron = {cron}
timezone = "{timezone}"
jitter = "{jitter}"
overlap = "{overlap}"
catchup_window = "{catchup}m"
{window}
[workflow]
start_step = "step_1"

[workflow.steps.step_1]
node = "send_message"
go_to = "step_2"

[workflow.steps.step_2]
node = "wait_answer"
params = {{ timeout = "{wait}m" }}
condition = {{ satisfied = "step_3", timeout = "step_4" }}

[workflow.steps.step_3]
node = "notify_creator"

[workflow.steps.step_4]
node = "webhook"
go_to = "step_5"

[workflow.steps.step_5]
node = "send_message"
"""


def write_campaigns(directory: Path) -> None:
    for n in range(CAMPAIGNS):
        window = "start_at = 2030-01-01T09:00:00\nend_at = 2031-01-01T00:00:00Z\n" if n % 25 == 0 else ""
        text = CAMPAIGN_TOML.format(
            id=f"bench-{n:03d}",
            n=n,
            enabled="false" if n % 10 == 9 else "true",
            cron=CRONS[n % len(CRONS)],
            timezone=TIMEZONES[(n // 2) % len(TIMEZONES)],
            jitter=JITTERS[(n // 3) % len(JITTERS)],
            overlap=OVERLAPS[(n // 5) % len(OVERLAPS)],
            catchup=1 + n % 7,
            window=window,
            wait=1 + n % 5,
        )
        (directory / f"bench-{n:03d}.toml").write_text(text, encoding="utf-8")


def calls_text(calls: Counter[str]) -> str:
    """Calls as "1 list, 500 describe" (RPC method names without their `_schedule` suffix)."""
    return ", ".join(f"{count} {name.split('_')[0]}" for name, count in calls.items()) or "no calls"


class RpcCounter:
    """Calls of some WorkflowService methods, and the time spent in them, by wrapping the client's service."""

    def __init__(self, client: Client, names: Iterable[str]) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        service = client.workflow_service
        for name in names:
            setattr(service, name, self._counted(name, getattr(service, name)))

    def _counted(self, name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            start = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return counted

    def reset(self) -> None:
        self.calls.clear()
        self.seconds.clear()

    def summary(self) -> str:
        return calls_text(self.calls)


@dataclass
class Noop:
    seconds: float
    calls: Counter[str]
    list_seconds: float


@dataclass
class Results:
    apply: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    noop_lagging: list[Noop] = field(default_factory=list)
    """No-op plans right after apply (visibility may not show every schedule yet)."""
    noop: list[Noop] = field(default_factory=list)
    """No-op plans once the list shows every schedule with its CampaignSha256."""
    load_s: float = 0.0


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, timeout=PHASE_TIMEOUT)


async def listed_shas(client: Client) -> dict[str, str | None]:
    return {e.id: e.typed_search_attributes.get(CAMPAIGN_SHA256) async for e in await client.list_schedules()}


async def wait_listed(client: Client, expected: dict[str, str | None]) -> float:
    """Poll the list until it shows exactly `expected` (schedule id: CampaignSha256); seconds waited."""
    start = time.perf_counter()

    async def poll() -> None:
        while True:
            if await listed_shas(client) == expected:
                return
            await asyncio.sleep(0.2)

    await bounded(poll())
    return time.perf_counter() - start


async def delete_all(client: Client, ids: Iterable[str]) -> float:
    """Delete the schedules and wait until the list shows none; seconds taken (not measured)."""
    start = time.perf_counter()
    semaphore = asyncio.Semaphore(CLEANUP_CONCURRENCY)

    async def one(sid: str) -> None:
        async with semaphore:
            await client.get_schedule_handle(sid).delete()

    await bounded(asyncio.gather(*(one(sid) for sid in ids)))
    await wait_listed(client, {})
    return time.perf_counter() - start


async def create_loop(client: Client, settings: Settings, campaigns: list[Campaign]) -> tuple[float, list[str]]:
    """The baseline: what apply sends, prepared beforehand and created one after another."""
    prepared = [
        (
            f"baseline-{c.id}",
            build_schedule(c, settings),
            {"managed_by": MANAGED_BY, "source": str(c.source or "")},
            TypedSearchAttributes([SearchAttributePair(CAMPAIGN_SHA256, c.sha256)]),
        )
        for c in campaigns
    ]

    async def loop() -> None:
        for sid, schedule, memo, attributes in prepared:
            await client.create_schedule(sid, schedule, memo=memo, search_attributes=attributes)

    start = time.perf_counter()
    await bounded(loop())
    return time.perf_counter() - start, [sid for sid, *_ in prepared]


async def apply_dir(client: Client, settings: Settings) -> float:
    start = time.perf_counter()
    outcome = await bounded(sync(client, settings, dry_run=False))
    elapsed = time.perf_counter() - start
    if outcome.problems or len(outcome.pending) != CAMPAIGNS or any(c.action != Action.CREATE for c in outcome.pending):
        raise SystemExit(f"apply did not create {CAMPAIGNS} schedules: {outcome.problems or outcome.pending[:5]}")
    return elapsed


async def noop_plan(client: Client, settings: Settings, counter: RpcCounter) -> Noop:
    counter.reset()
    start = time.perf_counter()
    outcome = await bounded(sync(client, settings, dry_run=True))
    elapsed = time.perf_counter() - start
    if outcome.problems or outcome.pending or len(outcome.changes) != CAMPAIGNS:
        raise SystemExit(f"the plan after apply is not a no-op: {outcome.problems or outcome.pending[:5]}")
    return Noop(elapsed, Counter(counter.calls), counter.seconds["list_schedules"])


async def bench(workdir: Path) -> Results:
    settings = load_settings()
    settings.campaigns.dir = workdir
    write_campaigns(workdir)
    results = Results()
    start = time.perf_counter()
    campaigns, problems = load_campaign_dir(workdir)
    results.load_s = time.perf_counter() - start
    if problems or len(campaigns) != CAMPAIGNS:
        raise SystemExit(f"the bench campaigns do not load: {problems[:5]}")
    expected = {schedule_id(c.id): c.sha256 for c in campaigns.values()}
    env = await local_environment()
    try:
        client = env.client
        counter = RpcCounter(client, COUNTED_RPCS)
        print(f"{CAMPAIGNS} campaigns (load_campaign_dir alone: {results.load_s:.2f}s); {ROUNDS} rounds")
        for round_no in range(ROUNDS):
            # Alternate the order, so drift over the run (e.g. a growing history store) hits both alike.
            order = ("baseline", "apply") if round_no % 2 == 0 else ("apply", "baseline")
            for kind in order:
                counter.reset()
                if kind == "baseline":
                    seconds, ids = await create_loop(client, settings, list(campaigns.values()))
                    results.baseline.append(seconds)
                    print(f"  round {round_no + 1} baseline {seconds:6.2f}s  ({counter.summary()})")
                else:
                    seconds = await apply_dir(client, settings)
                    results.apply.append(seconds)
                    print(f"  round {round_no + 1} apply    {seconds:6.2f}s  ({counter.summary()})")
                    lagging = await noop_plan(client, settings, counter)
                    waited = await wait_listed(client, expected)
                    caught_up = await noop_plan(client, settings, counter)
                    results.noop_lagging.append(lagging)
                    results.noop.append(caught_up)
                    for label, noop in (("right after apply", lagging), (f"list caught up {waited:.1f}s", caught_up)):
                        print(
                            f"    no-op plan {label:<19} {noop.seconds:5.2f}s  list RPC {noop.list_seconds:5.3f}s"
                            f"  ({calls_text(noop.calls)})"
                        )
                    ids = list(expected)
                cleanup = await delete_all(client, ids)
                print(f"    (deleted, list empty after {cleanup:.1f}s)")
    finally:
        await env.shutdown()
    return results


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        results = asyncio.run(bench(Path(tmp)))
    apply, baseline = statistics.median(results.apply), statistics.median(results.baseline)
    ratio = apply / baseline
    noop = statistics.median(n.seconds for n in results.noop)
    lagging = statistics.median(n.seconds for n in results.noop_lagging)
    noop_list = max(n.calls["list_schedules"] for n in results.noop)
    noop_describe = max(n.calls["describe_schedule"] for n in results.noop)
    lagging_describe = max(n.calls["describe_schedule"] for n in results.noop_lagging)
    print(f"medians of {ROUNDS} rounds, {CAMPAIGNS} campaigns:")
    print(f"  apply    (sync, dry_run=False):      {apply:6.2f}s  ({APPLY_CONCURRENCY} schedules at once)")
    print(f"  baseline (create_schedule loop):     {baseline:6.2f}s  (one after another)")
    print(f"  ratio apply/baseline: {ratio:.3f}  (target <= 1.5)")
    print(f"  no-op plan right after apply:        {lagging:6.2f}s  (up to {lagging_describe} describe calls)")
    print(
        f"  no-op plan, visibility caught up:    {noop:6.2f}s  (target < 1 s; up to {noop_list} list and"
        f" {noop_describe} describe calls)"
    )
    print(f"  (total {time.perf_counter() - started:.0f}s)")
    result = {
        "name": "schedules_apply_vs_create_loop",
        "value": round(apply, 3),
        "unit": "s",
        "baseline": round(baseline, 3),
        "ratio": round(ratio, 4),
        "noop_plan_s": round(noop, 3),
        "noop_plan_list_calls": noop_list,
        "noop_plan_describe_calls": noop_describe,
        "noop_plan_after_apply_s": round(lagging, 3),
        "noop_plan_after_apply_describe_calls": lagging_describe,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
