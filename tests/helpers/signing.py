"""Webhook signatures made by the reference implementations (`standardwebhooks`, `twilio`), for the webhook
endpoints."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

from standardwebhooks import Webhook
from twilio.request_validator import RequestValidator

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-secret-for-replies-0123456").decode()
"""The Standard Webhooks secret the API fixtures configure."""
TWILIO_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_URL = "https://hooks.example.com"
"""`webhooks.public_url` where tests sign Twilio requests."""


def signed_headers(
    content: bytes, *, msg_id: str, secret: str = WEBHOOK_SECRET, at: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `content`, signed by the reference implementation (`at`: now)."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=content.decode()),
    }


def sms_form(from_: str, *, sid: str | None = None, body: str = "Yes please") -> dict[str, str]:
    """The form Twilio posts for an incoming SMS."""
    return {
        "From": from_,
        "To": "+15005550006",
        "Body": body,
        "MessageSid": sid or f"SM{uuid.uuid4().hex}",
        "AccountSid": "AC" + "0" * 32,
        "NumMedia": "0",
    }


def twilio_request(
    form: dict[str, str], *, url: str | None = None, token: str = TWILIO_TOKEN
) -> tuple[str, dict[str, str]]:
    """(body, headers) of POST /webhooks/twilio as Twilio sends it, signed over `url` (default: the public URL)."""
    signature = RequestValidator(token).compute_signature(url or f"{PUBLIC_URL}/webhooks/twilio", form)
    headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature}
    return urlencode(form), headers
