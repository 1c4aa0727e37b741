"""`wait_answer`: wait for the customer's reply (signal `client-answered`) or a timeout."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from scheduler.flow.durations import Duration
from scheduler.flow.nodes.registry import EventType, Flow, Node, NodeParams, register
from scheduler.flow.signals import OPT_OUT_EXIT_PATCH

OPT_OUT_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
SERVICE_OPT_OUT_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")
SERVICE_OPT_IN_KEYWORDS = ("START", "YES", "UNSTOP")
SERVICE_HELP_KEYWORDS = ("HELP", "INFO")
"""`[compliance]`'s default keywords (`scheduler.config.ComplianceSettings`), kept here so that validating a
definition, which has no settings, can refuse an intent phrase that is one of them."""


class WaitAnswerParams(NodeParams):
    timeout: Duration = timedelta(minutes=1)
    opt_out_keywords: tuple[str, ...] = OPT_OUT_KEYWORDS
    """A reply that is exactly one of these (any case, surrounding spaces/punctuation ignored) opts out."""


def is_opt_out(text: str | None, keywords: tuple[str, ...]) -> bool:
    word = (text or "").strip().strip(".!").upper()
    return word in {k.upper() for k in keywords}


@register
class WaitAnswer(Node):
    name = "wait_answer"
    Params = WaitAnswerParams
    events = frozenset(EventType)
    waits = True

    async def run(self, flow: Flow, params: WaitAnswerParams) -> EventType:
        replies = await flow.wait_for_replies(params.timeout)
        if replies is None:
            return EventType.TIMEOUT
        if any(is_opt_out(r.text, params.opt_out_keywords) for r in replies) or (
            any(r.opt_out for r in replies) and workflow.patched(OPT_OUT_EXIT_PATCH)
        ):
            flow.mark_opted_out()
            return EventType.NOT_SATISFIED
        flow.mark_answered()
        flow.take_intent(replies)
        return EventType.SATISFIED
