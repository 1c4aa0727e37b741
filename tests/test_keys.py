"""API keys: the store (both backends), the cache, `scheduler keys …`, and every route with and without a key."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from scheduler.api import create_app
from scheduler.config import Settings
from scheduler.errors import KeyNameInvalid, KeyNameTaken, UnknownKey
from scheduler.store import Store, api_keys_table
from scheduler.store.api_keys import KeyCache, Keys, hash_key
from scheduler.worker import make_worker
from tests.helpers.cli import assert_one_line_error, scheduler
from tests.helpers.schedules import Campaigns, terminate_flows
from tests.helpers.signing import WEBHOOK_SECRET

# The store


@pytest.fixture
def keys(store_url: str) -> Iterator[Keys]:
    store = Store.open(store_url)
    try:
        yield Keys(store)
    finally:
        store.close()


def test_keys_create_find_revoke_keep_only_a_hash_and_the_history(keys: Keys) -> None:
    assert not keys.any_active()
    entry, key = keys.create("ci-deploy", scope="write")
    assert (entry.name, entry.scope, entry.revoked_at) == ("ci-deploy", "write", None)
    assert key.startswith("sk_") and len(key) == 46
    with keys.store.engine.connect() as connection:
        (row,) = connection.execute(select(api_keys_table)).mappings().all()
    assert row["key_hash"] == hash_key(key) and key not in [str(v) for v in row.values()]

    found = keys.find(key)
    assert found is not None and (found.name, found.scope) == ("ci-deploy", "write")
    assert keys.find(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.find("not-a-key") is None
    assert keys.any_active()

    revoked = keys.revoke("ci-deploy")
    assert revoked.revoked_at is not None
    assert keys.find(key) is None
    assert not keys.any_active()
    assert [(k.name, k.revoked_at is not None) for k in keys.all()] == [("ci-deploy", True)]
    with pytest.raises(UnknownKey, match="no active API key named 'ci-deploy'"):
        keys.revoke("ci-deploy")
    with pytest.raises(KeyNameTaken, match="revoked; names stay in the history"):
        keys.create("ci-deploy", scope="read")


def test_keys_names_are_unique_and_checked(keys: Keys) -> None:
    keys.create("a", scope="read")
    with pytest.raises(KeyNameTaken, match="'a' exists already; choose"):
        keys.create("a", scope="write")
    for bad in ("", "x" * 65, "a b", "-lead", "naïve", "a/b"):
        with pytest.raises(KeyNameInvalid):
            keys.create(bad, scope="read")
    with pytest.raises(UnknownKey):
        keys.revoke("nobody")
    assert [k.name for k in keys.all()] == ["a"]


async def test_key_cache_trusts_a_found_key_for_its_seconds_only(settings: Settings) -> None:
    store = Store.open(settings.store_url)
    try:
        keys, now = Keys(store), [100.0]
        cache = KeyCache(keys, seconds=5, clock=lambda: now[0])
        _, key = keys.create("ops", scope="read")
        assert await cache.any_active()
        assert (await cache.find(key)) is not None
        keys.revoke("ops")
        now[0] += 4.9
        assert (await cache.find(key)) is not None  # within the documented 5 s
        assert await cache.any_active()
        now[0] += 0.2
        assert (await cache.find(key)) is None
        assert not await cache.any_active()
        uncached = KeyCache(keys, seconds=0)
        _, other = keys.create("ci", scope="write")
        assert (await uncached.find(other)) is not None
        keys.revoke("ci")
        assert (await uncached.find(other)) is None
    finally:
        store.close()


# Every route, with no key, a revoked key, a read key, a write key (on the dev server)


@dataclass
class Secured:
    http: httpx.AsyncClient
    c: Campaigns
    keys: Keys
    tokens: dict[str, str]
    """`read`, `write`, `revoked` → a key."""

    async def call(self, method: str, path: str, body: Any = None, who: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        headers["X-Requested-By"] = "tests"  # no cross-site form, also without a body (`scheduler.api.browser`)
        return await self.http.request(method, path, json=body, headers=headers)


@pytest_asyncio.fixture
async def secured(campaigns: Campaigns) -> AsyncIterator[Secured]:
    """The API with three keys (read, write, and a revoked write key) and no key cache, and a worker."""
    c = campaigns
    store = Store.open(c.settings.store_url)
    keys = Keys(store)
    tokens = {scope: keys.create(f"{scope}-key", scope=scope)[1] for scope in ("read", "write")}
    tokens["revoked"] = keys.create("old-key", scope="write")[1]
    keys.revoke("old-key")
    app = create_app(c.settings, client=c.client, key_cache_seconds=0)
    try:
        async with (
            make_worker(c.client, c.settings),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
        ):
            yield Secured(http, c, keys, tokens)
    finally:
        store.close()


async def test_every_route_needs_its_scope(secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    s, c = secured, secured.c
    c.write("a")
    await c.sync()
    cid, flow = c.id("a"), f"{c.id('a')}-keys"
    # method, path, body, scope (None: open), the answer with the right key; in an order that makes each a success
    routes: list[tuple[str, str, Any, str | None, int]] = [
        ("GET", "/healthz", None, None, 200),
        ("GET", "/metrics", None, None, 200),
        ("GET", "/docs", None, None, 200),
        ("GET", "/openapi.json", None, None, 200),
        ("GET", "/schedules", None, "read", 200),
        ("GET", f"/schedules/{cid}", None, "read", 200),
        ("GET", "/suppressions", None, "read", 200),
        ("GET", f"/campaigns/{cid}/stats", None, "read", 200),
        ("GET", f"/campaigns/{cid}/experiments", None, "read", 200),
        ("GET", "/ui/", None, "read", 200),
        ("GET", f"/ui/campaigns/{cid}", None, "read", 200),
        ("POST", "/suppressions", {"contact": "+12125550142"}, "write", 201),
        ("DELETE", "/suppressions/+12125550142", None, "write", 204),
        ("POST", f"/schedules/{cid}/pause", None, "write", 200),
        ("POST", f"/schedules/{cid}/unpause", None, "write", 200),
        ("POST", f"/schedules/{cid}/trigger", None, "write", 200),
        ("POST", "/start-workflow", {"campaign": cid, "workflow_id": flow, "customer": {"id": "c1"}}, "write", 200),
        ("POST", "/send-signal", {"workflow_id": flow, "signal_name": "client-answered"}, "write", 200),
        ("POST", f"/campaigns/{cid}/stop", {"mode": "drain", "reason": "keys test"}, "write", 202),
        ("POST", f"/campaigns/{cid}/resume", None, "write", 200),
    ]
    wrong: list[str] = []
    caplog.set_level(logging.INFO, logger="scheduler.api.auth")
    try:
        for method, path, body, scope, ok in routes:
            expected = {
                None: 401 if scope else ok,
                "revoked": 401 if scope else ok,
                "read": 403 if scope == "write" else ok,
                "write": ok,
            }
            for who, status in expected.items():
                response = await s.call(method, path, body, who)
                if response.status_code != status:
                    wrong.append(f"{method} {path} with {who or 'no'} key: {response.status_code}, not {status}")
                elif status == 401:
                    assert response.headers["www-authenticate"] == "Bearer"
                    required = "an API key is required: send `Authorization: Bearer <key>`"
                    if path.startswith("/ui/"):  # a page that asks for the key
                        assert 'id="key-input"' in response.text
                    else:
                        assert response.json()["detail"] == (required if who is None else "unknown or revoked API key")
                elif status == 403:
                    assert response.json() == {
                        "detail": "API key 'read-key' has scope 'read'; this route needs 'write'"
                    }
        assert wrong == []
        note = (await c.describe("a")).schedule.state.note
        assert note == "resumed by key write-key"
        written = [r.getMessage() for r in caplog.records if r.name == "scheduler.api.auth"]
        assert "DELETE /suppressions/{contact} by key write-key" in written
        assert "POST /start-workflow by key write-key" in written
        assert not [m for m in written if any(token in m for token in s.tokens.values())]
    finally:
        await terminate_flows(c.client, cid)


async def test_revoking_a_key_refuses_it_on_the_next_request(secured: Secured) -> None:
    assert (await secured.call("GET", "/suppressions", who="write")).status_code == 200
    secured.keys.revoke("write-key")
    refused = await secured.call("GET", "/suppressions", who="write")
    assert (refused.status_code, refused.json()) == (401, {"detail": "unknown or revoked API key"})
    assert (await secured.call("GET", "/suppressions", who="read")).status_code == 200


# Without Temporal: who may call the routes that only need the store


@pytest_asyncio.fixture
async def local(settings: Settings) -> AsyncIterator[tuple[Settings, Keys]]:
    store = Store.open(settings.store_url)
    try:
        yield settings, Keys(store)
    finally:
        store.close()


async def get(settings: Settings, path: str, key: str | None = None, **options: Any) -> httpx.Response:
    app = create_app(settings, key_cache_seconds=0)
    headers = options.pop("headers", {}) | ({"Authorization": f"Bearer {key}"} if key else {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        return await http.request(options.pop("method", "GET"), path, headers=headers, **options)


async def test_loopback_is_open_until_a_key_exists_and_again_once_all_are_revoked(
    local: tuple[Settings, Keys],
) -> None:
    settings, keys = local
    assert (await get(settings, "/suppressions")).status_code == 200
    _, key = keys.create("first", scope="read")
    assert (await get(settings, "/suppressions")).status_code == 401
    assert (await get(settings, "/suppressions", key)).status_code == 200
    keys.revoke("first")
    assert (await get(settings, "/suppressions")).status_code == 200
    assert (await get(settings, "/suppressions", key)).status_code == 401  # a revoked key is never accepted


async def test_off_loopback_a_key_is_needed_even_when_none_exists(local: tuple[Settings, Keys]) -> None:
    settings, _ = local
    settings.api.host = "0.0.0.0"
    refused = await get(settings, "/suppressions")
    assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
    assert (await get(settings, "/unsubscribe", params={"token": "x"})).status_code == 400  # open: its link is signed


async def test_metrics_need_a_read_key_when_configured(local: tuple[Settings, Keys]) -> None:
    settings, keys = local
    _, key = keys.create("scraper", scope="read")
    assert (await get(settings, "/metrics")).status_code == 200
    settings.api.metrics_need_key = True
    assert (await get(settings, "/metrics")).status_code == 401
    assert (await get(settings, "/metrics", key)).status_code == 200


async def test_webhooks_take_no_api_key_in_place_of_their_signature(local: tuple[Settings, Keys]) -> None:
    settings, keys = local
    settings.webhooks.secret = WEBHOOK_SECRET
    _, key = keys.create("ops", scope="write")
    for path in ("/webhooks/replies", "/webhooks/conversions"):
        response = await get(settings, path, key, method="POST", json={"workflow_id": "w", "cart_id": "c"})
        assert response.status_code == 401
        assert response.json()["detail"].startswith("invalid webhook signature")


@pytest.mark.parametrize(("allow", "status"), [(False, 403), (True, 422)], ids=["refused", "allowed"])
async def test_unsigned_twilio_off_loopback_needs_allow_unsigned(
    local: tuple[Settings, Keys], allow: bool, status: int
) -> None:
    settings, _ = local
    settings.api.host = "0.0.0.0"
    settings.webhooks.allow_unsigned = allow
    form = {"content": b"From=%2B12125550142", "headers": {"content-type": "application/x-www-form-urlencoded"}}
    response = await get(settings, "/webhooks/twilio", method="POST", **form)
    assert response.status_code == status, response.text  # allowed: on to the fields (no MessageSid)
    if not allow:
        assert "webhooks.twilio_auth_token" in response.json()["detail"]
        assert "webhooks.allow_unsigned" in response.json()["detail"]


@pytest.mark.parametrize("metrics_need_key", [False, True], ids=["metrics-open", "metrics-need-key"])
def test_openapi_declares_the_bearer_scheme_on_exactly_the_protected_routes(
    settings: Settings, metrics_need_key: bool
) -> None:
    settings.api.metrics_need_key = metrics_need_key
    schema = create_app(settings).openapi()
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    secured = {
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"ApiKey": []}]
    }
    assert secured == {
        "GET /schedules",
        "GET /schedules/{campaign_id}",
        "POST /schedules/{campaign_id}/pause",
        "POST /schedules/{campaign_id}/unpause",
        "POST /schedules/{campaign_id}/trigger",
        "GET /suppressions",
        "POST /suppressions",
        "DELETE /suppressions/{contact}",
        "POST /start-workflow",
        "POST /send-signal",
        "POST /campaigns/{campaign_id}/stop",
        "POST /campaigns/{campaign_id}/resume",
        "GET /campaigns/{campaign_id}/stats",
        "GET /campaigns/{campaign_id}/experiments",
        *(["GET /metrics"] if metrics_need_key else []),
    }


# `scheduler keys …`


def store_config(tmp_path: Path) -> Path:
    config = tmp_path / "scheduler.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "scheduler.db"}"\n', encoding="utf-8")
    return config


async def test_cli_keys_create_prints_the_key_once_list_never_shows_it_revoke_keeps_it(tmp_path: Path) -> None:
    config = store_config(tmp_path)
    created = await scheduler("keys", "create", "ci", "--scope", "write", "--json", "--config", config)
    assert created.code == 0, created
    answer = json.loads(created.stdout)
    assert set(answer) == {"name", "key", "scope"} and (answer["name"], answer["scope"]) == ("ci", "write")
    plain = await scheduler("keys", "create", "dash", "--scope", "read", "--config", config)
    assert plain.code == 0, plain
    (key,) = plain.stdout.split()  # stdout: the key alone, for `KEY=$(scheduler keys create …)`
    assert key.startswith("sk_") and "not shown again" in plain.stderr

    store = Store.open(f"sqlite:///{tmp_path / 'scheduler.db'}")
    try:
        assert Keys(store).find(answer["key"]) is not None and Keys(store).find(key) is not None
    finally:
        store.close()

    assert (await scheduler("keys", "revoke", "dash", "--config", config)).stdout == "revoked: dash\n"
    listed = await scheduler("keys", "list", "--config", config)
    assert listed.code == 0, listed
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCOPE", "CREATED", "(UTC)", "REVOKED", "(UTC)"]
    assert [line.split()[:2] for line in lines[1:]] == [["ci", "write"], ["dash", "read"]]
    assert lines[1].endswith("-") and not lines[2].endswith("-")
    as_json = json.loads((await scheduler("keys", "list", "--json", "--config", config)).stdout)
    assert [set(k) for k in as_json] == [{"name", "scope", "created_at", "revoked_at"}] * 2
    for shown in (listed.stdout, json.dumps(as_json)):
        assert answer["key"] not in shown and key not in shown and "sk_" not in shown


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("revoke", "nobody"), "no active API key named 'nobody'"),
        (("create", "a b", "--scope", "read"), "only letters, digits"),
        (("create", "", "--scope", "read"), "a name is required"),
        (("create", "x" * 65, "--scope", "read"), "at most 64 characters"),
    ],
    ids=["revoke-unknown", "odd-characters", "empty", "too-long"],
)
async def test_cli_keys_bad_name_is_one_line_and_exit_1(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(await scheduler("keys", *args, "--config", store_config(tmp_path)), fragment)
