"""The suppression list: who opted out of every campaign, and opting a contact back in."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.api.auth import ReadAccess, WriteAccess, WriteKey, auth_errors
from scheduler.api.bodies import post_json
from scheduler.api.deps import ConsentDep
from scheduler.api.responses import errors
from scheduler.flow.contacts import normalize_contact
from scheduler.store import MAX_REASON
from scheduler.store.consent import Suppression

router = APIRouter(prefix="/suppressions", tags=["suppressions"])
PAGE = 100


class SuppressionList(BaseModel):
    items: list[Suppression]
    next: str | None
    """The `cursor` of the next page; null on the last."""


class SuppressRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    contact: str = Field(max_length=320)
    """A phone number (any common spelling; without a country code it is read as US) or an e-mail address."""
    reason: str = Field("api", max_length=MAX_REASON)

    @field_validator("contact")
    @classmethod
    def _phone_or_email(cls, v: str) -> str:
        return normalize_contact(v)  # InvalidContact is a ValueError: a 422 naming the field


@router.get(
    "",
    dependencies=[ReadAccess],
    responses=errors(
        {**auth_errors("read"), 422: "`contact` is not a phone number or an e-mail address, or a bad cursor"}
    ),
)
async def list_suppressions(
    consent: ConsentDep,
    contact: Annotated[str | None, Query(max_length=320)] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> SuppressionList:
    """Active opt-outs, oldest first, 100 a page (`contact`: only that one)."""
    items, after = await asyncio.to_thread(
        consent.page, contact=contact, cursor=int(cursor) if cursor else None, limit=PAGE
    )
    return SuppressionList(items=items, next=str(after) if after is not None else None)


@post_json(
    router,
    "",
    status_code=201,
    dependencies=[WriteAccess],
    responses={
        200: {"description": "the contact was suppressed already", "model": Suppression},
        **errors(auth_errors("write")),
    },
)
async def suppress(body: SuppressRequest, consent: ConsentDep, response: Response) -> Suppression:
    """Suppress a contact in every campaign (written before the answer); 200 if it was already, with its entry."""
    entry, created = await asyncio.to_thread(consent.suppress, body.contact, reason=body.reason)
    if not created:
        response.status_code = 200
    return entry


@router.delete(
    "/{contact}",
    status_code=204,
    responses=errors(
        {**auth_errors("write"), 404: "the contact is not suppressed", 422: "not a phone number or an e-mail address"}
    ),
)
async def lift(contact: str, consent: ConsentDep, caller: WriteKey) -> Response:
    """Opt a contact back in; its entry stays in the history (the reason names the key that lifted it)."""
    await asyncio.to_thread(consent.lift, contact, reason=f"api, key {caller.key}" if caller.key else "api")
    return Response(status_code=204)
