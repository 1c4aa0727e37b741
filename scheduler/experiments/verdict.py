"""An experiment's verdict in words, per variant against its control (the holdout, else the first variant):
the difference in conversion rate with its always-valid interval, a decision, and the sample ratio warning.

The intervals of one experiment share its error (`ALPHA` split evenly between its comparisons, Bonferroni), so
"95 %" holds for all of its variants at once, however many there are and however often they are looked at.
The API, the CLI and the dashboard render these models as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from pydantic import BaseModel

from scheduler.experiments.statistics import (
    ALPHA,
    DIFFERENCE_OF_INTEREST,
    SampleRatio,
    difference_interval,
    flows_needed,
    sample_ratio,
)


@dataclass(frozen=True)
class VariantCounts:
    """What the verdict needs of a variant: its weight, the flows it entered and those of them converted."""

    name: str
    weight: int
    entered: int
    converted: int
    holdout: bool = False
    """No `go_to`: its flows get no message."""


class Decision(StrEnum):
    BETTER = "better"
    """The variant converts more than the control."""
    WORSE = "worse"
    """The control converts more than the variant."""
    NO_DIFFERENCE = "no_difference"
    """They differ by less than the difference of interest, either way."""
    UNDECIDED = "undecided"
    """Not enough data yet."""


class Comparison(BaseModel):
    variant: str
    control: str
    decision: Decision
    text: str
    difference_points: float | None = None
    """The variant's conversion rate minus the control's, in percentage points; None until both have flows."""
    low_points: float | None = None
    high_points: float | None = None
    """The always-valid interval of the difference, in points."""
    more_flows: int | None = None
    """Flows still needed in the variant (and in the control, `more_control_flows`) to see a difference of
    interest; None when there is no estimate (no flows or no conversion yet, or already decided)."""
    more_control_flows: int | None = None


class ExperimentVerdict(BaseModel):
    experiment: str
    control: str | None
    """The variant the others are compared with; None without variants."""
    confidence: float
    """Of every interval of the experiment at once (0.95)."""
    comparisons: list[Comparison] = []
    sample_ratio_p: float | None = None
    """The p-value of the sample ratio check; None with fewer than two variants or no flow."""
    warning: str | None = None
    """The sample ratio mismatch, in words: shown on every view of the results."""
    note: str | None = None
    """Why there is nothing to compare, when there is not."""


def experiment_verdict(
    experiment: str,
    variants: Sequence[VariantCounts],
    *,
    alpha: float = ALPHA,
    difference: float = DIFFERENCE_OF_INTEREST,
) -> ExperimentVerdict:
    """Each variant against the control (the first holdout, else the first variant), in the variants' order."""
    control = next((v for v in variants if v.holdout), variants[0] if variants else None)
    others = [v for v in variants if v is not control]
    share = alpha / max(1, len(others))
    check = sample_ratio([v.entered for v in variants], [v.weight for v in variants])
    if control is None:
        return ExperimentVerdict(experiment=experiment, control=None, confidence=1 - alpha, note="no variants")
    return ExperimentVerdict(
        experiment=experiment,
        control=control.name,
        confidence=1 - alpha,
        comparisons=[compare(v, control, alpha=share, confidence=1 - alpha, difference=difference) for v in others],
        sample_ratio_p=check.p_value if check else None,
        warning=mismatch_text(check) if check and check.mismatch else None,
        note=None if others else f"only one variant ({control.name}): nothing to compare it with",
    )


def compare(
    variant: VariantCounts, control: VariantCounts, *, alpha: float, confidence: float, difference: float
) -> Comparison:
    """One variant against the control: its interval at `alpha` (its share of the experiment's), its text naming
    the experiment's `confidence`."""
    name, base = variant.name, control.name
    one = partial(Comparison, variant=name, control=base)
    empty = [v.name for v in (variant, control) if not v.entered]
    if empty:
        where = f" in {empty[0]}" if len(empty) == 1 else ""
        return one(decision=Decision.UNDECIDED, text=f"not enough data yet: no flows{where} yet")
    low, high = (
        float(bound) * 100
        for bound in difference_interval(
            variant.converted, variant.entered, control.converted, control.entered, alpha=alpha, tau=difference
        )
    )
    observed = (variant.converted / variant.entered - control.converted / control.entered) * 100
    one = partial(one, difference_points=observed, low_points=low, high_points=high)
    interest = f"{difference * 100:g}"

    def interval(low: float, high: float) -> str:
        return f"{confidence:.0%} interval {points(low)} to {points(high)}"

    if low > 0:
        return one(
            decision=Decision.BETTER, text=f"{name} beats {base} by {points(observed)} points, {interval(low, high)}"
        )
    if high < 0:
        text = f"{base} beats {name} by {points(-observed)} points, {interval(-high, -low)}"
        return one(decision=Decision.WORSE, text=text)
    if -difference * 100 < low and high < difference * 100:
        text = f"no {interest}-point difference: {name} is {points(observed)} points from {base}, {interval(low, high)}"
        return one(decision=Decision.NO_DIFFERENCE, text=text)
    converted, entered = control.converted, control.entered
    if not converted:  # a rate of 0 would promise an answer far too soon: the pair's rate is the better guess
        converted, entered = converted + variant.converted, entered + variant.entered
    if not converted:
        return one(decision=Decision.UNDECIDED, text="not enough data yet: no conversions yet")
    need_control, need_variant = flows_needed(
        converted / entered, difference, ratio=variant.weight / control.weight, alpha=alpha, tau=difference
    )
    more, more_control = max(0, need_variant - variant.entered), max(0, need_control - control.entered)
    if not (more or more_control):  # the rates vary more than planned for: no estimate, the interval tells
        text = f"not enough data yet: {points(observed)} points, {interval(low, high)}"
        return one(decision=Decision.UNDECIDED, text=text)
    if variant.weight == control.weight:
        wanted = f"about {about(max(more, more_control))} more flows per variant"
    else:
        wanted = f"about {about(more)} more flows in {name} and {about(more_control)} in {base}"
    text = f"not enough data yet: {wanted} to see a {interest}-point difference"
    return one(decision=Decision.UNDECIDED, text=text, more_flows=more, more_control_flows=more_control)


def mismatch_text(check: SampleRatio) -> str:
    """The sample ratio mismatch warning: the counts, the weights, the p-value and what it means."""
    entered = " / ".join(f"{n:,}" for n in check.entered)
    weights = " / ".join(str(w) for w in check.weights)
    return (
        f"sample ratio mismatch: entered {entered} against weights {weights} ({p_value(check.p_value)}): "
        "the assignment is broken, do not trust these numbers"
    )


def points(value: float) -> str:
    """Percentage points as read: one decimal, two below a tenth; never "-0.0"."""
    shown = f"{value:.1f}" if abs(value) >= 0.095 else f"{value:.2f}"
    return "0.0" if float(shown) == 0 else shown


def about(flows: int) -> str:
    """A count of flows still to come, to two significant digits (4,137 -> "4,100"): it is an estimate."""
    digits = max(0, len(str(flows)) - 2)
    return f"{round(flows, -digits):,}"


def p_value(value: float) -> str:
    """A small p-value in plain decimals, to its first significant digit ("p = 0.00002"); below a millionth, a
    bound ("p < 0.000001")."""
    if value < 1e-6:
        return "p < 0.000001"
    return f"p = {value:.{max(3, -math.floor(math.log10(value)))}f}"
