"""Sparse autoencoder: s = act(W_e (x - b_pre) + b_e), x_hat = W_d s + b_pre on x = h / rms(h)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaesae.models.activations import make_activation

INPUT_NORMS = ("batch", "none")


class SparseAutoencoder(nn.Module):
    """One-hidden-layer SAE over ``d_in`` features with ``width`` units and a sparse activation.

    ``b_pre`` is the shared pre-encoder / post-decoder bias (it centres the input). The encoder is
    initialised as the transpose of a decoder with unit-norm columns, so every unit starts as a
    matched filter of its own dictionary direction (the usual tied initialisation).

    Scale. In the forward path of a VAE, scaling the trunk features h by c and the latent head by
    1/c leaves the VAE unchanged but would scale the SAE's squared error by c^2 and its L1 term by
    c, so a penalty could be met by shrinking h instead of by sparser codes, and an absolute
    activation threshold would move with c. Two conventions make the objective scale-free:

    - ``input_norm="batch"``: the SAE works on x = h / r with r = sqrt(mean_{batch, features}
      h^2), the root-mean-square feature of the training batch (differentiable, so there is no
      gradient towards shrinking h); evaluation uses the running mean of r
      (``r_run <- r_run + momentum (r - r_run)``, the first batch copied), saved in checkpoints.
      Codes and the SAE error are then in units of that RMS feature. ``"none"``: r = 1.
    - ``normalize_decoder``: the owner calls :meth:`normalize_decoder_` after each optimizer step
      (SAELens' and Anthropic's convention), so codes cannot shrink while W_d grows.
    """

    def __init__(
        self,
        d_in: int = 256,
        width: int = 500,
        method: str = "topk",
        normalize_decoder: bool = True,
        input_norm: str = "batch",
        norm_momentum: float = 0.01,
        **activation_kw: object,
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm={input_norm!r}; valid: {', '.join(INPUT_NORMS)}")
        self.input_norm = input_norm
        self.norm_momentum = norm_momentum
        # NaN until the first training batch, which is copied rather than averaged with 1.
        self.register_buffer("input_rms", torch.full((), math.nan))
        self.d_in = d_in
        self.width = width
        self.normalize_decoder = normalize_decoder
        self.activation = make_activation(method, width, **activation_kw)
        self.encoder = nn.Linear(d_in, width)
        self.decoder = nn.Linear(width, d_in, bias=False)
        self.b_pre = nn.Parameter(torch.zeros(d_in))
        with torch.no_grad():
            self.normalize_decoder_()
            self.encoder.weight.copy_(self.decoder.weight.T)
            self.encoder.bias.zero_()

    @property
    def method(self) -> str:
        return self.activation.method

    def encode(self, x: Tensor) -> Tensor:
        """Codes s (B, width) of normalised inputs x (B, d_in)."""
        return self.activation(self.encoder(x - self.b_pre))

    def decode(self, s: Tensor) -> Tensor:
        """Reconstruction x_hat (B, d_in) of codes s (B, width), in normalised units."""
        return self.decoder(s) + self.b_pre

    def input_scale(self, h: Tensor) -> Tensor:
        """The divisor r (0-d) of the input normalisation; updates the running mean in training."""
        if self.input_norm == "none":
            return torch.ones((), dtype=h.dtype, device=h.device)
        if not self.training:
            return torch.nan_to_num(self.input_rms, nan=1.0).to(h.dtype)
        rms = h.float().pow(2).mean().sqrt().clamp_min(1e-12)
        with torch.no_grad():
            r = rms.detach()
            blended = self.input_rms + self.norm_momentum * (r - self.input_rms)
            self.input_rms.copy_(torch.where(self.input_rms.isnan(), r, blended))
        return rms.to(h.dtype)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(codes s, normalised input x = h / r, its reconstruction x_hat, scale r).

        The reconstruction of h itself is ``x_hat * r``.
        """
        r = self.input_scale(h)
        x = h / r
        s = self.encode(x)
        return s, x, self.decode(s), r

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every dictionary direction (column of W_d, shape d_in) to unit L2 norm."""
        w = self.decoder.weight
        w.div_(w.norm(dim=0, keepdim=True).clamp_min(1e-12))
