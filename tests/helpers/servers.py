"""Servers the tests start: throwaway Temporal dev servers, free ports, small HTTP servers in a thread."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from scheduler.devserver import temporal_binary
from scheduler.temporal import SEARCH_ATTRIBUTES


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


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped is not: its port and files are released)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


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
    """Each POST: its `path`, `headers`, `json` body and `at` (`time.monotonic()` when it arrived)."""
    url: str = ""


@contextlib.contextmanager
def scripted_server(path: str, *, delay: float = 0.0) -> Iterator[ScriptedServer]:
    """A `ScriptedServer` at `path`; a 4xx/5xx answer says `{"error": "invalid number"}`, as an SMS gateway would.

    `delay`: seconds each answer takes (a slow gateway).
    """
    state = ScriptedServer()
    lock = threading.Lock()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            at = time.monotonic()
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                request = {"path": self.path, "headers": dict(self.headers), "json": json.loads(body or b"null")}
                state.requests.append(request | {"at": at})
                status = state.statuses[min(len(state.requests), len(state.statuses)) - 1]
            time.sleep(delay)
            self.send_json(status, b'{"error": "invalid number"}' if status >= 400 else b'{"ok": true}')

    with http_server(Handler) as base:
        state.url = f"{base}{path}"
        yield state
