"""Loss terms of the VAE-SAE, each a mean over the batch of a per-sample quantity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vaesae.models.hybrid import VAESAEOutput

LOSS_TERMS = ("loss", "recon", "kl", "sae_mse", "l1", "l0")


def bernoulli_recon(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | z) = sum_pixels BCE(sigmoid(logits), x), mean over batch; nats per image.

    x holds pixel intensities in [0, 1] (non-binary targets are the usual relaxation for RGB).
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return bce.flatten(1).sum(1).mean()


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
) -> dict[str, Tensor]:
    """loss = recon + beta * kl + alpha * sae_mse + l1_coef * l1, with every term in the dict.

    Keys: ``LOSS_TERMS``. ``l1`` is reported for every rule (it enters the loss only through
    ``l1_coef``, which is 0 for k-controlled rules); ``l0`` is detached. ``l1_coef`` may be a
    0-d tensor so a controller can keep it on the device.
    """
    terms = {
        "recon": bernoulli_recon(out.logits, x),
        "kl": gaussian_kl(out.mu, out.logvar),
        "sae_mse": sae_mse(out.h, out.h_hat),
        "l1": l1_norm(out.codes),
    }
    loss = terms["recon"] + beta * terms["kl"] + alpha * terms["sae_mse"] + l1_coef * terms["l1"]
    return {"loss": loss, **terms, "l0": l0_norm(out.codes.detach())}
