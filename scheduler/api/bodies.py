"""Reading request bodies: the content type an endpoint reads (415) and its size limit (413), checked first.

Webhooks read their bodies with `read_body` (a signature must be checked on the raw bytes first);
the seed's JSON endpoints are registered with `post_json`, which checks the same two things and then
lets FastAPI parse and validate the body as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from scheduler.errors import BodyTooLarge, UnsupportedMediaType

MAX_BODY = 64 * 1024
"""Default limit of a request body, in bytes (webhooks, `/send-signal`)."""
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
F = TypeVar("F", bound=Callable[..., Any])


async def read_body(request: Request, media_type: str, *, limit: int = MAX_BODY) -> bytes:
    """The body, if it has `media_type` and at most `limit` bytes (a lying or absent Content-Length included).

    Raises:
        UnsupportedMediaType: another content type, or none.
        BodyTooLarge: more than `limit` bytes, declared or sent.
    """
    given = request.headers.get("content-type", "")
    if given.partition(";")[0].strip().lower() != media_type:
        raise UnsupportedMediaType(given, media_type)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


def post_json(
    router: APIRouter, path: str, *, limit: int = MAX_BODY, optional: bool = False, **options: Any
) -> Callable[[F], F]:
    """Like `@router.post(path, **options)`, for an endpoint whose body must be JSON of at most `limit` bytes.

    Without it FastAPI reads a body of any size, and answers one in another content type (curl's
    default form encoding) with a 422 about a field nobody sent. `optional`: a request with no body at
    all (and no content type) is let through too, for an endpoint whose body has defaults for everything.
    """

    def register(endpoint: F) -> F:
        route = _json_route(limit, optional=optional)
        router.add_api_route(path, endpoint, methods=["POST"], route_class_override=route, **options)
        return endpoint

    return register


def _no_body(request: Request) -> bool:
    headers = request.headers
    return (
        "content-type" not in headers
        and "transfer-encoding" not in headers
        and headers.get("content-length", "0") == "0"
    )


def _json_route(limit: int, *, optional: bool) -> type[APIRoute]:
    class JsonRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def checked(request: Request) -> Response:
                # Starlette keeps a request's body in `_body` once read; FastAPI then parses it from there
                # (as in FastAPI's documented custom Request classes).
                if not (optional and _no_body(request)):
                    request._body = await read_body(request, JSON, limit=limit)
                return await handle(request)

            return checked

    return JsonRoute
