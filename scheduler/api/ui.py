"""The dashboard: `/ui/` (every campaign) and `/ui/campaigns/{id}` (its flow, live counts, schedule, runs).

Server-rendered (Jinja2), with a little script (`static/dashboard.js`, never inline) that refreshes the
page's live part every few seconds and sends the buttons' requests (as JSON, which no other site can send:
`scheduler.api.browser`). It needs a `read` key like the other `GET` routes; a browser cannot send one
on navigation, so without it the page answers 401 with a form that keeps the key in `sessionStorage` (never
in a URL) and loads the page with it. The graph is SVG drawn on the server: no CDN, works offline.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from temporalio.client import Client

from scheduler.api.auth import Caller, Credentials, read_access
from scheduler.api.campaigns import delivery_statuses
from scheduler.api.deps import ClientDep, SettingsDep, get_conversions
from scheduler.api.schedules import CampaignId, file_errors, message_ledger
from scheduler.campaigns.campaign import Campaign
from scheduler.campaigns.cron import describe
from scheduler.campaigns.graph import svg
from scheduler.campaigns.schedules import applied_campaign
from scheduler.campaigns.stats import campaign_stats, intent_names, unmatched_replies
from scheduler.campaigns.status import managed_schedule, schedule_status, schedule_statuses
from scheduler.config import Settings
from scheduler.errors import NoCampaign, StoreUnavailable
from scheduler.experiments.results import ExperimentResult, experiment_results
from scheduler.visibility import step_query

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
SCRIPT = Path(__file__).parent / "static" / "dashboard.js"
REFRESH_SECONDS = 3


async def _viewer(request: Request, credentials: Credentials) -> Caller | None:
    """Who looks, or None when a key is needed and none (or a wrong one) came: the page then asks for one."""
    try:
        return await read_access(request, credentials)
    except HTTPException:
        return None


def temporal_ui(settings: Settings) -> str | None:
    """The Temporal web UI's address, if known (`temporal.ui_url`, else the embedded dev server's)."""
    if settings.temporal.ui_url:
        return settings.temporal.ui_url.rstrip("/")
    return None if settings.temporal.address else f"http://127.0.0.1:{settings.dev_server.ui_port}"


def flows_link(settings: Settings, query: str) -> str | None:
    base = temporal_ui(settings)
    return f"{base}/namespaces/{quote(settings.temporal.namespace)}/workflows?query={quote(query)}" if base else None


def flow_link(settings: Settings, workflow_id: str) -> str | None:
    base = temporal_ui(settings)
    namespace = quote(settings.temporal.namespace)
    return f"{base}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}" if base else None


def _page(request: Request, template: str, viewer: Caller | None, **context: Any) -> HTMLResponse:
    context |= {"need_key": viewer is None, "can_write": viewer is not None and viewer.scope == "write"}
    context["refresh_ms"] = REFRESH_SECONDS * 1000
    if viewer is None:  # the page itself asks for the key (browsers show no prompt for Bearer)
        return templates.TemplateResponse(request, template, context, 401, {"WWW-Authenticate": "Bearer"})
    return templates.TemplateResponse(request, template, context)


@router.get("/dashboard.js", response_class=FileResponse)
async def script() -> FileResponse:
    """The pages' script: a file of its own, since their Content-Security-Policy allows no inline script."""
    return FileResponse(SCRIPT, media_type="text/javascript")


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, client: ClientDep, settings: SettingsDep, credentials: Credentials) -> HTMLResponse:
    viewer = await _viewer(request, credentials)
    if viewer is None:
        return _page(request, "index.html", None, schedules=[], errors=[])
    statuses, errors = await asyncio.gather(
        schedule_statuses(client, ledger=await message_ledger(request)), file_errors(request, settings)
    )
    return _page(request, "index.html", viewer, schedules=[s for s in statuses if s], errors=errors)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_page(
    request: Request, campaign_id: CampaignId, client: ClientDep, settings: SettingsDep, credentials: Credentials
) -> HTMLResponse:
    viewer = await _viewer(request, credentials)
    if viewer is None:
        return _page(request, "campaign.html", None, campaign_id=campaign_id)
    managed = await managed_schedule(client, campaign_id)
    if managed is None:
        raise NoCampaign(campaign_id, running=False)
    campaign = await applied_campaign(client, managed[0])
    steps = list(campaign.workflow.steps) if campaign else []
    intents = intent_names(campaign.workflow) if campaign else []
    status, stats, errors, experiments, unmatched = await asyncio.gather(
        schedule_status(client, campaign_id, ledger=await message_ledger(request)),
        campaign_stats(client, campaign_id, steps=steps, intents=intents, deliveries=await delivery_statuses(request)),
        file_errors(request, settings),
        _experiments(request, client, campaign),
        unmatched_replies(client, campaign_id) if intents else asyncio.sleep(0, result=[]),
    )
    if status is None:  # deleted meanwhile
        raise NoCampaign(campaign_id, running=False)
    at_step = {s: step_query(campaign_id, s) for s in stats.running}
    links = {s: link for s, query in at_step.items() if (link := flows_link(settings, query))}
    zone = ZoneInfo(status.timezone or "UTC")
    source = Path(status.source).name if status.source else None
    return _page(
        request,
        "campaign.html",
        viewer,
        campaign_id=campaign_id,
        name=campaign.campaign.name if campaign else campaign_id,
        status=status,
        stats=stats,
        graph=svg(campaign.workflow, counts=stats.running, links=links) if campaign else "",
        crons=[(expr, describe(expr)) for expr in status.cron],
        next_runs=[(t, t.astimezone(zone)) for t in status.next_runs[:5]],
        all_flows=flows_link(settings, f"CampaignId = '{campaign_id}'"),
        errors=[e for e in errors if source and Path(e.source).name == source],
        experiments=experiments,
        unmatched=[(reply, flow_link(settings, reply.workflow_id)) for reply in unmatched],
    )


async def _experiments(request: Request, client: Client, campaign: Campaign | None) -> list[ExperimentResult] | None:
    """The campaign's experiment results; None when the store cannot be read (the page shows the rest)."""
    if campaign is None:
        return []
    try:
        return await experiment_results(client, await get_conversions(request), campaign)
    except StoreUnavailable as exc:
        log.warning("experiment results of %s: %s", campaign.campaign.id, exc)
        return None
