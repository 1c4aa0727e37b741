"""Standard Webhooks signatures, made by the reference implementation, for the webhook endpoints."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from standardwebhooks import Webhook

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-secret-for-replies-0123456").decode()
"""The Standard Webhooks secret the API fixtures configure."""


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
