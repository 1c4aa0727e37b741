"""Durability across restarts: of the worker, of the embedded dev server (same db file), and of `scheduler up`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from scheduler.campaigns.start import signal_flow, start_flow
from scheduler.config import Settings, load_settings
from scheduler.delivery.channels import Outbox
from scheduler.devserver import DevServer, port_in_use
from scheduler.errors import DevServerError
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL
from scheduler.temporal import connect
from scheduler.worker import make_worker
from tests.helpers import ROOT
from tests.helpers.campaigns import SEED
from tests.helpers.cli import SCHEDULER, scheduler
from tests.helpers.flows import reaches, start_flow_input, status, terminate
from tests.helpers.servers import alive, free_ports
from tests.helpers.waiting import eventually

SATISFIED_PATH = ["step_1", "step_2", "step_3"]
T = TypeVar("T")


def long_wait_definition() -> WorkflowDefinition:
    data = copy.deepcopy(SEED)
    data["steps"]["step_2"]["params"] = {"timeout": "10m"}
    return WorkflowDefinition.model_validate(data)


# Worker restart


async def test_worker_restart_flow_continues_on_new_worker(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    client = dev_env.client
    settings.temporal.task_queue = task_queue
    flow = FlowInput(definition=long_wait_definition(), customer={"id": "c1", "phone": "+15550111"})
    handle = await start_flow_input(client, flow, task_queue)
    try:
        async with make_worker(client, settings):
            await reaches(handle, "step_2")
        # Worker A is gone: the flow waits durably on the server.
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

        async with make_worker(client, settings):
            await handle.signal(CLIENT_ANSWERED_SIGNAL)
            result = await asyncio.wait_for(handle.result(), timeout=30)
    finally:
        await terminate(client, handle.id)
    assert result.path == SATISFIED_PATH
    assert result.outcome == "completed"
    # step_1 ran once (on worker A), not again on worker B.
    sent = [r for r in Outbox(settings.channels.outbox).read() if r["workflow_id"] == handle.id]
    assert [r["step"] for r in sent] == ["step_1", "step_3"]


# Embedded dev server restart (the `scheduler up` code path, in-process)


def dev_settings(tmp_path: Path, task_queue: str) -> Settings:
    s = load_settings(ROOT / "config" / "scheduler.toml")
    assert s.embedded
    s.dev_server.port, s.dev_server.ui_port = free_ports(2)
    s.dev_server.db_file = tmp_path / "state" / "temporal.db"
    s.channels.outbox = tmp_path / "outbox.jsonl"
    s.temporal.task_queue = task_queue
    return s


@contextlib.contextmanager
def stopping(server: DevServer) -> Iterator[DevServer]:
    try:
        yield server
    finally:
        server.stop()


async def test_dev_server_restart_same_db_keeps_running_flow(tmp_path: Path, task_queue: str) -> None:
    settings = dev_settings(tmp_path, task_queue)
    first = DevServer(settings)
    with stopping(first):
        await first.start()
        client = await connect(settings)
        handle = await start_flow(client, settings, customer={"id": "c2", "phone": "+15550122"})
        async with make_worker(client, settings):
            await reaches(handle, "step_2")
    assert first.process is not None and first.process.returncode is not None
    assert not port_in_use("127.0.0.1", settings.dev_server.port)

    second = DevServer(settings)
    with stopping(second):
        await second.start()
        client = await connect(settings)
        described = await client.get_workflow_handle(handle.id).describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        assert described.run_id == handle.result_run_id
        async with make_worker(client, settings):
            await signal_flow(client, workflow_id=handle.id)
            result = await asyncio.wait_for(
                client.get_workflow_handle(handle.id, result_type=FlowStatus).result(), timeout=30
            )
    assert result.path == SATISFIED_PATH
    assert not port_in_use("127.0.0.1", settings.dev_server.port)


@pytest.mark.parametrize("key", ["dev_server.port", "dev_server.ui_port"])
async def test_dev_server_start_busy_port_names_port_and_key(tmp_path: Path, task_queue: str, key: str) -> None:
    settings = dev_settings(tmp_path, task_queue)
    port = getattr(settings.dev_server, key.split(".")[1])
    server = DevServer(settings)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with stopping(server), pytest.raises(DevServerError) as raised:
            await server.start(timeout=10)
    message = str(raised.value)
    assert f"port {port} is already in use ({key})" in message
    assert f"SCHEDULER_{key.split('.')[0].upper()}__{key.split('.')[1].upper()}" in message
    assert server.process is None  # refused before spawning anything


async def test_dev_server_start_bound_not_listening_port_names_port_and_key(tmp_path: Path, task_queue: str) -> None:
    settings = dev_settings(tmp_path, task_queue)
    port = settings.dev_server.port
    server = DevServer(settings)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", port))
        with stopping(server), pytest.raises(DevServerError) as raised:
            await server.start(timeout=10)
    assert f"port {port}" in str(raised.value)
    assert "dev_server.port" in str(raised.value)


# `scheduler up` as a subprocess


def write_up_config(tmp_path: Path, *, campaigns: Path = ROOT / "campaigns") -> tuple[Path, Settings]:
    dev_port, ui_port, api_port = free_ports(3)
    config = tmp_path / "scheduler.toml"
    config.write_text(
        f"""\
[temporal]
address = ""
task_queue = "up-{uuid.uuid4()}"

[dev_server]
port = {dev_port}
ui_port = {ui_port}
db_file = "state/temporal.db"

[api]
port = {api_port}

[campaigns]
dir = "{campaigns}"

[channels]
outbox = "state/outbox.jsonl"
""",
        encoding="utf-8",
    )
    return config, load_settings(config)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc), so a dev server left behind by a killed `up` can be stopped."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


@contextlib.contextmanager
def scheduler_up(
    config: Path, log: Path, *, new_session: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], set[int]]]:
    """`scheduler up --config X` in the background; killed (with its dev server) if still running at the end.

    `new_session`: in a process group of its own, as a terminal or a service manager would start it.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(SCHEDULER), "up", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=config.parent,
            env=environ,
            start_new_session=new_session,
        )
    spawned: set[int] = set()
    try:
        yield proc, spawned
    finally:
        if proc.poll() is None:
            spawned.update(children(proc.pid))
            if new_session:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait(timeout=10)
        for pid in spawned:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def healthy_up(
    config: Path, settings: Settings, log: Path, *, new_session: bool = False
) -> AsyncIterator[tuple[subprocess.Popen[bytes], set[int], httpx.AsyncClient]]:
    """`scheduler_up`, once its API answers `/healthz`, with a client of that API."""
    with scheduler_up(config, log, new_session=new_session) as (proc, spawned):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api.port}", timeout=5) as http:
            await wait_healthy(http, proc, spawned, log)
            yield proc, spawned, http


async def wait_healthy(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], spawned: set[int], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        spawned.update(children(proc.pid))
        assert proc.poll() is None, f"scheduler up exited with {proc.returncode}:\n{tail(log)}"
        with contextlib.suppress(httpx.TransportError):
            response = await http.get("/healthz")
            if response.status_code == 200:
                assert response.json()["temporal"] == "ok"
                return
        assert time.monotonic() < deadline, f"scheduler up did not become healthy:\n{tail(log)}"
        await asyncio.sleep(0.2)


async def stop_with_sigint(proc: subprocess.Popen[bytes], spawned: set[int], log: Path) -> int:
    spawned.update(children(proc.pid))
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 20
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"scheduler up did not stop within 20s:\n{tail(log)}"
        await asyncio.sleep(0.1)
    return proc.returncode


async def test_scheduler_up_serves_flows_stops_on_sigint_and_keeps_history_and_opt_outs(tmp_path: Path) -> None:
    config, settings = write_up_config(tmp_path)
    log = tmp_path / "up.log"
    async with healthy_up(config, settings, log) as (proc, spawned, http):
        started = await http.post("/start-workflow", json={"customer": {"id": "c3", "phone": "+15550133"}})
        assert started.status_code == 200, started.text
        workflow_id = started.json()["workflow_id"]
        signalled = await http.post("/send-signal", json={"workflow_id": workflow_id, "signal_name": "client-answered"})
        assert signalled.status_code == 200, signalled.text

        async def notified() -> None:
            lines = [r for r in Outbox(settings.channels.outbox).read() if r["workflow_id"] == workflow_id]
            assert [r["step"] for r in lines] == ["step_1", "step_3"]
            assert lines[1]["to"] == "growth@example.com"

        await eventually(notified, timeout=30)
        stopped = await http.post("/start-workflow", json={"customer": {"id": "c4", "phone": "(212) 555-0144"}})
        stop = {"workflow_id": stopped.json()["workflow_id"], "signal_name": "client-answered", "text": "STOP"}
        assert (await http.post("/send-signal", json=stop)).status_code == 200
        assert await stop_with_sigint(proc, spawned, log) == 0
        assert not port_in_use("127.0.0.1", settings.dev_server.port)
        assert not port_in_use("127.0.0.1", settings.api.port)
        assert spawned, "no child process of `up` (its dev server) was seen"
        assert not any(alive(pid) for pid in spawned), "the dev server outlived `up`"

    async with healthy_up(config, settings, log) as (proc, spawned, http):
        client = await connect(settings)
        described = await client.get_workflow_handle(workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED
        result = await client.get_workflow_handle(workflow_id, result_type=FlowStatus).result()
        assert result.path == SATISFIED_PATH
        kept = (await http.get("/suppressions", params={"contact": "+12125550144"})).json()["items"]
        assert [(e["contact"], e["reason"]) for e in kept] == [("+12125550144", "keyword STOP")]
        again = await http.post("/start-workflow", json={"customer": {"id": "c4", "phone": "+12125550144"}})
        result = await client.get_workflow_handle(again.json()["workflow_id"], result_type=FlowStatus).result()
        assert (result.outcome, result.path) == ("opted_out", ["step_1"])  # its first message was not sent
        assert await stop_with_sigint(proc, spawned, log) == 0
    assert not port_in_use("127.0.0.1", settings.dev_server.port)


def long_wait_campaigns(tmp_path: Path) -> Path:
    """The shipped campaigns with the default one waiting 10 minutes for a reply (outlasting restarts)."""
    directory = tmp_path / "campaigns"
    directory.mkdir()
    shipped = (ROOT / "campaigns" / "abandoned_cart.toml").read_text(encoding="utf-8")
    waiting = shipped.replace('params = { timeout = "1m" }', 'params = { timeout = "10m" }')
    assert waiting != shipped
    (directory / "abandoned_cart.toml").write_text(waiting, encoding="utf-8")
    return directory


async def test_scheduler_up_killed_takes_its_dev_server_and_next_up_finds_waiting_flow(tmp_path: Path) -> None:
    config, settings = write_up_config(tmp_path, campaigns=long_wait_campaigns(tmp_path))
    log = tmp_path / "up.log"
    async with healthy_up(config, settings, log, new_session=True) as (proc, spawned, http):
        started = await http.post("/start-workflow", json={"customer": {"id": "c4", "phone": "+15550144"}})
        assert started.status_code == 200, started.text
        workflow_id = started.json()["workflow_id"]
        await reaches((await connect(settings)).get_workflow_handle(workflow_id), "step_2")

        spawned.update(children(proc.pid))
        assert spawned, "no child process of `up` (its dev server) was seen"
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: `up` gets no chance to stop anything
        proc.wait(timeout=10)

        async def server_gone() -> None:
            assert not any(alive(pid) for pid in spawned), "the dev server outlived a killed `up`"
            for port in (settings.dev_server.port, settings.dev_server.ui_port, settings.api.port):
                assert not port_in_use("127.0.0.1", port), port  # the next `up` binds them all again

        await eventually(server_gone, timeout=10)

    async with healthy_up(config, settings, log, new_session=True) as (proc, spawned, http):
        client = await connect(settings)
        handle = client.get_workflow_handle(workflow_id, result_type=FlowStatus)
        assert (await status(handle)).current_step == "step_2"
        signalled = await http.post("/send-signal", json={"workflow_id": workflow_id, "signal_name": "client-answered"})
        assert signalled.status_code == 200, signalled.text
        result = await asyncio.wait_for(handle.result(), timeout=30)
        assert result.path == SATISFIED_PATH
        assert await stop_with_sigint(proc, spawned, log) == 0


async def test_second_up_on_same_db_with_moved_ports_is_refused_naming_pid(tmp_path: Path) -> None:
    config, settings = write_up_config(tmp_path)
    log = tmp_path / "up.log"
    async with healthy_up(config, settings, log) as (proc, spawned, http):
        dev_port, ui_port, api_port = free_ports(3)
        moved = {
            "SCHEDULER_DEV_SERVER__PORT": str(dev_port),
            "SCHEDULER_DEV_SERVER__UI_PORT": str(ui_port),
            "SCHEDULER_API__PORT": str(api_port),
        }
        second = await scheduler("up", "--config", config, cwd=tmp_path, env=moved)

        assert second.code == 1, second.stderr
        error = second.stderr.strip().splitlines()[-1]
        assert error.startswith("error: ")
        assert f"pid {proc.pid}" in error
        assert str(settings.dev_server.db_file) in error
        assert "starting the Temporal dev server" not in second.stderr
        assert not any(port_in_use("127.0.0.1", p) for p in (dev_port, ui_port, api_port))
        # The first one is unharmed: it still serves flows.
        started = await http.post("/start-workflow", json={"customer": {"id": "c5", "phone": "+15550155"}})
        assert started.status_code == 200, started.text
        assert (await http.get("/healthz")).status_code == 200
        assert await stop_with_sigint(proc, spawned, log) == 0
