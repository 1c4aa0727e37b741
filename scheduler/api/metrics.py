"""`GET /metrics` (Prometheus text), and the middleware that counts and logs every request.

The access log (`scheduler.access`, one line a request: method, path, status, milliseconds) never holds
the query string (unsubscribe tokens, contacts), and a contact or token in the path is masked
(`scheduler.flow.contacts.redact`); uvicorn's own access log is off (`scheduler.service`).
"""

from __future__ import annotations

import logging
import re
import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.flow.contacts import redact
from scheduler.metrics import HTTP_REQUESTS, HTTP_SECONDS

access_log = logging.getLogger("scheduler.access")
_SECRET_PARAMS = frozenset({"contact", "token"})
"""Path parameters masked in the access log."""
_PHONEISH = re.compile(r"(?:tel:|sms:|whatsapp:)?\+?[\d\s().-]+", re.IGNORECASE)

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics() -> Response:
    """This process's metrics (`scheduler.metrics`, plus the Python process's own)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Plain ASGI, not `BaseHTTPMiddleware`: it adds a few microseconds to a webhook, not a task and a stream.

    The route is read after the request: routing writes the matched route into the scope.
    An exception that escapes the app is counted as the 500 it becomes. Outermost, so that requests the
    `BrowserGuard` refuses are counted and logged too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], route).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %d %.1f ms", scope["method"], _logged_path(scope), status, elapsed * 1000)


def _logged_path(scope: Scope) -> str:
    """The path, contacts and tokens masked; the query string never (it carries tokens and contacts)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if template is None or not scope.get("endpoint"):  # no route (404), or a mount: mask what looks like a contact
        return "/".join(_masked(segment) for segment in scope["path"].split("/"))
    params = scope.get("path_params", {})
    return re.sub(
        r"{(\w+)(?::\w+)?}",
        lambda m: redact(str(params.get(m[1], ""))) if m[1] in _SECRET_PARAMS else str(params.get(m[1], m[0])),
        template,
    )


def _masked(segment: str) -> str:
    """A path segment of a request no route took, masked if it looks like a contact (an address, a phone number
    of 7 digits or more); ids such as `spring-2031` stay readable."""
    phone = _PHONEISH.fullmatch(segment) and sum(c.isdigit() for c in segment) >= 7
    return redact(segment) if "@" in segment or phone else segment
