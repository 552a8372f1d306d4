"""Slow reference MIG with disentanglement_lib semantics, for tests and the benchmark only.

A loop over code dimensions with ``np.histogram`` + ``np.digitize`` discretisation and one
``sklearn.metrics.mutual_info_score`` call per (code, factor) pair, the way disentanglement_lib
computes ``discrete_mig``. It exists to check :func:`vaesae.metrics.mig` against an independent
implementation and to time it; nothing in the package calls it at run time. scikit-learn is a
development dependency, so it is imported inside the function.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ReferenceMIG(NamedTuple):
    """Reference figures: score, per-factor MIG, MI matrix [D, K] (nats), factor entropies [K]."""

    score: float
    per_factor: np.ndarray
    mi: np.ndarray
    entropy: np.ndarray


def reference_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Bin (1..num_bins) of every entry, per column: ``np.digitize(z, np.histogram(z)[1][:-1])``.

    Codes are cast to float64 first, as :func:`vaesae.metrics.mig` does, so that both see the same
    values and bin edges.
    """
    z = np.asarray(codes, dtype=np.float64)
    out = np.empty(z.shape, dtype=np.int64)
    for d in range(z.shape[1]):
        edges = np.histogram(z[:, d], num_bins)[1]
        out[:, d] = np.digitize(z[:, d], edges[:-1])
    return out


def reference_mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> ReferenceMIG:
    """MIG of ``codes`` [N, D] w.r.t. integer ``factors`` [N, K], one sklearn call per pair.

    ``mi[d, k] = mutual_info_score(factor_k, binned code_d)`` and
    ``entropy[k] = mutual_info_score(factor_k, factor_k)`` (nats); per factor, the gap between the
    two largest ``mi[:, k]`` divided by ``entropy[k]``; the score is the mean gap.
    """
    from sklearn.metrics import mutual_info_score

    binned = reference_discretize(codes, num_bins)
    y = np.asarray(factors)
    num_codes, num_factors = binned.shape[1], y.shape[1]
    mi = np.empty((num_codes, num_factors))
    for d in range(num_codes):
        for k in range(num_factors):
            mi[d, k] = mutual_info_score(y[:, k], binned[:, d])
    entropy = np.array([mutual_info_score(y[:, k], y[:, k]) for k in range(num_factors)])
    top = np.sort(mi, axis=0)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_factor = (top[0] - top[1]) / entropy
    return ReferenceMIG(float(np.mean(per_factor)), per_factor, mi, entropy)
