"""`BrowserGuard`: what a web browser may ask of the API, the security headers of its pages, and the access log.

The API is open on loopback until a key exists, so a page on any other site the user visits must not be a way
in. Every request passes four checks, in this order:

1. `Host` must be a name the API serves (`served_hosts`): loopback, `api.host`, `webhooks.public_url`'s host,
   `api.allowed_hosts`; an IP address too while `api.host` binds every address. A DNS-rebinding page always
   sends its own name, so it gets a 400 before any route runs.
2. A request the browser marks as coming from another origin is refused (403): `Sec-Fetch-Site` other than
   `same-origin`/`none` (another port of the same host is `same-site`: refused too), or, from a browser without
   Fetch Metadata, an `Origin` that is neither the request's own host nor `webhooks.public_url`'s. A top-level
   `GET` navigation is let through (a link in webmail to `/unsubscribe`, or to the dashboard): it changes
   nothing, and the other site cannot read the answer. Providers (Twilio, mailbox providers posting RFC 8058
   one-click unsubscribes, curl) send neither header.
3. A request that changes state (not `GET`/`HEAD`/`OPTIONS`) must have a content type a browser cannot send
   cross-site without CORS consent (which this API never gives): JSON, or, without a body, an `X-Requested-By`
   header (any value). Else 415. The webhooks (`/webhooks/…`, providers' own formats, signed) and
   `/unsubscribe` (RFC 8058's form post, its link signed) are exempt: the checks above cover them.
4. Every answer carries `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy:
   same-origin` (an unsubscribe link's token never leaves in a referrer) and a `Content-Security-Policy` with
   no inline script. FastAPI's `/docs` pages have inline scripts of their own: their policy lists the hashes
   of exactly the scripts the page holds (the page is made from the app's settings, nothing a request sends).

The access log is `scheduler.api.metrics.RequestMetrics`'s, outside this guard, so refused requests are
counted and logged too.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.bodies import JSON
from scheduler.config import Settings
from scheduler.errors import UnsupportedMediaType

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REQUESTED_BY = "x-requested-by"
"""Lets a body-less request change state without a JSON content type (`curl -H 'X-Requested-By: me'`)."""
EXEMPT = ("/webhooks/", "/unsubscribe")
"""Paths whose senders post their own formats (see rule 3)."""
# What a <form> or a no-cors fetch can send without CORS consent (Fetch's CORS-safelisted content types).
_SIMPLE_TYPES = frozenset({"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_DOCS = frozenset({"/docs", "/docs/oauth2-redirect"})
_MAX_DOCS_PAGE = 256 * 1024
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
CSP = (
    "default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
_POLICY = (b"content-security-policy", CSP.format(hashes="").encode())


def _hostname(host: str) -> str:
    """`Host`'s name without port or brackets, lowercased ('' when it is no host)."""
    try:
        return (urlsplit(f"//{host}").hostname or "").rstrip(".")
    except ValueError:
        return ""


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def served_hosts(settings: Settings) -> frozenset[str]:
    """The `Host` names the API answers to (lowercase, no port); `"*"` in it: any."""
    names = {"localhost", "127.0.0.1", "::1", *settings.api.allowed_hosts}
    if settings.api.host not in _WILDCARD_BINDS:
        names.add(_hostname(settings.api.host))
    if settings.webhooks.public_url:
        names.add(_hostname(urlsplit(settings.webhooks.public_url).netloc))
    return frozenset(names)


def _origin(url: str) -> str:
    """`scheme://host[:port]`, lowercase, the scheme's default port left out (as browsers send `Origin`)."""
    parts = urlsplit(url.lower())
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return ""
    name = parts.hostname or ""
    name = f"[{name}]" if ":" in name else name
    return f"{parts.scheme}://{name}" + (f":{port}" if port not in (None, default) else "")


class BrowserGuard:
    """Plain ASGI (see the module docstring): outermost, so a refused request reaches no route."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = served_hosts(settings)
        self.any_host = "*" in self.hosts
        self.any_ip = settings.api.host in _WILDCARD_BINDS
        self.public_origin = _origin(settings.webhooks.public_url) if settings.webhooks.public_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in _DOCS

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start" and not docs:
                message["headers"] = _secured(message)
            await send(message)

        refused = self.refusal(scope, Headers(scope=scope))
        if refused is not None:
            code, detail = refused
            await _answer(send_secured, code, detail)
        elif docs:
            await self.app(scope, receive, _DocsPolicy(send_secured))
        else:
            await self.app(scope, receive, send_secured)

    def refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        """(status, detail) when the request is refused, else None."""
        method = scope["method"]
        host = headers.get("host")
        if host is not None and not self._serves(host):
            shown = host if len(host) <= 100 else host[:100] + "…"
            return 400, (
                f"Host {shown!r} is not served by this API: add its name to api.allowed_hosts"
                " (SCHEDULER_API__ALLOWED_HOSTS) if it is one of this API's names"
            )
        navigation = (
            method in ("GET", "HEAD")
            and headers.get("sec-fetch-mode") == "navigate"
            and headers.get("sec-fetch-dest", "document") == "document"
        )
        site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        if site is not None:
            foreign = site not in ("same-origin", "none")
        else:
            foreign = origin is not None and _origin(origin) not in self._own_origins(host or "")
        if foreign and not navigation:
            came = f"Sec-Fetch-Site {site!r}" if site is not None else f"Origin {(origin or '')[:100]!r}"
            return 403, f"{method} {scope['path']} refused: a browser sent it from another site ({came})"
        if method in SAFE_METHODS or scope["path"].startswith(EXEMPT) or REQUESTED_BY in headers:
            return None
        given = headers.get("content-type", "")
        if given.partition(";")[0].strip().lower() in _SIMPLE_TYPES:
            return 415, f"{UnsupportedMediaType(given, JSON)} (without a body, an X-Requested-By header will do)"
        return None

    def _serves(self, host: str) -> bool:
        name = _hostname(host)
        if self.any_host or name in self.hosts:
            return True
        if _is_ip(name):  # a rebinding page sends a name, never an address
            return self.any_ip or ipaddress.ip_address(name).is_loopback
        return False

    def _own_origins(self, host: str) -> set[str]:
        own = {_origin(f"http://{host}"), _origin(f"https://{host}")}
        return own | {self.public_origin} if self.public_origin else own


class _DocsPolicy:
    """Sends a `/docs` page with a policy that allows exactly the inline scripts it holds (see rule 4)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body", False) and len(self.body) <= _MAX_DOCS_PAGE:
            return
        hashes = "".join(
            f" 'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'"
            for s in _INLINE_SCRIPT.findall(bytes(self.body))
        )
        await self.send({**self.start, "headers": _secured(self.start, hashes)})
        await self.send({**message, "body": bytes(self.body)})
        self.start = None


def _secured(start: Message, hashes: str = "") -> list[tuple[bytes, bytes]]:
    """A response's headers plus the security headers (rule 4)."""
    policy = (b"content-security-policy", CSP.format(hashes=hashes).encode()) if hashes else _POLICY
    return [*start.get("headers", []), *_HEADERS, policy]


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
