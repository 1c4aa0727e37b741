"""A conversion arriving (`/webhooks/conversions`, `scheduler convert`): recorded, signalled to the buyer's
running flows, and attributed to campaign flows, written down then.

A conversion is attributed to a flow when the flow's cart or customer is the conversion's and the flow
started within its campaign's `attribution_window` (default 5 days) before the purchase. It counts from the
flow's start, whatever the flow did since: every variant and the holdout alike (intent to treat), and a
flow that ended, by the conversion (`exit_on`) or otherwise, still gets it. Per campaign one flow gets it,
the latest started, so a campaign counts each purchase once.

Deciding this once, at conversion time, from one visibility lookup of the buyer's flows (and a look at the
schedules of their campaigns, for their windows), keeps a campaign's results a sum over the store
(`scheduler.store.conversions`) rather than a scan of every flow it started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta

from temporalio.client import Client

from scheduler.campaigns.campaign import DEFAULT_ATTRIBUTION_WINDOW, MAX_ATTRIBUTION_WINDOW
from scheduler.campaigns.status import campaign_applied
from scheduler.config import Settings
from scheduler.errors import NoFlowForConversion, NoFlowForReply
from scheduler.flow.attributes import CAMPAIGN_ID, CART_ID, CUSTOMER_ID, VARIANT
from scheduler.flow.signals import Conversion
from scheduler.replies.routing import FlowTarget, route_conversion
from scheduler.store.conversions import AttributedFlow, ConversionRecord, Conversions
from scheduler.visibility import buyer_query

log = logging.getLogger(__name__)

MAX_LISTED = 1000
"""At most this many of a buyer's flows are looked at (the latest started first): far more than one purchase's."""


async def convert(
    client: Client, conversions: Conversions, settings: Settings, conversion: ConversionRecord
) -> list[str]:
    """Record `conversion`, signal `cart-converted` to the running flows of its cart (else its customer), then
    attribute it (after routing, which waits for visibility to list flows started a moment ago); the flows
    signalled, sorted. A redelivery (a recorded id) is routed and attributed as its first record says.

    Raises:
        NoFlowForConversion: no running flow matched within `webhooks.route_timeout`; the conversion is recorded
            and attributed all the same.
    """
    stored, _ = await asyncio.to_thread(conversions.record, conversion)
    target = FlowTarget(cart_id=stored.cart_id, customer_id=stored.customer_id)
    signal = Conversion(
        conversion_id=stored.conversion_id,
        cart_id=stored.cart_id,
        customer_id=stored.customer_id,
        received_at=stored.received_at,
    )
    try:
        signaled = await route_conversion(
            client, target=target, conversion=signal, timeout=settings.webhooks.route_timeout
        )
    except NoFlowForReply:
        signaled = []
    await attribute(client, conversions, stored)
    if not signaled:
        log.warning("conversion %s for %s matched no running flow", stored.conversion_id, target)
        raise NoFlowForConversion(str(target))
    log.info("conversion %s for %s went to %s", stored.conversion_id, target, ", ".join(signaled))
    return signaled


def attributable(
    flows: Iterable[AttributedFlow], conversion: ConversionRecord, windows: Mapping[str, timedelta]
) -> list[AttributedFlow]:
    """Of a buyer's flows, those `conversion` is attributed to: per campaign the latest started within the
    campaign's window (`windows`, else the default) before the purchase, both ends included; by campaign id."""
    at = conversion.occurred_at
    latest: dict[str, AttributedFlow] = {}
    for flow in flows:
        window = windows.get(flow.campaign_id, DEFAULT_ATTRIBUTION_WINDOW)
        if not at - window <= flow.started_at <= at:
            continue
        best = latest.get(flow.campaign_id)
        if best is None or (flow.started_at, flow.workflow_id) > (best.started_at, best.workflow_id):
            latest[flow.campaign_id] = flow
    return [latest[campaign_id] for campaign_id in sorted(latest)]


async def attribute(client: Client, conversions: Conversions, conversion: ConversionRecord) -> list[AttributedFlow]:
    """Attribute a recorded conversion to its campaigns' flows (`attributable`), read from visibility, each
    campaign's window from the campaign its schedule runs (no schedule of ours: the default window), as its
    results are; the flows it is attributed to.

    Again for the same conversion (a redelivery) it adds nothing, but what an earlier attempt missed (Temporal
    was unavailable halfway)."""
    buyer = await _flows_of_buyer(client, conversion, MAX_ATTRIBUTION_WINDOW)
    campaign_ids = sorted({flow.campaign_id for flow in buyer})
    found = await asyncio.gather(*(_window(client, campaign_id) for campaign_id in campaign_ids))
    windows = {campaign_id: window for campaign_id, window in zip(campaign_ids, found, strict=True) if window}
    flows = attributable(buyer, conversion, windows)
    await asyncio.to_thread(conversions.attribute, conversion, flows)
    return flows


async def _window(client: Client, campaign_id: str) -> timedelta | None:
    """The `attribution_window` of the campaign its schedule runs; None without a schedule of ours."""
    campaign = await campaign_applied(client, campaign_id)
    return campaign.campaign.attribution_window if campaign else None


async def _flows_of_buyer(client: Client, conversion: ConversionRecord, window: timedelta) -> list[AttributedFlow]:
    """The campaign flows of the conversion's cart or customer started within `window` before it."""
    at = conversion.occurred_at
    query = buyer_query(cart_id=conversion.cart_id, customer_id=conversion.customer_id, since=at - window, until=at)
    flows: list[AttributedFlow] = []
    async for execution in client.list_workflows(query, limit=MAX_LISTED):
        attributes = execution.typed_search_attributes
        campaign_id = attributes.get(CAMPAIGN_ID)
        # Exact re-check: a SQL visibility store may match more than asked (see `scheduler.visibility.quote`).
        buyer = (conversion.cart_id is not None and attributes.get(CART_ID) == conversion.cart_id) or (
            conversion.customer_id is not None and attributes.get(CUSTOMER_ID) == conversion.customer_id
        )
        if campaign_id and buyer:
            flows.append(AttributedFlow(campaign_id, execution.id, attributes.get(VARIANT), execution.start_time))
    return flows
