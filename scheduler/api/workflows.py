"""The seed's endpoints: `/start-workflow` and `/send-signal`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.deps import ClientDep, SettingsDep
from scheduler.flows import STARTED, signal_flow, signal_sent, start_flow
from scheduler.models import Reply

router = APIRouter(tags=["workflows"])


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = Field(None, min_length=1, max_length=255)
    campaign: str | None = None
    """Campaign id; default `campaigns.default`."""
    customer: dict[str, Any] = Field(default_factory=dict)
    cart: dict[str, Any] = Field(default_factory=dict)


class StartResponse(BaseModel):
    workflow_id: str
    run_id: str
    message: str = STARTED


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(min_length=1)
    run_id: str | None = None
    signal_name: str
    text: str | None = None
    """Optional reply text (an opt-out keyword such as STOP takes the not_satisfied edge)."""
    reply_id: str | None = None
    """Optional id: a repeated one is ignored by the flow."""


class MessageResponse(BaseModel):
    message: str


@router.post("/start-workflow", responses={404: {}, 409: {}})
async def start_workflow(body: StartRequest, client: ClientDep, settings: SettingsDep) -> StartResponse:
    handle = await start_flow(
        client,
        settings,
        campaign_id=body.campaign,
        workflow_id=body.workflow_id,
        customer=body.customer,
        cart=body.cart,
    )
    return StartResponse(workflow_id=handle.id, run_id=handle.result_run_id or "")


@router.post("/send-signal", responses={400: {}, 404: {}})
async def send_signal(body: SignalRequest, client: ClientDep) -> MessageResponse:
    await signal_flow(
        client,
        workflow_id=body.workflow_id,
        run_id=body.run_id,
        signal_name=body.signal_name,
        reply=Reply(reply_id=body.reply_id, text=body.text, channel="api"),
    )
    return MessageResponse(message=signal_sent(body.signal_name, body.workflow_id))
