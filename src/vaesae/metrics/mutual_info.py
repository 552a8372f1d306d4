"""Mutual Information Gap with disentanglement_lib semantics, vectorised in torch.

For codes z [N, D] and integer factors v [N, K]:

1. each code dimension is discretised into ``num_bins`` equal-width bins over that sample's
   min..max, exactly as ``np.digitize(z_d, np.histogram(z_d, num_bins)[1][:-1])``;
2. ``mi[d, k] = I(bin(z_d); v_k)`` is the plug-in (empirical) mutual information in nats, as
   ``sklearn.metrics.mutual_info_score`` computes it, and ``entropy[k] = H(v_k)`` in nats;
3. per factor, ``mig_k = (mi_(1)k - mi_(2)k) / H(v_k)`` with ``mi_(1)k >= mi_(2)k`` the two largest
   values of ``mi[:, k]``; the score is the mean of ``mig_k`` over factors.

All (code, factor) contingency tables come from one ``bincount`` over combined indices, computed in
blocks of code dimensions to bound memory, in float64 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Index entries per bincount block (N x code dims x K); bounds the temporary memory to a few MiB
# and keeps each block's histogram in cache.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(eq=False)
class MIGResult:
    """MIG of a representation.

    Attributes:
        score: mean of ``per_factor`` (dimensionless, in [0, 1]).
        per_factor: float64 Tensor[K], ``(mi_(1)k - mi_(2)k) / entropy[k]``.
        mi: float64 Tensor[D, K], mutual information between binned code d and factor k, in nats.
        entropy: float64 Tensor[K], entropy of each factor over the sample, in nats.

    A factor that is constant over the sample has zero entropy; like the reference, its
    ``per_factor`` entry and the score are then NaN.
    """

    score: float
    per_factor: Tensor
    mi: Tensor
    entropy: Tensor


def histogram_discretize(codes: Tensor, num_bins: int = 20) -> Tensor:
    """Bin index in 0..num_bins-1 of every entry of ``codes`` [N, D], per code dimension.

    Matches ``np.digitize(z, np.histogram(z, num_bins)[1][:-1]) - 1`` on the float64 values of each
    column: edges ``e_i = i * step + lo`` with ``step = (hi - lo) / num_bins`` over the column's
    ``lo = min``, ``hi = max`` (``lo - 0.5``, ``hi + 0.5`` for a constant column, which then lands
    in one bin), and a value's bin is the number of edges ``e_0..e_{B-1}`` that are <= it, minus
    one; so the maximum lands in the last bin.

    Codes are converted to float64 first (exact for float32 and half codes), so the edges are
    those ``np.histogram`` gives on the float64 values; the reference in the tests and the
    benchmark is fed the same float64 values. ``np.histogram`` on a float32 array instead rounds
    its edges to float32 (numpy 1 rounds float64 edges, numpy 2 computes in float32), which can
    move a value lying within a float32 rounding of an edge into the neighbouring bin, and it
    refuses a range narrower than ``num_bins`` float32 steps (e.g. a collapsed latent jittering by
    one ulp); in float64 neither happens for float32 data.
    """
    if codes.dim() != 2:
        raise ValueError(f"codes must be a 2-D [samples, dims] tensor, got {codes.dim()}-D")
    return _bin_index(_as_float64_rows(codes), num_bins).T


def _as_float64_rows(codes: Tensor) -> Tensor:
    """Codes [N, D] as contiguous float64 [D, N], so that each code dimension is one row."""
    rows = torch.empty(codes.shape[1], codes.shape[0], dtype=torch.float64, device=codes.device)
    return rows.copy_(codes.detach().T)


def _bin_index(rows: Tensor, num_bins: int) -> Tensor:
    """Bins (0..num_bins-1) of float64 ``rows`` [D, N], each row binned over its own range."""
    if rows.shape[1] == 0:
        raise ValueError("codes must hold at least one sample")
    if num_bins < 1:
        raise ValueError(f"num_bins must be positive, got {num_bins}")
    lo, hi = rows.amin(1), rows.amax(1)
    # amin/amax propagate NaN, so checking them covers every entry.
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("codes must be finite (np.histogram refuses a non-finite range)")
    constant = lo == hi
    lo = torch.where(constant, lo - 0.5, lo)
    hi = torch.where(constant, hi + 0.5, hi)
    step = (hi - lo) / num_bins
    # Same operation order as np.linspace (multiply, then add, last edge set to hi) so the edges
    # are bit-identical to numpy's.
    edges = torch.arange(num_bins + 1, dtype=torch.float64, device=rows.device) * step[:, None]
    edges = edges + lo[:, None]
    edges[:, -1] = hi
    if (edges[:, 1:] <= edges[:, :-1]).any():
        raise ValueError(
            f"too many bins for the data range of some code: cannot create {num_bins} "
            "finite-sized bins (as np.histogram)"
        )
    return torch.searchsorted(edges[:, :-1].contiguous(), rows, right=True) - 1


def _factor_labels(factors: Tensor) -> tuple[Tensor, Tensor]:
    """Relabel each factor column to consecutive integers, offset so all columns share one range.

    Returns ``labels`` [K, N] with values in 0..C-1 (C = total number of distinct values over all
    factors) and ``factor_of_label`` [C], the factor each label belongs to. Factor values need not
    start at 0 nor be contiguous.
    """
    columns = [torch.unique(column, return_inverse=True)[1] for column in factors.T]
    sizes = [int(column.max()) + 1 for column in columns]
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    labels = torch.stack([c + o for c, o in zip(columns, offsets, strict=True)])
    factor_of_label = torch.repeat_interleave(
        torch.arange(len(sizes), device=factors.device),
        torch.tensor(sizes, device=factors.device),
    )
    return labels, factor_of_label


def _joint_counts(rows: Tensor, labels: Tensor, num_labels: int, num_bins: int) -> Tensor:
    """Counts [D, num_bins, C] of (code bin, factor label) for float64 code ``rows`` [D, N]."""
    bins = _bin_index(rows, num_bins)
    dims = bins.shape[0]
    size = dims * num_bins * num_labels
    # int32 indices halve the memory traffic of the dominant step whenever they cannot overflow.
    index_dtype = torch.int32 if size < 2**31 else torch.int64
    key = torch.arange(dims, dtype=index_dtype, device=bins.device)[:, None] * num_bins
    key = (key + bins.to(index_dtype)) * num_labels
    # Laid out [K, D, N] so the broadcast add runs along the long sample axis.
    index = key[None, :, :] + labels.to(index_dtype)[:, None, :]
    return torch.bincount(index.reshape(-1), minlength=size).reshape(dims, num_bins, num_labels)


def _check_inputs(codes: Tensor, factors: Tensor) -> None:
    if codes.dim() != 2 or factors.dim() != 2:
        raise ValueError(
            f"codes [N, D] and factors [N, K] must be 2-D, got shapes {tuple(codes.shape)} and "
            f"{tuple(factors.shape)}"
        )
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(
            f"codes and factors must have the same number of samples, got {codes.shape[0]} and "
            f"{factors.shape[0]}"
        )
    if factors.dtype.is_floating_point or factors.dtype.is_complex or factors.dtype == torch.bool:
        raise ValueError(f"factors must be an integer tensor of class indices, got {factors.dtype}")
    if codes.shape[0] == 0:
        raise ValueError("codes and factors must hold at least one sample")
    if factors.shape[1] == 0:
        raise ValueError("factors must have at least one column")
    if codes.device != factors.device:
        raise ValueError(f"codes are on {codes.device} but factors on {factors.device}")


def train_test_arrays(
    codes: Tensor, factors: Tensor, test_codes: Tensor, test_factors: Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked numpy copies (x, y, x_test, y_test) of a training and a test set of codes and
    factors, for the metrics that fit scikit-learn models; ValueError names a shape mismatch."""
    _check_inputs(codes, factors)
    _check_inputs(test_codes, test_factors)
    if test_codes.shape[1] != codes.shape[1] or test_factors.shape[1] != factors.shape[1]:
        raise ValueError(
            f"test set shapes {tuple(test_codes.shape)} / {tuple(test_factors.shape)} do not "
            f"match the training codes {tuple(codes.shape)} / factors {tuple(factors.shape)} "
            "in dimensions"
        )
    x, y = codes.detach().cpu().numpy(), factors.cpu().numpy()
    return x, y, test_codes.detach().cpu().numpy(), test_factors.cpu().numpy()


def mutual_information(codes: Tensor, factors: Tensor, num_bins: int = 20) -> tuple[Tensor, Tensor]:
    """Plug-in mutual information of binned codes with factors, and factor entropies, in nats.

    ``codes`` [N, D] (any real dtype), ``factors`` [N, K] integer. With ``n_bc`` the number of
    samples whose code d falls in bin b and whose factor k equals c, ``n_b`` and ``n_c`` the
    marginal counts:

        mi[d, k] = sum_{b,c: n_bc > 0} (n_bc / N) * log(N * n_bc / (n_b * n_c))
        entropy[k] = sum_c (n_c / N) * log(N / n_c)

    (sklearn's ``mutual_info_score(factor, binned code)`` and ``mutual_info_score(factor, factor)``;
    MI is clipped at 0 like sklearn's). Returns float64 ``mi`` [D, K] and ``entropy`` [K] on the
    codes' device. Binning is :func:`histogram_discretize`.
    """
    _check_inputs(codes, factors)
    num_samples, num_codes = codes.shape
    labels, factor_of_label = _factor_labels(factors)
    num_labels, num_factors = factor_of_label.numel(), factors.shape[1]
    block = max(1, _BLOCK_ELEMENTS // (num_samples * num_factors))
    blocks = [
        _joint_counts(
            _as_float64_rows(codes[:, start : start + block]), labels, num_labels, num_bins
        )
        for start in range(0, num_codes, block)
    ]
    joint = (
        torch.cat(blocks)
        if blocks
        else torch.zeros(0, num_bins, num_labels, dtype=torch.long, device=codes.device)
    )
    label_count = torch.bincount(labels.reshape(-1), minlength=num_labels)
    # Every factor's slice of the joint sums to the same code-bin marginal; the first is used.
    first_size = int((factor_of_label == 0).sum())
    bin_count = joint[:, :, :first_size].sum(-1, keepdim=True)
    # Counts are integers in 0..N, so their logs come from one table. Grouping the terms as
    # (log n_bc - log n_c) + (log N - log n_b) makes a constant code's MI exactly 0 and a code that
    # relabels a factor's values carry MI exactly equal to the factor's entropy.
    log_count = torch.arange(num_samples + 1, dtype=torch.float64, device=codes.device).log()
    log_n = log_count[num_samples]
    terms = (log_count[joint] - log_count[label_count]) + (log_n - log_count[bin_count])
    terms = torch.where(joint > 0, joint.to(torch.float64) / num_samples * terms, 0.0)
    mi = torch.zeros(num_codes, num_factors, dtype=torch.float64, device=codes.device)
    mi.index_add_(1, factor_of_label, terms.sum(1)).clamp_(min=0.0)
    p = label_count.to(torch.float64) / num_samples
    entropy = torch.zeros(num_factors, dtype=torch.float64, device=codes.device)
    entropy.index_add_(0, factor_of_label, p * (log_n - log_count[label_count]))
    return mi, entropy


def mig(codes: Tensor, factors: Tensor, num_bins: int = 20) -> MIGResult:
    """Mutual Information Gap of ``codes`` [N, D] (D >= 2) w.r.t. integer ``factors`` [N, K].

    ``per_factor[k] = (mi_(1)k - mi_(2)k) / H(v_k)``, the gap between the largest and second
    largest ``mi[:, k]`` (nats, :func:`mutual_information`) normalised by the factor entropy (nats),
    and ``score = mean_k per_factor[k]``: disentanglement_lib's ``discrete_mig`` with
    ``num_bins`` histogram bins.
    """
    if codes.dim() == 2 and codes.shape[1] < 2:
        raise ValueError(f"MIG needs at least two code dimensions, got {codes.shape[1]}")
    mi, entropy = mutual_information(codes, factors, num_bins)
    top = torch.topk(mi, 2, dim=0).values
    per_factor = (top[0] - top[1]) / entropy
    return MIGResult(score=float(per_factor.mean()), per_factor=per_factor, mi=mi, entropy=entropy)
