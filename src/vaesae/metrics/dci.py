"""DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018) with
disentanglement_lib semantics.

For codes z [N, D] (D >= 2) and integer factors v [N, K] (K >= 2), one
``sklearn.ensemble.GradientBoostingClassifier`` (library defaults: 100 stages of depth-3 trees,
learning rate 0.1, no subsampling) per factor predicts v_k from all of z. Its impurity-based
``feature_importances_`` form column k of the importance matrix ``R`` [D, K] (non-negative,
dimensionless, each non-zero column sums to 1). With ``eps = 1e-11`` added to every entry before
normalising, as disentanglement_lib does:

    P[d, k] = (R[d, k] + eps) / sum_j (R[d, j] + eps)          (row d over factors)
    disentanglement = sum_d rho_d * (1 - H_K(P[d, :])),   rho_d = sum_k R[d, k] / sum R
    Q[d, k] = (R[d, k] + eps) / sum_i (R[i, k] + eps)          (column k over codes)
    completeness = sum_k sigma_k * (1 - H_D(Q[:, k])),    sigma_k = sum_d R[d, k] / sum R

where ``H_B(p) = -sum p log p / log B`` is the entropy in base B (so each term is in [0, 1]);
when ``R`` is all zeros both weights become uniform (``rho_d = 1/D``, ``sigma_k = 1/K``).
``informativeness`` is the classifiers' mean accuracy on the test set (a fraction in [0, 1];
``informativeness_train`` the same on the training set), as disentanglement_lib's
``informativeness_test`` / ``informativeness_train``.

Cost and choice of importance model: the trees are fitted exactly as disentanglement_lib does; no
faster substitute is offered. A multi-class GBT fits one tree per class per stage (one per stage
for two classes) on every code dimension, so the cost grows as about N log N * D * sum_k classes_k.
At paper scale (hundreds of alive codes, dSprites' 113 classes) that is hours, so DCI runs only
at the reference epochs, on a subsample (timings and the rejected random-forest model: docs,
*Benchmarks*). ``n_jobs`` fits the factors' classifiers in parallel threads (the trees are built
without the GIL) without changing any figure.
``random_state`` (default 0) fixes the trees' tie-breaking between equally good splits, which
disentanglement_lib leaves unseeded; pass None for its behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from vaesae.metrics.mutual_info import train_test_arrays

# disentanglement_lib adds this to every importance before taking entropies.
IMPORTANCE_EPS = 1e-11


@dataclass(eq=False)
class DCIResult:
    """DCI scores of a representation (all dimensionless).

    Attributes:
        disentanglement: ``sum_d rho_d (1 - H_K(P[d, :]))``, in [0, 1].
        completeness: ``sum_k sigma_k (1 - H_D(Q[:, k]))``, in [0, 1].
        informativeness: mean test accuracy of the per-factor classifiers, in [0, 1].
        informativeness_train: mean training accuracy of the same classifiers, in [0, 1].
        importance: float64 Tensor[D, K], the classifiers' feature importances ``R``.
        per_code: float64 Tensor[D], ``1 - H_K(P[d, :])``.
        per_factor: float64 Tensor[K], ``1 - H_D(Q[:, k])``.
    """

    disentanglement: float
    completeness: float
    informativeness: float
    informativeness_train: float
    importance: Tensor
    per_code: Tensor
    per_factor: Tensor


def _one_minus_entropy(weights: Tensor, dim: int, base: int) -> Tensor:
    """``1 - H_base(p)`` along ``dim`` of ``p = (weights + eps) / sum(weights + eps)``."""
    p = weights + IMPORTANCE_EPS
    p = p / p.sum(dim, keepdim=True)
    entropy = -(p * p.log()).sum(dim) / math.log(base)
    return 1.0 - entropy


def dci_from_importance(importance: Tensor) -> tuple[float, float, Tensor, Tensor]:
    """Disentanglement, completeness, per-code and per-factor scores of ``importance`` [D, K].

    ``importance`` must be non-negative with D >= 2 and K >= 2; it is used in float64. Returns
    ``(disentanglement, completeness, per_code [D], per_factor [K])`` (module docstring).
    """
    if importance.dim() != 2 or importance.shape[0] < 2 or importance.shape[1] < 2:
        raise ValueError(
            "DCI needs an importance matrix [codes, factors] with at least two codes and two "
            f"factors, got shape {tuple(importance.shape)}"
        )
    r = importance.to(torch.float64)
    if not torch.isfinite(r).all() or (r < 0).any():
        raise ValueError("importances must be finite and non-negative")
    num_codes, num_factors = r.shape
    per_code = _one_minus_entropy(r, 1, num_factors)
    per_factor = _one_minus_entropy(r, 0, num_codes)
    weights = torch.ones_like(r) if r.sum() == 0 else r
    rho = weights.sum(1) / weights.sum()
    sigma = weights.sum(0) / weights.sum()
    return (
        float((per_code * rho).sum()),
        float((per_factor * sigma).sum()),
        per_code,
        per_factor,
    )


def _fit_factor(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    random_state: int | None,
) -> tuple[np.ndarray, float, float]:
    """Importances [D], training and test accuracy of one default GBT classifier."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=random_state).fit(x, y)
    return (
        np.abs(model.feature_importances_),
        float(np.mean(model.predict(x) == y)),
        float(np.mean(model.predict(x_test) == y_test)),
    )


def gbt_importance(
    codes: Tensor,
    factors: Tensor,
    test_codes: Tensor,
    test_factors: Tensor,
    random_state: int | None = 0,
    n_jobs: int = 1,
) -> tuple[Tensor, float, float]:
    """Importance matrix [D, K] (float64) and mean train / test accuracy of one
    ``GradientBoostingClassifier`` per factor (module docstring), fitted in ``n_jobs`` threads.
    """
    x, y, x_test, y_test = train_test_arrays(codes, factors, test_codes, test_factors)
    if not (np.isfinite(x).all() and np.isfinite(x_test).all()):
        raise ValueError("codes and test_codes must be finite")
    jobs = [(x, y[:, k], x_test, y_test[:, k], random_state) for k in range(y.shape[1])]
    if n_jobs == 1:
        fits = [_fit_factor(*job) for job in jobs]
    else:
        from joblib import Parallel, delayed

        # joblib is untyped; its default return_as="list" gives one result per job, in order.
        fits = cast(
            list[tuple[np.ndarray, float, float]],
            Parallel(n_jobs=n_jobs, prefer="threads")(delayed(_fit_factor)(*job) for job in jobs),
        )
    importance = torch.from_numpy(np.stack([fit[0] for fit in fits], 1).astype(np.float64))
    train = float(np.mean([fit[1] for fit in fits]))
    test = float(np.mean([fit[2] for fit in fits]))
    return importance.to(codes.device), train, test


def dci(
    codes: Tensor,
    factors: Tensor,
    test_codes: Tensor,
    test_factors: Tensor,
    random_state: int | None = 0,
    n_jobs: int = 1,
) -> DCIResult:
    """DCI of ``codes`` [N, D >= 2] w.r.t. integer ``factors`` [N, K >= 2] (module docstring).

    The classifiers are trained on ``codes``/``factors`` and tested on ``test_codes`` [M, D] /
    ``test_factors`` [M, K]; importances from :func:`gbt_importance`, scores from
    :func:`dci_from_importance`, as disentanglement_lib's ``compute_dci``.
    """
    if codes.dim() == 2 and factors.dim() == 2 and (codes.shape[1] < 2 or factors.shape[1] < 2):
        raise ValueError(
            f"DCI needs at least two code dimensions and two factors, got {codes.shape[1]} and "
            f"{factors.shape[1]}"
        )
    importance, train, test = gbt_importance(
        codes, factors, test_codes, test_factors, random_state, n_jobs
    )
    disentanglement, completeness, per_code, per_factor = dci_from_importance(importance)
    return DCIResult(
        disentanglement=disentanglement,
        completeness=completeness,
        informativeness=test,
        informativeness_train=train,
        importance=importance,
        per_code=per_code,
        per_factor=per_factor,
    )
