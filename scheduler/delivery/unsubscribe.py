"""One-click e-mail unsubscribe (RFC 8058): signed, expiring links in every message's `List-Unsubscribe`.

A link holds the address it unsubscribes, the campaign and flow the message came from, and when it
expires, signed with HMAC-SHA256 (`compliance.unsubscribe_secret`): nothing in it can be changed, and
following it needs no lookup. `POST /unsubscribe?token=…` (what mailbox providers send, body
`List-Unsubscribe=One-Click`) suppresses the address; `GET` shows a page with one button that posts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, replace
from urllib.parse import quote

from scheduler.config import Settings

VALID_FOR = 90 * 24 * 3600
"""Seconds a link works: providers and people may use it weeks after the message."""
MAX_URL = 998 - len("List-Unsubscribe: <>,")
"""Characters of a link that still fits on one header line (RFC 5322's 998) in `List-Unsubscribe`."""


class InvalidToken(ValueError):
    """The link was changed, is not ours, or expired (the message says which, without echoing it)."""


@dataclass(frozen=True)
class Unsubscribe:
    contact: str
    campaign_id: str | None = None
    workflow_id: str | None = None


@dataclass(frozen=True)
class Links:
    """Makes and reads the links: the service's public URL and the signing secret."""

    public_url: str
    secret: str
    mailto: str = ""
    """An address that unsubscribes by e-mail too (`List-Unsubscribe`'s second URI), if configured."""

    def token(self, unsubscribe: Unsubscribe, *, now: float | None = None) -> str:
        claims = {
            "c": unsubscribe.contact,
            "k": unsubscribe.campaign_id,
            "w": unsubscribe.workflow_id,
            "e": int((now if now is not None else time.time()) + VALID_FOR),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def read(self, token: str, *, now: float | None = None) -> Unsubscribe:
        """The unsubscribe a token asks for.

        Raises:
            InvalidToken: changed, not signed with this secret, or expired.
        """
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise InvalidToken("this unsubscribe link is not valid")
        try:
            claims = json.loads(_unb64(payload))
            contact, expires = str(claims["c"]), int(claims["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise InvalidToken("this unsubscribe link is not valid") from None
        if expires < (now if now is not None else time.time()):
            raise InvalidToken("this unsubscribe link has expired")
        return Unsubscribe(contact, claims.get("k"), claims.get("w"))

    def url(self, unsubscribe: Unsubscribe) -> str:
        return f"{self.public_url}/unsubscribe?token={quote(self.token(unsubscribe))}"

    def header(self, unsubscribe: Unsubscribe) -> str:
        """The `List-Unsubscribe` value: the HTTPS link, then the mailto if configured.

        A link too long for a header line (a flow id can be 1000 characters) leaves the flow id out:
        it still unsubscribes, only without saying which flow the message came from.
        """
        url = self.url(unsubscribe)
        if len(url) > MAX_URL:
            url = self.url(replace(unsubscribe, workflow_id=None))
        header = f"<{url}>"
        if self.mailto:
            header += f", <mailto:{self.mailto}?subject=unsubscribe>"
        return header

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).digest())


def links(settings: Settings) -> Links | None:
    """The configured links: None without `compliance.unsubscribe_secret` or `webhooks.public_url`."""
    secret, public_url = settings.compliance.unsubscribe_secret, settings.webhooks.public_url
    if not secret or not public_url:
        return None
    return Links(public_url=public_url.rstrip("/"), secret=secret, mailto=settings.compliance.unsubscribe_mailto)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
