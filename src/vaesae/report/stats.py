"""Statistics over seeds: pure functions of small float arrays (one value per seed).

Bootstrap confidence intervals are percentile intervals from `N_RESAMPLES` resamples drawn with a
seeded `numpy.random.Generator` (`BOOTSTRAP_SEED`), so a report is reproducible to the digit.
With n seeds a resample draws n values with replacement; with n = 3 there are only 10 distinct
resamples, so the interval is coarse and roughly spans the observed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "N_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "Interval",
    "TestResult",
    "mean_std",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "welch_test",
    "paired_test",
]

N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval [low, high]; NaN bounds when undefined."""

    estimate: float
    low: float
    high: float

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def contains(self, value: float) -> bool:
        return self.defined and self.low <= value <= self.high


@dataclass(frozen=True)
class TestResult:
    """A two-sided test: statistic, p-value (NaN when undefined), mean difference, sample sizes."""

    statistic: float
    p_value: float
    difference: float
    n: tuple[int, ...]


def _finite(x: np.ndarray | list[float]) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[np.isfinite(a)]


def _constant(x: np.ndarray) -> bool:
    """All values equal up to float rounding (differences of dead rates are multiples of
    1/width, computed in floating point), so a t statistic would divide by rounding noise."""
    return len(x) == 0 or bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())))


def mean_std(x: np.ndarray | list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation ``sqrt(sum (x_i - mean)^2 / (n - 1))`` and n over the
    finite values; std is NaN for n < 2, both are NaN for n = 0."""
    a = _finite(x)
    if len(a) == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan, len(a)


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(
    x: np.ndarray | list[float],
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Percentile bootstrap CI of the mean: resample the n values with replacement B times,
    ``m_b = mean(x*_b)``, interval = the (1-c)/2 and (1+c)/2 quantiles of {m_b}.
    Undefined (NaN bounds) for n < 2."""
    a = _finite(x)
    estimate = float(a.mean()) if len(a) else math.nan
    if len(a) < 2:
        return Interval(estimate, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, len(a), size=(n_resamples, len(a)))].mean(axis=1)
    return Interval(estimate, *_percentiles(means, confidence))


def bootstrap_ratio_ci(
    numerator: np.ndarray | list[float],
    denominator: np.ndarray | list[float],
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Ratio of means ``mean(a) / mean(b)`` of two independent samples (e.g. Shapes3D and dSprites
    seeds) with a percentile bootstrap CI: each group is resampled with replacement on its own,
    ``r_b = mean(a*_b) / mean(b*_b)``. Undefined when either group has n < 2 or a resampled
    denominator mean is 0 (the ratio is then unbounded)."""
    a, b = _finite(numerator), _finite(denominator)
    estimate = float(a.mean() / b.mean()) if len(a) and len(b) and b.mean() != 0 else math.nan
    if len(a) < 2 or len(b) < 2:
        return Interval(estimate, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    num = a[rng.integers(0, len(a), size=(n_resamples, len(a)))].mean(axis=1)
    den = b[rng.integers(0, len(b), size=(n_resamples, len(b)))].mean(axis=1)
    if np.any(den == 0):
        return Interval(estimate, math.nan, math.nan)
    return Interval(estimate, *_percentiles(num / den, confidence))


def welch_test(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> TestResult:
    """Welch's two-sided t-test of mean(a) = mean(b) without assuming equal variances:
    ``t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b)`` with Welch-Satterthwaite degrees of
    freedom (`scipy.stats.ttest_ind(equal_var=False)`). NaN when a group has n < 2 or both
    groups are constant."""
    x, y = _finite(a), _finite(b)
    diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    if len(x) < 2 or len(y) < 2 or (_constant(x) and _constant(y)):
        return TestResult(math.nan, math.nan, diff, (len(x), len(y)))
    res = stats.ttest_ind(x, y, equal_var=False)
    return TestResult(float(res.statistic), float(res.pvalue), diff, (len(x), len(y)))


def paired_test(before: np.ndarray | list[float], after: np.ndarray | list[float]) -> TestResult:
    """Paired two-sided t-test on the per-seed differences ``d_i = after_i - before_i``:
    ``t = mean(d) / (sd(d) / sqrt(n))``, n - 1 degrees of freedom (`scipy.stats.ttest_rel`).
    Pairs with a non-finite member are dropped. NaN when n < 2 or all d_i are equal."""
    x, y = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    d = y[keep] - x[keep]
    diff = float(d.mean()) if len(d) else math.nan
    if len(d) < 2 or _constant(d):
        return TestResult(math.nan, math.nan, diff, (len(d),))
    res = stats.ttest_rel(y[keep], x[keep])
    return TestResult(float(res.statistic), float(res.pvalue), diff, (len(d),))
