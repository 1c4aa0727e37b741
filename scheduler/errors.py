"""Errors the scheduler raises on purpose: every `SchedulerError` lives here.

SchedulerError
├── ConfigError         the service config file or an override is wrong
├── DefinitionError     a workflow definition is invalid (raised inside a running flow)
├── UnknownCampaign     no campaign with that id in the campaigns directory (404)
├── NoSchedule          no schedule of this tool for that campaign id (404)
├── NoCampaign          no schedule of that campaign, nor any (running) flow or run to count or stop (404)
├── UnmanagedSchedule   a campaign's schedule id is taken by a schedule this tool did not create
├── ApplyFailed         Temporal refused some campaigns' schedules (the others were applied)
├── FlowAlreadyRunning  a flow with that workflow id is running (409)
├── FlowNotFound        no running flow with that workflow id (404)
├── UnknownSignal       a signal name flows do not handle (400)
├── NoFlowForReply      a reply matched no running flow (404)
│   └── NoFlowForConversion  a conversion matched no running flow; it is recorded all the same (404)
├── TemporalUnavailable Temporal cannot be reached (503)
├── DevServerError      the embedded Temporal dev server could not start (busy port, db file in use)
├── StoreUnavailable    the service's database cannot be reached or migrated
├── NotSuppressed       that contact is not suppressed (404)
├── KeyNameInvalid      an API key name that is empty, too long or has other characters than letters, digits, . _ -
├── KeyNameTaken        an API key (active or revoked) already has that name
├── UnknownKey          no active API key has that name
├── UnsafeExposure      the API would listen beyond loopback without API keys or webhook signatures
├── AudienceError       a campaign run cannot read its audience (the source, not a row, is wrong)
├── DeliveryError       a message could not be delivered (retryable or not)
│   └── CarrierOptOut   the carrier says the recipient opted out (Twilio 21610): the contact is suppressed
├── UnknownMessage      a delivery receipt names a message this service did not send (404)
├── SimulationError     `scheduler simulate` cannot run as asked (a start time in the past, no test server)
├── InvalidValue        an id or a customer/cart record Temporal would refuse or choke on (422)
│   └── InvalidContact  neither a phone number nor an e-mail address (422)
└── RequestRejected     an HTTP request refused before its body is parsed
    ├── BodyTooLarge           over the endpoint's size limit (413)
    ├── UnsupportedMediaType   not the content type the endpoint reads (415)
    └── WebhookRejected        a webhook whose sender is not who it claims
        ├── WebhookSignatureInvalid    Standard Webhooks signature missing or wrong (401)
        └── TwilioSignatureInvalid     X-Twilio-Signature missing or wrong (403)
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class: its message is meant for the user, one line, naming what and where."""


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters and an ellipsis: a message must not repeat a megabyte of input."""
    return text if len(text) <= limit else text[:limit] + "…"


def first_line(exc: Exception) -> str:
    """The first line of a library's error (a database driver's runs on with context): enough for one message."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class ConfigError(SchedulerError):
    pass


class DefinitionError(SchedulerError):
    pass


class UnknownCampaign(SchedulerError):
    def __init__(self, campaign_id: str, directory: str, broken: list[str] | None = None) -> None:
        self.campaign_id = campaign_id
        hint = f" (files with errors: {', '.join(broken)}; run `scheduler validate`)" if broken else ""
        super().__init__(f"unknown campaign {campaign_id!r}: no valid campaign file in {directory!r} has that id{hint}")


class NoSchedule(SchedulerError):
    """No schedule this tool manages exists for the campaign (it may have a file, not yet applied)."""

    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"no schedule for campaign {campaign_id!r}")


class NoCampaign(SchedulerError):
    """Nothing of the campaign to stop (no schedule of this tool, run or running flow) or to count (no schedule
    or flow)."""

    def __init__(self, campaign_id: str, *, running: bool = True) -> None:
        what = "schedule, run or running flow" if running else "schedule or flow"
        super().__init__(f"no {what} of campaign {campaign_id!r}")


class SimulationError(SchedulerError):
    """`scheduler simulate` cannot run as asked."""


class UnmanagedSchedule(SchedulerError):
    def __init__(self, sid: str) -> None:
        self.schedule_id = sid
        super().__init__(f"schedule {sid!r} exists but was not created by this tool; rename the campaign or delete it")


class DevServerError(SchedulerError):
    pass


class StoreUnavailable(SchedulerError):
    pass


class NotSuppressed(SchedulerError):
    def __init__(self, contact: str) -> None:
        super().__init__(f"{contact} is not suppressed")


class KeyNameInvalid(SchedulerError):
    def __init__(self, name: str, rule: str) -> None:
        super().__init__(f"API key name {clip(name, 80)!r}: {rule}")


class KeyNameTaken(SchedulerError):
    def __init__(self, name: str, *, revoked: bool) -> None:
        history = " (revoked; names stay in the history and are not reused)" if revoked else ""
        super().__init__(f"an API key named {name!r} exists already{history}; choose another name")


class UnknownKey(SchedulerError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no active API key named {name!r} (see `scheduler keys list`)")


class UnsafeExposure(SchedulerError):
    """Refused at start: `api.host` is not a loopback address and something would be open to everyone."""


class AudienceError(SchedulerError):
    """The audience could not be read (the source, not a row, is wrong).

    `retryable` tells the activity whether another attempt may help (a network error, a 5xx, a
    database that is not reachable) or not (a missing file or token, a 4xx, a query the database
    refuses), so it can fail the run at once with this message.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class DeliveryError(SchedulerError):
    """A message could not be delivered; `retryable` says whether another attempt can succeed."""

    def __init__(self, message: str, *, kind: str, retryable: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        """Short name for the failure (the activity's ApplicationError type), e.g. `GatewayRejected`."""
        self.retryable = retryable
        self.code = code
        """The gateway's own error code, when it gave one (Twilio's `code`, e.g. `21211`)."""


class CarrierOptOut(DeliveryError):
    """The recipient opted out at the carrier (replied STOP to the sender): final, and the contact is suppressed."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, kind="CarrierOptOut", retryable=False, code=code)


class UnknownMessage(SchedulerError):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"no message {message_id!r} was sent by this service (unknown message_id)")


class ApplyFailed(SchedulerError):
    """Some schedule changes failed; every other change was still carried out."""

    def __init__(self, failures: dict[str, Exception]) -> None:
        self.failures = failures
        """By campaign id, what went wrong."""
        listed = "; ".join(f"campaign {cid!r}: {exc}" for cid, exc in sorted(failures.items()))
        super().__init__(f"could not apply {len(failures)} campaign(s): {listed}")


class FlowAlreadyRunning(SchedulerError):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"workflow {workflow_id!r} is already running")


class FlowNotFound(SchedulerError):
    def __init__(self, workflow_id: str, reason: str = "no such workflow") -> None:
        self.workflow_id = workflow_id
        super().__init__(f"workflow {workflow_id!r}: {reason}")


class UnknownSignal(SchedulerError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown signal name {name!r} (flows handle: {', '.join(known)})")


class TemporalUnavailable(SchedulerError):
    pass


class NoFlowForReply(SchedulerError):
    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"no running flow for {target}")


class NoFlowForConversion(NoFlowForReply):
    def __str__(self) -> str:
        return f"{super().__str__()}; the conversion is recorded"


class InvalidValue(SchedulerError, ValueError):
    """A value that must not reach Temporal (see `scheduler.flow.limits`).

    Also a `ValueError`, so a pydantic validator raising it gives a field-located 422.
    """


class InvalidContact(InvalidValue):
    """Neither a phone number nor an e-mail address (`scheduler.flow.contacts.normalize_contact`)."""


class RequestRejected(SchedulerError):
    pass


class BodyTooLarge(RequestRejected):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")


class UnsupportedMediaType(RequestRejected):
    def __init__(self, given: str, expected: str) -> None:
        super().__init__(f"unsupported content type {given!r}: this endpoint reads {expected}")


class WebhookRejected(RequestRejected):
    pass


class WebhookSignatureInvalid(WebhookRejected):
    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid webhook signature: {reason}")


class TwilioSignatureInvalid(WebhookRejected):
    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid Twilio signature: {reason}")
