"""A definition as a Mermaid flowchart, edges labelled with the event that takes them (like the seed's README)."""

from __future__ import annotations

import re

from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.nodes import EventType, get_node
from scheduler.flow.nodes.registry import canonical_name


def mermaid(definition: WorkflowDefinition) -> str:
    ids = {name: _node_id(name, i) for i, name in enumerate(definition.steps)}
    out = ["flowchart TD", f"    start([Start]) --> {ids.get(definition.start_step, 'missing')}"]
    out += [
        f'    {ids[name]}["{_label(name)}<br/>{_label(canonical_name(step.node))}"]'
        for name, step in definition.steps.items()
    ]
    ends = 0
    for name, step in definition.steps.items():
        node = get_node(step.node)
        events = node.events if node else frozenset(EventType)
        routed = {e: target for e in EventType if step.condition and (target := step.condition.next_step(e))}
        out += [f"    {ids[name]} -->|{event.value}| {_target(ids, target)}" for event, target in routed.items()]
        rest = [e for e in EventType if e in events and e not in routed]
        if not rest:
            continue
        label = "" if not routed else f"|{'<br/>'.join(e.value for e in rest)}|"
        if step.go_to:
            out.append(f"    {ids[name]} -->{label} {_target(ids, step.go_to)}")
        else:
            ends += 1
            out.append(f"    {ids[name]} -->{label} end{ends}([End])")
    return "\n".join(out) + "\n"


def _target(ids: dict[str, str], name: str | None) -> str:
    if name in ids:
        return ids[name]
    safe = re.sub(r"\W", "_", name or "")
    return f'missing_{safe}["{_label(name or "")} (missing)"]'


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def _node_id(name: str, index: int) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in ("end", "start") else f"s{index}"
