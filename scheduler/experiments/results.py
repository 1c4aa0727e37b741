"""A campaign's experiments, counted (`GET /campaigns/{id}/experiments`, `scheduler experiments ID`, the dashboard).

Per variant of each `split` step of the definition the campaign's schedule runs: flows entered, messaged and
answered are visibility counts by the `Variant` search attribute (with `Messaged`, `ClientAnswered`), all at
once; converted flows, conversions and revenue come from one store query over the attributed conversions
(`Conversions.by_variant`). Nothing lists the flows: the time grows with the variants, not with the flows.

A flow counts in the variant its `Variant` attribute names, which a flow writes with its state (before a wait
and when it ends): one still in the message step right after its split is counted a moment later. A flow that
passes two splits is counted in the later one's experiment only.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel
from temporalio.client import Client

from scheduler.campaigns.campaign import Campaign
from scheduler.campaigns.status import campaign_applied
from scheduler.errors import NoCampaign
from scheduler.experiments.verdict import ExperimentVerdict, VariantCounts, experiment_verdict
from scheduler.flow.definition import experiment_steps
from scheduler.store.conversions import Conversions, VariantConversions
from scheduler.visibility import variant_query


class VariantResult(BaseModel):
    name: str
    weight: int
    holdout: bool
    """No `go_to`: its flows end at the split, messaged by nothing (outcome `held_out`)."""
    entered: int
    """Flows the split put in this variant."""
    messaged: int
    """Those of them a customer message reached."""
    answered: int
    """Those of them whose customer answered."""
    converted: int
    """Those of them with a conversion attributed (see `[campaign] attribution_window`)."""
    conversions: int
    conversion_rate: float | None
    """`converted / entered`; None without flows."""
    revenue: dict[str, Decimal]
    """Attributed amounts per currency (never converted between currencies)."""
    revenue_per_flow: dict[str, Decimal]
    """`revenue / entered`, per currency, to the cent."""


class ExperimentResult(BaseModel):
    experiment: str
    step: str
    """The `split` step that runs it."""
    variants: list[VariantResult]
    verdict: ExperimentVerdict


class ExperimentsReport(BaseModel):
    campaign_id: str
    attribution_window: timedelta
    experiments: list[ExperimentResult]
    """In the order of their steps in the campaign file; empty when the campaign has no `split` step."""


async def campaign_experiments(client: Client, conversions: Conversions, campaign_id: str) -> ExperimentsReport:
    """The experiments of the definition the campaign's schedule runs, with their results so far.

    Raises:
        NoCampaign: no schedule of this tool runs that campaign.
    """
    campaign = await campaign_applied(client, campaign_id)
    if campaign is None:
        raise NoCampaign(campaign_id, running=False)
    return ExperimentsReport(
        campaign_id=campaign_id,
        attribution_window=campaign.campaign.attribution_window,
        experiments=await experiment_results(client, conversions, campaign),
    )


async def experiment_results(client: Client, conversions: Conversions, campaign: Campaign) -> list[ExperimentResult]:
    """The results of each experiment of `campaign`'s definition (none without a `split` step: nothing asked)."""
    steps = experiment_steps(campaign.workflow)
    if not steps:
        return []
    converted = await asyncio.to_thread(conversions.by_variant, campaign.campaign.id)
    by_variant = {row.variant: row for row in converted if row.variant is not None}
    return list(await asyncio.gather(*(_experiment(client, campaign, e, s, by_variant) for e, s in steps.items())))


async def _experiment(
    client: Client, campaign: Campaign, experiment: str, step: str, converted: dict[str, VariantConversions]
) -> ExperimentResult:
    variants = campaign.workflow.steps[step].variants

    async def count(query: str) -> int:
        return (await client.count_workflows(query)).count

    async def one(name: str) -> VariantResult:
        key = f"{experiment}:{name}"
        entered, messaged, answered = await asyncio.gather(
            count(variant_query(campaign.campaign.id, key)),
            count(variant_query(campaign.campaign.id, key, messaged=True)),
            count(variant_query(campaign.campaign.id, key, answered=True)),
        )
        bought = converted.get(key) or VariantConversions(variant=key)
        return VariantResult(
            name=name,
            weight=variants[name].weight,
            holdout=variants[name].go_to is None,
            entered=entered,
            messaged=messaged,
            answered=answered,
            converted=bought.converted_flows,
            conversions=bought.conversions,
            conversion_rate=bought.converted_flows / entered if entered else None,
            revenue=bought.revenue,
            revenue_per_flow={c: (a / entered).quantize(Decimal("0.01")) for c, a in bought.revenue.items()}
            if entered
            else {},
        )

    results = list(await asyncio.gather(*(one(name) for name in variants)))
    counts = [VariantCounts(r.name, r.weight, r.entered, r.converted, holdout=r.holdout) for r in results]
    return ExperimentResult(
        experiment=experiment, step=step, variants=results, verdict=experiment_verdict(experiment, counts)
    )
