"""The report's confidence intervals: known answers against scipy's t quantiles, NaN behaviour
below 2 values, and coverage at n = 3 simulated with fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from vaesae.report.stats import (
    Interval,
    mean_ci,
    paired_diff_ci,
    paired_test,
    ratio_ci,
    welch_diff_ci,
    welch_test,
)

REPLICATES = 4000
NOMINAL = 0.95
MIN_COVERAGE = 0.93  # 4000 replicates: the standard error of a 0.95 coverage is 0.0034


def coverage(intervals: list[Interval], truth: float) -> float:
    """Fraction of the intervals that contain `truth`; an undefined one counts as a miss."""
    return sum(ci.contains(truth) for ci in intervals) / len(intervals)


# Known answers ------------------------------------------------------------------------------


def test_mean_ci_is_the_student_t_interval():
    x = [0.34, 0.344, 0.348]
    half = stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    ci = mean_ci(x)
    assert ci.estimate == pytest.approx(0.344)
    assert (ci.low, ci.high) == pytest.approx((0.344 - half, 0.344 + half))
    assert stats.t.ppf(0.975, 2) == pytest.approx(4.302653)  # not the normal 1.96
    # The confidence level is honoured; NaN values are ignored.
    wide = mean_ci([1.0, 2.0, 4.0, math.nan], confidence=0.99)
    half99 = stats.t.ppf(0.995, 2) * np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert (wide.low, wide.high) == pytest.approx((7 / 3 - half99, 7 / 3 + half99))
    flat = mean_ci([0.2, 0.2, 0.2])  # no spread and no resolution: no variance estimate
    assert flat.estimate == pytest.approx(0.2) and not flat.defined


def test_constant_data_never_give_a_zero_width_interval_or_p_0():
    # Dead rates move in steps of 1/500: three seeds can differ by exactly +6 units each.
    step = 1 / 500
    base = np.array([0.30, 0.31, 0.33])
    arm = base + 6 * step
    floor_sd = step / math.sqrt(12)
    ci = paired_diff_ci(arm, base, resolution=step)
    half = stats.t.ppf(0.975, 2) * floor_sd / math.sqrt(3)
    assert ci.estimate == pytest.approx(6 * step)
    assert (ci.low, ci.high) == pytest.approx((6 * step - half, 6 * step + half))
    test = paired_test(base, arm, resolution=step)
    t = 6 * step / (floor_sd / math.sqrt(3))
    assert test.p_value == pytest.approx(2 * stats.t.sf(t, 2)) and test.p_value > 1e-4
    assert not paired_diff_ci(arm, base).defined  # without a resolution: undefined
    assert math.isnan(paired_test(base, arm).p_value)
    # A spread larger than the floor is left as it is.
    assert mean_ci(base, resolution=step) == mean_ci(base)
    # Every seed at 0 dead: a short interval around 0, not [0, 0].
    zero = mean_ci([0.0, 0.0, 0.0], resolution=step)
    assert zero.low < 0 < zero.high < step
    both = welch_diff_ci([0.2, 0.2], [0.1, 0.1], resolution=step)
    assert both.low < 0.1 < both.high
    assert ratio_ci([0.6, 0.6, 0.6], [0.3, 0.3, 0.3], resolution=step).contains(2.0)
    assert not ratio_ci([0.6, 0.6, 0.6], [0.3, 0.3, 0.3]).defined
    assert 0 < welch_test([0.2, 0.2], [0.1, 0.1], resolution=step).p_value < 0.05


def test_three_seeds_no_longer_give_min_max():
    # A percentile bootstrap of 3 values spans about [min, max]; the t interval is wider.
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.low < 1.0 - 1.0 and ci.high > 3.0 + 1.0


@pytest.mark.parametrize("values", [[], [math.nan], [0.3], [0.3, math.nan]])
def test_intervals_are_undefined_below_two_values(values):
    ci = mean_ci(values)
    assert not ci.defined and math.isnan(ci.low) and math.isnan(ci.high)
    finite = [v for v in values if not math.isnan(v)]
    assert ci.estimate == finite[0] if finite else math.isnan(ci.estimate)
    assert not paired_diff_ci(values, values).defined
    assert not ratio_ci(values, [1.0, 1.1, 0.9]).defined
    assert not ratio_ci([1.0, 1.1, 0.9], values).defined


def test_invalid_confidence_is_refused():
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_paired_ci_is_the_mean_ci_of_the_differences_and_agrees_with_the_paired_test():
    before, after = [0.50, 0.52, 0.54, math.nan], [0.40, 0.40, 0.40, 0.3]
    ci = paired_diff_ci(before, after)  # the pair with a NaN member is dropped
    d = np.array([0.10, 0.12, 0.14])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.12, 0.12 - half, 0.12 + half))
    # It excludes 0 exactly when the paired t-test is significant at 1 - confidence.
    rng = np.random.default_rng(3)
    for _ in range(200):
        a, b = rng.normal(0, 1, 4), rng.normal(0.5, 1, 4)
        p = paired_test(b, a).p_value
        ci = paired_diff_ci(a, b)
        assert (not ci.contains(0.0)) == (p < 0.05)
    with pytest.raises(ValueError, match="differ in length"):
        paired_diff_ci([1.0, 2.0], [1.0])


def test_welch_diff_ci_is_scipys_interval_and_agrees_with_the_welch_test():
    a, b = [0.03, 0.04, 0.05, math.nan], [0.02, 0.03, 0.05, 0.09]
    ci = welch_diff_ci(a, b)
    ref = stats.ttest_ind(a[:3], b, equal_var=False).confidence_interval()
    assert ci.estimate == pytest.approx(0.04 - 0.0475)
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
    # 0 is outside the 95 % interval exactly when Welch's p < 0.05.
    far = [0.30, 0.33, 0.36]
    assert not welch_diff_ci(far, b).contains(0.0) and welch_test(far, b).p_value < 0.05
    assert welch_diff_ci(a, b).contains(0.0) and welch_test(a, b).p_value >= 0.05
    assert not welch_diff_ci([0.2, 0.2], [0.1, 0.1]).defined  # both constant, no resolution
    assert not welch_diff_ci([0.2], b).defined


def test_ratio_ci_is_the_fieller_interval_with_welch_df():
    a, b = np.array([0.60, 0.62, 0.64]), np.array([0.34, 0.344, 0.348])
    ci = ratio_ci(a, b)
    assert ci.estimate == pytest.approx(0.62 / 0.344)
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    r = ci.estimate
    df = (va + r**2 * vb) ** 2 / (va**2 / 2 + r**4 * vb**2 / 2)
    t = stats.t.ppf(0.975, df)
    # Both ends solve |mean(a) - rho mean(b)| = t sqrt(v_a + rho^2 v_b) (Welch's T at rho).
    for rho in (ci.low, ci.high):
        T = (a.mean() - rho * b.mean()) / math.sqrt(va + rho**2 * vb)
        assert abs(T) == pytest.approx(t)
    assert ci.low < r < ci.high
    assert ci.high - r > r - ci.low  # asymmetric: skewed towards large ratios
    assert (round(ci.low, 2), round(ci.high, 2)) == (1.68, 1.93)


def test_ratio_ci_with_an_exact_denominator_is_the_t_interval_of_the_numerator():
    a = [2.0, 2.4, 1.9]
    ci = ratio_ci(a, [0.5, 0.5, 0.5])
    mean = mean_ci(a)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx(
        (mean.estimate / 0.5, mean.low / 0.5, mean.high / 0.5)
    )


def test_ratio_ci_is_undefined_when_the_denominator_is_not_clear_of_zero():
    assert math.isnan(ratio_ci([1.0, 2.0], [0.0, 0.0]).estimate)
    # The denominator's mean 0.1 is within t · SE of 0: Fieller's set is unbounded.
    ci = ratio_ci([1.0, 1.1, 0.9], [0.3, -0.1, 0.1])
    assert ci.estimate == pytest.approx(10.0) and not ci.defined


# Coverage at n = 3 (fixed seeds) ------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 2, 5])
def test_mean_ci_covers_at_the_nominal_rate_with_three_seeds(n):
    rng = np.random.default_rng(n)
    samples = rng.normal(0.3, 0.05, size=(REPLICATES, n))
    rate = coverage([mean_ci(x) for x in samples], 0.3)
    assert MIN_COVERAGE <= rate <= 0.97, rate


def test_a_three_value_percentile_bootstrap_would_not():
    """The old interval, [min, max] of 3 values at best, covers the mean only ~3/4 of the time:
    the reason for the t intervals."""
    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, 1.0, size=(REPLICATES, 3))
    rate = np.mean((samples.min(axis=1) <= 0) & (samples.max(axis=1) >= 0))
    assert rate == pytest.approx(0.75, abs=0.02)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # (mean, sd, n) of numerator and denominator; denominators well clear of zero.
        ((0.62, 0.02, 3), (0.344, 0.004, 3)),  # the paper's Top-k rates
        ((0.91, 0.01, 3), (0.52, 0.02, 3)),  # denominator noisier than numerator
        ((2.0, 0.3, 3), (1.0, 0.1, 3)),
        ((2.0, 0.3, 3), (1.0, 0.05, 4)),  # unequal group sizes
    ],
)
def test_ratio_ci_covers_at_the_nominal_rate_with_three_seeds(a, b):
    rng = np.random.default_rng(1)
    num = rng.normal(a[0], a[1], size=(REPLICATES, a[2]))
    den = rng.normal(b[0], b[1], size=(REPLICATES, b[2]))
    intervals = [ratio_ci(x, y) for x, y in zip(num, den, strict=True)]
    rate = coverage(intervals, a[0] / b[0])
    assert MIN_COVERAGE <= rate <= 0.975, rate


def test_paired_ci_covers_at_the_nominal_rate_with_three_seeds():
    """Seeds differ a lot (sd 0.2) but the per-seed change is tight (sd 0.02): the paired
    interval covers the true change at the nominal rate and is far narrower than an unpaired
    one would be."""
    rng = np.random.default_rng(2)
    base = rng.normal(0.5, 0.2, size=(REPLICATES, 3))
    after = base - rng.normal(0.1, 0.02, size=(REPLICATES, 3))
    intervals = [paired_diff_ci(x, y) for x, y in zip(base, after, strict=True)]
    assert MIN_COVERAGE <= coverage(intervals, 0.1) <= 0.97
    widths = np.array([ci.high - ci.low for ci in intervals])
    assert np.median(widths) < 0.2


def test_the_intervals_equal_the_hand_written_t_formulas_and_scipys():
    rng = np.random.default_rng(11)
    for n_a, n_b in [(2, 2), (3, 3), (3, 5), (6, 4)]:
        a, b = rng.normal(0.4, 0.05, n_a), rng.normal(0.3, 0.08, n_b)
        for confidence in (0.9, 0.95):
            # Student t: mean ± t(n-1) s / sqrt(n), and scipy's ttest_1samp interval.
            half = stats.t.ppf((1 + confidence) / 2, n_a - 1) * a.std(ddof=1) / math.sqrt(n_a)
            ci = mean_ci(a, confidence)
            ref = stats.ttest_1samp(a, 0.0).confidence_interval(confidence)
            assert (ci.low, ci.high) == pytest.approx((a.mean() - half, a.mean() + half))
            assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
            # Paired t: scipy's ttest_rel interval of the differences.
            c = a + rng.normal(0.0, 0.02, n_a)
            ci = paired_diff_ci(a, c, confidence)
            ref = stats.ttest_rel(a, c).confidence_interval(confidence)
            assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
            # Welch: d ± t(df) sqrt(v_a + v_b) with Welch-Satterthwaite df.
            va, vb = a.var(ddof=1) / n_a, b.var(ddof=1) / n_b
            df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
            half = stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(va + vb)
            d = a.mean() - b.mean()
            ci = welch_diff_ci(a, b, confidence)
            assert (ci.low, ci.high) == pytest.approx((d - half, d + half))


def test_the_resolution_floor_still_widens_an_interval_scipy_would_not():
    x = [0.300, 0.302, 0.300]  # s^2 = 1.3e-6, above the floor of a 1/500 grid, 3.3e-7
    tight = [0.300, 0.3001, 0.300]  # s^2 = 3.3e-9, below the floor of a 1/500 grid
    floored = mean_ci(tight, resolution=1 / 500)
    scipy_ci = stats.ttest_1samp(tight, 0.0).confidence_interval()
    assert floored.high - floored.low > 2 * (scipy_ci.high - scipy_ci.low)
    half = stats.t.ppf(0.975, 2) * math.sqrt((1 / 500) ** 2 / 12 / 3)
    assert floored.high - floored.estimate == pytest.approx(half)
    # Above the floor the resolution changes nothing.
    assert mean_ci(x, resolution=1 / 500) == mean_ci(x)
