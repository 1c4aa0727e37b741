"""Send policies: what quiet hours and a frequency cap cost the send path when neither holds nor caps.

Flows/s of one-step `send_message` flows, each to its own New York phone, on a worker with
`compliance.frequency_caps` set (one rule, far from reached) and flows whose policy has a quiet-hours
window away from the current New York time (so the zone is looked up from the phone and nothing is held),
against a worker without caps and flows without quiet hours; alternating rounds on one dev server, the
median of each (target: ratio ≥ 0.9).

Run: `.venv/bin/python bench/policies.py` (no arguments; about a minute). The last line printed is one
JSON object `{"name","value","unit","baseline","ratio"}`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from temporalio.client import Client

from scheduler.config import FrequencyCap, load_settings
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import DeliveryPolicy, FlowInput
from scheduler.worker import make_worker
from tests.helpers.flows import flows_per_second
from tests.helpers.servers import local_environment

ROUNDS = 4
FLOWS_PER_ROUND = 150
CONCURRENCY = 50
ONE_SEND = WorkflowDefinition.model_validate(
    {
        "start_step": "send",
        "steps": {
            "send": {"node": "send_message", "condition": {"not_satisfied": "not_sent"}},
            "not_sent": {"node": "explicit_wait", "params": {"duration": "1s"}},
        },
    }
)
"""A message; a flow that did not send it (held past `max_delay`, capped) ends through `not_sent`, and fails the
round."""


def quiet_window_elsewhere() -> str:
    """A one-hour window two hours from now in New York: configured, but holding nothing for a while."""
    now = datetime.now(ZoneInfo("America/New_York"))
    return f"{now + timedelta(hours=2):%H:%M}-{now + timedelta(hours=3):%H:%M}"


async def send_round(client: Client, task_queue: str, label: str, policy: DeliveryPolicy) -> float:
    flows = [
        FlowInput(definition=ONE_SEND, campaign_id="bench", customer={"id": f"c{i}", "phone": f"+1 646 555 {i:04d}"},
                  delivery=policy)
        for i in range(FLOWS_PER_ROUND)
    ]  # fmt: skip
    return await flows_per_second(client, task_queue, flows, label=label, concurrency=CONCURRENCY, path=["send"])


async def bench(workdir: Path) -> dict[str, float]:
    plain = load_settings()
    plain.channels.outbox = workdir / "outbox.jsonl"
    plain.store.url = f"sqlite:///{workdir / 'plain.db'}"
    plain.compliance.quiet_hours = ""
    capped = plain.model_copy(deep=True)
    capped.store.url = f"sqlite:///{workdir / 'capped.db'}"
    capped.compliance.frequency_caps = [FrequencyCap(channels=["console", "http"], max=1000, per=timedelta(hours=24))]
    policies = {
        "policies": DeliveryPolicy(quiet_hours=quiet_window_elsewhere(), timezone="UTC"),
        "none": DeliveryPolicy(quiet_hours=""),
    }
    env = await local_environment()
    try:
        client = env.client
        queues = {label: f"bench-{label}-{uuid.uuid4()}" for label in policies}
        rates: dict[str, list[float]] = {label: [] for label in policies}
        async with (
            make_worker(client, capped, task_queue=queues["policies"]),
            make_worker(client, plain, task_queue=queues["none"]),
        ):
            for label, queue in queues.items():
                await send_round(client, queue, f"warmup-{label}", policies[label])
            for round_no in range(ROUNDS):
                for label in ("policies", "none") if round_no % 2 == 0 else ("none", "policies"):
                    rate = await send_round(client, queues[label], f"{label}-{round_no}", policies[label])
                    rates[label].append(rate)
                    print(f"  round {round_no + 1} {label:<8} {rate:6.1f} flows/s")
    finally:
        await env.shutdown()
    return {label: statistics.median(r) for label, r in rates.items()}


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as tmp:
        figures = asyncio.run(bench(Path(tmp)))
    ratio = figures["policies"] / figures["none"]
    print(f"send path: {figures['policies']:.1f} flows/s with quiet hours and a cap, {figures['none']:.1f} without:"
          f" ratio {ratio:.3f}  (total {time.perf_counter() - started:.0f}s)")  # fmt: skip
    result = {
        "name": "send_policies_flows_per_second",
        "value": round(figures["policies"], 1),
        "unit": "flows/s",
        "baseline": round(figures["none"], 1),
        "ratio": round(ratio, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
