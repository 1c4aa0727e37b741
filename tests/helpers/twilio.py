"""A local stand-in for Twilio's Messages API: a real HTTP server that checks each request exactly as Twilio
documents it and answers like Twilio, and status callbacks signed like Twilio's (the `twilio` package's
`RequestValidator`). No test talks to Twilio itself."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator

from tests.helpers.servers import QuietHandler, http_server

ACCOUNT_SID = "AC" + "1f" * 16
AUTH_TOKEN = "twilio-account-token-for-tests"
"""The account's auth token: the stand-in's basic-auth password, and the key status callbacks are signed with."""
SENDER = "+15005550006"
TOKEN_ENV = "TEST_TWILIO_AUTH_TOKEN"
"""The environment variable `channels.twilio.auth_token_env` names in the tests."""
FIELDS = {"To", "Body", "From", "MessagingServiceSid", "StatusCallback"}
"""Every field the channel may send (Twilio takes more; the channel sends no other)."""


@dataclass
class TwilioStandIn:
    """What the stand-in received, and how it is told to answer."""

    url: str = ""
    """The `api_base` to configure."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Each POST: `path`, `auth` (user, password), `content_type`, `form` (field → value, each field once)."""
    problems: list[str] = field(default_factory=list)
    """How a request differed from Twilio's documented one (each was refused, as Twilio would)."""
    failures: list[tuple[int, int] | None] = field(default_factory=list)
    """The next answers, in order: (HTTP status, Twilio error code) to refuse, None to accept; then all accepted."""
    sids: list[str] = field(default_factory=list)
    """The SID of each message accepted."""

    def answer(
        self, path: str, auth: tuple[str, str] | None, content_type: str, form: list[tuple[str, str]]
    ) -> tuple[int, dict[str, Any]]:
        fields = dict(form)
        self.requests.append({"path": path, "auth": auth, "content_type": content_type, "form": fields})
        problem = self._problem(path, auth, content_type, form)
        if problem:
            self.problems.append(problem)
            return 400, {"code": 20001, "message": problem, "status": 400}
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                status, code = failure
                return status, {
                    "code": code,
                    "message": f"error {code}",
                    "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status,
                }
        sid = "SM" + uuid.uuid4().hex
        self.sids.append(sid)
        return 201, {
            "sid": sid,
            "status": "queued",
            "account_sid": ACCOUNT_SID,
            "to": fields["To"],
            "from": fields.get("From"),
            "messaging_service_sid": fields.get("MessagingServiceSid"),
            "body": fields["Body"],
            "error_code": None,
        }

    def _problem(self, path: str, auth: tuple[str, str] | None, content_type: str, form: list[tuple[str, str]]) -> str:
        if path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
            return f"path {path!r}"
        if auth != (ACCOUNT_SID, AUTH_TOKEN):
            return f"basic auth {auth!r}"
        if content_type != "application/x-www-form-urlencoded":
            return f"content type {content_type!r}"
        names = [name for name, _ in form]
        if len(names) != len(set(names)) or not set(names) <= FIELDS:
            return f"fields {names}"
        fields = dict(form)
        if not fields.get("To") or not fields.get("Body"):
            return "To and Body are required"
        if ("From" in fields) == ("MessagingServiceSid" in fields):
            return "exactly one of From and MessagingServiceSid"
        return ""

    def status_callback(
        self, index: int, status: str, *, error_code: str | None = None, token: str = AUTH_TOKEN
    ) -> tuple[str, bytes, dict[str, str]]:
        """The status callback Twilio would post for the `index`th accepted message: (path and query on the
        service, form body, headers), signed over the `StatusCallback` URL the channel gave."""
        accepted = [r for r in self.requests if not r.get("refused")]
        request = accepted[index]
        callback = request["form"]["StatusCallback"]
        form = {
            "AccountSid": ACCOUNT_SID,
            "From": request["form"].get("From", SENDER),
            "To": request["form"]["To"],
            "MessageSid": self.sids[index],
            "SmsSid": self.sids[index],
            "MessageStatus": status,
            "SmsStatus": status,
            "ApiVersion": "2010-04-01",
        }
        if error_code is not None:
            form["ErrorCode"] = error_code
        signature = RequestValidator(token).compute_signature(callback, form)
        assert token != AUTH_TOKEN or RequestValidator(AUTH_TOKEN).validate(callback, form, signature)
        parts = urlsplit(callback)
        headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature}
        return f"{parts.path}?{parts.query}" if parts.query else parts.path, urlencode(form).encode(), headers

    async def post_status(
        self,
        http: httpx.AsyncClient,
        index: int,
        status: str,
        *,
        error_code: str | None = None,
        token: str = AUTH_TOKEN,
    ) -> httpx.Response:
        """Post `status_callback(...)` to the service through `http`."""
        path, body, headers = self.status_callback(index, status, error_code=error_code, token=token)
        return await http.post(path, content=body, headers=headers)


@contextlib.contextmanager
def twilio_stand_in() -> Iterator[TwilioStandIn]:
    """A `TwilioStandIn` on a free port of 127.0.0.1 for as long as the block runs."""
    state = TwilioStandIn()
    lock = threading.Lock()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                status, answer = state.answer(
                    self.path,
                    _basic_auth(self.headers.get("Authorization", "")),
                    self.headers.get("Content-Type", "").partition(";")[0].strip(),
                    parse_qsl(body.decode(), keep_blank_values=True),
                )
                if status >= 300:
                    state.requests[-1]["refused"] = True
            self.send_json(status, json.dumps(answer).encode())

    with http_server(Handler) as base:
        state.url = base
        yield state


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    user, _, password = base64.b64decode(value).decode().partition(":")
    return user, password
