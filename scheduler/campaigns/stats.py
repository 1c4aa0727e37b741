"""A campaign's funnel on demand (`GET /campaigns/{id}/stats`, `scheduler stats`), counted by Temporal's visibility.

- `running`: flows running now, per `CurrentStep`: one count per step of the definition the campaign's
  schedule runs (zeros included), then one for the flows at any other step (older definitions still
  running); if there are some, their steps are listed (at most `MAX_LISTED` flows) and counted one by one.
  A step name visibility cannot look up (on the dev server one holding `"` or `\\`, see
  `scheduler.visibility.quote`) matches no `CurrentStep = …` but is not left out by `NOT IN` either, so its
  flows are among those listed: the listing counts them.
- `outcomes`: flows that ended since `since`, per `Outcome` (every outcome named, zeros included).
- `started`: flows started since `since`; `answered`: those of them with `ClientAnswered = true`.
- `deliveries`: per `send_message` step, its messages `sent`, `delivered`, `undelivered`, `failed` (from the store's
  deliveries, last updated since `since`: one GROUP BY; only when a store is given).
- `intents`: flows started since `since` per `ReplyIntent` (the intent their last answer took), for every intent
  of the definition's `wait_answer` steps (zeros included) and `(none)` (an answer no intent matched); empty
  for a definition without intents.

Every count is one `count_workflows` call, all at once. Visibility lags the flows by about a second.
There is no per-step Prometheus gauge on purpose: campaigns times steps labels would grow without bound.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from temporalio.client import Client

from scheduler.campaigns.campaign import is_campaign_id
from scheduler.campaigns.schedules import applied_campaign
from scheduler.campaigns.status import managed_schedule
from scheduler.errors import NoCampaign
from scheduler.flow.attributes import CURRENT_STEP, CUSTOMER_CONTACT, NO_INTENT
from scheduler.flow.contacts import redact
from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.models import FlowOutcome
from scheduler.store.deliveries import Deliveries
from scheduler.visibility import (
    campaign_query,
    intent_query,
    other_steps_query,
    outcome_query,
    started_query,
    step_query,
)

DEFAULT_SINCE = timedelta(days=7)
MAX_LISTED = 1000
"""Running flows listed at most to find the steps of older definitions (their counts are exact all the same)."""
UNMATCHED_SHOWN = 20
UNMATCHED_LISTED = 200
"""Flows looked at for `unmatched_replies`: the page shows the latest answers, not all of them."""


class CampaignStats(BaseModel):
    campaign_id: str
    since: datetime
    running: dict[str, int]
    """Flows running now, per step: the current definition's steps in order, then others still occupied."""
    outcomes: dict[FlowOutcome, int]
    """Flows ended since `since`, per outcome."""
    answered: int
    """Flows started since `since` whose customer answered (`ClientAnswered`)."""
    started: int
    """Flows started since `since`."""
    intents: dict[str, int] = {}
    """Flows started since `since` per intent their last answer took (`(none)`: no intent matched)."""
    deliveries: dict[str, dict[str, int]] = {}
    """Per message step, its messages by delivery status (`sent`, `delivered`, `undelivered`, `failed`), as the
    gateways' receipts last reported them since `since` (a message not yet reported counts as sent)."""


async def known_campaign_stats(
    client: Client, campaign_id: str, *, since: datetime | None = None, deliveries: Deliveries | None = None
) -> CampaignStats:
    """`campaign_stats` over the steps of the definition the campaign's schedule runs, in the file's order.

    Raises:
        NoCampaign: the campaign has no schedule of ours and no flow (a typo, most likely).
    """
    if not is_campaign_id(campaign_id):
        raise NoCampaign(campaign_id, running=False)
    managed = await managed_schedule(client, campaign_id)
    campaign = await applied_campaign(client, managed[0]) if managed else None
    steps, intents = (campaign.workflow.steps, intent_names(campaign.workflow)) if campaign else ((), ())
    stats = await campaign_stats(client, campaign_id, steps=steps, intents=intents, since=since, deliveries=deliveries)
    if managed is None and not (stats.started or any(stats.running.values()) or any(stats.outcomes.values())):
        if not (await client.count_workflows(campaign_query(campaign_id))).count:
            raise NoCampaign(campaign_id, running=False)
    return stats


async def campaign_stats(
    client: Client,
    campaign_id: str,
    *,
    steps: Iterable[str] = (),
    intents: Iterable[str] = (),
    since: datetime | None = None,
    deliveries: Deliveries | None = None,
) -> CampaignStats:
    """The counts of one campaign (`steps`, `intents`: its definition's, counted even when no flow is there
    (`intent_names`); `since` without an offset: UTC; `deliveries`: where its messages' statuses are kept)."""
    since = since or datetime.now(UTC) - DEFAULT_SINCE
    since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    steps = list(dict.fromkeys(steps))
    elsewhere = other_steps_query(campaign_id, steps)

    async def count(query: str) -> int:
        return (await client.count_workflows(query)).count

    async def at_steps(names: list[str]) -> dict[str, int]:
        found = await asyncio.gather(*(count(step_query(campaign_id, s)) for s in names))
        return dict(zip(names, found, strict=True))

    intents = list(intents)
    delivered = asyncio.to_thread(deliveries.by_step, campaign_id, since=since) if deliveries else asyncio.sleep(0, {})
    running_at, others, outcomes, started_n, answered_n, intent_counts, by_step = await asyncio.gather(
        at_steps(steps),
        count(elsewhere),
        asyncio.gather(*(count(outcome_query(campaign_id, since, o)) for o in FlowOutcome)),
        count(started_query(campaign_id, since)),
        count(started_query(campaign_id, since, answered=True)),
        asyncio.gather(*(count(started_query(campaign_id, since, intent=i)) for i in intents)),
        delivered,
    )
    if others:  # flows of older definitions, at steps the current one does not have, or at unsearchable steps
        listed = client.list_workflows(elsewhere, limit=MAX_LISTED)
        seen = Counter([e.typed_search_attributes.get(CURRENT_STEP) or "" async for e in listed])
        del seen[""]
        counted = await at_steps(sorted(seen))
        running_at |= {step: max(n, seen[step]) for step, n in counted.items()}  # a count is exact, if it finds any
    return CampaignStats(
        campaign_id=campaign_id,
        since=since,
        running=running_at,
        outcomes=dict(zip(FlowOutcome, outcomes, strict=True)),
        started=started_n,
        answered=answered_n,
        intents=dict(zip(intents, intent_counts, strict=True)),
        deliveries=by_step,
    )


def intent_names(definition: WorkflowDefinition) -> list[str]:
    """The intents of the definition's `wait_answer` steps, in file order, then `NO_INTENT`; none without intents."""
    names = [name for step in definition.steps.values() for name in step.intents]
    return [*dict.fromkeys(names), NO_INTENT] if names else []


class UnmatchedReply(BaseModel):
    """A customer's answer that no intent of its `wait_answer` matched: what the owner could add a phrase for."""

    at: datetime
    workflow_id: str
    step: str
    contact: str
    """The customer's first contact, masked (`redact`)."""
    text: str
    """The first `REPLY_SHOWN` characters of the answer, as the flow recorded it."""


async def unmatched_replies(client: Client, campaign_id: str, *, limit: int = UNMATCHED_SHOWN) -> list[UnmatchedReply]:
    """The campaign's latest answers that matched no intent, newest first, read from the memo of the flows whose
    last answer matched none (`ReplyIntent = "(none)"`): at most `UNMATCHED_LISTED` flows are looked at."""
    found: list[UnmatchedReply] = []
    async for execution in client.list_workflows(intent_query(campaign_id, NO_INTENT), limit=UNMATCHED_LISTED):
        steps = (await execution.memo()).get("steps") or []
        entry = next((s for s in reversed(steps) if isinstance(s, dict) and "reply" in s), None)
        if entry is None:
            continue
        contacts = execution.typed_search_attributes.get(CUSTOMER_CONTACT) or []
        found.append(
            UnmatchedReply(
                at=entry["at"],
                workflow_id=execution.id,
                step=entry["step"],
                contact=redact(contacts[0]) if contacts else "",
                text=str(entry["reply"]),
            )
        )
    return sorted(found, key=lambda r: r.at, reverse=True)[:limit]
