"""Built-in nodes. Importing this package registers them all."""

from scheduler.flow.nodes import explicit_wait, notify_creator, send_message, split, wait_answer, webhook
from scheduler.flow.nodes.registry import (
    ActivityResult,
    EventType,
    Flow,
    Node,
    NodeParams,
    get_node,
    node_names,
    register,
)

__all__ = [
    "ActivityResult",
    "EventType",
    "Flow",
    "Node",
    "NodeParams",
    "explicit_wait",
    "get_node",
    "node_names",
    "notify_creator",
    "register",
    "send_message",
    "split",
    "wait_answer",
    "webhook",
]
