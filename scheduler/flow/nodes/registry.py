"""The node registry: nodes register by decorator; the engine and validation look them up by name.

A node runs on the workflow side (deterministic: timers, signals) and calls activities for its
side effects. It returns one of the three event types, which the step's `condition` maps to the next step.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from scheduler.flow.signals import Reply

if TYPE_CHECKING:
    from temporalio.common import RetryPolicy


class EventType(StrEnum):
    SATISFIED = "condition_satisfied"
    NOT_SATISFIED = "condition_not_satisfied"
    TIMEOUT = "condition_timeout"


class ActivityResult(BaseModel):
    """What a node's activity gives back: the event the step gives, and why."""

    event: EventType = EventType.SATISFIED
    detail: str = ""
    suppressed: bool = False
    """The customer's contact is suppressed (opted out): nothing was sent, and the flow ends `opted_out`."""
    capped_until: datetime | None = None
    """Not sent: a frequency cap holds the contact until then (`compliance.frequency_caps`)."""
    stopped: bool = False
    """Nothing was done: the campaign was stopped since the flow started, which ends `stopped`."""
    carrier_opt_out: bool = False
    """`suppressed` because the carrier says the customer opted out (Twilio 21610): the flow ends `opted_out`, also
    from a step whose channel list has more channels."""
    message_id: str | None = None
    """A customer message went: its idempotency key, which its delivery receipts name (`DeliveryStatus`)."""
    channel: str | None = None
    """The channel it went through."""


class NodeParams(BaseModel):
    """Base of every node's params model: unknown keys are errors, so typos are caught."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Flow(Protocol):
    """What a node may do with the flow it runs in (implemented by `engine.FlowRun`)."""

    async def call_activity(
        self,
        name: str,
        params: NodeParams,
        *,
        timeout: timedelta = ...,
        retry: RetryPolicy,
        frequency_capped: bool = ...,
    ) -> ActivityResult: ...

    async def send_to_customer(self, name: str, params: NodeParams, *, retry: RetryPolicy) -> EventType: ...

    async def wait_for_replies(self, timeout: timedelta) -> list[Reply] | None: ...

    def mark_answered(self) -> None: ...

    def mark_opted_out(self) -> None: ...

    def take_intent(self, replies: list[Reply]) -> None:
        """Pick the current `wait_answer` step's intent the replies ask for (nothing, if it has no intents)."""

    def choose_variant(self, experiment: str | None) -> None:
        """Put the flow in a variant of the current `split` step (`experiment`: its name; None: the step's)."""


class Node:
    """Base class of nodes. Subclasses set `name`, `Params`, `events` and implement `run`."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[NodeParams]] = NodeParams
    events: ClassVar[frozenset[EventType]] = frozenset({EventType.SATISFIED})
    """The event types this node can give, so validation can flag conditions that never fire."""
    waits: ClassVar[bool] = False
    """True if the node waits (a timer, a signal): the flow writes its state first (`writes_state_first`)."""

    def writes_state_first(self, params: Any, revision: int) -> bool:
        """Whether the flow writes its state (memo, `CurrentStep`) before the step, so it shows where a flow
        spends long; `revision`: the flow's `FlowInput.revision`, whose history must keep its writes."""
        return self.waits

    async def run(self, flow: Flow, params: Any) -> EventType:
        raise NotImplementedError


_nodes: dict[str, Node] = {}
_lock = threading.Lock()
N = TypeVar("N", bound=type[Node])


def register(cls: N) -> N:
    """Class decorator: make the node available under its name and aliases."""
    node = cls()
    with _lock:
        for name in (cls.name, *cls.aliases):
            if name in _nodes:
                raise ValueError(f"node name {name!r} is already registered by {type(_nodes[name]).__name__}")
            _nodes[name] = node
    return cls


def get_node(name: str) -> Node | None:
    with _lock:
        return _nodes.get(name)


def node_names() -> list[str]:
    """Canonical names (aliases left out), sorted."""
    with _lock:
        return sorted({n.name for n in _nodes.values()})


def canonical_name(name: str) -> str:
    node = get_node(name)
    return node.name if node else name
