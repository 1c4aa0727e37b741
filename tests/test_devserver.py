"""The embedded dev server's db lock: one server per db file; a server left behind by a dead `up` is reclaimed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from scheduler.config import Settings, load_settings
from scheduler.devserver import DevServer
from scheduler.errors import DevServerError
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowInput
from scheduler.temporal import connect
from tests.helpers.campaigns import SEED
from tests.helpers.flows import start_flow_input
from tests.helpers.servers import alive, free_ports

LEAVE_SERVER_BEHIND = """
import asyncio, os, sys
from scheduler import devserver
from scheduler.config import load_settings

devserver._die_with_parent = lambda: None  # as where no parent-death signal exists (macOS)
server = devserver.DevServer(load_settings(sys.argv[1]))
asyncio.run(server.start())
print(server.process.pid, flush=True)
os._exit(0)  # dies without stopping it
"""

HOLD_LOCK = """
import fcntl, json, os, sys, time

fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": int(sys.argv[2]), "server_pid": os.getpid()}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def lock_file(settings: Settings) -> Path:
    return settings.dev_server.db_file.with_name(settings.dev_server.db_file.name + ".lock")


def locked(path: Path) -> bool:
    """Another open file holds the lock on `path`."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_config(tmp_path: Path) -> tuple[Path, Settings]:
    dev_port, ui_port = free_ports(2)
    config = tmp_path / "scheduler.toml"
    config.write_text(
        f'[dev_server]\nport = {dev_port}\nui_port = {ui_port}\ndb_file = "state/temporal.db"\n', encoding="utf-8"
    )
    return config, load_settings(config)


@contextlib.contextmanager
def server_left_behind(config: Path) -> Iterator[int]:
    """A dev server whose `up` died (pid yielded); SIGKILLed at the end if something else did not stop it."""
    left = subprocess.run(
        [sys.executable, "-c", LEAVE_SERVER_BEHIND, str(config)], capture_output=True, text=True, timeout=60
    )
    assert left.returncode == 0, left.stderr
    pid = int(left.stdout.split()[-1])
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def lock_holder(lock_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another program holding the lock and recorded as the server of an `up` that has exited."""
    up = subprocess.Popen([sys.executable, "-c", "pass"])
    up.wait()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path), str(up.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


async def test_dev_server_left_behind_by_a_dead_up_is_reclaimed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, settings = write_config(tmp_path)
    with server_left_behind(config) as orphan:
        assert alive(orphan)
        # It inherited the lock: while it lives, no other server may open its db file.
        assert locked(lock_file(settings))
        flow = FlowInput(definition=WorkflowDefinition.model_validate(SEED), customer={"id": "c6"})
        handle = await start_flow_input(await connect(settings), flow, f"tq-{uuid.uuid4()}")

        server = DevServer(settings)
        try:
            with caplog.at_level(logging.WARNING, logger="scheduler.devserver"):
                await server.start(timeout=30)
            assert not alive(orphan)
            assert f"Temporal dev server (pid {orphan})" in caplog.text
            client = await connect(settings)
            described = await client.get_workflow_handle(handle.id).describe()
            assert described.status == WorkflowExecutionStatus.RUNNING
            await client.get_workflow_handle(handle.id).terminate("test cleanup")
        finally:
            server.stop()


async def test_dev_server_never_stops_a_lock_holder_it_cannot_prove_is_its_server(tmp_path: Path) -> None:
    _, settings = write_config(tmp_path)
    lock_path = lock_file(settings)
    lock_path.parent.mkdir(parents=True)
    with lock_holder(lock_path) as holder:
        server = DevServer(settings)
        try:
            with pytest.raises(DevServerError) as raised:
                await server.start(timeout=30)
        finally:
            server.stop()
        assert server.process is None  # refused before spawning anything
        assert holder.poll() is None  # and left alone
        message = str(raised.value)
        assert f"locked by pid {holder.pid}" in message
        assert str(settings.dev_server.db_file) in message
        assert json.loads(lock_path.read_text())["server_pid"] == holder.pid  # not overwritten
