"""The AuxK loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", section A.2):
dead units are trained to reconstruct what the live ones miss, so they get gradient again.

Scale: as in Gao et al.'s code (openai/sparse_autoencoder), the aux term is the normalised MSE of
the residual, ||e - e_hat||^2 / ||e - mean(e)||^2 over the batch, weighted 1/32; the module adds it
times the main SAE error's own weight alpha, so it sits on the main term's scale (a raw squared
error times 1/32 beside alpha = 10 would weigh 1/320 of the main term per unit of error)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vaesae.models import SparseAutoencoder

# Gao et al. pair AuxK with per-sample Top-k (and Bussmann et al. with BatchTopK), whose dead units
# otherwise get no gradient at all.
AUXK_METHODS = ("topk",)


@dataclass(frozen=True)
class AuxKSettings:
    """coef: weight of the aux loss relative to the main SAE error's (Gao et al.: 1/32); k_aux:
    dead units used per sample (None: d_in // 2, their choice); window: training samples without
    firing that make a unit dead; start_epoch: the first epoch in which the loss is on."""

    coef: float = 1 / 32
    k_aux: int | None = None
    window: int = 100_000
    start_epoch: int = 0

    def __post_init__(self) -> None:
        if self.coef <= 0 or self.window < 1 or (self.k_aux is not None and self.k_aux < 1):
            raise ValueError(
                f"auxk needs coef > 0, window >= 1 and k_aux >= 1 or None; got coef={self.coef},"
                f" window={self.window}, k_aux={self.k_aux}"
            )

    def active(self, epoch: int) -> bool:
        return epoch >= self.start_epoch


def auxk_loss(
    pre: Tensor, residual: Tensor, decoder_weight: Tensor, dead: Tensor, k_aux: int
) -> Tensor:
    """L_aux = sum_batch ||e - e_hat||^2 / sum_batch ||e - mean_batch e||^2, the normalised MSE of
    the residual (dimensionless), or 0 when no unit is dead.

    e = ``residual`` (B, d_in), the main reconstruction's error x - x_hat, detached by the caller.
    e_hat = W_d z with W_d = ``decoder_weight`` (d_in, width) and no bias, where z (B, width) is
    ReLU of the ``k_aux`` largest pre-activations among the ``dead`` (width, bool) units of each
    sample (fewer when fewer units are dead) and 0 elsewhere. Gradient flows only through the
    chosen dead units: their entries of ``pre`` and their columns of W_d.
    """
    k = min(k_aux, pre.shape[-1])
    # Live units are pushed to -inf, so they are never chosen and ReLU zeroes them (k stays a
    # fixed number and the step needs no host synchronisation to count the dead).
    masked = pre.masked_fill(~dead, -torch.inf)
    values, indices = masked.topk(k, dim=-1, sorted=False)
    z = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    e_hat = z @ decoder_weight.T
    spread = (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (residual - e_hat).pow(2).sum() / spread * dead.any()


def sae_auxk_loss(
    sae: SparseAutoencoder, x: Tensor, x_hat: Tensor, dead: Tensor, k_aux: int
) -> Tensor:
    """:func:`auxk_loss` of ``sae`` on normalised inputs x (B, d_in) and their reconstruction
    x_hat: the aux pre-activations W_e (x - b_pre) + b_e read a detached x, so the trunk gets
    no gradient from it while b_pre does (as in both reference implementations), with the dead
    units' encoder rows and biases and decoder columns."""
    pre = F.linear(x.detach() - sae.b_pre, sae.encoder.weight, sae.encoder.bias)
    return auxk_loss(pre, (x - x_hat).detach(), sae.decoder.weight, dead, k_aux)
