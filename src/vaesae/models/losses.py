"""Loss terms of the VAE-SAE, each a mean over the batch of a per-sample quantity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vaesae.models.outputs import VAESAEOutput

LOSS_TERMS = ("loss", "recon", "kl", "sae_mse", "l1", "penalty", "l0")


def bernoulli_recon(logits: Tensor, x: Tensor, reduction: str = "mean") -> Tensor:
    """-log p(x | z) = sum_pixels BCE(sigmoid(logits), x), nats per image: the batch mean, or
    (B,) per image with ``reduction="none"``.

    x holds pixel intensities in [0, 1] (non-binary targets are the usual relaxation for RGB).
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return bce if reduction == "none" else bce.mean()


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j),
    summed over latent dims, mean over batch; nats per image."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()


def sae_mse(h: Tensor, h_hat: Tensor) -> Tensor:
    """||h - h_hat||_2^2 summed over features, mean over batch; squared feature units per sample."""
    return (h - h_hat).pow(2).sum(1).mean()


def l1_norm(codes: Tensor) -> Tensor:
    """||s||_1 = sum_i |s_i| over SAE units, mean over batch; activation units per sample."""
    return codes.abs().sum(1).mean()


def l0_norm(codes: Tensor) -> Tensor:
    """Mean number of non-zero SAE codes per sample (float, no gradient)."""
    return (codes != 0).sum(1, dtype=torch.float32).mean()


def vae_sae_loss(
    out: VAESAEOutput,
    x: Tensor,
    beta: float = 1.0,
    alpha: float = 1.0,
    l1_coef: float | Tensor = 0.0,
    penalty: Tensor | None = None,
) -> dict[str, Tensor]:
    """loss = recon + beta * kl + alpha * sae_mse + l1_coef * penalty, with every term in the dict.

    ``penalty`` is the activation rule's sparsity term (``SparseActivation.penalty``: ||s||_1 for
    the L1 rule, a straight-through L0 for JumpReLU); None means ||s||_1. Keys: ``LOSS_TERMS``.
    ``l1`` = ||s||_1 is reported for every rule, so runs stay comparable; the penalty enters the
    loss only through ``l1_coef`` (lambda), which is 0 for k-controlled rules. ``l0`` is detached.
    ``l1_coef`` may be a 0-d tensor so a controller can keep it on the device.
    """
    l1 = l1_norm(out.codes)
    terms = {
        "recon": bernoulli_recon(out.logits, x),
        "kl": gaussian_kl(out.mu, out.logvar),
        "sae_mse": sae_mse(out.h, out.h_hat),
        "l1": l1,
        "penalty": l1 if penalty is None else penalty,
    }
    loss = (
        terms["recon"] + beta * terms["kl"] + alpha * terms["sae_mse"] + l1_coef * terms["penalty"]
    )
    return {"loss": loss, **terms, "l0": l0_norm(out.codes.detach())}
