"""`scheduler up` / `worker` / `api`: compose the dev server, the worker and the HTTP API; Ctrl-C stops all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from scheduler.api import create_app
from scheduler.config import Settings
from scheduler.consent import Consent
from scheduler.devserver import DevServer, check_ports
from scheduler.flow.durations import format_duration
from scheduler.store import Store
from scheduler.temporal import connect, ensure_search_attributes
from scheduler.worker import make_worker

log = logging.getLogger(__name__)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: `up` owns Ctrl-C and stops everything in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def warn_if_exposed(settings: Settings) -> None:
    """Say loudly that the unsigned routes are open to anyone who can reach a non-loopback `api.host`."""
    if not settings.api.on_loopback:
        log.warning(
            "api.host is %r, not a loopback address: POST /start-workflow, /send-signal,"
            " /schedules/{id}/pause|unpause|trigger and /suppressions are unauthenticated, so anyone who can"
            " reach port %d can start flows, forge customer replies and opt-outs, lift opt-outs and stop"
            " campaigns; keep api.host on"
            " 127.0.0.1 or put an authenticating proxy in front",
            settings.api.host,
            settings.api.port,
        )


async def run(settings: Settings, *, dev_server: bool, worker: bool, api: bool, reconcile: bool = False) -> None:
    """Run the chosen parts until SIGINT/SIGTERM."""
    stop = _stop_event()
    if api:
        warn_if_exposed(settings)
    server = DevServer(settings) if dev_server and settings.embedded else None
    async with contextlib.AsyncExitStack() as stack:
        if server:
            stack.callback(server.stop)  # registered first: the server stops last, after the worker
            # Before any port check: a busy port may be another server on this db file.
            server.claim()
        check_ports(settings, {"api.port": settings.api.port} if api else {})
        if server:
            log.info("starting the Temporal dev server (db %s)", settings.dev_server.db_file)
            await server.start()
        client = await connect(settings)
        await ensure_search_attributes(client, settings.temporal.namespace)
        store = await asyncio.to_thread(Store.open, settings.store_url)  # migrated before anything uses it
        stack.callback(store.close)
        consent = Consent(store)
        if worker:
            await stack.enter_async_context(make_worker(client, settings, consent=consent))
            log.info("worker polling task queue %r", settings.temporal.task_queue)
        api_task = None
        if api:
            config = uvicorn.Config(
                create_app(settings, client=client, reconcile=reconcile, consent=consent),
                host=settings.api.host,
                port=settings.api.port,
                log_level="info",
            )
            api_server = _ApiServer(config)
            api_task = asyncio.create_task(api_server.serve())
        _banner(settings, dev_server=server is not None, worker=worker, api=api, reconcile=reconcile)
        waiters = [asyncio.create_task(stop.wait()), *([api_task] if api_task else [])]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping")
        if api_task:
            api_server.should_exit = True
            await api_task
        waiters[0].cancel()


def _banner(settings: Settings, *, dev_server: bool, worker: bool, api: bool, reconcile: bool) -> None:
    lines = [f"Temporal:  {settings.temporal_address} (namespace {settings.temporal.namespace})"]
    if dev_server:
        lines.append(f"Web UI:    http://127.0.0.1:{settings.dev_server.ui_port}")
    if worker:
        lines.append(f"Worker:    task queue {settings.temporal.task_queue}")
    if api:
        lines.append(f"HTTP API:  http://{settings.api.host}:{settings.api.port}")
    if reconcile:
        lines.append(
            f"Campaigns: {settings.campaigns.dir} (applied every {format_duration(settings.campaigns.reconcile_every)})"
        )
    lines.append("Press Ctrl-C to stop.")
    log.info("ready\n  %s", "\n  ".join(lines))
