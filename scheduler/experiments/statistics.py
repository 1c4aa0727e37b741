"""The statistics of an experiment: an always-valid interval for the difference of two conversion rates, the
flows it needs to see a given difference, and the sample ratio mismatch check. Pure functions of counts.

The interval is a confidence sequence: it holds at every look at once, so a team may look daily and stop at
the first decision (a fixed-horizon test looked at daily declares far more false winners than it claims;
`tests/test_experiment_statistics.py` shows both). The interval functions take floats or numpy arrays alike,
so a simulation runs them over thousands of experiments at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
"""The chance, over the whole life of an experiment however often it is looked at, of a false decision."""
DIFFERENCE_OF_INTEREST = 0.02
"""Two points of conversion rate: the smallest difference a campaign team acts on. The mixture of the test
spreads its weight over differences of this size (τ), and "flows needed" is counted for it."""
POWER = 0.8
"""The chance of seeing a true difference of interest by the time the "flows needed" have entered."""
SRM_THRESHOLD = 0.001
"""A sample ratio mismatch is flagged below this p-value. The check runs on every view of every experiment:
at 0.05 a healthy experiment looked at daily for a month would raise false alarms often, at 0.001 rarely (at
most 30 x 0.001 = 3 %). A real mismatch (a broken assignment, flows lost in one variant) drives p towards 0
as flows enter, so the strict threshold costs little. The check is the one of Kohavi, Tang and Xu,
"Trustworthy Online Controlled Experiments", 2020, ch. 21."""

Number = TypeVar("Number", float, np.ndarray)


def rate_variance(converted: Number, entered: Number) -> Number:
    """The variance of an observed conversion rate (`entered` > 0), with one conversion and one non-conversion
    added to the rate (as Agresti and Caffo, 2000) so that 0 % and 100 % do not look certain."""
    rate = (converted + 1) / (entered + 2)
    return rate * (1 - rate) / entered


def half_width(variance: Number, *, alpha: float = ALPHA, tau: float = DIFFERENCE_OF_INTEREST) -> Number:
    """Half the width of the always-valid interval around an observed difference whose variance is `variance`.

    Johari, Koomen, Pekelis and Walsh, "Always valid inference: continuous monitoring of A/B tests",
    Operations Research 70(3), 2022 (first as Johari, Pekelis and Walsh, arXiv:1512.04922, 2015): the mixture
    sequential probability ratio test (mSPRT) of a difference of means θ = θ₀, mixing the alternatives with a
    normal N(θ₀, τ²), has for an observed difference θ̂ of variance V the likelihood ratio

        Λ(θ₀) = √(V / (V + τ²)) · exp(τ² (θ̂ - θ₀)² / (2 V (V + τ²))),

    a nonnegative martingale under θ₀: by Ville's inequality it ever reaches 1/alpha with probability at most
    alpha, however often it is looked at. The values θ₀ it does not reject, Λ(θ₀) < 1/alpha, are θ̂ ± h with

        h² = V (V + τ²) / τ² · (2 ln(1/alpha) + ln((V + τ²) / V)).

    For conversion rates V is the plug-in variance of the two rates (`rate_variance`), as in the paper's
    treatment of binary data; the test's simulations check that the error it claims holds.
    """
    spread = variance + tau**2
    return np.sqrt(variance * spread / tau**2 * (2 * np.log(1 / alpha) + np.log(spread / variance)))


def difference_interval(
    converted: Number,
    entered: Number,
    control_converted: Number,
    control_entered: Number,
    *,
    alpha: float = ALPHA,
    tau: float = DIFFERENCE_OF_INTEREST,
) -> tuple[Number, Number]:
    """The always-valid (1 - `alpha`) interval (low, high) of a variant's conversion rate minus the control's
    (both `entered` > 0)."""
    difference = converted / entered - control_converted / control_entered
    width = half_width(
        rate_variance(converted, entered) + rate_variance(control_converted, control_entered), alpha=alpha, tau=tau
    )
    return difference - width, difference + width


def flows_needed(
    baseline: float,
    difference: float = DIFFERENCE_OF_INTEREST,
    *,
    ratio: float = 1.0,
    alpha: float = ALPHA,
    tau: float = DIFFERENCE_OF_INTEREST,
    power: float = POWER,
) -> tuple[int, int]:
    """Flows (control, variant) by which a true `difference` from a control converting at `baseline` is seen by
    the always-valid test with probability at least `power`; the variant gets `ratio` times the control's flows
    (their weights' ratio).

    Counted for this test, not with the fixed-horizon formula, which would promise too early an answer: at n
    flows the observed difference, normal around `difference` with variance V(n), exceeds the interval's half
    width h(n) with probability `power` when `difference` - h(n) = z(`power`) · √V(n). That is the chance of a
    decision at that one look; the looks before it only add to it, so the count errs on the safe side.
    """
    if not 0 < difference < 1 or ratio <= 0:
        raise ValueError(f"difference must be in (0, 1) and ratio positive, not {difference}, {ratio}")
    treated = baseline + difference if baseline + difference <= 1 else baseline - difference
    spread = baseline * (1 - baseline) + treated * (1 - treated) / ratio  # V(n) = spread / n control flows
    z = stats.norm.ppf(power)

    def margin(n: float) -> float:
        variance = spread / n
        return difference - half_width(variance, alpha=alpha, tau=tau) - z * math.sqrt(variance)

    low, high = 1.0, 2.0
    while margin(high) <= 0:
        low, high = high, 2 * high
    control = optimize.brentq(margin, low, high) if margin(low) < 0 else low
    return math.ceil(control), math.ceil(control * ratio)


@dataclass(frozen=True)
class SampleRatio:
    """Flows entered per variant against the variants' weights: a chi-square goodness of fit."""

    entered: tuple[int, ...]
    weights: tuple[int, ...]
    p_value: float

    @property
    def mismatch(self) -> bool:
        """The assignment is broken (or flows are lost in one variant): the results cannot be trusted."""
        return self.p_value < SRM_THRESHOLD


def sample_ratio(entered: Sequence[int], weights: Sequence[int]) -> SampleRatio | None:
    """The check of entered counts against the weights (positive); None with fewer than two variants or no flow."""
    total = sum(entered)
    if len(entered) < 2 or total == 0:
        return None
    expected = [total * weight / sum(weights) for weight in weights]
    p_value = float(stats.chisquare(entered, expected).pvalue)
    return SampleRatio(entered=tuple(entered), weights=tuple(weights), p_value=p_value)
