"""Is a webhook from whom it claims? Standard Webhooks signatures (`/webhooks/replies`) and Twilio's.

Written with hmac/hashlib/base64 rather than the `standardwebhooks` and `twilio` packages: those are the
reference implementations the tests sign requests with, and the service should not carry an SMS SDK to
check one HMAC. Every comparison of a signature is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

TOLERANCE_SECONDS = 5 * 60
"""How far a Standard Webhooks timestamp may lie in the past or the future (replay protection)."""
SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24
"""The shortest key the Standard Webhooks specification allows (it recommends 24 to 64 random bytes)."""
_TIMESTAMP = re.compile(r"\d{1,12}")
_TWILIO_HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


class SignatureError(ValueError):
    """The request is not signed, or not signed right; the message says which check failed."""


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64, usually prefixed `whsec_`.

    Raises:
        ValueError: the secret is not base64 or its key is shorter than `MIN_KEY_BYTES` (a short key can be
            recovered from one signed request, then used to forge replies and opt-outs).
    """
    text = secret.strip().removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not a Standard Webhooks secret: expected 'whsec_' followed by base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"too weak a Standard Webhooks secret: its key is {len(key)} byte(s), at least {MIN_KEY_BYTES} are needed;"
            " make one with python -c 'import base64,secrets;"
            'print("whsec_"+base64.b64encode(secrets.token_bytes(32)).decode())\''
        )
    return key


def verify_webhook(
    key: bytes,
    *,
    body: bytes,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    now: float | None = None,
) -> None:
    """Check a Standard Webhooks signature: headers present, timestamp within 5 minutes, one `v1` signature matching.

    `signature` may hold several space-separated `v1,<base64>` entries (a sender rotating its
    secret signs with both); one match is enough.

    Raises:
        SignatureError: naming the failed check.
    """
    if not (msg_id and timestamp and signature):
        headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
        missing = [name for name, value in headers.items() if not value]
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError(f"invalid webhook-timestamp {timestamp!r}: expected whole seconds since the epoch")
    sent = int(timestamp)
    skew = (time.time() if now is None else now) - sent
    if skew > TOLERANCE_SECONDS:
        raise SignatureError("webhook-timestamp is more than 5 minutes old")
    if skew < -TOLERANCE_SECONDS:
        raise SignatureError("webhook-timestamp is more than 5 minutes in the future")
    expected = hmac.new(key, f"{msg_id}.{sent}.".encode() + body, hashlib.sha256).digest()
    for entry in signature.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, given):
            return
    raise SignatureError("no matching signature in webhook-signature")


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]], *, algorithm: str = "HMAC_SHA1") -> str:
    """Twilio's `X-Twilio-Signature` of a form post: HMAC of the URL followed by every name and value, sorted.

    Repeated names contribute each distinct value, sorted, as Twilio's own validator computes it.
    """
    by_name: dict[str, set[str]] = {}
    for name, value in params:
        by_name.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(by_name) for value in sorted(by_name[name]))
    digest = hmac.new(token.encode(), text.encode(), _TWILIO_HASHES[algorithm]).digest()
    return base64.b64encode(digest).decode()


def verify_twilio(
    token: str,
    *,
    url: str,
    params: Iterable[tuple[str, str]],
    signature: str | None,
    settings_header: str | None = None,
) -> None:
    """Check `X-Twilio-Signature` against the URL Twilio called and the posted form.

    The URL is tried with and without its port (Twilio signs either, depending on how the webhook
    was configured). `settings_header` is `X-Twilio-Webhooks-Signature-Settings`, which may choose
    HMAC_SHA256 instead of the default HMAC_SHA1.

    Raises:
        SignatureError: naming the failed check.
    """
    if not signature:
        raise SignatureError("missing header X-Twilio-Signature")
    algorithm = _twilio_algorithm(settings_header)
    if algorithm not in _TWILIO_HASHES:
        raise SignatureError(f"unsupported signature algorithm {algorithm!r}")
    pairs = list(params)
    given = signature.strip().encode()
    for candidate in _with_and_without_port(url):
        expected = twilio_signature(token, candidate, pairs, algorithm=algorithm).encode()
        if hmac.compare_digest(expected, given):
            return
    raise SignatureError(f"X-Twilio-Signature does not match a request to {url}")


def _twilio_algorithm(settings_header: str | None) -> str:
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def _with_and_without_port(url: str) -> list[str]:
    parts = urlsplit(url)
    if parts.port is not None:
        return [url, urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))]
    port = 443 if parts.scheme == "https" else 80
    return [url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))]
