"""A definition as a graph: a Mermaid flowchart (`scheduler graph`) and an SVG picture (the dashboard).

Edges are labelled with the events that take them (like the seed's README), a `split`'s with its variants' names
and weights, a `wait_answer`'s intents with their names; both come from `edges`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from scheduler.flow.definition import WorkflowDefinition
from scheduler.flow.nodes import EventType, get_node
from scheduler.flow.nodes.registry import canonical_name


@dataclass(frozen=True)
class Edge:
    source: str
    target: str | None
    """A step (perhaps a missing one), or None: the flow ends."""
    events: tuple[str, ...]
    """The events that take it (a split's: its variant, `name (weight)`); none shown when it is the only way on."""


def edges(definition: WorkflowDefinition) -> list[Edge]:
    """Every edge, step by step: first its intents', then the condition's, then `go_to` (or the end) for the other
    events; a split's one per variant (a holdout's to the end)."""
    out: list[Edge] = []
    for name, step in definition.steps.items():
        if step.variants:
            out += [Edge(name, v.go_to, (f"{variant} ({v.weight})",)) for variant, v in step.variants.items()]
            continue
        out += [Edge(name, intent.go_to, (intent_name,)) for intent_name, intent in step.intents.items()]
        node = get_node(step.node)
        events = node.events if node else frozenset(EventType)
        routed = {e: target for e in EventType if step.condition and (target := step.condition.next_step(e))}
        out += [Edge(name, target, (event.value,)) for event, target in routed.items()]
        rest = [e for e in EventType if e in events and e not in routed]
        if rest:
            out.append(Edge(name, step.go_to, tuple(e.value for e in rest) if routed else ()))
    return out


def mermaid(definition: WorkflowDefinition) -> str:
    ids = {name: _node_id(name, i) for i, name in enumerate(definition.steps)}
    out = ["flowchart TD", f"    start([Start]) --> {ids.get(definition.start_step, 'missing')}"]
    out += [
        f'    {ids[name]}["{_label(name)}<br/>{_label(canonical_name(step.node))}"]'
        for name, step in definition.steps.items()
    ]
    ends = 0
    for edge in edges(definition):
        label = f"|{'<br/>'.join(edge.events)}|" if edge.events else ""
        if edge.target is None:
            ends += 1
            target = f"end{ends}([End])"
        else:
            target = _target(ids, edge.target)
        out.append(f"    {ids[edge.source]} -->{label} {target}")
    return "\n".join(out) + "\n"


def _target(ids: dict[str, str], name: str) -> str:
    if name in ids:
        return ids[name]
    safe = re.sub(r"\W", "_", name)
    return f'missing_{safe}["{_label(name)} (missing)"]'


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def _node_id(name: str, index: int) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in ("end", "start") else f"s{index}"


# The dashboard's picture: layered top-down, each step at its longest distance from the start.

_W, _H, _GAP_X, _GAP_Y = 190, 58, 40, 64


def svg(
    definition: WorkflowDefinition, *, counts: Mapping[str, int] | None = None, links: Mapping[str, str] | None = None
) -> str:
    """The flow as SVG: a box per step (its name, its node, and `counts[step]` flows waiting there, linked to
    `links[step]`), Start and End, and the edges with their events. Drawn here: no script, no CDN."""
    counts, links = counts or {}, links or {}
    depth = dict.fromkeys(definition.steps, 1)
    graph = edges(definition)
    for _ in definition.steps:  # a DAG (validated): relaxing len(steps) times settles every longest path
        for e in graph:
            if e.target in depth:
                depth[e.target] = max(depth[e.target], depth[e.source] + 1)
    # One arrow per pair of boxes (the events of parallel edges joined); each way to the end its own End.
    arrows: dict[tuple[str, str], list[str]] = {("(start)", definition.start_step): []}
    terminals = {"(start)": 0}
    for e in graph:
        target = e.target
        if target is None:
            target = f"(end{len(terminals)})"
            terminals[target] = depth[e.source] + 1
        arrows.setdefault((e.source, target), []).extend(e.events)
    layers: dict[int, list[str]] = {}
    for name, level in [*depth.items(), *terminals.items()]:
        layers.setdefault(level, []).append(name)
    bottom = max(layers)
    width = max(len(names) for names in layers.values()) * (_W + _GAP_X) + _GAP_X
    at: dict[str, tuple[float, float]] = {}
    for level, names in layers.items():
        for i, name in enumerate(names):
            at[name] = ((i + 0.5) * width / len(names), 20 + level * (_H + _GAP_Y))
    height = 20 + bottom * (_H + _GAP_Y) + _H + 20

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" role="img" aria-label="the flow of steps">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>',
    ]
    for (source, target), events in arrows.items():
        if source not in at or target not in at:
            continue  # a missing step: `validate` reports it
        (x1, y1), (x2, y2) = at[source], at[target]
        y1, y2 = y1 + _H, y2 + (_H / 2 - 18 if target.startswith("(end") else 0)
        parts.append(
            f'<path d="M {x1:.0f} {y1:.0f} C {x1:.0f} {y1 + 30:.0f}, {x2:.0f} {y2 - 30:.0f}, {x2:.0f} {y2:.0f}" '
            'fill="none" stroke="#667" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
        if events:
            label = escape(", ".join(e.removeprefix("condition_") for e in events))
            parts.append(
                f'<text class="edge" x="{(x1 + x2) / 2 + 4:.0f}" y="{(y1 + y2) / 2:.0f}" font-size="11" '
                f'fill="#445">{label}</text>'
            )
    for name in terminals:
        x, y = at[name]
        parts.append(
            f'<g class="terminal"><ellipse cx="{x:.0f}" cy="{y + _H / 2:.0f}" rx="44" ry="18" fill="#eef" '
            f'stroke="#667"/><text x="{x:.0f}" y="{y + _H / 2 + 4:.0f}" text-anchor="middle" font-size="13">'
            f"{'Start' if name == '(start)' else 'End'}</text></g>"
        )
    for name, step in definition.steps.items():
        x, y = at[name]
        n = counts.get(name, 0)
        box = (
            f'<g class="step" data-step="{escape(name)}"><title>{escape(name)}: {n} flow(s) running here</title>'
            f'<rect x="{x - _W / 2:.0f}" y="{y:.0f}" width="{_W}" '
            f'height="{_H}" rx="8" fill="{"#fff4d6" if n else "#fff"}" stroke="#334"/>'
            f'<text x="{x - _W / 2 + 10:.0f}" y="{y + 22:.0f}" font-size="14" font-weight="bold">{escape(name)}</text>'
            f'<text x="{x - _W / 2 + 10:.0f}" y="{y + 42:.0f}" font-size="12" fill="#556">'
            f"{escape(canonical_name(step.node))}</text>"
            f'<text class="count" x="{x + _W / 2 - 10:.0f}" y="{y + 33:.0f}" text-anchor="end" font-size="20" '
            f'fill="{"#a60" if n else "#aab"}">{n}</text></g>'
        )
        link = links.get(name)
        parts.append(f'<a href="{escape(link)}" target="_blank">{box}</a>' if link else box)
    parts.append("</svg>")
    return "".join(parts)
