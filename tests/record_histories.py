"""Record the histories for the replay tests: `.venv/bin/python tests/record_histories.py [NAME…]`.

Runs `tests.helpers.campaigns.SEED` on a time-skipping test server for each branch (a reply → step_3;
no reply → the timeout branch; STOP → the flow ends), and a campaign run with and without an audience,
and writes `tests/histories/<name>.json` (all, or the names given). Re-record only on purpose: a history
that no longer replays means running flows would break when the new code is deployed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent))

from scheduler.campaign import load_campaign  # noqa: E402
from scheduler.config import load_settings  # noqa: E402
from scheduler.flow.definition import WorkflowDefinition  # noqa: E402
from scheduler.flow.engine import start_attributes  # noqa: E402
from scheduler.flow.models import CampaignRunInput, CampaignRunResult, FlowInput, FlowStatus  # noqa: E402
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, Reply  # noqa: E402
from scheduler.flow.workflows import STATUS_QUERY, AbandonedCartWorkflow, CampaignRunWorkflow  # noqa: E402
from scheduler.temporal import ensure_search_attributes  # noqa: E402
from scheduler.worker import make_worker  # noqa: E402
from tests.helpers import BIN, ROOT  # noqa: E402
from tests.helpers.campaigns import JSONL_AUDIENCE, ONE_STEP, SEED, campaign_toml  # noqa: E402

HISTORIES = TESTS / "histories"
TASK_QUEUE = "record-histories"
FLOWS = {
    # name: (workflow id, reply or None)
    "satisfied": ("abandoned_cart-replay-satisfied", Reply(reply_id="r1", text="yes please", channel="sms")),
    "timeout": ("abandoned_cart-replay-timeout", None),
    "opt-out": ("abandoned_cart-replay-opt-out", Reply(reply_id="r1", text="STOP", channel="sms")),
}
"""The workflow id of each history; test_replay.py replays each file under the same id."""
RUNS = {
    # name: (workflow id, campaign file); the audience file is `carts.jsonl` beside it
    "campaign-run": ("campaign-run-replay-audience", "replay-run.toml"),
    "campaign-run-one": ("campaign-run-replay-one", "replay-run-one.toml"),
}
RUN_FILES = {
    "replay-run.toml": campaign_toml("replay-run", workflow=JSONL_AUDIENCE + ONE_STEP),
    "replay-run-one.toml": campaign_toml("replay-run-one"),
    "carts.jsonl": "".join(
        json.dumps(row) + "\n"
        for row in (
            {"cart_ref": "c-1", "mobile": "+15550001"},
            {"cart_ref": "c-2", "mobile": "+15550002"},
            {"name": "no cart"},
        )
    ),
}
"""A campaign run reads its audience from the worker's campaigns directory: these files are written there."""


async def record(env: WorkflowEnvironment, name: str, workflow_id: str, reply: Reply | None) -> Path:
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(SEED),
        campaign_id="abandoned-cart",
        owner="owner@example.com",
        customer={"id": "c1", "phone": "+15550001", "name": "Ada"},
        cart={"id": "cart-7", "url": "https://shop.example/cart/7"},
    )
    handle = await env.client.start_workflow(
        AbandonedCartWorkflow.run, flow, id=workflow_id, task_queue=TASK_QUEUE, search_attributes=start_attributes(flow)
    )
    if reply is not None:
        # Reply while step_2 waits (time only skips inside `result()`), so the history has the wait's
        # timer started and then cancelled by the reply.
        for _ in range(200):
            if (await handle.query(STATUS_QUERY, result_type=FlowStatus)).current_step == "step_2":
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{workflow_id} never reached step_2")
        await handle.signal(CLIENT_ANSWERED_SIGNAL, reply)
    result = await handle.result()
    print(f"{name}: path {' → '.join(result.path)}")
    path = HISTORIES / f"{name}.json"
    path.write_text((await handle.fetch_history()).to_json() + "\n", encoding="utf-8")
    return path


async def record_run(env: WorkflowEnvironment, name: str, workflow_id: str, path: Path) -> Path:
    campaign, problems = load_campaign(path)
    assert campaign is not None, problems
    handle = await env.client.start_workflow(
        CampaignRunWorkflow.run, CampaignRunInput(campaign=campaign), id=workflow_id, task_queue=TASK_QUEUE
    )
    result = await handle.result()
    assert isinstance(result, CampaignRunResult)
    print(f"{name}: started {result.started}, skipped {result.skipped_invalid}")
    out = HISTORIES / f"{name}.json"
    out.write_text((await handle.fetch_history()).to_json() + "\n", encoding="utf-8")
    return out


async def main(names: list[str]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(BIN / "temporal-test-server")
    )
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        settings = load_settings(ROOT / "config" / "scheduler.toml")
        with tempfile.TemporaryDirectory() as tmp:
            settings.channels.outbox = Path(tmp) / "outbox.jsonl"  # don't touch the real outbox
            settings.campaigns.dir = Path(tmp)
            for file, text in RUN_FILES.items():
                (Path(tmp) / file).write_text(text, encoding="utf-8")
            async with make_worker(env.client, settings, task_queue=TASK_QUEUE):
                for name, (workflow_id, reply) in FLOWS.items():
                    if names and name not in names:
                        continue
                    print(f"wrote {(await record(env, name, workflow_id, reply)).relative_to(ROOT)}")
                for name, (workflow_id, file) in RUNS.items():
                    if names and name not in names:
                        continue
                    path = await record_run(env, name, workflow_id, Path(tmp) / file)
                    print(f"wrote {path.relative_to(ROOT)}")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
