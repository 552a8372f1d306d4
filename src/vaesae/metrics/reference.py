"""Slow reference metrics with disentanglement_lib semantics, for tests and the benchmark only.

MIG: a loop over code dimensions with ``np.histogram`` + ``np.digitize`` discretisation and one
``sklearn.metrics.mutual_info_score`` call per (code, factor) pair, the way disentanglement_lib
computes ``discrete_mig``. Modularity, SAP and DCI: loops over codes / factors with numpy, scipy
and scikit-learn in the shape of disentanglement_lib's ``modularity_explicitness``, ``sap_score``
and ``dci``. They exist to check :mod:`vaesae.metrics` against independent implementations and to
time it; nothing in the package calls them at run time. scikit-learn is imported inside the
functions.
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


# The references below are, like ``reference_mig``, for the tests and the benchmark only: plain
# numpy / scipy / scikit-learn loops in the shape of disentanglement_lib's metrics, with codes and
# factors as [N, D] and [N, K] arrays.


def reference_modularity(
    codes: np.ndarray, factors: np.ndarray, num_bins: int = 20
) -> tuple[float, np.ndarray]:
    """Modularity score and per-code scores [D], one code at a time.

    The MI matrix is ``reference_mig``'s; for each code, with ``m`` its squared MI row,
    ``1 - (sum(m) - max(m)) / (max(m) * (K - 1))``, or 0 if ``max(m) == 0``; the score is the mean.
    """
    mi = reference_mig(codes, factors, num_bins).mi
    num_factors = mi.shape[1]
    per_code = np.zeros(mi.shape[0])
    for d in range(mi.shape[0]):
        squared = mi[d] ** 2
        peak = squared.max()
        if peak > 0:
            per_code[d] = 1.0 - (squared.sum() - peak) / (peak * (num_factors - 1.0))
    return float(np.mean(per_code)), per_code


def reference_sap(
    codes: np.ndarray,
    factors: np.ndarray,
    continuous: bool = True,
    test_codes: np.ndarray | None = None,
    test_factors: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """SAP score and score matrix [D, K], one (code, factor) pair at a time.

    Continuous: ``np.cov`` of the pair (ddof=1), ``cov^2 / (var_z var_v)``, 0 if ``var_z <= 1e-12``.
    Discrete: test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` on the one code.
    Score: mean over factors of the gap between the two largest entries of the column.
    """
    from sklearn.svm import LinearSVC

    z, y = np.asarray(codes), np.asarray(factors)
    matrix = np.zeros((z.shape[1], y.shape[1]))
    for d in range(z.shape[1]):
        for k in range(y.shape[1]):
            if continuous:
                cov = np.cov(z[:, d].astype(np.float64), y[:, k].astype(np.float64), ddof=1)
                if cov[0, 0] > 1e-12:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        matrix[d, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
            else:
                classifier = LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(z[:, d : d + 1], y[:, k])
                pred = classifier.predict(np.asarray(test_codes)[:, d : d + 1])
                matrix[d, k] = np.mean(pred == np.asarray(test_factors)[:, k])
    ordered = np.sort(matrix, axis=0)
    return float(np.mean(ordered[-1] - ordered[-2])), matrix


class ReferenceDCI(NamedTuple):
    """Reference DCI figures and the importance matrix [D, K] they come from."""

    disentanglement: float
    completeness: float
    informativeness: float
    informativeness_train: float
    importance: np.ndarray


def reference_dci_scores(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of ``importance`` [D, K] with ``scipy.stats.entropy``.

    Per code: ``1 - entropy(row + 1e-11, base=K)`` weighted by the row's share of the total; per
    factor: ``1 - entropy(column + 1e-11, base=D)`` weighted by the column's share (uniform weights
    if the matrix is all zeros).
    """
    from scipy.stats import entropy

    num_codes, num_factors = importance.shape
    weights = np.ones_like(importance) if importance.sum() == 0 else importance
    disentanglement = 0.0
    for d in range(num_codes):
        h = entropy(importance[d] + 1e-11, base=num_factors)
        disentanglement += (1.0 - h) * weights[d].sum() / weights.sum()
    completeness = 0.0
    for k in range(num_factors):
        h = entropy(importance[:, k] + 1e-11, base=num_codes)
        completeness += (1.0 - h) * weights[:, k].sum() / weights.sum()
    return float(disentanglement), float(completeness)


def reference_dci(
    codes: np.ndarray,
    factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    random_state: int | None = 0,
) -> ReferenceDCI:
    """DCI with one default ``GradientBoostingClassifier`` per factor, fitted in a loop.

    Column k of the importance matrix is the classifier's ``feature_importances_``; the
    informativeness is the mean test (and train) accuracy; scores from :func:`reference_dci_scores`.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    num_factors = factors.shape[1]
    importance = np.zeros((codes.shape[1], num_factors))
    train, test = [], []
    for k in range(num_factors):
        model = GradientBoostingClassifier(random_state=random_state)
        model.fit(codes, factors[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train.append(np.mean(model.predict(codes) == factors[:, k]))
        test.append(np.mean(model.predict(test_codes) == test_factors[:, k]))
    disentanglement, completeness = reference_dci_scores(importance)
    return ReferenceDCI(
        disentanglement, completeness, float(np.mean(test)), float(np.mean(train)), importance
    )
