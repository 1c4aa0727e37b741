"""Record the histories for the replay tests: `.venv/bin/python tests/record_histories.py [NAME…]`.

Runs `tests.helpers.campaigns.SEED` on a time-skipping test server for each branch (a reply → step_3;
no reply → the timeout branch; STOP → the flow ends), an opt-out ending a flow in an `explicit_wait`, an
opt-out that comes while the message before a `wait_answer` goes and one that comes in that wait (both take
its `not_satisfied` edge), a flow whose first message finds its customer suppressed, a message held
through quiet hours, a flow cancelled while it waits, a flow whose message finds its campaign stopped, a flow
through a split's variant and one its split holds out, a flow whose reply takes a `wait_answer`'s intent,
flows whose message awaits its delivery receipt (delivered; undelivered) and one whose SMS gateway (a local one)
refuses the number so it falls back to the next channel, a campaign run with and without an audience and one
cancelled while it starts flows, and a keyword's answer to a phone and an address, and writes
`tests/histories/<name>.json` (all, or the names given).
Re-record only on purpose: a history that no longer replays means running flows would break when the new
code is deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent))

from scheduler.campaigns.campaign import load_campaign  # noqa: E402
from scheduler.config import load_settings  # noqa: E402
from scheduler.flow.definition import WorkflowDefinition  # noqa: E402
from scheduler.flow.engine import start_attributes  # noqa: E402
from scheduler.flow.models import (  # noqa: E402
    FLOW_REVISION,
    CampaignRunInput,
    CampaignRunResult,
    DeliveryPolicy,
    FlowInput,
    FlowStatus,
    KeywordAnswer,
)
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, DELIVERY_STATUS_SIGNAL, DeliveryStatus, Reply  # noqa: E402
from scheduler.flow.workflows import (  # noqa: E402
    STATUS_QUERY,
    AbandonedCartWorkflow,
    CampaignRunWorkflow,
    KeywordAnswerWorkflow,
)
from scheduler.store import Store  # noqa: E402
from scheduler.store.consent import Consent  # noqa: E402
from scheduler.store.stops import CampaignStops, StopMode  # noqa: E402
from scheduler.temporal import ensure_search_attributes  # noqa: E402
from scheduler.worker import make_worker  # noqa: E402
from tests.helpers import BIN, ROOT  # noqa: E402
from tests.helpers.campaigns import JSONL_AUDIENCE, ONE_STEP, SEED, campaign_toml  # noqa: E402
from tests.helpers.servers import QuietHandler, http_server  # noqa: E402

HISTORIES = TESTS / "histories"
WAIT_THEN_SEND = {
    "start_step": "wait",
    "steps": {
        "wait": {"node": "explicit_wait", "params": {"duration": "1m"}, "go_to": "send"},
        "send": {"node": "send_message"},
    },
}
OPT_OUT_PATH = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "send_message", "go_to": "step_2"},
        "step_2": {"node": "wait_answer", "condition": {"satisfied": "step_3", "not_satisfied": "step_7"}},
        "step_3": {"node": "notify_creator"},
        "step_7": {"node": "notify_creator", "go_to": "step_8"},
        "step_8": {"node": "send_message", "params": {"template": "Sorry to see you go."}},
    },
}
"""An opt-out's way on: step_2's `not_satisfied` edge tells the owner, then a message the suppression list stops."""


INTENT_PATH = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "send_message", "go_to": "step_2"},
        "step_2": {
            "node": "wait_answer",
            "condition": {"satisfied": "step_3"},
            "intents": {
                "yes": {"match": ["yes", "send it"], "go_to": "step_4"},
                "later": {"match": ["later"], "go_to": "step_3"},
            },
        },
        "step_3": {"node": "notify_creator"},
        "step_4": {"node": "send_message", "params": {"template": "Here is your cart: {{ cart.url }}"}},
    },
}
"""A reply's intent picks step_2's way on: `yes` to a second message, after which the flow ends (`ReplyIntent` is
written with the end)."""


def split_path(experiment: str) -> dict[str, Any]:
    """A split (customer c1 of `abandoned-cart` is in `message` for `replay-split`, in the holdout for
    `replay-holdout`), then a message and a 1m wait: the `Variant` attribute is written before the wait."""
    return {
        "start_step": "test",
        "steps": {
            "test": {
                "node": "split",
                "params": {"experiment": experiment},
                "variants": {"message": {"weight": 1, "go_to": "send"}, "holdout": {"weight": 1}},
            },
            "send": {"node": "send_message", "go_to": "wait"},
            "wait": {"node": "explicit_wait", "params": {"duration": "1m"}},
        },
    }


TASK_QUEUE = "record-histories"
SUPPRESSED_PHONE = "+15550009"
"""On the recording worker's suppression list."""
FLOWS = {
    # name: (workflow id, reply or None, definition, the step the reply comes in, the customer's phone)
    "satisfied": (
        "abandoned_cart-replay-satisfied",
        Reply(reply_id="r1", text="yes please", channel="sms"),
        SEED,
        "step_2",
        "+15550001",
    ),
    "timeout": ("abandoned_cart-replay-timeout", None, SEED, "", "+15550001"),
    "opt-out": (
        "abandoned_cart-replay-opt-out",
        Reply(reply_id="r1", text="STOP", channel="sms"),
        SEED,
        "step_2",
        "+15550001",
    ),
    "opt-out-in-wait": (
        "abandoned_cart-replay-opt-out-in-wait",
        Reply(reply_id="r1", text="STOP", channel="sms", opt_out=True),
        WAIT_THEN_SEND,
        "wait",
        "+15550001",
    ),
    "suppressed-send": ("abandoned_cart-replay-suppressed-send", None, SEED, "", SUPPRESSED_PHONE),
}
"""The workflow id of each history; test_replay.py replays each file under the same id."""
REVISED = {
    "timeout-revision-2": ("abandoned_cart-replay-timeout-revision-2", None, SEED, "", "+15550001"),
    "split": ("abandoned_cart-replay-split", None, split_path("replay-split"), "", "+15550001"),
    "split-holdout": ("abandoned_cart-replay-split-holdout", None, split_path("replay-holdout"), "", "+15550001"),
}
"""Flows of `FLOWS`' kind started with `FlowInput.revision` 2: the seed's webhook step writes no state before it."""
CURRENT = {
    "intent": (
        "abandoned_cart-replay-intent",
        Reply(reply_id="r1", text="Yes please!", channel="sms"),
        INTENT_PATH,
        "step_2",
        "+15550001",
    ),
}
"""Flows of `FLOWS`' kind started with today's `FLOW_REVISION`."""
OPT_OUTS = {
    # name: (workflow id, whether the STOP comes while step_1's message goes, else in step_2's wait, phone)
    "opt-out-before-wait": ("abandoned_cart-replay-opt-out-before-wait", True, "+15550012"),
    "opt-out-in-wait-answer": ("abandoned_cart-replay-opt-out-in-wait-answer", False, "+15550013"),
}
"""Flows of `OPT_OUT_PATH` that get a STOP (its contact suppressed first, as the API does): both take the same path."""
STOPPED = ("stopped", "abandoned_cart-replay-stopped")
"""A flow cancelled while it waits for an answer (its campaign stopped): it ends `stopped`."""
HELD = ("quiet-hold", "abandoned_cart-replay-quiet-hold")
"""A flow whose message waits out quiet hours: the service's window (asked by local activity) around now."""
STOPPED_SEND = ("stopped-send", "abandoned_cart-replay-stopped-send")
"""A flow whose campaign is stopped while it waits: its message is not sent, it ends `stopped`."""
STOPPED_RUNS = {
    # name: (workflow id, campaign file)
    "campaign-run-stopped": ("campaign-run-replay-stopped", "replay-run-stopped.toml"),
    "campaign-run-stopped-late": ("campaign-run-replay-stopped-late", "replay-run-stopped-late.toml"),
}
"""Campaign runs cancelled (their campaign stopped) while their page activity starts flows, one every 2 s: of
ten carts (the activity sees the cancellation: the run is cancelled), and of two (it has started both before it
sees it: its last page done, the run completes)."""
RUNS = {
    # name: (workflow id, campaign file); the audience file is `carts.jsonl` beside it
    "campaign-run": ("campaign-run-replay-audience", "replay-run.toml"),
    "campaign-run-one": ("campaign-run-replay-one", "replay-run-one.toml"),
}
REFUSED_PHONE = "+15550400"
"""The recording gateway refuses messages to this number (HTTP 400: final)."""
RECEIPTS = {
    # name: (workflow id, the step's params, the receipt the SMS gets (None: none), the customer's phone)
    "await-delivered": (
        "abandoned_cart-replay-await-delivered",
        {"channel": "http", "await_delivery": "2m"},
        "delivered",
        "+15550001",
    ),
    "await-undelivered": (
        "abandoned_cart-replay-await-undelivered",
        {"channel": "http", "await_delivery": "2m"},
        "undelivered",
        "+15550001",
    ),
    "fallback": ("abandoned_cart-replay-fallback", {"channel": ["http", "console"]}, None, REFUSED_PHONE),
    "receipt-after-step": ("abandoned_cart-replay-receipt-after-step", {"channel": "http"}, "delivered", "+15550001"),
}
"""Flows of `SEND_OR_OWNER` through the recording gateway (revision 3): the SMS awaits its receipt, which comes
delivered (the `satisfied` edge) or undelivered (`not_satisfied`, reason `undelivered`); the gateway refuses the
number, and the message goes by the next channel of the list; a receipt without `await_delivery` comes in step wait,
after the step's memo entry was written (a memo upsert, behind the `delivery-memo` patch)."""
ANSWER = ("keyword-answer", "keyword-answer-replay")
"""A HELP's answer, sent to the sender's phone and address."""
RUN_FILES = {
    "replay-run.toml": campaign_toml("replay-run", workflow=JSONL_AUDIENCE + ONE_STEP),
    "replay-run-one.toml": campaign_toml("replay-run-one"),
    "replay-run-stopped.toml": campaign_toml(
        "replay-run-stopped",
        max_starts_per_second=0.5,
        workflow=JSONL_AUDIENCE.replace("carts.jsonl", "ten-carts.jsonl") + ONE_STEP,
    ),
    "replay-run-stopped-late.toml": campaign_toml(
        "replay-run-stopped-late", max_starts_per_second=0.5, workflow=JSONL_AUDIENCE + ONE_STEP
    ),
    "ten-carts.jsonl": "".join(
        json.dumps({"cart_ref": f"t-{i}", "mobile": f"+1555001{i:04d}"}) + "\n" for i in range(10)
    ),
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


def send_or_owner(params: dict[str, Any]) -> dict[str, Any]:
    """A message with `params`; `satisfied` waits 1m, `not_satisfied` tells the owner."""
    return {
        "start_step": "send",
        "steps": {
            "send": {
                "node": "send_message",
                "params": params,
                "condition": {"satisfied": "wait", "not_satisfied": "owner"},
            },
            "wait": {"node": "explicit_wait", "params": {"duration": "1m"}},
            "owner": {"node": "notify_creator"},
        },
    }


class Gateway(QuietHandler):
    """The recording SMS gateway: 200, or 400 for `REFUSED_PHONE`; the message ids it got, by phone."""

    keys: ClassVar[dict[str, str]] = {}

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        Gateway.keys[body["to"]] = self.headers["Idempotency-Key"]
        refused = body["to"] == REFUSED_PHONE
        self.send_json(400 if refused else 200, b'{"error": "invalid number"}' if refused else b'{"ok": true}')


async def record_receipt(
    env: WorkflowEnvironment, name: str, workflow_id: str, params: dict[str, Any], state: str | None, phone: str
) -> Path:
    flow = FlowInput(
        revision=FLOW_REVISION,
        definition=WorkflowDefinition.model_validate(send_or_owner(params)),
        campaign_id="abandoned-cart",
        owner="owner@example.com",
        customer={"id": "c1", "phone": phone, "name": "Ada"},
        delivery=DeliveryPolicy(quiet_hours="", timezone="UTC"),
    )
    Gateway.keys.pop(phone, None)
    handle = await start(env, workflow_id, flow)
    if state is not None:
        for _ in range(200):  # the gateway has the message (the flow may not have its result yet)
            if phone in Gateway.keys:
                break
            await asyncio.sleep(0.05)
        if "await_delivery" not in params:
            await until_in(handle, "wait")
        await handle.signal(DELIVERY_STATUS_SIGNAL, DeliveryStatus(message_id=Gateway.keys[phone], status=state))
    return await save(name, handle, ended(await handle.result()))


async def start(env: WorkflowEnvironment, workflow_id: str, flow: FlowInput) -> WorkflowHandle[Any, FlowStatus]:
    return await env.client.start_workflow(
        AbandonedCartWorkflow.run,
        flow,
        id=workflow_id,
        task_queue=TASK_QUEUE,
        search_attributes=start_attributes(flow),
        result_type=FlowStatus,
    )


async def start_run(env: WorkflowEnvironment, workflow_id: str, path: Path) -> WorkflowHandle[Any, Any]:
    campaign, problems = load_campaign(path)
    assert campaign is not None, problems
    return await env.client.start_workflow(
        CampaignRunWorkflow.run, CampaignRunInput(campaign=campaign), id=workflow_id, task_queue=TASK_QUEUE
    )


async def cancel(handle: WorkflowHandle[Any, Any]) -> None:
    """Cancel a workflow and wait until it has closed."""
    await handle.cancel()
    try:
        await handle.result()
    except WorkflowFailureError:
        pass


async def until_in(handle: WorkflowHandle[Any, FlowStatus], step: str) -> None:
    """Until the flow waits in `step` (time only skips inside `result()`), so its wait's timer is started."""
    for _ in range(200):
        if (await handle.query(STATUS_QUERY, result_type=FlowStatus)).current_step == step:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{handle.id} never reached {step}")


def without_stack_traces(history_json: str) -> str:
    """The history with every failure's `stackTrace` emptied: replay never reads them, and they name the paths of
    the machine that recorded it."""

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: "" if key == "stackTrace" else scrub(value) for key, value in node.items()}
        if isinstance(node, list):
            return [scrub(value) for value in node]
        return node

    return json.dumps(scrub(json.loads(history_json)), indent=2)


async def save(name: str, handle: WorkflowHandle[Any, Any], summary: str) -> Path:
    path = HISTORIES / f"{name}.json"
    path.write_text(without_stack_traces((await handle.fetch_history()).to_json()) + "\n", encoding="utf-8")
    print(f"wrote {path.name}: {summary}")
    return path


def ended(result: FlowStatus) -> str:
    return f"{result.outcome}, path {' → '.join(result.path)}"


async def record(
    env: WorkflowEnvironment,
    name: str,
    workflow_id: str,
    reply: Reply | None,
    definition: dict[str, Any],
    reply_step: str,
    phone: str,
    revision: int = 0,
) -> Path:
    flow = FlowInput(
        revision=revision,
        definition=WorkflowDefinition.model_validate(definition),
        campaign_id="abandoned-cart",
        owner="owner@example.com",
        customer={"id": "c1", "phone": phone, "name": "Ada"},
        cart={"id": "cart-7", "url": "https://shop.example/cart/7"},
    )
    handle = await start(env, workflow_id, flow)
    if reply is not None:  # the reply cancels the wait's timer
        await until_in(handle, reply_step)
        await handle.signal(CLIENT_ANSWERED_SIGNAL, reply)
    return await save(name, handle, ended(await handle.result()))


class HeldSends(Interceptor):
    """Holds a `send_message` activity of a flow in `held` (by workflow id), once sent, until its event is set."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}

    def hold(self, workflow_id: str) -> tuple[asyncio.Event, asyncio.Event]:
        """(sent: the message went and the activity waits, release: set it to let the activity end)."""
        return self.held.setdefault(workflow_id, (asyncio.Event(), asyncio.Event()))

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        held = self.held

        class Hold(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                result = await super().execute_activity(input)
                info = activity.info()
                if info.activity_type == "send_message" and info.workflow_id in held:
                    sent, release = held.pop(info.workflow_id)
                    sent.set()
                    await release.wait()
                return result

        return Hold(next)


async def record_opt_out(
    env: WorkflowEnvironment,
    name: str,
    workflow_id: str,
    during_send: bool,
    phone: str,
    *,
    consent: Consent,
    sends: HeldSends,
) -> Path:
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(OPT_OUT_PATH),
        campaign_id="abandoned-cart",
        owner="owner@example.com",
        customer={"id": "c1", "phone": phone, "name": "Ada"},
    )
    sent, release = sends.hold(workflow_id) if during_send else (None, None)
    handle = await start(env, workflow_id, flow)
    if sent is not None:
        await asyncio.wait_for(sent.wait(), timeout=30)
    else:
        await until_in(handle, "step_2")
    consent.suppress(phone, reason="keyword STOP")
    await handle.signal(CLIENT_ANSWERED_SIGNAL, Reply(reply_id="r1", text="STOP", channel="sms", opt_out=True))
    for _ in range(200):  # the flow has it before step_1 ends
        if (await handle.query(STATUS_QUERY, result_type=FlowStatus)).replies:
            break
        await asyncio.sleep(0.05)
    if release is not None:
        release.set()
    return await save(name, handle, ended(await handle.result()))


async def record_stopped(env: WorkflowEnvironment, name: str, workflow_id: str) -> Path:
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(SEED),
        campaign_id="abandoned-cart",
        owner="owner@example.com",
        customer={"id": "c1", "phone": "+15550001", "name": "Ada"},
    )
    handle = await start(env, workflow_id, flow)
    await until_in(handle, "step_2")
    await cancel(handle)
    return await save(name, handle, "cancelled in step_2")


async def record_stopped_send(env: WorkflowEnvironment, name: str, workflow_id: str, stops: CampaignStops) -> Path:
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(WAIT_THEN_SEND),
        campaign_id="stopped-campaign",
        customer={"id": "c1", "phone": "+15550001"},
    )
    handle = await start(env, workflow_id, flow)
    await until_in(handle, "wait")
    stops.record("stopped-campaign", mode=StopMode.CANCEL, reason="replay", by="record_histories")
    return await save(name, handle, ended(await handle.result()))


async def record_stopped_run(env: WorkflowEnvironment, name: str, workflow_id: str, path: Path) -> Path:
    handle = await start_run(env, workflow_id, path)
    await asyncio.sleep(1)  # the page activity started the first flow and paces the next
    await cancel(handle)
    status = (await handle.describe()).status
    return await save(name, handle, f"{status.name if status else '?'} after a cancellation while starting flows")


async def record_held(env: WorkflowEnvironment, name: str, workflow_id: str) -> Path:
    flow = FlowInput(
        definition=WorkflowDefinition.model_validate(
            {"start_step": "send", "steps": {"send": {"node": "send_message"}}}
        ),
        campaign_id="abandoned-cart",
        customer={"id": "c1", "phone": "+15550001", "timezone": "UTC"},
        delivery=DeliveryPolicy(quiet_hours=None, timezone="UTC"),
    )
    handle = await start(env, workflow_id, flow)
    return await save(name, handle, ended(await handle.result()))


async def record_run(env: WorkflowEnvironment, name: str, workflow_id: str, path: Path) -> Path:
    handle = await start_run(env, workflow_id, path)
    result = await handle.result()
    assert isinstance(result, CampaignRunResult)
    return await save(name, handle, f"started {result.started}, skipped {result.skipped_invalid}")


async def record_answer(env: WorkflowEnvironment, name: str, workflow_id: str) -> Path:
    answer = KeywordAnswer(contacts=["+15550001", "ada@example.com"], text="Reply STOP to stop.")
    handle = await env.client.start_workflow(KeywordAnswerWorkflow.run, answer, id=workflow_id, task_queue=TASK_QUEUE)
    await handle.result()
    return await save(name, handle, f"answered {len(answer.contacts)} contacts")


async def main(names: list[str]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(BIN / "temporal-test-server")
    )
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        settings = load_settings(ROOT / "config" / "scheduler.toml")
        now = datetime.now(UTC)
        settings.compliance.quiet_hours = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            settings.channels.outbox = Path(tmp) / "outbox.jsonl"  # don't touch the real outbox
            settings.campaigns.dir = Path(tmp)
            gateway = stack.enter_context(http_server(Gateway))
            settings.channels.http.url = f"{gateway}/v1/messages"
            for file, text in RUN_FILES.items():
                (Path(tmp) / file).write_text(text, encoding="utf-8")
            store = Store.open(f"sqlite:///{tmp}/scheduler.db")
            consent = Consent(store)
            consent.suppress(SUPPRESSED_PHONE, reason="keyword STOP")
            sends = HeldSends()
            async with make_worker(env.client, settings, task_queue=TASK_QUEUE, store=store, interceptors=[sends]):
                for name, flow in FLOWS.items():
                    if names and name not in names:
                        continue
                    await record(env, name, *flow)
                for name, flow in REVISED.items():
                    if not names or name in names:
                        await record(env, name, *flow, revision=2)
                for name, flow in CURRENT.items():
                    if not names or name in names:
                        await record(env, name, *flow, revision=FLOW_REVISION)
                for name, opt_out in OPT_OUTS.items():
                    if not names or name in names:
                        await record_opt_out(env, name, *opt_out, consent=consent, sends=sends)
                if not names or STOPPED[0] in names:
                    await record_stopped(env, *STOPPED)
                if not names or HELD[0] in names:
                    await record_held(env, *HELD)
                if not names or STOPPED_SEND[0] in names:
                    await record_stopped_send(env, *STOPPED_SEND, CampaignStops(store))
                for name, (workflow_id, file) in STOPPED_RUNS.items():
                    if not names or name in names:
                        await record_stopped_run(env, name, workflow_id, Path(tmp) / file)
                for name, (workflow_id, file) in RUNS.items():
                    if names and name not in names:
                        continue
                    await record_run(env, name, workflow_id, Path(tmp) / file)
                for name, receipt in RECEIPTS.items():
                    if not names or name in names:
                        await record_receipt(env, name, *receipt)
                if not names or ANSWER[0] in names:
                    await record_answer(env, *ANSWER)
            store.close()
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
