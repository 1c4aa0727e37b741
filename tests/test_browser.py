"""`scheduler.api.browser`: what a browser may ask of the API (Host, cross-site, content types), the pages'
security headers, and an access log without customer data. Each rule over ASGI, then all of them from a real
page on another origin in Chromium (`tests.test_dashboard` says how it is launched) against a real server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp

from scheduler.api import create_app
from scheduler.config import Settings
from scheduler.delivery.unsubscribe import Unsubscribe, links
from scheduler.service import api_config
from scheduler.store import Store
from scheduler.store.consent import Consent
from tests.helpers.schedules import Campaigns
from tests.helpers.servers import free_ports
from tests.helpers.waiting import eventually
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, HAS_CHROMIUM

JSON = {"content-type": "application/json"}
PHONE = "+12125550123"
SECRET = "an unsubscribe secret: 0123456789abcdef, long enough"


@asynccontextmanager
async def api(settings: Settings, base_url: str = "http://localhost:8081") -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI. No Temporal: the requests here are refused first, or answered without it."""
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as http:
        yield http


@pytest.mark.parametrize(
    "host",
    ["evil.test", "evil.test:8081", "localhost.evil.test", "10.0.0.5:8081", "127.0.0.1.nip.io", "x" * 300],
    ids=["name", "name-and-port", "localhost-prefix", "lan-address", "rebinding-service", "long"],
)
async def test_a_host_the_api_does_not_serve_is_400(settings: Settings, host: str) -> None:
    async with api(settings) as http:
        response = await http.get("/openapi.json", headers={"host": host})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert host[:100] in detail and "api.allowed_hosts" in detail and len(detail) < 400


@pytest.mark.parametrize(
    ("host", "configure"),
    [
        ("localhost:8081", {}),
        ("127.0.0.1:8081", {}),
        ("[::1]:8081", {}),
        ("hooks.example.com", {"public_url": "https://hooks.example.com"}),
        ("Scheduler.Internal:8081", {"allowed_hosts": ["scheduler.internal"]}),
        ("10.0.0.5:8081", {"host": "0.0.0.0"}),
        ("api.example.com", {"host": "api.example.com"}),
        ("anything.example", {"allowed_hosts": ["*"]}),
    ],
    ids=[
        "localhost",
        "ipv4-loopback",
        "ipv6-loopback",
        "public-url",
        "allowed-hosts",
        "any-address-bind",
        "api-host",
        "star",
    ],
)
async def test_the_hosts_the_api_serves_are_answered(settings: Settings, host: str, configure: dict[str, Any]) -> None:
    settings.webhooks.public_url = configure.pop("public_url", "")
    for key, value in configure.items():
        setattr(settings.api, key, value)
    settings.api = type(settings.api).model_validate(settings.api.model_dump())  # the validator lower-cases names
    async with api(settings) as http:
        response = await http.get("/openapi.json", headers={"host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/schedules/shop/pause", {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}),
        ("POST", "/schedules/shop/pause", {"sec-fetch-site": "same-site", "sec-fetch-mode": "navigate"}),
        ("POST", "/webhooks/twilio", {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}),
        ("POST", "/campaigns/shop/stop", {"origin": "http://127.0.0.1:9999"}),
        ("POST", "/campaigns/shop/stop", {"origin": "null"}),
        ("GET", "/suppressions", {"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"}),
        ("GET", "/ui/", {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "iframe"}),
    ],
    ids=["no-cors-fetch", "form-from-other-port", "twilio-form", "old-browser", "sandboxed", "read", "framed"],
)
async def test_a_request_a_browser_sends_from_another_site_is_403(
    settings: Settings, method: str, path: str, headers: dict[str, str]
) -> None:
    async with api(settings) as http:
        response = await http.request(method, path, headers={**JSON, **headers})
    assert response.status_code == 403
    assert response.json()["detail"].startswith(f"{method} {path} refused: a browser sent it from another site")


async def test_links_from_other_sites_and_same_origin_requests_pass(settings: Settings) -> None:
    settings.webhooks.public_url = "https://hooks.example.com"
    navigation = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
    async with api(settings) as http:
        page = await http.get("/unsubscribe", params={"token": "x.y"}, headers=navigation)  # a link in webmail
        assert (page.status_code, "This link does not work" in page.text) == (400, True)
        for same in (
            {"sec-fetch-site": "same-origin"},
            {"origin": "http://localhost:8081"},
            {"sec-fetch-site": "none"},
        ):
            refused = await http.post("/suppressions", json={"contact": "nobody"}, headers=same)
            assert refused.status_code == 422, (same, refused.text)  # the route's own answer: the guard let it by
        behind_proxy = await http.post(
            "/suppressions", json={"contact": "nobody"}, headers={"origin": "https://hooks.example.com"}
        )
        assert behind_proxy.status_code == 422


@pytest.mark.parametrize(
    "content_type",
    [
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ],
    ids=["none", "text", "text-charset", "form", "multipart"],
)
@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_change_needs_json_or_x_requested_by(settings: Settings, content_type: str, method: str) -> None:
    path = "/suppressions" if method == "POST" else "/suppressions/nobody"
    headers = {"content-type": content_type} if content_type else {}
    async with api(settings) as http:
        refused = await http.request(method, path, content=b'{"contact": "nobody"}', headers=headers)
        assert refused.status_code == 415
        assert refused.json() == {
            "detail": f"unsupported content type {content_type!r}: this endpoint reads application/json"
            " (without a body, an X-Requested-By header will do)"
        }
        if method == "DELETE":  # a request without a body may say who sends it instead
            allowed = await http.request(method, path, headers={**headers, "x-requested-by": "me"})
            assert allowed.status_code == 422, allowed.text


async def test_providers_post_their_own_formats(settings: Settings) -> None:
    """Twilio's form and RFC 8058's one-click post are not held to JSON (they carry no browser headers)."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    async with api(settings) as http:
        sms = await http.post("/webhooks/twilio", content=b"From=nobody&Body=hi&MessageSid=SM1", headers=form)
        assert (sms.status_code, sms.headers["content-type"]) == (200, "text/xml; charset=utf-8")
        one_click = await http.post("/unsubscribe?token=x.y", content=b"List-Unsubscribe=One-Click", headers=form)
        assert one_click.status_code == 400 and "This link does not work" in one_click.text


async def test_every_page_carries_the_security_headers_and_docs_allow_only_their_own_scripts(
    settings: Settings,
) -> None:
    async with api(settings) as http:
        pages = {
            path: await http.get(path) for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/unsubscribe?token=x")
        }
        script = await http.get("/ui/dashboard.js")
    assert script.status_code == 200 and "addEventListener" in script.text
    for path, page in pages.items():
        assert page.headers["content-type"].startswith("text/html"), path
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "same-origin"
        policy = page.headers["content-security-policy"]
        assert (
            "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        )
        inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
        hashes = {f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline}
        assert set(re.findall(r"'sha256-[^']+'", policy)) == hashes, path
    assert pages["/docs"].headers["content-security-policy"].count("'sha256-") == 1  # Swagger UI's one script
    assert "'sha256-" not in pages["/redoc"].headers["content-security-policy"]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in self.records)


@pytest.fixture
def records() -> Iterator[Records]:
    """Every log record of every logger (uvicorn's access logger does not propagate to the root)."""
    handler = Records()
    access = logging.getLogger("scheduler.access")
    level = access.level
    access.setLevel(logging.INFO)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        access.setLevel(level)


@asynccontextmanager
async def serving(app: ASGIApp, config: uvicorn.Config) -> AsyncIterator[None]:
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _started(server))
        yield
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server) -> None:
    assert server.started


async def test_the_access_log_shows_routes_and_statuses_never_a_token_or_a_contact(
    settings: Settings, records: Records, capfd: pytest.CaptureFixture[str]
) -> None:
    (settings.api.port,) = free_ports(1)
    app = create_app(settings, client=object())  # type: ignore[arg-type]  # these routes never reach Temporal
    async with (
        serving(app, api_config(app, settings)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api.port}") as http,
    ):
        assert (await http.post("/suppressions", json={"contact": PHONE})).status_code == 201
        assert (await http.get("/suppressions", params={"contact": PHONE})).status_code == 200
        assert (await http.delete(f"/suppressions/{PHONE}", headers=JSON)).status_code == 204
        assert (
            await http.get("/unsubscribe", params={"token": "sekret-token-value", "contact": PHONE})
        ).status_code == 400
        assert (await http.get(f"/no/such/{PHONE}")).status_code == 404
        refused = await http.post("/schedules/spring-12345678/pause", headers={"sec-fetch-site": "cross-site"})
        assert refused.status_code == 403
    out, err = capfd.readouterr()
    logged = records.text() + out + err
    for secret in ("2125550123", "sekret-token-value", "token=", "contact="):
        assert secret not in logged, secret
    access = [r.getMessage() for r in records.records if r.name == "scheduler.access"]
    assert re.fullmatch(r"DELETE /suppressions/\+12\*+23 204 [\d.]+ ms", access[2]), access
    assert access[3].startswith("GET /unsubscribe 400 ") and access[1].startswith("GET /suppressions 200 ")
    assert access[4].startswith("GET /no/such/+12*******23 404 ")  # no route: what looks like a contact, masked
    # Refused by the guard (no route): logged and counted too, an id with digits in it left readable.
    assert access[5].startswith("POST /schedules/spring-12345678/pause 403 "), access
    assert REGISTRY.get_sample_value(
        "scheduler_http_requests_total", {"method": "POST", "route": "unmatched", "status": "403"}
    )


# --- in Chromium: a page on another origin tries everything; the server shows nothing changed ---

EVIL_PAGE = """<!doctype html><html><body>
<iframe name="a"></iframe><iframe name="b"></iframe><iframe name="c"></iframe><iframe name="d"></iframe>
<form id="pause" method="post" action="{api}/schedules/{cid}/pause" target="a" enctype="text/plain">
  <input name='{{"x": "' value='"}}'></form>
<form id="trigger" method="post" action="{api}/schedules/{cid}/trigger" target="b"></form>
<form id="sms" method="post" action="{api}/webhooks/twilio" target="c">
  <input name="From" value="{phone}"><input name="Body" value="STOP"><input name="MessageSid" value="SMevil"></form>
<form id="json-ish" method="post" action="{other}/schedules/{cid}/pause" target="d" enctype="text/plain">
  <input name='{{"x": "' value='"}}'></form>
<a id="unsubscribe" href="{unsubscribe}">Unsubscribe</a>
<script>
window.attack = async () => {{
  for (const id of ["pause", "trigger", "sms", "json-ish"]) document.getElementById(id).submit();
  await fetch("{api}/campaigns/{cid}/stop", {{method: "POST", mode: "no-cors"}});
  await fetch("{api}/campaigns/{cid}/stop", {{method: "POST", mode: "no-cors", body: '{{"mode": "cancel"}}',
    headers: {{"content-type": "application/json"}}}});  // dropped by the browser in no-cors mode
  await fetch("{api}/schedules/{cid}/trigger", {{method: "POST", mode: "no-cors", credentials: "include"}});
  try {{ await (await fetch("{api}/suppressions")).text(); window.read = "read"; }}
  catch (e) {{ window.read = "blocked"; }}
}};
</script></body></html>"""


@pytest.mark.skipif(not HAS_CHROMIUM, reason=f"no Chromium at {CHROMIUM}: the browser tests need Debian's chromium")
async def test_a_page_on_another_origin_changes_nothing_and_the_dashboard_still_works(
    campaigns: Campaigns, records: Records
) -> None:
    from playwright.async_api import async_playwright, expect

    c = campaigns
    c.write("shop")
    await c.sync()
    cid = c.id("shop")
    api_port, evil_port = free_ports(2)
    api_url = f"http://127.0.0.1:{api_port}"
    c.settings.webhooks.public_url = api_url
    c.settings.compliance.unsubscribe_secret = SECRET
    configured = links(c.settings)
    assert configured is not None
    email = "ada@example.net"
    page_html = EVIL_PAGE.format(
        api=api_url,
        other=f"http://localhost:{api_port}",
        cid=cid,
        phone=PHONE,
        unsubscribe=configured.url(Unsubscribe(email, campaign_id=cid)),
    )

    async def evil(scope: Any, receive: Any, send: Any) -> None:
        await HTMLResponse(page_html)(scope, receive, send)

    app = create_app(c.settings, client=c.client)
    quiet = {"host": "127.0.0.1", "log_level": "warning"}
    async with (
        serving(app, uvicorn.Config(app, port=api_port, **quiet)),
        serving(evil, uvicorn.Config(evil, port=evil_port, lifespan="off", **quiet)),
        async_playwright() as p,
    ):
        # `rebind.test` resolves to this machine, as a DNS-rebinding attacker's name would.
        args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebind.test 127.0.0.1"]
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = await browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.goto(f"http://127.0.0.1:{evil_port}/")
            await page.evaluate("window.attack()")
            assert await page.evaluate("window.read") == "blocked"  # no CORS: the other site reads nothing

            def refused() -> list[str]:
                return [r.getMessage() for r in records.records if r.name == "scheduler.access"]

            async def all_refused() -> None:
                lines = refused()
                for expected in (
                    f"POST /schedules/{cid}/pause 403",
                    f"POST /schedules/{cid}/trigger 403",
                    "POST /webhooks/twilio 403",
                    f"POST /campaigns/{cid}/stop 403",
                    "GET /suppressions 403",
                ):
                    assert any(line.startswith(expected) for line in lines), (expected, lines)
                assert sum(line.startswith(f"POST /schedules/{cid}/pause 403") for line in lines) == 2
                assert sum(line.startswith(f"POST /campaigns/{cid}/stop 403") for line in lines) == 2

            await eventually(all_refused)
            assert {line.split(" ")[2] for line in refused()} == {"403"}, refused()
            described = await c.describe("shop")
            assert not described.schedule.state.paused
            assert described.info.num_actions == 0 and described.info.recent_actions == []
            store = Store.open(c.settings.store_url)
            try:
                assert Consent(store).get(PHONE) is None  # the forged STOP opted nobody out

                rebound = await page.goto(f"http://rebind.test:{api_port}/suppressions")
                assert rebound is not None and rebound.status == 400

                # A link in webmail (another site) opens the unsubscribe page; its button unsubscribes.
                await page.goto(f"http://127.0.0.1:{evil_port}/")
                await page.click("#unsubscribe")
                await expect(page.locator("h1")).to_have_text("Unsubscribe")
                assert Consent(store).get(email) is None
                await page.click("button[type=submit]")
                await expect(page.locator("h1")).to_have_text("You are unsubscribed")
                assert Consent(store).get(email) is not None
            finally:
                store.close()

            # The answers the other site aimed at its frames were not shown in them.
            assert violations and all("frame-ancestors 'none'" in v for v in violations), violations
            violations.clear()
            # The dashboard, from its own origin: its buttons work under its Content-Security-Policy.
            await page.goto(f"{api_url}/ui/campaigns/{cid}")
            await page.click(f'button[data-url="/schedules/{cid}/pause"]')
            await expect(page.locator("#state")).to_have_text("paused", timeout=15_000)
            assert (await c.describe("shop")).schedule.state.paused

            await page.goto(f"{api_url}/docs")
            await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Campaign scheduler")
            assert violations == []
            await page.goto(f"{api_url}/redoc")
            await expect(page.locator("h1").first).to_contain_text("Campaign scheduler")
            # ReDoc's "powered by" logo comes from its CDN: blocked, as anything off-site (the page works offline).
            assert all("https://cdn.redoc.ly/" in v for v in violations), violations
        finally:
            await browser.close()
