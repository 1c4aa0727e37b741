"""Temporal workflows. Sandbox-safe: no IO here, helpers imported as pass-through."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from scheduler.engine import FlowRun
    from scheduler.errors import DefinitionError
    from scheduler.models import FlowInput, FlowStatus, Reply

CLIENT_ANSWERED_SIGNAL = "client-answered"
STATUS_QUERY = "status"


@workflow.defn(name="AbandonedCartWorkflow", failure_exception_types=[DefinitionError])
class AbandonedCartWorkflow:
    """Runs the definition it was started with, step by step (so a run is pinned to it).

    Signal `client-answered` (optional `Reply` payload; a repeated `reply_id` is ignored) feeds
    `wait_answer` steps. Query `status` gives the current step, the path so far, the number of
    distinct replies, the definition version and, at the end, the outcome. The memo `steps` and the
    search attribute `CurrentStep` are brought up to date before every step that waits (a timer, a
    signal, webhook retries) and when the flow ends.
    """

    @workflow.init
    def __init__(self, flow: FlowInput) -> None:
        self._flow = FlowRun(flow)

    @workflow.run
    async def run(self, flow: FlowInput) -> FlowStatus:
        return await self._flow.run()

    @workflow.signal(name=CLIENT_ANSWERED_SIGNAL)
    def client_answered(self, reply: Reply | None = None) -> None:
        self._flow.add_reply(reply or Reply())

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> FlowStatus:
        return self._flow.status()


SIGNALS = frozenset({CLIENT_ANSWERED_SIGNAL})
"""Signal names the API accepts for `/send-signal`."""
