"""Modularity (Ridgeway & Mozer 2018) with disentanglement_lib semantics, in torch.

A code dimension is modular when it carries information about at most one factor. From the mutual
information matrix ``mi`` [D, K] (nats) of :func:`vaesae.metrics.mutual_information` (the binning
and plug-in estimator MIG uses), with ``theta_d = max_k mi[d, k]``:

    delta_d = sum_{k != argmax} mi[d, k]^2 / (theta_d^2 * (K - 1))
    per_code[d] = 1 - delta_d                 (0 when theta_d == 0)
    score = mean_d per_code[d]

``delta_d`` is the squared distance of the code's MI row from its template (the row with only the
largest entry kept) relative to the largest possible such distance; it is dimensionless, in
[0, 1], so ``per_code`` and ``score`` are in [0, 1] too.

A code that carries no information about any factor (``theta_d == 0``, e.g. a dead or constant
unit) makes ``delta_d`` 0 / 0. disentanglement_lib's ``modularity`` sets such a code's score to 0
and keeps it in the mean; this implementation does the same, so dead units lower the score.
Ridgeway & Mozer's explicitness (a logistic regression per factor) is not implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaesae.metrics.mutual_info import mutual_information


@dataclass(eq=False)
class ModularityResult:
    """Modularity of a representation.

    Attributes:
        score: mean of ``per_code`` (dimensionless, in [0, 1]).
        per_code: float64 Tensor[D], ``1 - delta_d``; 0 for a code with zero MI to every factor.
        mi: float64 Tensor[D, K], the mutual information matrix it was computed from, in nats.
    """

    score: float
    per_code: Tensor
    mi: Tensor


def modularity_from_mi(mi: Tensor) -> Tensor:
    """Per-code modularity ``1 - delta_d`` [D] of a mutual information matrix ``mi`` [D, K >= 2].

    ``delta_d = (sum_k mi[d, k]^2 - max_k mi[d, k]^2) / (max_k mi[d, k]^2 * (K - 1))``; rows whose
    maximum is 0 get 0. Units of ``mi`` cancel.
    """
    if mi.dim() != 2 or mi.shape[1] < 2:
        raise ValueError(
            f"modularity needs an MI matrix [codes, factors] with at least two factors, got shape "
            f"{tuple(mi.shape)}"
        )
    squared = mi.to(torch.float64).square()
    peak = squared.amax(1)
    rest = squared.sum(1) - peak
    informative = peak > 0
    delta = rest / (torch.where(informative, peak, 1.0) * (mi.shape[1] - 1))
    return torch.where(informative, 1.0 - delta, 0.0)


def modularity(codes: Tensor, factors: Tensor, num_bins: int = 20) -> ModularityResult:
    """Modularity of ``codes`` [N, D] w.r.t. integer ``factors`` [N, K >= 2] (module docstring).

    ``mi`` is :func:`vaesae.metrics.mutual_information` with ``num_bins`` equal-width bins per code
    (the same matrix as ``mig(codes, factors, num_bins).mi``); ``per_code[d] = 1 - delta_d`` and
    ``score = mean_d per_code[d]``, as disentanglement_lib's ``modularity`` computes them.
    """
    if factors.dim() == 2 and factors.shape[1] < 2:
        raise ValueError(f"modularity needs at least two factors, got {factors.shape[1]}")
    mi, _ = mutual_information(codes, factors, num_bins)
    if mi.shape[0] == 0:
        raise ValueError("codes must have at least one dimension")
    per_code = modularity_from_mi(mi)
    return ModularityResult(score=float(per_code.mean()), per_code=per_code, mi=mi)
