"""What `plan` and `apply` show for an update besides its name: the change in words (`diff`) and the flows in flight.

Flows in flight are counted from visibility: the campaign's running flows per `DefinitionVersion` and, within
each, per `CurrentStep`. Temporal's count can group only by `ExecutionStatus`, so the versions and steps
that hold flows are found one at a time (list one flow on none of those found so far, count its value), at
most `MAX_VERSIONS` versions and `MAX_STEPS` steps each; what is left is counted as "…and N more". A running
flow finishes on the definition it started with (its input holds it), so each count gets a sentence saying
what the change does to those flows: nothing, and where their step now differs, what it still does for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from scheduler.campaigns.campaign import Campaign
from scheduler.campaigns.diff import DiffEntry, campaign_diff, delivery_diff, leads_to, route_changes, step_diff
from scheduler.campaigns.schedules import Action, Change
from scheduler.errors import clip, first_line
from scheduler.flow.attributes import CURRENT_STEP, DEFINITION_VERSION
from scheduler.flow.definition import WorkflowDefinition
from scheduler.visibility import in_flight_query

MAX_VERSIONS = 5
"""Definition versions counted per campaign; flows on others are counted together."""
MAX_STEPS = 10
"""Steps counted per version; flows at others are counted together."""
COUNT_TIMEOUT = 20.0
"""Seconds the counts of one campaign may take; past it, plan shows the diff and says the counts are unavailable."""
REVIEW_CONCURRENCY = 4
"""Campaigns counted at once (each asks visibility a few dozen queries at most)."""


@dataclass
class StepFlows:
    step: str
    count: int
    note: str
    """What becomes of these flows, in words."""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "count": self.count, "note": self.note}


@dataclass
class VersionFlows:
    version: str
    count: int
    definition: str
    """`applied` (the one the schedule ran until now), `new` (the file's), or `older`."""
    steps: list[StepFlows] = field(default_factory=list)
    other_steps: int = 0
    """Flows at steps not counted one by one (past `MAX_STEPS`, or not yet at a step)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "count": self.count,
            "definition": self.definition,
            "steps": [s.to_json() for s in self.steps],
            "other_steps": self.other_steps,
        }


@dataclass
class FlowsInFlight:
    running: int | None = None
    """The campaign's running flows; None: the counts are unavailable (`error` says why)."""
    versions: list[VersionFlows] = field(default_factory=list)
    other_versions: int = 0
    """Flows on versions not counted one by one (past `MAX_VERSIONS`, or without a version)."""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    """Campaign-wide sentences (a delivery policy change does not reach running flows)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "versions": [v.to_json() for v in self.versions],
            "other_versions": self.other_versions,
            "error": self.error,
            "notes": self.notes,
        }


@dataclass
class Review:
    """An update's diff and its flows in flight."""

    diff: list[DiffEntry]
    flows: FlowsInFlight

    def to_json(self) -> dict[str, Any]:
        return {"diff": [d.to_json() for d in self.diff], "flows_in_flight": self.flows.to_json()}

    def lines(self) -> list[str]:
        """The review as `plan` prints it under the update's line, indented."""
        out: list[str] = []
        if self.diff:
            out.append("  changes:")
            for entry in self.diff:
                out.append(f"    {entry.text}")
                out += [f"      {line}" for line in entry.lines]
        flows = self.flows
        if flows.running is None:
            out.append(f"  flows in flight: unavailable ({flows.error})")
            return out
        out.append(f"  flows in flight: {flows.running:,} running")
        for v in flows.versions:
            for s in v.steps:
                wait = "waits" if s.count == 1 else "wait"
                out.append(f"    {_flows(s.count)} {wait} at {s.step} on {v.version}: {s.note}")
            if v.other_steps:
                out.append(f"    …and {_flows(v.other_steps)} on {v.version} at other steps")
        if flows.other_versions:
            out.append(f"    …and {_flows(flows.other_versions)} on other definition versions")
        out += [f"    {note}" for note in flows.notes]
        return out


def _flows(n: int) -> str:
    return f"{n:,} flow" + ("" if n == 1 else "s")


async def reviews(client: Client, changes: Iterable[Change]) -> dict[str, Review]:
    """The review of each update among `changes`, by campaign id (counted concurrently, a few at a time)."""
    updates = [c for c in changes if c.action == Action.UPDATE and c.campaign is not None]
    semaphore = asyncio.Semaphore(REVIEW_CONCURRENCY)

    async def one(change: Change) -> Review:
        assert change.campaign is not None
        async with semaphore:
            return await review(client, change.campaign, change.previous)

    done = await asyncio.gather(*(one(c) for c in updates))
    return {c.campaign_id: r for c, r in zip(updates, done, strict=True)}


async def review(client: Client, new: Campaign, old: Campaign | None) -> Review:
    """What replacing `old` (None: a schedule whose campaign does not decode) with `new` changes, and for whom."""
    if old is None:
        diff = [DiffEntry("campaign", None, "the schedule's current campaign cannot be read: no diff to show")]
    else:
        diff = campaign_diff(old, new)
    flows = await flows_in_flight(client, new.id, old.workflow if old else None, new.workflow)
    if flows.running and old is not None and delivery_diff(old, new):
        flows.notes.append("running flows keep the delivery policy they started with; the change applies to new ones")
    return Review(diff, flows)


async def flows_in_flight(
    client: Client,
    campaign_id: str,
    old: WorkflowDefinition | None,
    new: WorkflowDefinition,
    *,
    timeout: float = COUNT_TIMEOUT,
) -> FlowsInFlight:
    """The campaign's running flows per version and step, with what becomes of them; the error instead when
    visibility does not answer within `timeout` seconds."""
    try:
        return await asyncio.wait_for(_count(client, campaign_id, old, new), timeout)
    except TimeoutError:
        return FlowsInFlight(error=f"Temporal did not answer the counts within {timeout:g}s")
    except Exception as exc:  # the count is extra: plan still shows its changes and the diff
        return FlowsInFlight(error=f"Temporal did not answer the counts: {clip(first_line(exc), 200)}")


async def _count(
    client: Client, campaign_id: str, old: WorkflowDefinition | None, new: WorkflowDefinition
) -> FlowsInFlight:
    running = (await client.count_workflows(in_flight_query(campaign_id))).count
    out = FlowsInFlight(running=running)
    known = {d.version: d for d in (old, new) if d is not None}
    seen: list[str] = []
    left = running
    candidates = [old.version] if old is not None else []
    while left > 0 and len(seen) < MAX_VERSIONS:
        version = candidates.pop(0) if candidates else await _first(
            client, in_flight_query(campaign_id, not_versions=seen), DEFINITION_VERSION
        )  # fmt: skip
        if version is None:
            break
        seen.append(version)
        count = (await client.count_workflows(in_flight_query(campaign_id, version=version))).count
        if not count:
            continue
        definition = "applied" if old and version == old.version else "new" if version == new.version else "older"
        flows = VersionFlows(version, count, definition)
        flows.steps, flows.other_steps = await _steps(client, campaign_id, version, count, known.get(version), new)
        out.versions.append(flows)
        left -= count
    out.versions.sort(key=lambda v: (_ORDER[v.definition], -v.count, v.version))
    out.other_versions = max(left, 0)
    return out


_ORDER = {"applied": 0, "new": 1, "older": 2}
"""Versions shown: the one applied until now first, then the file's, then older ones (most flows first)."""


async def _steps(
    client: Client,
    campaign_id: str,
    version: str,
    count: int,
    on: WorkflowDefinition | None,
    new: WorkflowDefinition,
) -> tuple[list[StepFlows], int]:
    """The steps flows on `version` wait at, most flows first, and the flows left uncounted."""
    steps: list[StepFlows] = []
    tried: list[str] = []
    left = count
    while left > 0 and len(tried) < MAX_STEPS:
        step = await _first(client, in_flight_query(campaign_id, version=version, not_steps=tried), CURRENT_STEP)
        if step is None:
            break
        tried.append(step)
        n = (await client.count_workflows(in_flight_query(campaign_id, version=version, step=step))).count
        if not n:  # listed but not counted: the flow moved on, or a name the store cannot match (`visibility.quote`)
            break
        steps.append(StepFlows(step, n, fate(step, on, new)))
        left -= n
    steps.sort(key=lambda s: (-s.count, s.step))
    return steps, max(left, 0)


async def _first(client: Client, query: str, key: SearchAttributeKey[str]) -> str | None:
    """The value of `key` on one flow `query` finds (None: it finds none, or that flow has none)."""
    async for execution in client.list_workflows(query, limit=1):
        return execution.typed_search_attributes.get(key)
    return None


def fate(step: str, on: WorkflowDefinition | None, new: WorkflowDefinition) -> str:
    """What becomes of flows waiting at `step` on definition `on` (None: one we do not have) when `new` is applied.

    They finish on the definition they started with; where their step differs in `new`, the sentence says
    what it still does for them."""
    own = "they finish on their own definition"
    if on is None:
        return own
    if on.version == new.version:
        return "they run the new definition already"
    if step not in on.steps:  # a flow's step is always one of its definition's; say so rather than guess
        return own
    mine = on.steps[step]
    if step not in new.steps:
        return f"{own} ({step} is only in theirs; there it leads {leads_to(mine)})"
    changes = step_diff(step, mine, new.steps[step])
    if not changes:
        return f"{own} ({step} is unchanged)"
    if repointed := route_changes(mine, new.steps[step]):
        labels = [label for label, _, _ in repointed]
        if labels == ["go_to"]:
            return f"{own} ({step} still leads {leads_to(mine)} there)"
        labels = [part for label in labels for part in label.split("/")]
        return f"{own} ({step} still leads {leads_to(mine, labels)} there)"
    kinds = ", ".join(sorted({c.kind for c in changes}))
    return f"{own} ({step} keeps its old {kinds} there)"
