"""`split`: an experiment's step. It puts the flow in one of the step's `variants`, by weight, and goes to that
variant's `go_to`; a variant without one is a holdout, where the flow ends `held_out` with nothing sent.

The assignment is a pure function of (campaign id, experiment, the customer's id, else the cart's, else the
flow's workflow id) and the weights: the same customer gets the same variant on every run and every replay,
and the API can tell which variant a flow is in without asking it. sha256, not `hash()` (salted per process).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import field_validator

from scheduler.flow.nodes.registry import EventType, Flow, Node, NodeParams, register

MAX_VARIANTS = 10
"""Variants a split may have: each splits the traffic further, and the results compare each with the control."""
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""An experiment's or a variant's name: they make the `Variant` search attribute's `experiment:variant` value."""


def plain_name_problem(name: str, what: str) -> str | None:
    """Why `name` cannot name an experiment or a variant (`what`), or None."""
    if PLAIN_NAME.fullmatch(name):
        return None
    shown = name if len(name) <= 64 else name[:20] + "…"
    return f"{what} {shown!r}: letters, digits, '_', '.', '-', at most 64 characters, starting with a letter or digit"


class SplitParams(NodeParams):
    experiment: str | None = None
    """The experiment's name, unique in its campaign; None: the step's name."""

    @field_validator("experiment")
    @classmethod
    def _plain(cls, v: str | None) -> str | None:
        if v is not None and (problem := plain_name_problem(v, "experiment")):
            raise ValueError(problem)
        return v


def assignment_unit(customer: Mapping[str, Any], cart: Mapping[str, Any], workflow_id: str) -> str:
    """Who is assigned: the customer (every cart of theirs in one variant), else the cart, else the flow itself."""
    for kind, record in (("customer", customer), ("cart", cart)):
        if record.get("id") not in (None, ""):
            return f"{kind}:{record['id']}"
    return f"flow:{workflow_id}"


def assign_variant(campaign_id: str, experiment: str, unit: str, weights: Mapping[str, int]) -> str:
    """The variant of `unit` (see `assignment_unit`): a point of sha256 over the total weight, the variants'
    shares laid out in name order (so the file's order of variants does not matter, only their names and weights)."""
    names = sorted(weights)
    total = sum(weights[n] for n in names)
    key = json.dumps([campaign_id, experiment, unit], separators=(",", ":")).encode()
    point = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % total
    for name in names:
        point -= weights[name]
        if point < 0:
            return name
    raise AssertionError("unreachable: the point lies below the total weight")


@register
class Split(Node):
    name = "split"
    Params = SplitParams

    async def run(self, flow: Flow, params: SplitParams) -> EventType:
        flow.choose_variant(params.experiment)
        return EventType.SATISFIED
