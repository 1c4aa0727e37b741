"""`explicit_wait`: a durable sleep (the seed spelled it `explicity_wait`)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from scheduler.flow.durations import Duration
from scheduler.flow.nodes.registry import EventType, Flow, Node, NodeParams, register


class ExplicitWaitParams(NodeParams):
    duration: Duration = timedelta(minutes=1)


@register
class ExplicitWait(Node):
    name = "explicit_wait"
    aliases = ("explicity_wait",)
    Params = ExplicitWaitParams
    waits = True

    async def run(self, flow: Flow, params: ExplicitWaitParams) -> EventType:
        await workflow.sleep(params.duration, summary=f"explicit_wait {params.duration}")
        return EventType.SATISFIED
