"""Who may call a route: API keys (`scheduler.store.api_keys`) as FastAPI security dependencies.

`ReadAccess` guards the `GET` routes, `WriteAccess` (or a `WriteKey` parameter, to know the key's name)
the routes that change state. Both read `Authorization: Bearer <key>`: no key, or an unknown or revoked
one, is a 401 with `WWW-Authenticate: Bearer`; a `read` key on a write route is a 403. While `api.host`
is a loopback address and no key is active, every route is open (a fresh install on a laptop).

`/healthz`, `/unsubscribe` (its link is signed) and the webhooks (their senders sign) use neither: a
webhook never takes an API key in place of its signature. `/metrics` needs `read` when
`api.metrics_need_key` is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler.api.deps import get_keys
from scheduler.store.api_keys import Scope

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `scheduler keys create NAME --scope read|write`, sent as `Authorization: Bearer …`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


@dataclass(frozen=True)
class Caller:
    """Who made a request: the key's name, or None on an open API (loopback, no key created)."""

    key: str | None
    scope: Scope = "write"
    """What the key may do (an open API: everything)."""

    def __str__(self) -> str:
        return f"key {self.key}" if self.key else "no key (loopback API, no key created)"

    @property
    def by(self) -> str:
        """Who, as the records of what a request did say it: `key ops`, or `the API` when it is open."""
        return f"key {self.key}" if self.key else "the API"


async def _caller(request: Request, credentials: HTTPAuthorizationCredentials | None, scope: Scope) -> Caller:
    keys = await get_keys(request)
    if credentials is None:
        if request.app.state.settings.api.on_loopback and not await keys.any_active():
            return Caller(None)
        raise _unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    key = await keys.find(credentials.credentials)
    if key is None:
        raise _unauthorized("unknown or revoked API key")
    if not key.allows(scope):
        raise HTTPException(403, f"API key {key.name!r} has scope {key.scope!r}; this route needs {scope!r}")
    return Caller(key.name, key.scope)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def read_access(request: Request, credentials: Credentials) -> Caller:
    """A `read` or `write` key (or an open API)."""
    return await _caller(request, credentials, "read")


async def write_access(request: Request, credentials: Credentials) -> Caller:
    """A `write` key (or an open API); the request is logged with the key's name, never the key."""
    caller = await _caller(request, credentials, "write")
    route = getattr(request.scope.get("route"), "path", request.url.path)  # the template: no contact in the log
    log.info("%s %s by %s", request.method, route, caller)
    return caller


ReadAccess = Security(read_access)
WriteAccess = Security(write_access)
WriteKey = Annotated[Caller, Security(write_access)]


def auth_errors(scope: Scope) -> dict[int, str]:
    """The errors a route guarded for `scope` can answer, for `responses.errors`."""
    found = {401: "no API key, or an unknown or revoked one (while any key exists, or off loopback)"}
    return found | ({403: "the API key has scope `read`"} if scope == "write" else {})
