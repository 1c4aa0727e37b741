"""Engine throughput: flows/s of `AbandonedCartWorkflow` against a hand-written workflow doing the same work.

Why: the interpreter (definition validation, node lookup, params validation, memo and search-attribute
upserts after every step) is pure overhead on top of the activities a flow runs. This measures how much
of Temporal's throughput it keeps: both workflows run the same five activities with the same inputs,
timeouts and retry policies, on the same dev server, worker settings and client, in interleaved rounds.

Run: `.venv/bin/python bench/engine.py` (no arguments). The last line printed is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The project root, for `tests.helpers`. Checked first: the workflow sandbox runs this file again (below).
ROOT = str(Path(__file__).parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from temporalio import workflow

# This file is re-imported inside the workflow sandbox for every run of the baseline workflow (the
# engine's module is too), so everything it imports is passed through rather than imported again.
with workflow.unsafe.imports_passed_through():
    import asyncio
    import json
    import statistics
    import tempfile
    import time
    import uuid
    from datetime import timedelta
    from typing import Any

    from temporalio.client import Client
    from temporalio.common import RetryPolicy

    from scheduler.config import load_settings
    from scheduler.flow.definition import WorkflowDefinition, validate_definition
    from scheduler.flow.engine import ACTIVITY_TIMEOUT, start_attributes
    from scheduler.flow.models import ActivityInput, FlowInput, FlowStatus, RunCampaign, RunCampaignInfo, flow_input
    from scheduler.flow.nodes import ActivityResult
    from scheduler.flow.nodes.notify_creator import NotifyCreatorParams
    from scheduler.flow.nodes.send_message import SendMessageParams, send_retry
    from scheduler.flow.nodes.webhook import WebhookParams
    from scheduler.flow.workflows import AbandonedCartWorkflow
    from scheduler.worker import make_worker
    from tests.helpers.servers import local_environment

WARMUP_FLOWS = 20
ROUNDS = 5
FLOWS_PER_ROUND = 150
CONCURRENCY = 50
"""Flows in flight at once (started and awaited under a semaphore)."""
ROUND_TIMEOUT = 120.0
FLOW_TIMEOUT = timedelta(minutes=2)
"""Execution timeout of every flow, so nothing outlives a failed run."""

# Five steps, no waits: every step is one activity. `webhook` has no url, so it records to the outbox.
DEFINITION: dict[str, Any] = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "send_message", "go_to": "step_2"},
        "step_2": {"node": "notify_creator", "go_to": "step_3"},
        "step_3": {"node": "webhook", "go_to": "step_4"},
        "step_4": {"node": "send_message", "go_to": "step_5"},
        "step_5": {"node": "notify_creator"},
    },
}
BASELINE_STEPS = (
    ("step_1", "send_message"),
    ("step_2", "notify_creator"),
    ("step_3", "webhook"),
    ("step_4", "send_message"),
    ("step_5", "notify_creator"),
)
"""The same path, written out by hand."""
_SEND, _NOTIFY, _WEBHOOK = SendMessageParams(), NotifyCreatorParams(), WebhookParams()
# What the engine sends each activity for a step with empty params, and the timeout and retry policy
# its node passes (see scheduler/flow/nodes/send_message.py and webhook.py).
BASELINE_CALLS: dict[str, tuple[dict[str, Any], timedelta, RetryPolicy]] = {
    "send_message": (_SEND.model_dump(mode="json"), ACTIVITY_TIMEOUT, send_retry(_SEND.max_attempts)),
    "notify_creator": (_NOTIFY.model_dump(mode="json"), ACTIVITY_TIMEOUT, send_retry(_NOTIFY.max_attempts)),
    "webhook": (
        _WEBHOOK.model_dump(mode="json"),
        _WEBHOOK.timeout + timedelta(seconds=5),
        RetryPolicy(initial_interval=_WEBHOOK.initial_interval, maximum_attempts=_WEBHOOK.max_attempts),
    ),
}


@workflow.defn(name="BenchBaselineWorkflow")
class BaselineWorkflow:
    """The activities of the definition called directly in sequence: no interpretation."""

    @workflow.run
    async def run(self, flow: FlowInput) -> FlowStatus:
        workflow_id = workflow.info().workflow_id
        path: list[str] = []
        for step, name in BASELINE_STEPS:
            params, timeout, retry = BASELINE_CALLS[name]
            await workflow.execute_activity(
                name,
                ActivityInput(
                    workflow_id=workflow_id,
                    campaign_id=flow.campaign_id,
                    owner=flow.owner,
                    step=step,
                    customer=flow.customer,
                    cart=flow.cart,
                    params=params,
                ),
                result_type=ActivityResult,
                start_to_close_timeout=timeout,
                retry_policy=retry,
                summary=f"{step}: {name}",
            )
            path.append(step)
        return FlowStatus(current_step=path[-1], path=path, replies=0, definition_version="", outcome="completed")


async def run_round(
    client: Client, workflow_run: Any, task_queue: str, flow: FlowInput, n: int, label: str
) -> tuple[float, float]:
    """Run `n` flows, at most CONCURRENCY at once.

    Returns flows/s over the wall time of the whole batch, and this process's CPU time (client and
    worker: workflow tasks, activities, payload conversion) per flow in ms.
    """
    semaphore = asyncio.Semaphore(CONCURRENCY)
    attributes = start_attributes(flow)
    batch = uuid.uuid4().hex[:8]

    async def one(i: int) -> None:
        async with semaphore:
            handle = await client.start_workflow(
                workflow_run,
                flow,
                id=f"bench-{label}-{batch}-{i}",
                task_queue=task_queue,
                search_attributes=attributes,
                execution_timeout=FLOW_TIMEOUT,
            )
            status: FlowStatus = await handle.result()
            if status.outcome != "completed" or len(status.path) != len(BASELINE_STEPS):
                raise RuntimeError(f"{label} flow {handle.id} ended {status.outcome} after {status.path}")

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout=ROUND_TIMEOUT)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1000


async def bench(workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per kind ("engine", "baseline"): (flows/s, CPU ms/flow) of every measured round."""
    settings = load_settings()
    settings.channels.outbox = workdir / "outbox.jsonl"
    settings.store.url = f"sqlite:///{workdir / 'scheduler.db'}"  # not the dev data's
    definition = WorkflowDefinition.model_validate(DEFINITION)
    if problems := validate_definition(definition):
        raise SystemExit(f"the bench definition is invalid: {problems}")
    # Built as every flow is started (API, fan-out): with its `DeliveryPolicy` and revision. No quiet hours, so
    # nothing is held (bench/policies.py measures holds).
    campaign = RunCampaign(campaign=RunCampaignInfo(id="bench", owner="owner@example.com"), workflow=definition)
    flow = flow_input(
        campaign,
        customer={"id": "c1", "name": "Ann", "phone": "+15550001"},
        cart={"id": "cart-1", "url": "https://shop.example/cart/1"},
        quiet_hours="",
    )
    results: dict[str, list[tuple[float, float]]] = {"engine": [], "baseline": []}
    env = await local_environment()
    try:
        client = env.client
        engine_tq, baseline_tq = f"bench-engine-{uuid.uuid4()}", f"bench-baseline-{uuid.uuid4()}"
        kinds = {"engine": (AbandonedCartWorkflow.run, engine_tq), "baseline": (BaselineWorkflow.run, baseline_tq)}
        async with (
            make_worker(client, settings, task_queue=engine_tq),
            make_worker(client, settings, task_queue=baseline_tq, workflows=[BaselineWorkflow]),
        ):
            for label, (run, tq) in kinds.items():
                await run_round(client, run, tq, flow, WARMUP_FLOWS, f"warmup-{label}")
            print(f"warm-up done ({WARMUP_FLOWS} flows each); {ROUNDS} rounds of {FLOWS_PER_ROUND} flows")
            for round_no in range(ROUNDS):
                # ABBA order, so drift over the run (e.g. a growing history store) hits both alike.
                order = ("engine", "baseline") if round_no % 2 == 0 else ("baseline", "engine")
                for label in order:
                    run, tq = kinds[label]
                    rate, cpu_ms = await run_round(client, run, tq, flow, FLOWS_PER_ROUND, f"{label}-{round_no}")
                    results[label].append((rate, cpu_ms))
                    print(f"  round {round_no + 1} {label:<8} {rate:6.1f} flows/s  {cpu_ms:5.1f} ms CPU/flow")
    finally:
        await env.shutdown()
    return results


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        results = asyncio.run(bench(Path(tmp)))
    # Medians of the rounds, for both kinds alike.
    rate = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    engine, baseline = rate["engine"], rate["baseline"]
    ratio = engine / baseline
    print(f"medians of {ROUNDS} rounds (CPU: this process, i.e. worker and client, not the dev server):")
    print(f"  engine   (AbandonedCartWorkflow): {engine:6.1f} flows/s  {cpu['engine']:5.1f} ms CPU/flow")
    print(f"  baseline (hand-written workflow): {baseline:6.1f} flows/s  {cpu['baseline']:5.1f} ms CPU/flow")
    print(f"  ratio engine/baseline: {ratio:.3f}  (total {time.perf_counter() - started:.0f}s)")
    result = {
        "name": "engine_flows_per_second",
        "value": round(engine, 2),
        "unit": "flows/s",
        "baseline": round(baseline, 2),
        "ratio": round(ratio, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
