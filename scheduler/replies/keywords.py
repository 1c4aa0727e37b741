"""STOP, START and HELP: a reply that is one keyword changes consent, in every campaign (`[compliance]`
lists the words).

- An opt-out puts the sender's contacts on the suppression list (before the reply is answered), then
  ends every running flow of those contacts with outcome `opted_out`: they get the reply with
  `opt_out` set (a `wait_answer` that waits for it takes its `not_satisfied` edge instead, and the list
  stops any later message). `stop_confirmation` is sent once per opt-out.
- An opt-in takes them off the list (the history stays) and sends `start_confirmation` when it did;
  then it is an ordinary reply to the sender's running flows ("Reply YES for your cart link"): lifted
  first, so a flow that answers it with a message at once finds the contact no longer suppressed.
- HELP changes nothing and is answered with `help_reply`; flows keep waiting for a real answer.

Keywords count whether or not a flow of the sender is running: they are never "unmatched". The worker
sends the answers (`KeywordAnswerWorkflow`, with its delivery retries), once per reply id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from scheduler.campaigns.start import signal_sent
from scheduler.config import ComplianceSettings, Settings
from scheduler.errors import NoFlowForReply, NotSuppressed
from scheduler.flow.attributes import CAMPAIGN_ID, CUSTOMER_CONTACT
from scheduler.flow.contacts import redact
from scheduler.flow.models import KeywordAnswer
from scheduler.flow.signals import CLIENT_ANSWERED_SIGNAL, Reply
from scheduler.flow.workflows import KEYWORD_ANSWER_TYPE
from scheduler.replies.routing import FlowTarget, flows_of, route_reply
from scheduler.store.consent import Consent

log = logging.getLogger(__name__)

Keyword = Literal["opt_out", "opt_in", "help"]


def keyword_of(text: str | None, compliance: ComplianceSettings) -> tuple[Keyword, str] | None:
    """(what the reply asks for, the keyword) if the reply is exactly one keyword, trimmed, any case."""
    word = (text or "").strip().strip(".!").strip().upper()
    if not word:
        return None
    for keyword, words in (
        ("opt_out", compliance.opt_out_keywords),
        ("opt_in", compliance.opt_in_keywords),
        ("help", compliance.help_keywords),
    ):
        if word in words:
            return keyword, word  # type: ignore[return-value]
    return None


@dataclass
class Handled:
    keyword: Keyword
    contacts: list[str] = field(default_factory=list)
    """The sender's normalized contacts the keyword applied to."""
    signaled: list[str] = field(default_factory=list)
    """The flows an opt-out ended, or an opt-in reached as a reply (redelivered: the first delivery's)."""
    lifted: int = 0
    """How many of `contacts` an opt-in took off the suppression list."""
    answer: str = ""
    """What to send back to the sender (a confirmation or the help text; empty: nothing)."""

    def message(self, workflow_id: str) -> str:
        """What `/send-signal` and `scheduler signal` answer for a keyword sent to `workflow_id`."""
        contacts = len(self.contacts)
        if self.keyword == "opt_out":
            return f"Opted out {contacts} contact(s) of workflow {workflow_id}; ended flows: {len(self.signaled)}"
        if self.keyword == "opt_in" and workflow_id in self.signaled:
            sent = signal_sent(CLIENT_ANSWERED_SIGNAL, workflow_id)
            return f"{sent}; opted {self.lifted} contact(s) back in" if self.lifted else sent
        if self.keyword == "opt_in":
            return f"Opted in {contacts} contact(s) of workflow {workflow_id}"
        return f"Help requested by the customer of workflow {workflow_id}"


@dataclass(frozen=True)
class KeywordRules:
    """What applying a keyword uses of the settings."""

    compliance: ComplianceSettings
    """The keywords, and the confirmations and help text that answer them."""
    task_queue: str
    """Where the worker that sends the answers polls."""
    route_timeout: timedelta
    """How long an opt-in waits for a flow started a moment ago to show up, as any reply does."""

    @classmethod
    def of(cls, settings: Settings) -> KeywordRules:
        return cls(settings.compliance, settings.temporal.task_queue, settings.webhooks.route_timeout)


async def apply_keyword(
    client: Client,
    consent: Consent,
    rules: KeywordRules,
    *,
    target: FlowTarget,
    reply: Reply,
    send_answer: bool = True,
) -> Handled | None:
    """If `reply` is one keyword, apply it for `target`'s sender (see the module docstring); else None.

    `send_answer`: have the worker send the confirmation or help text (`answer`); False where the caller
    answers itself (Twilio sends the TwiML answer back).

    An opt-in is then routed like any reply (`route_reply`, waiting up to `rules.route_timeout` for a flow
    started a moment ago, unless it lifted a suppression), after the lift and its confirmation; no flow
    is no error.
    """
    compliance, task_queue = rules.compliance, rules.task_queue
    found = keyword_of(reply.text, compliance)
    if found is None:
        return None
    keyword, word = found
    contacts, campaign_id = await _sender(client, target)
    handled = Handled(keyword, contacts)
    if keyword == "opt_out":
        created = False
        for contact in contacts:
            _, new = await asyncio.to_thread(
                consent.suppress,
                contact,
                reason=f"keyword {word}",
                campaign_id=campaign_id,
                workflow_id=target.workflow_id,
            )
            created |= new
        # One id for every route, so a flow reached by two (its contact and its id) counts the reply once.
        marked = reply.model_copy(update={"opt_out": True, "reply_id": reply.reply_id or f"opt-out-{uuid.uuid4()}"})
        handled.signaled = await end_flows(client, contacts, marked, named=None if target.contact else target)
        handled.answer = compliance.stop_confirmation if created else ""
    elif keyword == "opt_in":
        for contact in contacts:
            try:
                await asyncio.to_thread(consent.lift, contact, reason=f"keyword {word}")
                handled.lifted += 1
            except NotSuppressed:
                pass
        handled.answer = compliance.start_confirmation if handled.lifted else ""
    else:
        handled.answer = compliance.help_reply
    log.info("%s (%s) from %s", word, keyword, ", ".join(redact(c) for c in contacts) or str(target))
    if send_answer and handled.answer and contacts:
        await _answer(client, task_queue, reply, contacts, handled.answer)
    if keyword == "opt_in":
        # Campaign runs start no flow for a suppressed contact, and one that waited through the
        # suppression is listed by now: one lookup, so the provider (and the customer's
        # confirmation, in Twilio's answer) need not wait for a flow that is not coming.
        timeout = timedelta(0) if handled.lifted else rules.route_timeout
        try:
            handled.signaled = await route_reply(client, target=target, reply=reply, timeout=timeout)
        except NoFlowForReply:
            log.info("%s from %s reached no running flow", word, target)
    return handled


async def _answer(client: Client, task_queue: str, reply: Reply, contacts: list[str], text: str) -> None:
    """Have the worker send `text` to the sender's `contacts` (`KeywordAnswerWorkflow`, with retries).

    The workflow id is the reply's, so a redelivered reply is answered once. A failure to start it is
    logged, not raised: the keyword itself has been applied.
    """
    workflow_id = f"keyword-answer-{reply.reply_id or uuid.uuid4()}"
    try:
        await client.start_workflow(
            KEYWORD_ANSWER_TYPE,
            KeywordAnswer(contacts=contacts, text=text),
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        pass  # a redelivery: the first delivery answered
    except RPCError as exc:
        log.warning("could not answer %s: %s", ", ".join(redact(c) for c in contacts), exc)


async def _sender(client: Client, target: FlowTarget) -> tuple[list[str], str | None]:
    """The sender's contacts, and the campaign of the flow the reply named (if it named one).

    A reply routed by contact is from that contact; one routed to a flow (or a customer's flows) is
    from whoever that flow messages: all of its customer's contacts.
    """
    if target.contact is not None:
        return [target.contact], None
    if target.workflow_id is not None:
        try:
            description = await client.get_workflow_handle(target.workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return [], None
            raise
        attributes = description.typed_search_attributes
        return list(attributes.get(CUSTOMER_CONTACT) or []), attributes.get(CAMPAIGN_ID)
    contacts: list[str] = []
    for attributes in await flows_of(client, target):
        contacts += [c for c in attributes.get(CUSTOMER_CONTACT) or [] if c not in contacts]
    return contacts, None


async def end_flows(client: Client, contacts: list[str], reply: Reply, *, named: FlowTarget | None = None) -> list[str]:
    """Send the opt-out `reply` to every running flow of the (suppressed) contacts, and to the `named` flows:
    one lookup each, no wait. Whatever the opt-out came by (a keyword, an unsubscribe link), the flows take
    the same path (`Reply.opt_out`).

    Visibility may not list a flow started a moment ago; the suppression list stops its messages anyway.
    """
    targets = [FlowTarget(contact=c) for c in contacts]
    if named is not None:
        targets.append(named)
    signaled: set[str] = set()
    for each in targets:
        if each.workflow_id is not None and each.workflow_id in signaled:
            continue
        try:
            signaled.update(await route_reply(client, target=each, reply=reply, timeout=timedelta(0)))
        except NoFlowForReply:
            pass
    return sorted(signaled)
