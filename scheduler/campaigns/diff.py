"""What an update changes, in words: the definition (steps, edges, nodes, params, templates, variants, intents),
the delivery policy and the schedule, as `plan` and `apply` show it for each update.

Pure: two campaigns in, a list of `DiffEntry` out, in a fixed order (the start step and `exit_on`, steps removed,
steps added, then each kept step in the new file's order, then `[delivery]`, `[schedule]` and the rest), so a
review of the same change always reads the same.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from scheduler.campaigns.campaign import Campaign
from scheduler.errors import clip
from scheduler.flow.definition import StepDefinition, WorkflowDefinition
from scheduler.flow.models import DeliveryTerms
from scheduler.flow.nodes import EventType, get_node

TEMPLATE_KEYS = ("template", "subject")
"""Message params shown as a text diff rather than as a value."""
MAX_DIFF_LINES = 8
"""Lines of a template's text diff; the rest are counted."""
MAX_LINE = 120
"""Characters of a line of a template diff, or of a value, shown."""
MAX_ENTRIES = 200
"""Entries of one campaign's diff; the rest are counted in a last entry (a file rewritten wholesale)."""


@dataclass(frozen=True)
class DiffEntry:
    """One change, said in a line (`text`), with a short text diff for a template (`lines`)."""

    kind: str
    """`start_step`, `exit_on`, `step_added`, `step_removed`, `edge`, `node`, `params`, `template`, `variants`,
    `intents`, `delivery`, `schedule`, `campaign`, `audience`, or `more` (the entries left out)."""
    step: str | None
    """The step it is about; None for a campaign-wide change."""
    text: str
    lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "step": self.step, "text": self.text}
        if self.lines:
            out["lines"] = self.lines
        return out


def campaign_diff(old: Campaign, new: Campaign) -> list[DiffEntry]:
    """Everything `new` changes in `old`, in words (empty: no change that matters to a review)."""
    entries = definition_diff(old.workflow, new.workflow)
    entries += delivery_diff(old, new)
    entries += _table_diff("schedule", _dump(old.schedule), _dump(new.schedule))
    entries += _table_diff("audience", _dump(old.audience), _dump(new.audience))
    entries += _table_diff("campaign", _dump(old.campaign), _dump(new.campaign))
    if len(entries) > MAX_ENTRIES:
        left = len(entries) - MAX_ENTRIES
        entries = [*entries[:MAX_ENTRIES], DiffEntry("more", None, f"…and {left:,} more changes")]
    return entries


def definition_diff(old: WorkflowDefinition, new: WorkflowDefinition) -> list[DiffEntry]:
    """The changes of the `[workflow]` table: start step, `exit_on`, steps removed and added, each kept step's."""
    out: list[DiffEntry] = []
    if old.start_step != new.start_step:
        out.append(DiffEntry("start_step", None, f"start_step: {new.start_step} (was {old.start_step})"))
    if old.exit_on != new.exit_on:
        out.append(DiffEntry("exit_on", None, f"exit_on: {_names(new.exit_on)} (was {_names(old.exit_on)})"))
    out += [
        DiffEntry("step_removed", name, f"step {name} removed (was {step.node})")
        for name, step in old.steps.items()
        if name not in new.steps
    ]
    for name, step in new.steps.items():
        if name not in old.steps:
            leads = leads_to(step)
            out.append(DiffEntry("step_added", name, f"step {name} added: {step.node}, leads {leads}"))
    for name, step in new.steps.items():
        if name in old.steps:
            out += step_diff(name, old.steps[name], step)
    return out


def step_diff(name: str, old: StepDefinition, new: StepDefinition) -> list[DiffEntry]:
    """A kept step's changes: node, edges (re-pointed, added, removed), params, templates, variants, intents."""
    out: list[DiffEntry] = []
    if old.node != new.node:
        out.append(DiffEntry("node", name, f"{name}: node {new.node} (was {old.node})"))
    for label, before, after in route_changes(old, new):
        out.append(DiffEntry("edge", name, f"{name}: {label} → {after or 'the end'} (was {before or 'the end'})"))
    for key in _union(old.params, new.params):
        before, after = old.params.get(key), new.params.get(key)
        if before == after:
            continue
        if key in TEMPLATE_KEYS:
            out.append(DiffEntry("template", name, f"{name}: {key} changed", template_diff(before, after)))
        else:
            text = f"{name}: params.{key} {_value(after)} (was {_value(before)})"
            out.append(DiffEntry("params", name, text))
    old_weights, new_weights = old.weights(), new.weights()
    for variant in _union(old_weights, new_weights):
        before_w, after_w = old_weights.get(variant), new_weights.get(variant)
        if before_w is None:
            out.append(DiffEntry("variants", name, f"{name}: variant {variant} added (weight {after_w})"))
        elif after_w is None:
            out.append(DiffEntry("variants", name, f"{name}: variant {variant} removed (was weight {before_w})"))
        elif before_w != after_w:
            out.append(DiffEntry("variants", name, f"{name}: variant {variant} weight {after_w} (was {before_w})"))
    old_intents, new_intents = old.intents, new.intents
    for intent in _union(old_intents, new_intents):
        if intent not in new_intents:
            out.append(DiffEntry("intents", name, f"{name}: intent {intent} removed"))
        elif intent not in old_intents:
            phrases = _value(new_intents[intent].match)
            out.append(DiffEntry("intents", name, f"{name}: intent {intent} added (match {phrases})"))
        elif old_intents[intent].match != new_intents[intent].match:
            before, after = _value(old_intents[intent].match), _value(new_intents[intent].match)
            out.append(DiffEntry("intents", name, f"{name}: intent {intent} match {after} (was {before})"))
    if list(old_intents) != list(new_intents) and set(old_intents) == set(new_intents):
        order = ", ".join(new_intents)
        out.append(DiffEntry("intents", name, f"{name}: intents tried in a new order ({order})"))
    return out


def template_diff(before: Any, after: Any) -> list[str]:
    """A short text diff of two templates (`- ` old lines, `+ ` new ones), at most `MAX_DIFF_LINES` lines."""
    old_lines = str(before).splitlines() if before is not None else ["(the node's default)"]
    new_lines = str(after).splitlines() if after is not None else ["(the node's default)"]
    lines = [clip(line, MAX_LINE) for line in difflib.ndiff(old_lines, new_lines) if line.startswith(("- ", "+ "))]
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"…and {len(lines) - MAX_DIFF_LINES} more lines"]
    return lines


def _policy_value(key: str, value: Any) -> str:
    if key == "quiet_hours" and value in (None, ""):
        return "none" if value == "" else "the service's (compliance.quiet_hours)"
    return _value(value)


def delivery_diff(old: Campaign, new: Campaign) -> list[DiffEntry]:
    """`[delivery]` changes, a missing table read as its defaults (which is what the flows get)."""
    before = (old.delivery or DeliveryTerms()).model_dump(mode="json")
    after = (new.delivery or DeliveryTerms()).model_dump(mode="json")
    out: list[DiffEntry] = []
    for key in _union(before, after):
        if before.get(key) != after.get(key):
            was, now = _policy_value(key, before.get(key)), _policy_value(key, after.get(key))
            out.append(DiffEntry("delivery", None, f"delivery.{key}: {now} (was {was})"))
    return out


def _table_diff(table: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[DiffEntry]:
    """Key by key changes of a table other than `[workflow]` and `[delivery]` (added or removed as a whole: one)."""
    if before == after:
        return []
    if before is None or after is None:
        return [DiffEntry(table, None, f"[{table}] {'added' if before is None else 'removed'}")]
    return [
        DiffEntry(table, None, f"{table}.{key}: {_value(after.get(key))} (was {_value(before.get(key))})")
        for key in _union(before, after)
        if before.get(key) != after.get(key)
    ]


def _dump(model: Any) -> dict[str, Any] | None:
    return None if model is None else model.model_dump(mode="json")


def _union(old: Any, new: Any) -> list[str]:
    """Keys of `new` in its order, then those only `old` has, in its order."""
    return [*new, *(k for k in old if k not in new)]


_EVENT_WORDS = {
    EventType.SATISFIED: "satisfied",
    EventType.NOT_SATISFIED: "not_satisfied",
    EventType.TIMEOUT: "timeout",
}
"""The event types by the `condition` key that routes them."""


def routes(step: StepDefinition) -> dict[str, str | None]:
    """Where a step leads (None: the flow ends), by what takes it there: each event its node gives (`timeout`),
    resolved as the engine does (the condition's target, else `go_to`), each variant and intent (`intent buy`)."""
    if step.variants:  # a split goes on by its variants alone
        return {f"variant {name}": v.go_to for name, v in step.variants.items()}
    node = get_node(step.node)
    out = {word: step.next_step(event) for event, word in _EVENT_WORDS.items() if node is None or event in node.events}
    return out | {f"intent {name}": i.go_to for name, i in step.intents.items()}


def route_changes(old: StepDefinition, new: StepDefinition) -> list[tuple[str, str | None, str | None]]:
    """(label, old target, new target) of each route both have that `new` re-points; events re-pointed alike are
    one `go_to` when they are all the step's events (`go_to → b (was a)`), else joined (`satisfied/timeout`)."""
    before, after = routes(old), routes(new)
    changed = [(k, before[k], after[k]) for k in after if k in before and before[k] != after[k]]
    return _grouped(changed, events=[k for k in after if k in _EVENT_WORDS.values()])


def _grouped(
    changed: list[tuple[str, str | None, str | None]], *, events: list[str]
) -> list[tuple[str, str | None, str | None]]:
    groups: dict[tuple[str | None, str | None], list[str]] = {}
    out: list[tuple[str, str | None, str | None]] = []
    for label, was, now in changed:
        if label in events:
            groups.setdefault((was, now), []).append(label)
        else:
            out.append((label, was, now))
    merged = [
        ("go_to" if len(labels) > 1 and labels == events else "/".join(labels), was, now)
        for (was, now), labels in groups.items()
    ]
    return merged + out


def leads_to(step: StepDefinition, labels: list[str] | None = None) -> str:
    """Where a step leads, in words: `to bye` when every route goes there, else `to bye on not_satisfied/timeout,
    to send_link on satisfied`; only the routes named in `labels`, if given; `nowhere` for a step that ends the flow."""
    all_routes = routes(step)
    shown = {k: t for k, t in all_routes.items() if labels is None or k in labels}
    if not shown or (all(t is None for t in all_routes.values()) and labels is None):
        return "nowhere (the flow ends after it)"
    if labels is None and len(set(all_routes.values())) == 1:
        return f"to {next(iter(all_routes.values())) or 'the end'}"
    events: dict[str | None, list[str]] = {}
    others: list[str] = []
    for label, target in shown.items():
        if label in _EVENT_WORDS.values():
            events.setdefault(target, []).append(label)
        else:
            others.append(f"to {target or 'the end'} for {label}")
    said = [f"to {target or 'the end'} on {'/'.join(labels_)}" for target, labels_ in events.items()]
    return ", ".join(said + others)


def _names(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    return clip(json.dumps(value, ensure_ascii=False), MAX_LINE)
