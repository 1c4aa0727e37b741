"""The statistics of experiments: intervals that keep their promise when looked at every day, and verdicts that
say so in words.

The simulations run the package's own interval functions over numpy arrays (experiments by days), seeded so
each run of the suite sees the same numbers. Each share they measure comes from 1,000 simulated experiments:
its standard error is at most 1.6 points (0.7 at a share of 5 %), which the margins below are counted in.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scheduler.experiments.statistics import (
    ALPHA,
    POWER,
    SRM_THRESHOLD,
    difference_interval,
    flows_needed,
    sample_ratio,
)
from scheduler.experiments.verdict import (
    Decision,
    VariantCounts,
    about,
    experiment_verdict,
    p_value,
    points,
)

EXPERIMENTS = 1000
DAYS = 30
BASE_RATE = 0.05
MARGIN = 0.014
"""Two standard errors of a 5 % share measured over 1,000 simulated experiments."""


def simulate(seed: int, per_day: int, control_rate: float, variant_rate: float) -> dict[str, np.ndarray]:
    """Cumulative counts after each day (experiments x days), `per_day` flows entering each arm daily."""
    rng = np.random.default_rng(seed)
    entered = np.broadcast_to(per_day * np.arange(1, DAYS + 1), (EXPERIMENTS, DAYS))
    return {
        "converted": rng.binomial(per_day, variant_rate, (EXPERIMENTS, DAYS)).cumsum(axis=1),
        "entered": entered,
        "control_converted": rng.binomial(per_day, control_rate, (EXPERIMENTS, DAYS)).cumsum(axis=1),
        "control_entered": entered,
    }


def fixed_horizon_p_values(counts: dict[str, np.ndarray]) -> np.ndarray:
    """The two-proportion z-test (pooled variance) a fixed-horizon calculator runs, applied at every look."""
    n, m = counts["entered"], counts["control_entered"]
    x, y = counts["converted"], counts["control_converted"]
    pooled = (x + y) / (n + m)
    z = (x / n - y / m) / np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
    return 2 * stats.norm.sf(np.abs(z))


def test_without_a_true_difference_daily_looks_rarely_declare_a_winner_where_a_z_test_often_does() -> None:
    """A/A: 1,000 experiments, 200 flows per arm per day at 5 %, looked at after each of 30 days. The always-valid
    interval ever excludes 0 in at most 5 % of them; the z-test at p < 0.05, peeked at the same way, in far more."""
    counts = simulate(seed=1, per_day=200, control_rate=BASE_RATE, variant_rate=BASE_RATE)
    low, high = difference_interval(**counts)
    ever_declared = ((low > 0) | (high < 0)).any(axis=1).mean()
    z_test_ever_declared = (fixed_horizon_p_values(counts) < ALPHA).any(axis=1).mean()
    z_test_at_the_end = (fixed_horizon_p_values(counts)[:, -1] < ALPHA).mean()

    assert ever_declared <= ALPHA + MARGIN
    assert z_test_at_the_end <= ALPHA + MARGIN  # looked at once, the z-test keeps its promise ...
    assert z_test_ever_declared > 0.15  # ... looked at daily, it breaks it several times over


def test_a_true_lift_of_3_points_is_found_and_covered_at_every_look() -> None:
    """A/B: 5 % against 8 %, 100 flows per arm per day (few enough that the test has work to do)."""
    lift = 0.03
    counts = simulate(seed=2, per_day=100, control_rate=BASE_RATE, variant_rate=BASE_RATE + lift)
    low, high = difference_interval(**counts)
    covered = (low <= lift) & (lift <= high)
    found = low > 0
    stopped = found.argmax(axis=1)  # the first look that declares the winner (0 where none did)

    assert found.any(axis=1).mean() >= 0.9
    assert (high < 0).any(axis=1).mean() == 0  # the control never "wins"
    assert covered.all(axis=1).mean() >= 1 - ALPHA  # the promise: at every look at once
    assert covered[:, -1].mean() >= 1 - ALPHA
    assert covered[np.arange(EXPERIMENTS), stopped][found.any(axis=1)].mean() >= 1 - ALPHA


def test_the_flows_needed_see_the_difference_with_the_power_promised() -> None:
    """By the look at which the estimated flows have entered, at least `POWER` of the simulated lifts are found;
    and the estimate is not so cautious that nearly all of them had been found long before."""
    lift, per_day = 0.03, 100
    control, variant = flows_needed(BASE_RATE, lift)
    counts = simulate(seed=3, per_day=per_day, control_rate=BASE_RATE, variant_rate=BASE_RATE + lift)
    low, _ = difference_interval(**counts)
    look = -(-control // per_day) - 1

    assert control == variant
    assert (low[:, : look + 1] > 0).any(axis=1).mean() >= POWER
    assert (low[:, : look // 2 + 1] > 0).any(axis=1).mean() < POWER


def test_the_flows_needed_grow_as_the_difference_shrinks_and_follow_the_weights() -> None:
    two, one = flows_needed(BASE_RATE, 0.02), flows_needed(BASE_RATE, 0.01)
    control, variant = flows_needed(BASE_RATE, 0.02, ratio=4.5)

    assert 3 * two[0] < one[0] < 5 * two[0]  # about four times the flows for half the difference
    assert variant == pytest.approx(4.5 * control, rel=0.001)
    assert flows_needed(1.0, 0.02) == flows_needed(0.0, 0.02)  # 100 % is looked at as 98 %, as 0 % as 2 %
    with pytest.raises(ValueError, match="difference"):
        flows_needed(BASE_RATE, 0)


@pytest.mark.parametrize(
    ("entered", "weights", "mismatch"),
    [
        ([5200, 4800], [50, 50], True),
        ([5030, 4970], [50, 50], False),
        ([4500, 4500, 1000], [45, 45, 10], False),
        ([4400, 4400, 1200], [45, 45, 10], True),
    ],
)
def test_a_sample_ratio_mismatch_is_flagged(entered: list[int], weights: list[int], mismatch: bool) -> None:
    check = sample_ratio(entered, weights)

    assert check is not None
    assert check.mismatch is mismatch
    assert (check.p_value < SRM_THRESHOLD) is mismatch


def test_no_sample_ratio_check_without_two_variants_and_a_flow() -> None:
    assert sample_ratio([0, 0], [50, 50]) is None
    assert sample_ratio([100], [100]) is None


def test_a_winner_in_words_with_its_interval() -> None:
    variants = [
        VariantCounts("friendly", 45, 4500, 300),
        VariantCounts("discount", 45, 4500, 420),
        VariantCounts("holdout", 10, 1000, 50, holdout=True),
    ]
    verdict = experiment_verdict("copy-2031-01", variants)
    friendly, discount = verdict.comparisons

    assert (verdict.control, verdict.warning, verdict.note) == ("holdout", None, None)
    assert discount.decision is Decision.BETTER
    assert discount.text == "discount beats holdout by 4.3 points, 95% interval 1.6 to 7.0"
    assert friendly.decision is Decision.UNDECIDED
    assert friendly.text == (
        "not enough data yet: about 7,400 more flows in friendly and 1,700 in holdout to see a 2-point difference"
    )
    assert (friendly.more_flows, friendly.more_control_flows) != (None, None)


def test_the_intervals_of_an_experiment_share_its_error() -> None:
    """Two variants against a holdout: each interval is at 2.5 %, so that the 95 % holds for both at once."""
    variants = [
        VariantCounts("a", 45, 4500, 300),
        VariantCounts("b", 45, 4500, 420),
        VariantCounts("holdout", 10, 1000, 50, holdout=True),
    ]
    b = experiment_verdict("copy", variants).comparisons[1]
    low, high = difference_interval(420, 4500, 50, 1000, alpha=ALPHA / 2)

    assert (b.low_points, b.high_points) == pytest.approx((low * 100, high * 100))
    assert b.difference_points == pytest.approx((420 / 4500 - 50 / 1000) * 100)


def test_the_control_winning_is_said_from_its_side() -> None:
    verdict = experiment_verdict("copy", [VariantCounts("a", 50, 2000, 260), VariantCounts("b", 50, 2000, 100)])
    (b,) = verdict.comparisons

    assert (verdict.control, b.decision) == ("a", Decision.WORSE)
    assert b.text == "a beats b by 8.0 points, 95% interval 5.3 to 10.7"


def test_not_enough_data_names_the_flows_still_needed() -> None:
    verdict = experiment_verdict("copy", [VariantCounts("a", 50, 500, 30), VariantCounts("b", 50, 500, 25)])
    (b,) = verdict.comparisons
    needed, _ = flows_needed(30 / 500, 0.02)

    assert b.decision is Decision.UNDECIDED
    assert b.more_flows == b.more_control_flows == needed - 500
    assert (
        b.text == f"not enough data yet: about {about(needed - 500)} more flows per variant to see a 2-point difference"
    )


def test_no_difference_of_interest_is_said_once_the_interval_is_narrow() -> None:
    verdict = experiment_verdict("copy", [VariantCounts("a", 50, 20000, 1000), VariantCounts("b", 50, 20000, 1010)])
    (b,) = verdict.comparisons

    assert b.decision is Decision.NO_DIFFERENCE
    assert b.text == "no 2-point difference: b is 0.05 points from a, 95% interval -0.7 to 0.8"


@pytest.mark.parametrize(
    ("variants", "text"),
    [
        ([VariantCounts("a", 50, 0, 0), VariantCounts("b", 50, 0, 0)], "not enough data yet: no flows yet"),
        (
            [VariantCounts("a", 50, 100, 10), VariantCounts("holdout", 50, 0, 0, holdout=True)],
            "not enough data yet: no flows in holdout yet",
        ),
        ([VariantCounts("a", 50, 100, 0), VariantCounts("b", 50, 100, 0)], "not enough data yet: no conversions yet"),
        (
            [VariantCounts("a", 50, 100, 100), VariantCounts("b", 50, 100, 100)],
            "not enough data yet: about 650 more flows per variant to see a 2-point difference",
        ),
        (
            [VariantCounts("a", 50, 10000, 10000), VariantCounts("b", 50, 10000, 10000)],
            "no 2-point difference: b is 0.0 points from a, 95% interval -0.06 to 0.06",
        ),
    ],
    ids=["no flows", "control without flows", "no conversions", "all converted", "all converted, many"],
)
def test_edge_cases_in_words(variants: list[VariantCounts], text: str) -> None:
    (comparison,) = experiment_verdict("copy", variants).comparisons

    assert comparison.text == text


def test_one_variant_or_none_has_nothing_to_compare() -> None:
    one = experiment_verdict("copy", [VariantCounts("a", 100, 100, 10)])
    none = experiment_verdict("copy", [])

    assert (one.control, one.comparisons, one.sample_ratio_p) == ("a", [], None)
    assert one.note == "only one variant (a): nothing to compare it with"
    assert (none.control, none.comparisons, none.note) == (None, [], "no variants")


def test_a_sample_ratio_mismatch_is_a_warning_in_words() -> None:
    verdict = experiment_verdict("copy", [VariantCounts("a", 50, 5210, 300), VariantCounts("b", 50, 4790, 250)])

    assert verdict.sample_ratio_p == pytest.approx(stats.chisquare([5210, 4790]).pvalue)
    assert verdict.warning == (
        "sample ratio mismatch: entered 5,210 / 4,790 against weights 50 / 50 (p = 0.00003): "
        "the assignment is broken, do not trust these numbers"
    )
    assert (
        experiment_verdict("copy", [VariantCounts("a", 50, 5030, 300), VariantCounts("b", 50, 4970, 250)]).warning
        is None
    )


@pytest.mark.parametrize(
    ("flows", "shown"), [(87, "87"), (650, "650"), (4137, "4,100"), (12345, "12,000"), (1_049_999, "1,000,000")]
)
def test_flows_are_rounded_to_two_digits(flows: int, shown: str) -> None:
    assert about(flows) == shown


@pytest.mark.parametrize(
    ("value", "shown"), [(3.14, "3.1"), (-0.04, "-0.04"), (-0.001, "0.0"), (0.0, "0.0"), (-1.25, "-1.2")]
)
def test_points_are_shown_as_read(value: float, shown: str) -> None:
    assert points(value) == shown


@pytest.mark.parametrize(("value", "shown"), [(2.1e-5, "p = 0.00002"), (0.00067, "p = 0.0007"), (1e-9, "p < 0.000001")])
def test_p_values_are_plain_decimals(value: float, shown: str) -> None:
    assert p_value(value) == shown
