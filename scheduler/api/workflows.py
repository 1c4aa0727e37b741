"""The seed's endpoints: `/start-workflow` and `/send-signal`.

Both read JSON only (415 otherwise) up to a size limit (413), and refuse ids and records that
`scheduler.flow.limits` refuses (422), all before any call to Temporal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from scheduler.api.auth import WriteAccess, auth_errors
from scheduler.api.bodies import MAX_BODY, post_json
from scheduler.api.deps import ClientDep, ConsentDep, SettingsDep
from scheduler.api.responses import errors
from scheduler.campaigns.campaign import CAMPAIGN_ID_PATTERN
from scheduler.campaigns.start import STARTED, signal_flow, signal_sent, start_flow
from scheduler.flow.limits import MAX_RECORD_BYTES, Cart, Customer, Id
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, SIGNALS, Reply
from scheduler.replies.keywords import KeywordRules, apply_keyword
from scheduler.replies.routing import FlowTarget

router = APIRouter(tags=["workflows"], dependencies=[WriteAccess])

START_BODY = 4 * MAX_RECORD_BYTES
"""`/start-workflow`'s body limit: room for a customer and a cart of the largest size, and their JSON escapes."""
_UNREADABLE = "the body cannot be parsed (not UTF-8, or nested too deeply); JSON with a syntax error is a 422"
_COMMON = {**auth_errors("write"), 415: "the body is not `application/json`", 503: "Temporal is unavailable"}


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    workflow_id: Id | None = None
    """Default `<campaign id>-<uuid>` (the seed's campaign `abandoned-cart`: `abandoned_cart-<uuid>`)."""
    campaign: str | None = Field(None, pattern=CAMPAIGN_ID_PATTERN)
    """Campaign id; default `campaigns.default`."""
    customer: Customer = Field(default_factory=dict)
    """`id`, `name`, `phone`, `email`, … for templates; `id`, `phone`, `email` are ids (`workflow_id`'s rule).
    At most 64 KiB as JSON, 32 levels deep."""
    cart: Cart = Field(default_factory=dict)
    """`id`, `url`, `items`, … for templates; `id` is an id. At most 64 KiB as JSON, 32 levels deep."""


class StartResponse(BaseModel):
    workflow_id: str
    run_id: str
    message: str = STARTED


def _unicode(value: str) -> str:
    """Text Temporal can carry: JSON's `\\ud800` escape gives Python a lone surrogate, which UTF-8 cannot encode."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode: it holds a lone surrogate (U+D800 to U+DFFF)") from None
    return value


Text = Annotated[str, AfterValidator(_unicode)]


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    workflow_id: Id
    run_id: Id | None = None
    # Documented as an enum, checked at run time: an unknown name is the contract's 400, not a 422.
    signal_name: Text = Field(json_schema_extra={"enum": sorted(SIGNALS)})
    text: Text | None = None
    """Optional reply text; one keyword changes the customer's consent (see `[compliance]`): STOP instead of
    answering, START or YES as well as answering, HELP leaves the flow waiting."""
    reply_id: Id | None = None
    """Optional id: a repeated one is ignored by the flow."""


class MessageResponse(BaseModel):
    message: str


@post_json(
    router,
    "/start-workflow",
    limit=START_BODY,
    responses=errors(
        {
            400: _UNREADABLE,
            404: "unknown campaign",
            409: "a flow with that id is running",
            413: f"the body is over {START_BODY // 1024} KiB",
            **_COMMON,
        }
    ),
)
async def start_workflow(body: StartRequest, client: ClientDep, settings: SettingsDep) -> StartResponse:
    """Start one flow of a campaign (default `campaigns.default`)."""
    handle = await start_flow(
        client,
        settings,
        campaign_id=body.campaign,
        workflow_id=body.workflow_id,
        customer=body.customer,
        cart=body.cart,
    )
    return StartResponse(workflow_id=handle.id, run_id=handle.result_run_id or "")


@post_json(
    router,
    "/send-signal",
    responses=errors(
        {
            400: f"unknown signal name; or {_UNREADABLE}",
            404: "no such running flow",
            413: f"the body is over {MAX_BODY // 1024} KiB",
            **_COMMON,
        }
    ),
)
async def send_signal(
    body: SignalRequest, client: ClientDep, settings: SettingsDep, consent: ConsentDep
) -> MessageResponse:
    """Send `client-answered` (a reply) or `cart-converted` to a running flow.

    A reply whose text is one keyword (STOP, START, HELP, … see `[compliance]`) changes the consent
    of the flow's customer in every campaign, also when the flow has ended; an opt-in (START, YES)
    also answers the flow when it is running, STOP ends it, HELP leaves it waiting.
    """
    reply = Reply(reply_id=body.reply_id, text=body.text, channel="api")
    if body.signal_name == CLIENT_ANSWERED_SIGNAL:
        target = FlowTarget(workflow_id=body.workflow_id)
        handled = await apply_keyword(client, consent, KeywordRules.of(settings), target=target, reply=reply)
        if handled is not None:
            return MessageResponse(message=handled.message(body.workflow_id))
    await signal_flow(
        client,
        workflow_id=body.workflow_id,
        run_id=body.run_id,
        signal_name=body.signal_name,
        reply=reply,
    )
    return MessageResponse(message=signal_sent(body.signal_name, body.workflow_id))
