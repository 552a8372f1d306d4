"""Per-neuron semantics of sparse codes: does each alive neuron encode one factor?

For alive neuron d and factor k, the normalised mutual information is
``nmi[d, k] = I(bin(z_d); v_k) / H(v_k)`` in [0, 1]: the MI of
:func:`vaesae.metrics.mutual_information` (same histogram binning as MIG) divided by the factor
entropy, both in nats, so the ratio has no unit.
From it, per neuron:

- alignment ``a_d = max_k nmi[d, k]``: how much of some factor's entropy the neuron explains;
- selectivity ``s_d = nmi_(1)d - nmi_(2)d``: best minus second-best factor, high when the neuron
  encodes one factor rather than a mixture;
- assigned factor ``argmax_k nmi[d, k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaesae.metrics.dead import dead_mask
from vaesae.metrics.mutual_info import mutual_information


@dataclass(eq=False)
class NeuronSemantics:
    """Per-neuron factor semantics of the alive neurons of a code, with summary figures.

    Per alive neuron (A of them, in code order):
        neurons: LongTensor[A], index of each alive neuron in the code.
        normalized_mi: float64 Tensor[A, K], ``MI(neuron, factor) / H(factor)`` in [0, 1].
        alignment: float64 Tensor[A], max over factors of ``normalized_mi``.
        selectivity: float64 Tensor[A], best minus second-best ``normalized_mi`` (equals the
            alignment when there is a single factor).
        assigned_factor: LongTensor[A], the factor with the largest ``normalized_mi``.

    Summary:
        mean_alignment: mean alignment over alive neurons (NaN when none is alive).
        frac_aligned: fraction of alive neurons with alignment >= ``align_threshold`` (NaN when
            none is alive).
        frac_selective: fraction of alive neurons with selectivity >= ``select_threshold`` (NaN
            when none is alive).
        factors_covered: number of factors that are the assigned factor of at least one aligned
            neuron (alignment >= ``align_threshold``).
        uncovered_factors: indices of the other factors.
        align_threshold, select_threshold: the thresholds used.
    """

    neurons: Tensor
    normalized_mi: Tensor
    alignment: Tensor
    selectivity: Tensor
    assigned_factor: Tensor
    mean_alignment: float
    frac_aligned: float
    frac_selective: float
    factors_covered: int
    uncovered_factors: tuple[int, ...]
    align_threshold: float
    select_threshold: float

    def summary(self) -> dict[str, float]:
        """The scalar figures, for logging: alive count, mean alignment, fractions, coverage."""
        return {
            "num_alive": float(self.neurons.numel()),
            "mean_alignment": self.mean_alignment,
            "frac_aligned": self.frac_aligned,
            "frac_selective": self.frac_selective,
            "factors_covered": float(self.factors_covered),
        }


def semantics_from_mi(
    mi: Tensor,
    entropy: Tensor,
    alive: Tensor,
    align_threshold: float = 0.1,
    select_threshold: float = 0.05,
) -> NeuronSemantics:
    """Per-neuron semantics from an MI matrix ``mi`` [D, K] (nats), factor entropies [K] (nats)
    and the alive mask [D] (BoolTensor, True for neurons to describe).

    A factor with zero entropy (constant over the sample) cannot be encoded; its normalised MI is
    taken as 0 rather than 0/0.
    """
    if alive.shape != mi.shape[:1] or alive.dtype != torch.bool:
        raise ValueError(f"alive must be a BoolTensor of shape [{mi.shape[0]}]")
    num_factors = mi.shape[1]
    neurons = alive.nonzero().flatten()
    normalized = torch.where(entropy > 0, mi[neurons] / entropy, 0.0)
    if num_factors >= 2:
        top = torch.topk(normalized, 2, dim=1).values
        alignment, selectivity = top[:, 0], top[:, 0] - top[:, 1]
    else:
        alignment = normalized[:, 0]
        selectivity = alignment.clone()
    assigned = normalized.argmax(1)
    aligned = alignment >= align_threshold
    covered = torch.zeros(num_factors, dtype=torch.bool, device=mi.device)
    covered[assigned[aligned]] = True
    uncovered = tuple(int(k) for k in (~covered).nonzero().flatten())
    return NeuronSemantics(
        neurons=neurons,
        normalized_mi=normalized,
        alignment=alignment,
        selectivity=selectivity,
        assigned_factor=assigned,
        mean_alignment=float(alignment.mean()),
        frac_aligned=float(aligned.to(torch.float64).mean()),
        frac_selective=float((selectivity >= select_threshold).to(torch.float64).mean()),
        factors_covered=num_factors - len(uncovered),
        uncovered_factors=uncovered,
        align_threshold=align_threshold,
        select_threshold=select_threshold,
    )


def neuron_semantics(
    codes: Tensor,
    factors: Tensor,
    alive: Tensor | None = None,
    num_bins: int = 20,
    align_threshold: float = 0.1,
    select_threshold: float = 0.05,
) -> NeuronSemantics:
    """Per-neuron semantics of sparse ``codes`` [N, D] w.r.t. integer ``factors`` [N, K].

    ``alive`` (BoolTensor[D]) selects the neurons to describe; by default the neurons that fire
    (activation > 0) on at least one sample, i.e. not dead under the ``never`` rule. MI uses the
    histogram binning and estimator of :func:`vaesae.metrics.mutual_information` (``num_bins``).
    """
    if alive is None:
        alive = ~dead_mask(codes, "never")
    mi, entropy = mutual_information(codes[:, alive], factors, num_bins)
    full = torch.zeros(codes.shape[1], mi.shape[1], dtype=mi.dtype, device=mi.device)
    full[alive] = mi
    return semantics_from_mi(full, entropy, alive, align_threshold, select_threshold)
