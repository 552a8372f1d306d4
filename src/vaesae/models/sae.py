"""Sparse autoencoder: s = act(W_e (h - b_pre) + b_e), h_hat = W_d s + b_pre."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaesae.models.activations import make_activation


class SparseAutoencoder(nn.Module):
    """One-hidden-layer SAE over ``d_in`` features with ``width`` units and a sparse activation.

    ``b_pre`` is the shared pre-encoder / post-decoder bias (it centres the input). The encoder is
    initialised as the transpose of a decoder with unit-norm columns, so every unit starts as a
    matched filter of its own dictionary direction (the usual tied initialisation).
    With ``normalize_decoder`` the owner calls :meth:`normalize_decoder_` after each optimizer
    step (SAELens' convention). It is off by default because the paper's protocol does not state
    it; with it on, L1 codes can no longer dodge the penalty by shrinking while W_d grows.
    """

    def __init__(
        self,
        d_in: int = 256,
        width: int = 500,
        method: str = "topk",
        normalize_decoder: bool = False,
        **activation_kw: object,
    ) -> None:
        super().__init__()
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

    def encode(self, h: Tensor) -> Tensor:
        """Codes s (B, width) of inputs h (B, d_in)."""
        return self.activation(self.encoder(h - self.b_pre))

    def decode(self, s: Tensor) -> Tensor:
        """Reconstruction h_hat (B, d_in) of codes s (B, width)."""
        return self.decoder(s) + self.b_pre

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(codes s, reconstruction h_hat)."""
        s = self.encode(h)
        return s, self.decode(s)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every dictionary direction (column of W_d, shape d_in) to unit L2 norm."""
        w = self.decoder.weight
        w.div_(w.norm(dim=0, keepdim=True).clamp_min(1e-12))
