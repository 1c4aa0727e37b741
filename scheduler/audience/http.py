"""An audience from an HTTP API: the window as `since`/`until`, pages followed through `next`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from scheduler.audience.fields import Rows, Skip
from scheduler.audience.model import Audience
from scheduler.errors import AudienceError
from scheduler.flow.models import Window
from scheduler.http_clients import http_client, retryable_status

HTTP_TIMEOUT = 30.0
"""Seconds for one page of an http source (connect, read): a slow API fails the attempt, not the worker."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _shown(url: str) -> str:
    """A URL for messages: without its query, which may carry secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


async def read_http(audience: Audience, window: Window, cursor: str | None, limit: int) -> tuple[Rows, str | None]:
    """GET one page: a JSON array, or `{"items": [...], "next": url}` (`next` absent or null on the last page).

    The first page gets `since`/`until`; a `next` URL is followed as given (it is the server's own
    cursor). The bearer token is only sent to the configured URL's origin, never to a `next` elsewhere.
    """
    assert audience.url is not None  # checked by the model
    if cursor is None:
        first = httpx.URL(audience.url).copy_set_param("since", _iso(window.since))
        url, skip, before = str(first.copy_set_param("until", _iso(window.until))), 0, 0
    else:
        try:
            state = json.loads(cursor)
            url, skip, before = str(state["url"]), int(state["skip"]), int(state["row"])
        except (ValueError, KeyError, TypeError):
            raise AudienceError(f"invalid cursor {cursor!r} for an http audience") from None
    headers = {"Accept": "application/json"}
    if audience.token_env and _origin(url) == _origin(audience.url):
        token = os.environ.get(audience.token_env, "")
        if not token:
            raise AudienceError(f"environment variable {audience.token_env} (token_env) is not set")
        headers["Authorization"] = f"Bearer {token}"
    try:
        # httpx drops Authorization on a redirect to another origin.
        async with http_client(timeout=HTTP_TIMEOUT, follow_redirects=True) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise AudienceError(f"GET {_shown(url)} failed: {exc!r}", retryable=True) from None
    status = response.status_code
    if not 200 <= status < 300:
        raise AudienceError(f"GET {_shown(url)} answered {status}", retryable=retryable_status(status))
    try:
        body = response.json()
    except ValueError:
        raise AudienceError(f"GET {_shown(url)} did not answer JSON") from None
    items, next_url = _items(url, body)
    if next_url is not None:
        next_url = str(response.url.join(next_url))
        if urlsplit(next_url).scheme not in ("http", "https") or next_url == url:
            raise AudienceError(f"GET {_shown(url)} gave a bad next page URL: {_shown(next_url)}")
    rows: Rows = []
    for i, item in enumerate(items[skip : skip + limit], start=before + skip + 1):
        rows.append((i, item if isinstance(item, dict) else Skip(reason="not a JSON object", row_number=i)))
    if skip + limit < len(items):
        return rows, json.dumps({"url": url, "skip": skip + limit, "row": before})
    if next_url is not None:
        return rows, json.dumps({"url": next_url, "skip": 0, "row": before + len(items)})
    return rows, None


def _items(url: str, body: Any) -> tuple[list[Any], str | None]:
    if isinstance(body, list):
        return body, None
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        next_url = body.get("next")
        if next_url is None or (isinstance(next_url, str) and next_url.strip()):
            return body["items"], next_url
    raise AudienceError(f'GET {_shown(url)}: expected a JSON array or {{"items": [...], "next": url}}')
