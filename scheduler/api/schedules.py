"""Every campaign schedule's health, and pause/unpause/trigger by hand."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from scheduler.api.auth import Caller, ReadAccess, WriteAccess, WriteKey, auth_errors
from scheduler.api.deps import ClientDep, SchedulesDep, SettingsDep, get_store
from scheduler.api.responses import errors
from scheduler.api.workflows import MessageResponse
from scheduler.campaigns.campaign import is_campaign_id
from scheduler.campaigns.reconcile import load_campaigns
from scheduler.campaigns.schedules import schedule_id
from scheduler.campaigns.status import ScheduleStatus, managed_schedule, schedule_status, schedule_statuses
from scheduler.errors import NoSchedule, StoreUnavailable
from scheduler.problems import Problem
from scheduler.store.ledger import Ledger

log = logging.getLogger(__name__)

router = APIRouter(prefix="/schedules", tags=["schedules"])
_READ = errors(auth_errors("read"))
_WRITE = errors({**auth_errors("write"), 404: "no schedule of this tool for that campaign"})


class LoadError(BaseModel):
    """A campaign file's error as the API lists it: a `Problem`, its key in the message."""

    source: str
    line: int
    message: str

    @classmethod
    def of(cls, p: Problem) -> LoadError:
        return cls(source=p.path, line=p.line, message=f"{p.key}: {p.message}" if p.key else p.message)


class ScheduleList(BaseModel):
    schedules: list[ScheduleStatus]
    errors: list[LoadError]
    """Campaign files the last reconcile could not load."""


def _known_id(campaign_id: str) -> str:
    if not is_campaign_id(campaign_id):
        raise NoSchedule(campaign_id)
    return campaign_id


CampaignId = Annotated[str, Depends(_known_id)]


async def file_errors(request: Request, settings: SettingsDep) -> list[LoadError]:
    reconciler = request.app.state.reconciler
    if reconciler is not None and reconciler.last is not None:
        problems: list[Problem] = reconciler.last.problems
    else:  # an API replica that does not reconcile: what loading the directory now reports
        problems = (await load_campaigns(settings))[1]
    return [LoadError.of(p) for p in problems if not p.warning]


@router.get("", dependencies=[ReadAccess], responses=_READ)
async def list_schedules(request: Request, client: ClientDep, settings: SettingsDep) -> ScheduleList:
    statuses = await schedule_statuses(client, ledger=await message_ledger(request))
    return ScheduleList(schedules=[s for s in statuses if s is not None], errors=await file_errors(request, settings))


@router.get("/{campaign_id}", dependencies=[ReadAccess], responses={404: {}, **_READ})
async def get_schedule(request: Request, campaign_id: CampaignId, client: ClientDep) -> ScheduleStatus:
    status = await schedule_status(client, campaign_id, ledger=await message_ledger(request))
    if status is None:
        raise NoSchedule(campaign_id)
    return status


async def message_ledger(request: Request) -> Ledger | None:
    """Where runs' held and skipped messages are counted; None (and no counts shown) while the store is down:
    the schedules themselves come from Temporal."""
    try:
        return Ledger(await get_store(request))
    except StoreUnavailable as exc:
        log.warning("schedules without their runs' message counts: %s", exc)
        return None


async def _require(client: ClientDep, campaign_id: str) -> None:
    if await managed_schedule(client, campaign_id) is None:
        raise NoSchedule(campaign_id)


@router.post("/{campaign_id}/pause", responses=_WRITE)
async def pause(
    campaign_id: CampaignId, client: ClientDep, schedules: SchedulesDep, caller: WriteKey
) -> MessageResponse:
    await _require(client, campaign_id)
    await schedules.set_paused(campaign_id, paused=True, note=_note("paused", caller))
    return MessageResponse(message=f"Paused schedule {schedule_id(campaign_id)}")


@router.post("/{campaign_id}/unpause", responses=_WRITE)
async def unpause(
    campaign_id: CampaignId, client: ClientDep, schedules: SchedulesDep, caller: WriteKey
) -> MessageResponse:
    await _require(client, campaign_id)
    await schedules.set_paused(campaign_id, paused=False, note=_note("unpaused", caller))
    return MessageResponse(message=f"Unpaused schedule {schedule_id(campaign_id)}")


@router.post("/{campaign_id}/trigger", dependencies=[WriteAccess], responses=_WRITE)
async def trigger(campaign_id: CampaignId, client: ClientDep) -> MessageResponse:
    await _require(client, campaign_id)
    await client.get_schedule_handle(schedule_id(campaign_id)).trigger()
    return MessageResponse(message=f"Triggered schedule {schedule_id(campaign_id)}")


def _note(action: str, caller: Caller) -> str:
    """The schedule's note: who paused it, by key name ("paused through the API by key ops")."""
    return f"{action} through the API" + (f" by key {caller.key}" if caller.key else "")
