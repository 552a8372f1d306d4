"""What one forward pass of the hybrid model returns: shared by the model and its loss, so the
loss needs no import of the model."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["VAESAEOutput"]


class VAESAEOutput(NamedTuple):
    """Everything one forward pass produces (B = batch size)."""

    logits: Tensor  # (B, C, 64, 64) Bernoulli logits of the reconstruction
    mu: Tensor  # (B, d_z) posterior mean
    logvar: Tensor  # (B, d_z) posterior log-variance
    z: Tensor  # (B, d_z) decoder input: a posterior sample in train mode, mu in eval mode
    h: Tensor  # (B, d_in) SAE input (h - c) / r: trunk features (site=hidden) or mu (site=latent)
    codes: Tensor  # (B, width) SAE activations s
    h_hat: Tensor  # (B, d_in) SAE reconstruction of (h - c) / r (the SAE's normalised units)
    scale: Tensor  # () the SAE's input normalisation r: raw features are h * r + c
    pre: Tensor  # (B, width) SAE pre-activations (what the activation rule turned into codes)
