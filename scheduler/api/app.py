"""`create_app()`: the FastAPI service, its lifespan (Temporal client) and its error mapping."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from scheduler.api import (
    auth,
    campaigns,
    health,
    metrics,
    schedules,
    suppressions,
    ui,
    unsubscribe,
    webhooks,
    workflows,
)
from scheduler.api.browser import BrowserGuard
from scheduler.campaigns.reconcile import Reconciler
from scheduler.config import Settings
from scheduler.errors import (
    BodyTooLarge,
    FlowAlreadyRunning,
    FlowNotFound,
    InvalidValue,
    NoCampaign,
    NoFlowForReply,
    NoSchedule,
    NotSuppressed,
    SchedulerError,
    StoreUnavailable,
    TemporalUnavailable,
    TwilioSignatureInvalid,
    UnknownCampaign,
    UnknownMessage,
    UnknownSignal,
    UnsupportedMediaType,
    WebhookSignatureInvalid,
)
from scheduler.store import Store
from scheduler.store.api_keys import CACHE_SECONDS
from scheduler.temporal import connect

log = logging.getLogger(__name__)

_STATUS: dict[type[SchedulerError], int] = {
    UnknownCampaign: 404,
    FlowNotFound: 404,
    FlowAlreadyRunning: 409,
    UnknownSignal: 400,
    TemporalUnavailable: 503,
    NoFlowForReply: 404,
    NoSchedule: 404,
    NoCampaign: 404,
    NotSuppressed: 404,
    UnknownMessage: 404,
    StoreUnavailable: 503,
    WebhookSignatureInvalid: 401,
    TwilioSignatureInvalid: 403,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidValue: 422,
}


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """A 422's `detail`, which always encodes: without the `input` echo (a NaN or a lone surrogate of the
    body would make the answer itself fail, and a 64 KiB record is no help), a lone surrogate in a
    location or message written as its escape (`\\ud800`), any other value as text."""
    return [_json_safe({k: v for k, v in error.items() if k != "input"}) for error in exc.errors()]


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool | int) or value is None or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return _json_safe(str(value))


def create_app(
    settings: Settings,
    *,
    client: Client | None = None,
    reconcile: bool = False,
    store: Store | None = None,
    key_cache_seconds: float = CACHE_SECONDS,
) -> FastAPI:
    """The API. Without `client`, the lifespan connects to the configured Temporal; without `store`, the
    configured store is opened on first use (suppressions, API keys, ledger, stops: `scheduler.store`).

    `key_cache_seconds`: how long a key found stays trusted without asking the store (0: never cached).

    `reconcile`: this process (and only this one) keeps the schedules in step with the campaigns
    directory; API replicas behind a load balancer leave it off.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if client is None:
            app.state.client = await connect(settings)
        if reconcile:
            app.state.reconciler = Reconciler(app.state.client, settings)
            app.state.reconciler.start()
        try:
            yield
        finally:
            if reconcile:
                app.state.reconciler.stop()
            for task in list(app.state.background):
                task.cancel()

    # /docs and /redoc with Swagger UI and ReDoc served from the package's files, not a CDN: they work offline.
    app = FastAPIOffline(title="Campaign scheduler", lifespan=lifespan)
    app.state.settings = settings
    app.state.client = client
    app.state.reconciler = None
    app.state.schedules = None
    app.state.store = store
    app.state.consent = None
    app.state.keys = None
    app.state.key_cache_seconds = key_cache_seconds
    app.state.background = set()
    """Tasks that outlive their request (a stop's follow-up); cancelled when the app stops."""
    app.state.follow_ups = {}
    """The running follow-up of each campaign's last stop (one of `background`), which its resume ends."""
    app.include_router(workflows.router)
    app.include_router(schedules.router)
    app.include_router(campaigns.router)
    app.include_router(ui.router)
    app.include_router(suppressions.router)
    app.include_router(unsubscribe.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(metrics.router, dependencies=[auth.ReadAccess] if settings.api.metrics_need_key else [])
    app.add_middleware(BrowserGuard, settings=settings)  # a refused request reaches no route
    app.add_middleware(metrics.RequestMetrics)  # outermost: every request counted and logged

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc)}, status_code=422)

    @app.exception_handler(SchedulerError)
    async def scheduler_error(request: Request, exc: SchedulerError) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RPCError)
    async def temporal_error(request: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return JSONResponse({"detail": f"Temporal is unavailable: {exc.message}"}, status_code=503)
        log.error("Temporal error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"Temporal error: {exc.message}"}, status_code=502)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    return app
