"""The queries of Temporal's visibility: every one the service asks, built here with one quoting rule.

Stats, status, stop, the dashboard, reply routing and conversion attribution look flows up by these; a
query spelled elsewhere would be one more place for a value to escape its literal.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from scheduler.flow.attributes import (
    CAMPAIGN_ID,
    CART_ID,
    CLIENT_ANSWERED,
    CURRENT_STEP,
    CUSTOMER_ID,
    DEFINITION_VERSION,
    MESSAGED,
    OUTCOME,
    REPLY_IDS,
    REPLY_INTENT,
    VARIANT,
)
from scheduler.flow.workflows import FLOW_TYPE

RUNNING = "ExecutionStatus = 'Running'"


def quote(value: str) -> str:
    """`value` as a string literal of Temporal's visibility query language: the one quoting of every query.

    The server parses queries with a MySQL-dialect SQL parser, in which a backslash escapes the next
    character and a quote ends the literal: both are escaped with a backslash, so no value can end
    the literal early and add conditions to the query (doubling a quote, the other SQL rule, makes a
    value ending in a backslash a syntax error).

    Server quirks remain (Temporal 1.32's dev server, shown in tests/test_stats.py and
    tests/test_webhooks_api.py): it trims quotes at either end of a value (`x'` is looked up as `x`),
    and its SQLite store is handed a `"` or a `\\` re-escaped MySQL-style, which SQLite reads as two
    characters. No escaping finds a value holding `"` or `\\` there: lookups re-check what they list
    (`scheduler.replies.routing`), and counts by such a value come from listing the flows
    (`scheduler.campaigns.stats`).
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _at(instant: datetime) -> str:
    return quote(instant.astimezone(UTC).isoformat())


def campaign_query(campaign_id: str, workflow_type: str = FLOW_TYPE) -> str:
    """A campaign's flows (or, with `CAMPAIGN_RUN_TYPE`, its runs), whatever their status."""
    return f"WorkflowType = {quote(workflow_type)} AND {CAMPAIGN_ID.name} = {quote(campaign_id)}"


def running_query(campaign_id: str, workflow_type: str = FLOW_TYPE, *, started_before: datetime | None = None) -> str:
    """A campaign's running flows (or runs).

    `started_before`: only those the server started before that instant (`StartTime` compares to the
    microsecond on the dev server's SQLite as on the other stores)."""
    query = f"{campaign_query(campaign_id, workflow_type)} AND {RUNNING}"
    if started_before is not None:
        query += f" AND StartTime < {_at(started_before)}"
    return query


def step_query(campaign_id: str, step: str) -> str:
    """A campaign's flows running at `step`."""
    return f"{running_query(campaign_id)} AND {CURRENT_STEP.name} = {quote(step)}"


def other_steps_query(campaign_id: str, steps: Iterable[str]) -> str:
    """A campaign's running flows at none of `steps` (all of them when there is none)."""
    steps = list(steps)
    running = running_query(campaign_id)
    return f"{running} AND {CURRENT_STEP.name} NOT IN ({', '.join(map(quote, steps))})" if steps else running


def in_flight_query(
    campaign_id: str,
    *,
    version: str | None = None,
    step: str | None = None,
    not_versions: Iterable[str] = (),
    not_steps: Iterable[str] = (),
) -> str:
    """A campaign's running flows on `DefinitionVersion` `version` and at `step` (None: any), on none of
    `not_versions` and at none of `not_steps` (a flow without the attribute matches no `NOT IN`)."""
    query = running_query(campaign_id)
    for key, value in ((DEFINITION_VERSION, version), (CURRENT_STEP, step)):
        if value is not None:
            query += f" AND {key.name} = {quote(value)}"
    for key, values in ((DEFINITION_VERSION, list(not_versions)), (CURRENT_STEP, list(not_steps))):
        if values:
            query += f" AND {key.name} NOT IN ({', '.join(map(quote, values))})"
    return query


def started_query(campaign_id: str, since: datetime, *, answered: bool = False, intent: str | None = None) -> str:
    """A campaign's flows started since `since` (`answered`: those a client answered; `intent`: those whose last
    answer took that intent, `NO_INTENT` none)."""
    query = f"{campaign_query(campaign_id)} AND StartTime >= {_at(since)}"
    if intent is not None:
        query += f" AND {REPLY_INTENT.name} = {quote(intent)}"
    return f"{query} AND {CLIENT_ANSWERED.name} = true" if answered else query


def intent_query(campaign_id: str, intent: str) -> str:
    """A campaign's flows whose last answer took `intent` (`NO_INTENT`: matched none), whatever their status."""
    return f"{campaign_query(campaign_id)} AND {REPLY_INTENT.name} = {quote(intent)}"


def outcome_query(campaign_id: str, since: datetime, outcome: str) -> str:
    """A campaign's flows that ended since `since` with `outcome`."""
    closed = f"{campaign_query(campaign_id)} AND ExecutionStatus != 'Running' AND CloseTime >= {_at(since)}"
    return f"{closed} AND {OUTCOME.name} = {quote(outcome)}"


def variant_query(campaign_id: str, variant: str, *, messaged: bool = False, answered: bool = False) -> str:
    """A campaign's flows a `split` put in `variant` (`experiment:variant`), whatever their status; `messaged`:
    those a customer message reached, `answered`: those whose customer answered."""
    query = f"{campaign_query(campaign_id)} AND {VARIANT.name} = {quote(variant)}"
    if messaged:
        query += f" AND {MESSAGED.name} = true"
    return f"{query} AND {CLIENT_ANSWERED.name} = true" if answered else query


def lookup_query(attribute: str, value: str, *, running: bool = False, handled: str | None = None) -> str:
    """The flows whose search attribute `attribute` holds `value`: all of them, or (`running`) those running,
    and also those whose `ReplyIds` hold `handled`."""
    query = f"WorkflowType = {quote(FLOW_TYPE)} AND {attribute} = {quote(value)}"
    if handled is not None:
        return f"{query} AND ({RUNNING} OR {REPLY_IDS.name} = {quote(handled)})"
    return f"{query} AND {RUNNING}" if running else query


def buyer_query(*, cart_id: str | None, customer_id: str | None, since: datetime, until: datetime) -> str:
    """The flows of a cart or of a customer (either matches; one is given), running or not, the server started
    between `since` and `until`, both included: those a conversion at `until` may be attributed to."""
    matches = [
        f"{key.name} = {quote(value)}" for key, value in ((CART_ID, cart_id), (CUSTOMER_ID, customer_id)) if value
    ]
    if not matches:
        raise ValueError("a buyer query needs a cart_id or a customer_id")
    return (
        f"WorkflowType = {quote(FLOW_TYPE)} AND ({' OR '.join(matches)})"
        f" AND StartTime >= {_at(since)} AND StartTime <= {_at(until)}"
    )
