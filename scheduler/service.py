"""`scheduler up` / `worker` / `api`: compose the dev server, the worker and the HTTP API; Ctrl-C stops all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from scheduler.api import create_app
from scheduler.config import Settings
from scheduler.devserver import DevServer, check_ports
from scheduler.errors import UnsafeExposure
from scheduler.flow.durations import format_duration
from scheduler.store import Store
from scheduler.store.api_keys import Keys
from scheduler.temporal import connect, ensure_search_attributes
from scheduler.worker import make_worker

log = logging.getLogger(__name__)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: `up` owns Ctrl-C and stops everything in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """How the API is served: on `api.host:api.port`, without uvicorn's access log, whose lines carry query
    strings (unsubscribe tokens, contacts); `scheduler.api.browser` logs each request without them."""
    return uvicorn.Config(app, host=settings.api.host, port=settings.api.port, log_level="info", access_log=False)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def refuse_if_exposed(settings: Settings, keys: Keys) -> None:
    """Refuse to serve a non-loopback `api.host` while anyone who reaches it could change state or forge replies.

    Raises:
        UnsafeExposure: no API key is active, or `webhooks.secret` is empty without `webhooks.allow_unsigned`
            (one line naming what fixes each).
    """
    if settings.api.on_loopback:
        return
    problems = []
    if not keys.any_active():
        problems.append("no API key exists: create one with `scheduler keys create NAME --scope write`")
    if not settings.webhooks.secret and not settings.webhooks.allow_unsigned:
        problems.append(
            "webhooks.secret is empty, so /webhooks/replies and /webhooks/conversions would accept unsigned"
            " requests: set it (SCHEDULER_WEBHOOKS__SECRET), or set webhooks.allow_unsigned = true on purpose"
        )
    if problems:
        raise UnsafeExposure(
            f"api.host is {settings.api.host!r}, not a loopback address, and " + "; and ".join(problems)
        )
    if settings.webhooks.allow_unsigned:
        log.warning(
            "webhooks.allow_unsigned is true and api.host is %r: webhooks without a secret (webhooks.secret,"
            " webhooks.twilio_auth_token) accept unsigned requests from anyone who can reach port %d",
            settings.api.host,
            settings.api.port,
        )


async def run(settings: Settings, *, dev_server: bool, worker: bool, api: bool, reconcile: bool = False) -> None:
    """Run the chosen parts until SIGINT/SIGTERM."""
    stop = _stop_event()
    server = DevServer(settings) if dev_server and settings.embedded else None
    async with contextlib.AsyncExitStack() as stack:
        # First: a refusal to serve leaves nothing started (the store holds the keys, and is migrated here).
        store = await asyncio.to_thread(Store.open, settings.store_url)
        stack.callback(store.close)
        if api:
            await asyncio.to_thread(refuse_if_exposed, settings, Keys(store))
        if server:
            stack.callback(server.stop)  # registered before the worker: the server stops after it
            # Before any port check: a busy port may be another server on this db file.
            server.claim()
        check_ports(settings, {"api.port": settings.api.port} if api else {})
        if server:
            log.info("starting the Temporal dev server (db %s)", settings.dev_server.db_file)
            await server.start()
        client = await connect(settings)
        await ensure_search_attributes(client, settings.temporal.namespace)
        if worker:
            await stack.enter_async_context(make_worker(client, settings, store=store))
            log.info("worker polling task queue %r", settings.temporal.task_queue)
        api_task = None
        if api:
            app = create_app(settings, client=client, reconcile=reconcile, store=store)
            api_server = _ApiServer(api_config(app, settings))
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
