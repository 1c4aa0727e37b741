"""The worker: runs the flow, campaign-run and keyword-answer workflows and their activities on the task queue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker

from scheduler.campaigns.fanout import FanoutActivities
from scheduler.config import Settings
from scheduler.delivery.activities import Activities
from scheduler.delivery.unsubscribe import links as unsubscribe_links
from scheduler.flow.workflows import AbandonedCartWorkflow, CampaignRunWorkflow, KeywordAnswerWorkflow
from scheduler.store import Store
from scheduler.store.consent import Consent

HEARTBEAT_EVERY = timedelta(seconds=1)
"""The most time between an activity's heartbeats to the server (its default: 80 % of the heartbeat timeout).
A cancellation reaches an activity only in a heartbeat's answer: a campaign stop must end a fan-out fast."""

WORKFLOWS: Sequence[type] = (AbandonedCartWorkflow, CampaignRunWorkflow, KeywordAnswerWorkflow)


def make_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    workflows: Sequence[type] = WORKFLOWS,
    store: Store | None = None,
    consent: Consent | None = None,
    **options: Any,
) -> Worker:
    """`store`: the database of suppressions, caps and stops that sends and fan-outs check; by default the
    configured one, opened here and closed when the worker's run ends. `consent`: another view of its
    suppression list (a benchmark's that checks nothing); by default the store's."""
    task_queue = task_queue or settings.temporal.task_queue
    plugins: list[SimplePlugin] = []
    if store is None:
        store = Store.open(settings.store_url)
        plugins.append(SimplePlugin("scheduler.store", run_context=lambda: _closing(store)))
    consent = consent or Consent(store)
    fanout = FanoutActivities(
        client,
        campaigns_dir=settings.campaigns.dir,
        task_queue=task_queue,
        consent=consent,
        quiet_hours=settings.compliance.quiet_hours,
    )
    activities = Activities(
        settings.channels,
        store=store,
        consent=consent,
        unsubscribe=unsubscribe_links(settings),
        compliance=settings.compliance,
        public_url=settings.webhooks.public_url,
    )
    # The template renderer's child processes end with the worker's run.
    plugins.append(SimplePlugin("scheduler.delivery.renderer", run_context=activities.renderer.running))
    options.setdefault("max_heartbeat_throttle_interval", HEARTBEAT_EVERY)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=[*activities.all(), *fanout.all()],
        plugins=plugins,
        **options,
    )


@asynccontextmanager
async def _closing(store: Store) -> AsyncIterator[None]:
    try:
        yield
    finally:
        store.close()
