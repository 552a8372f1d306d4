"""How far a model has trained: the reconstruction's share of the no-information gap, and the SAE's
fraction of variance unexplained.

No-information gap. A Bernoulli decoder that ignores its input can do no better than the mean
image m (per pixel, over the data), whose reconstruction costs mean_i BCE(m, x_i) =
sum_p H(m_p) nats per image (H the binary entropy, since E_i[BCE(m_p, x_ip)] = H(m_p) when m_p is
the mean of x_ip). No decoder can do better than the targets themselves: BCE(x, x) = sum_p
H(x_p), the floor (0 for binary dSprites). A model's reconstruction ``recon`` has closed

    gap_closed = (mean_image - recon) / (mean_image - floor)

of that gap: 0 at the no-information state, 1 at a perfect reconstruction.

FVU (Gao et al. 2024, "Scaling and evaluating sparse autoencoders": the normalised MSE) is
sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean(x)||^2, the fraction of the input's variance the
SAE leaves unexplained: 1 for the mean predictor, 0 for the identity. The energy fraction
sum ||x - x_hat||^2 / sum ||x||^2 (the training objective's ``sae_mse`` under the ``norm`` input)
counts the mean of x as explained too, so on inputs with a large mean it is much smaller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ReconLevels", "ReconStats", "binary_entropy", "fvu", "gap_closed", "recon_levels"]


def binary_entropy(p: Tensor) -> Tensor:
    """H(p) = -p log p - (1 - p) log(1 - p) in nats, elementwise; 0 at p = 0 and p = 1."""
    p = p.double()
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


@dataclass(frozen=True)
class ReconLevels:
    """The two ends of the no-information gap, in nats per image."""

    mean_image: float  # sum_p H(m_p): the BCE of the data's mean image
    floor: float  # mean_i sum_p H(x_ip): the BCE of the targets themselves

    def to_dict(self) -> dict[str, float]:
        return {"mean_image": self.mean_image, "floor": self.floor}


def recon_levels(batches: Iterable[Tensor]) -> ReconLevels:
    """:class:`ReconLevels` of image batches (B, C, H, W) with intensities in [0, 1], streamed:
    one pass accumulates the pixel sums and the targets' entropies."""
    total: Tensor | None = None
    entropy, n = 0.0, 0
    for x in batches:
        x = x.double()
        total = x.sum(0) if total is None else total + x.sum(0)
        entropy += float(binary_entropy(x).sum())
        n += x.shape[0]
    if total is None or n == 0:
        raise ValueError("recon_levels needs at least one image")
    return ReconLevels(float(binary_entropy(total / n).sum()), entropy / n)


def gap_closed(recon: float, levels: ReconLevels) -> float:
    """(mean_image - recon) / (mean_image - floor): the share of the no-information gap that a
    reconstruction of ``recon`` nats per image has closed (NaN for a degenerate gap)."""
    gap = levels.mean_image - levels.floor
    if not gap > 0:
        return math.nan
    return (levels.mean_image - recon) / gap


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """sum ||x - x_hat||^2 / sum ||x - mean_batch x||^2 over the rows of x, x_hat (N, d), as a
    0-d float32 tensor on their device (no host sync; NaN when x has no spread)."""
    x, x_hat = x.float(), x_hat.float()
    spread = (x - x.mean(0)).pow(2).sum()
    err = (x - x_hat).pow(2).sum()
    return torch.where(spread > 0, err / spread, torch.full_like(err, math.nan))


class ReconStats:
    """Streaming evaluation figures over batches: the reconstruction (nats per image), and the
    SAE's FVU and energy fraction on its (normalised) input.

    FVU's denominator is accumulated as sum ||x||^2 - n ||mean x||^2, in float64.
    """

    def __init__(self) -> None:
        self.n = 0
        self.recon_sum = 0.0
        self.err_sum = 0.0
        self.energy_sum = 0.0
        self.x_sum: Tensor | None = None

    def update(self, recon_per_image: Tensor, x: Tensor, x_hat: Tensor) -> None:
        """recon_per_image (B,) in nats; x, x_hat (B, d) the SAE's input and reconstruction."""
        x, x_hat = x.double(), x_hat.double()
        self.n += x.shape[0]
        self.recon_sum += float(recon_per_image.double().sum())
        self.err_sum += float((x - x_hat).pow(2).sum())
        self.energy_sum += float(x.pow(2).sum())
        self.x_sum = x.sum(0) if self.x_sum is None else self.x_sum + x.sum(0)

    def compute(self) -> dict[str, float]:
        """``eval/recon``, ``eval/fvu`` and ``eval/sae_energy_fraction``."""
        if self.n == 0 or self.x_sum is None:
            raise ValueError("ReconStats saw no samples")
        spread = self.energy_sum - float(self.x_sum.pow(2).sum()) / self.n
        return {
            "eval/recon": self.recon_sum / self.n,
            "eval/fvu": self.err_sum / spread if spread > 0 else math.nan,
            "eval/sae_energy_fraction": self.err_sum / self.energy_sum
            if self.energy_sum > 0
            else math.nan,
        }
