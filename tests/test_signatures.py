"""Signature checks against the reference implementations: requests signed by `standardwebhooks` and `twilio`.

Each Standard Webhooks case is also verified by the reference, so ours accepts exactly what it accepts.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from twilio.request_validator import RequestValidator

from scheduler.signatures import SignatureError, twilio_signature, verify_twilio, verify_webhook, webhook_key
from tests.helpers.signing import signed_headers

SECRET = "whsec_" + base64.b64encode(b"reply-secret-0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"someone-else-0123456789abcdef").decode()
BODY = b'{"contact": "+12125550123", "text": "yes"}'
TOKEN = "twilio-auth-token-0123456789abcdef"
URL = "https://hooks.example.com/webhooks/twilio?campaign=spring"
FORM = [("From", "+12125550123"), ("To", "+15005550006"), ("Body", "Yes please"), ("MessageSid", "SM" + "a" * 32)]


@dataclass
class Signed:
    body: bytes
    headers: dict[str, str]


def sign(*, secret: str = SECRET, body: bytes = BODY, at: datetime | None = None, msg_id: str = "msg_1") -> Signed:
    """A request signed by the reference implementation."""
    return Signed(body, signed_headers(body, msg_id=msg_id, secret=secret, at=at))


def ours(request: Signed, secret: str = SECRET) -> bool:
    try:
        verify_webhook(
            webhook_key(secret),
            body=request.body,
            msg_id=request.headers.get("webhook-id"),
            timestamp=request.headers.get("webhook-timestamp"),
            signature=request.headers.get("webhook-signature"),
        )
    except SignatureError:
        return False
    return True


def reference(request: Signed, secret: str = SECRET) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except (WebhookVerificationError, ValueError):
        return False
    return True


def _tampered(r: Signed) -> Signed:
    return Signed(r.body.replace(b"yes", b"no!"), r.headers)


def _with(**headers: str) -> Callable[[Signed], Signed]:
    return lambda r: Signed(r.body, {**r.headers, **headers})


def _without(name: str) -> Callable[[Signed], Signed]:
    return lambda r: Signed(r.body, {k: v for k, v in r.headers.items() if k != name})


def _rotated(r: Signed) -> Signed:
    """A sender rotating secrets signs with the old and the new one; one match is enough."""
    old = sign(secret=OTHER_SECRET).headers["webhook-signature"]
    return Signed(r.body, {**r.headers, "webhook-signature": f"v2,abc {old} {r.headers['webhook-signature']}"})


CASES: dict[str, tuple[Callable[[], Signed], bool]] = {
    "valid": (lambda: sign(), True),
    "valid-4m59s-old": (lambda: sign(at=datetime.now(UTC) - timedelta(minutes=4, seconds=59)), True),
    "valid-4m59s-ahead": (lambda: sign(at=datetime.now(UTC) + timedelta(minutes=4, seconds=59)), True),
    "several-signatures": (lambda: _rotated(sign()), True),
    "tampered-body": (lambda: _tampered(sign()), False),
    "wrong-secret": (lambda: sign(secret=OTHER_SECRET), False),
    "stale-6m": (lambda: sign(at=datetime.now(UTC) - timedelta(minutes=6)), False),
    "future-6m": (lambda: sign(at=datetime.now(UTC) + timedelta(minutes=6)), False),
    "other-msg-id": (lambda: _with(**{"webhook-id": "msg_2"})(sign()), False),
    "other-timestamp": (lambda: _with(**{"webhook-timestamp": str(int(time.time()) - 1)})(sign()), False),
    "missing-id": (lambda: _without("webhook-id")(sign()), False),
    "missing-timestamp": (lambda: _without("webhook-timestamp")(sign()), False),
    "missing-signature": (lambda: _without("webhook-signature")(sign()), False),
    "unknown-version-only": (lambda: _with(**{"webhook-signature": "v2," + "A" * 44})(sign()), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_webhook_agrees_with_reference(case: str) -> None:
    make, accepted = CASES[case]
    request = make()
    assert ours(request) is accepted
    assert reference(request) is accepted


def test_verify_webhook_secret_without_prefix_is_the_same_key() -> None:
    assert webhook_key(SECRET) == webhook_key(SECRET.removeprefix("whsec_")) == b"reply-secret-0123456789abcdef"
    assert ours(sign(), SECRET.removeprefix("whsec_"))


def test_verify_webhook_says_why() -> None:
    with pytest.raises(SignatureError, match="more than 5 minutes old"):
        r = sign(at=datetime.now(UTC) - timedelta(minutes=6))
        verify_webhook(
            webhook_key(SECRET),
            body=r.body,
            msg_id=r.headers["webhook-id"],
            timestamp=r.headers["webhook-timestamp"],
            signature=r.headers["webhook-signature"],
        )
    with pytest.raises(SignatureError, match=r"missing header\(s\): webhook-signature"):
        verify_webhook(webhook_key(SECRET), body=BODY, msg_id="m", timestamp="1", signature=None)
    with pytest.raises(SignatureError, match="invalid webhook-timestamp '1e9'"):
        verify_webhook(webhook_key(SECRET), body=BODY, msg_id="m", timestamp="1e9", signature="v1,x")


@pytest.mark.parametrize("secret", ["whsec_***", "whsec_", "not base64!"], ids=["stars", "empty", "spaces"])
def test_webhook_key_rejects_a_bad_secret(secret: str) -> None:
    with pytest.raises(ValueError, match="Standard Webhooks secret"):
        webhook_key(secret)


def twilio_ok(
    signature: str, *, url: str = URL, form: list[tuple[str, str]] = FORM, settings: str | None = None
) -> bool:
    try:
        verify_twilio(TOKEN, url=url, params=form, signature=signature, settings_header=settings)
    except SignatureError:
        return False
    return True


def test_twilio_signature_matches_reference() -> None:
    assert twilio_signature(TOKEN, URL, FORM) == RequestValidator(TOKEN).compute_signature(URL, dict(FORM))


def test_verify_twilio_accepts_reference_signature() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, dict(FORM))
    assert twilio_ok(signature)


@pytest.mark.parametrize(
    ("signed_url", "signed_form", "token"),
    [
        ("https://other.example.com/webhooks/twilio?campaign=spring", FORM, TOKEN),
        ("https://hooks.example.com/webhooks/twilio", FORM, TOKEN),
        ("http://hooks.example.com/webhooks/twilio?campaign=spring", FORM, TOKEN),
        (URL, [*FORM[:2], ("Body", "No"), FORM[3]], TOKEN),
        (URL, FORM, "another-token"),
    ],
    ids=["other-host", "without-query", "http", "tampered-body", "wrong-token"],
)
def test_verify_twilio_rejects_a_signature_for_another_request(
    signed_url: str, signed_form: list[tuple[str, str]], token: str
) -> None:
    signature = RequestValidator(token).compute_signature(signed_url, dict(signed_form))
    assert not twilio_ok(signature)


def test_verify_twilio_missing_signature_is_rejected() -> None:
    with pytest.raises(SignatureError, match="missing header X-Twilio-Signature"):
        verify_twilio(TOKEN, url=URL, params=FORM, signature=None)


def test_verify_twilio_url_with_or_without_default_port() -> None:
    """Twilio signs the URL as configured in its console, with or without the port: both are accepted."""
    with_port = "https://hooks.example.com:443/webhooks/twilio?campaign=spring"
    assert twilio_ok(RequestValidator(TOKEN).compute_signature(with_port, dict(FORM)))
    assert twilio_ok(RequestValidator(TOKEN).compute_signature(URL, dict(FORM)), url=with_port)
    assert not twilio_ok(RequestValidator(TOKEN).compute_signature("https://hooks.example.com:8443/x", dict(FORM)))


def test_verify_twilio_sha256_when_the_settings_header_asks() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, dict(FORM), algorithm="HMAC_SHA256")
    settings = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert twilio_ok(signature, settings=settings)
    assert not twilio_ok(signature)  # the same signature read as SHA-1
    assert not twilio_ok(signature, settings="algorithm=HMAC_MD5")
