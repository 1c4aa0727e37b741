"""`/unsubscribe?token=…`: the one-click e-mail unsubscribe (RFC 8058) every customer e-mail links to.

`POST` (what mailbox providers send, with `List-Unsubscribe=One-Click`) suppresses the address at
once, no login and no confirmation, and ends its running flows as a STOP does (`keywords.end_flows`);
`GET` (a person following the link) shows one button that posts.
A changed or expired link is refused (400) without saying whose it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from html import escape
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from temporalio.client import Client
from temporalio.service import RPCError

from scheduler.api.deps import ClientDep, ConsentDep, SettingsDep
from scheduler.delivery.unsubscribe import InvalidToken, Unsubscribe, links
from scheduler.errors import InvalidContact
from scheduler.flow.contacts import normalize_contact, redact
from scheduler.flow.signals import Reply
from scheduler.replies.keywords import end_flows

log = logging.getLogger(__name__)

router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"])
Token = Annotated[str, Query(min_length=1, max_length=4096)]
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>{title}</h1>
{body}
</body></html>
"""


def _read(settings: SettingsDep, token: str) -> Unsubscribe | HTMLResponse:
    """The link's unsubscribe, or the 400 page saying the link cannot be used."""
    configured = links(settings)
    try:
        if configured is None:
            raise InvalidToken("unsubscribe links are not configured here")
        return configured.read(token)
    except InvalidToken as exc:
        body = f"<p>{escape(str(exc))}. Use the link in a newer message, or reply to us.</p>"
        return HTMLResponse(_PAGE.format(title="This link does not work", body=body), status_code=400)


@router.get("", response_class=HTMLResponse, responses={400: {"description": "a changed or expired link"}})
async def page(token: Token, settings: SettingsDep) -> HTMLResponse:
    """The page a person sees: the address, and one button (nothing changes until it is pressed)."""
    unsubscribe = _read(settings, token)
    if isinstance(unsubscribe, HTMLResponse):
        return unsubscribe
    body = (
        f"<p>Stop all messages to <strong>{escape(unsubscribe.contact)}</strong>?</p>"
        f'<form method="post" action="?token={escape(token, quote=True)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_PAGE.format(title="Unsubscribe", body=body))


@router.post("", response_class=HTMLResponse, responses={400: {"description": "a changed or expired link"}})
async def unsubscribe(token: Token, settings: SettingsDep, consent: ConsentDep, client: ClientDep) -> HTMLResponse:
    """Suppress the link's address in every campaign (written before the answer), then end its running flows as
    a STOP does; again is a no-op."""
    found = _read(settings, token)
    if isinstance(found, HTMLResponse):
        return found
    await asyncio.to_thread(
        consent.suppress,
        found.contact,
        reason="unsubscribe link",
        campaign_id=found.campaign_id,
        workflow_id=found.workflow_id,
    )
    await _end_flows_of(client, found.contact, token)
    body = f"<p><strong>{escape(found.contact)}</strong> will get no more messages from us.</p>"
    return HTMLResponse(_PAGE.format(title="You are unsubscribed", body=body))


async def _end_flows_of(client: Client, contact: str, token: str) -> None:
    """The address's running flows get the opt-out now, as after a STOP (a waiting `wait_answer` takes its
    `not_satisfied` edge), not at their next message. The link is the reply's id, so a second click or a
    provider's repeated POST counts once. Temporal unreachable: logged; the list stops their messages anyway."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    reply = Reply(reply_id=f"unsubscribe-{digest}", channel="email", received_at=datetime.now(UTC), opt_out=True)
    try:
        await end_flows(client, [normalize_contact(contact)], reply)
    except InvalidContact:
        pass  # a link older than today's address rules: suppressed as written, no flow has it
    except RPCError as exc:  # the unsubscribe itself is done and must be confirmed
        log.warning("unsubscribe of %s: could not end its flows: %s", redact(contact), exc)
