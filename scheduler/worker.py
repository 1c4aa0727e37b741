"""The worker: runs the flow workflow and its activities on the task queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from scheduler.activities import Activities
from scheduler.config import Settings
from scheduler.workflows import AbandonedCartWorkflow, CampaignRunWorkflow

WORKFLOWS: Sequence[type] = (AbandonedCartWorkflow, CampaignRunWorkflow)


def make_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    workflows: Sequence[type] = WORKFLOWS,
    **options: Any,
) -> Worker:
    activities = Activities(settings.channels)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.task_queue,
        workflows=list(workflows),
        activities=activities.all(),
        **options,
    )
