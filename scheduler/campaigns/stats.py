"""A campaign's funnel on demand (`GET /campaigns/{id}/stats`, `scheduler stats`), counted by Temporal's visibility.

- `running`: flows running now, per `CurrentStep`: one count per step of the definition the campaign's
  schedule runs (zeros included), then one for the flows at any other step (older definitions still
  running); if there are some, their steps are listed (at most `MAX_LISTED` flows) and counted one by one.
  A step name visibility cannot look up (on the dev server one holding `"` or `\\`, see
  `scheduler.visibility.quote`) matches no `CurrentStep = …` but is not left out by `NOT IN` either, so its
  flows are among those listed: the listing counts them.
- `outcomes`: flows that ended since `since`, per `Outcome` (every outcome named, zeros included).
- `started`: flows started since `since`; `answered`: those of them with `ClientAnswered = true`.

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
from scheduler.flow.attributes import CURRENT_STEP
from scheduler.flow.models import FlowOutcome
from scheduler.visibility import campaign_query, other_steps_query, outcome_query, started_query, step_query

DEFAULT_SINCE = timedelta(days=7)
MAX_LISTED = 1000
"""Running flows listed at most to find the steps of older definitions (their counts are exact all the same)."""


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


async def known_campaign_stats(client: Client, campaign_id: str, *, since: datetime | None = None) -> CampaignStats:
    """`campaign_stats` over the steps of the definition the campaign's schedule runs, in the file's order.

    Raises:
        NoCampaign: the campaign has no schedule of ours and no flow (a typo, most likely).
    """
    if not is_campaign_id(campaign_id):
        raise NoCampaign(campaign_id, running=False)
    managed = await managed_schedule(client, campaign_id)
    campaign = await applied_campaign(client, managed[0]) if managed else None
    stats = await campaign_stats(client, campaign_id, steps=campaign.workflow.steps if campaign else (), since=since)
    if managed is None and not (stats.started or any(stats.running.values()) or any(stats.outcomes.values())):
        if not (await client.count_workflows(campaign_query(campaign_id))).count:
            raise NoCampaign(campaign_id, running=False)
    return stats


async def campaign_stats(
    client: Client, campaign_id: str, *, steps: Iterable[str] = (), since: datetime | None = None
) -> CampaignStats:
    """The counts of one campaign (`steps`: its definition's, counted even when no flow is there; `since`
    without an offset: UTC)."""
    since = since or datetime.now(UTC) - DEFAULT_SINCE
    since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    steps = list(dict.fromkeys(steps))
    elsewhere = other_steps_query(campaign_id, steps)

    async def count(query: str) -> int:
        return (await client.count_workflows(query)).count

    async def at_steps(names: list[str]) -> dict[str, int]:
        found = await asyncio.gather(*(count(step_query(campaign_id, s)) for s in names))
        return dict(zip(names, found, strict=True))

    running_at, others, outcomes, started_n, answered_n = await asyncio.gather(
        at_steps(steps),
        count(elsewhere),
        asyncio.gather(*(count(outcome_query(campaign_id, since, o)) for o in FlowOutcome)),
        count(started_query(campaign_id, since)),
        count(started_query(campaign_id, since, answered=True)),
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
    )
