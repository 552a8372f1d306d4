"""Sparse autoencoder: s = act(W_e (x - b_pre) + b_e), x_hat = W_d s + b_pre on the normalised
input x = (h - c) / r, with r the input's RMS and c an optional centre (0 by default)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vaesae.models.activations import make_activation

INPUT_NORMS = ("batch", "norm", "none")
CENTERS = ("none", "ema", "init")


class SAEOutput(NamedTuple):
    """One SAE forward pass (B = batch size)."""

    codes: Tensor  # (B, width) activations s
    x: Tensor  # (B, d_in) normalised input (h - c) / r
    x_hat: Tensor  # (B, d_in) its reconstruction, in the same units
    scale: Tensor  # () the input normalisation r
    pre: Tensor  # (B, width) pre-activations W_e (x - b_pre) + b_e
    recon: Tensor  # (B, d_in) the reconstruction of h itself, x_hat * r + c (the forward path)


class SparseAutoencoder(nn.Module):
    """One-hidden-layer SAE over ``d_in`` features with ``width`` units and a sparse activation.

    ``b_pre`` is the shared pre-encoder / post-decoder bias (a learned centre of x). The encoder is
    initialised as the transpose of a decoder with unit-norm columns, so every unit starts as a
    matched filter of its own dictionary direction (the usual tied initialisation).

    Scale. Scaling the trunk features h by c and the latent head by 1/c leaves a VAE unchanged
    but scales the raw SAE error by c^2 and its L1 term by c, so two options make the objective
    scale-free. The class's own defaults are the raw SAE; the project's configuration
    (``conf/model/default.yaml``) turns on ``input_norm="norm"`` and ``normalize_decoder``
    (measurements: docs, *Model and objective*):

    - ``input_norm``: the SAE works on x = h / r. ``"batch"``: r = sqrt(mean_{batch, features}
      h^2), the RMS feature; ``"norm"``: r = sqrt(mean_batch ||h||^2), so mean ||x||^2 = 1 and
      the SAE error is the fraction of the input's energy left unexplained; ``"none"``: r = 1.
      r stays differentiable (cut from the gradient, the SAE terms can shrink h to 0); evaluation
      uses its running mean ``r_run <- r_run + momentum (r - r_run)`` (the first batch copied),
      saved in checkpoints.
    - ``normalize_decoder``: the owner calls :meth:`normalize_decoder_` after each optimizer step,
      rescaling every dictionary column to unit norm (Bricken et al. 2023), so codes cannot shrink
      while W_d grows. Gao et al.'s projection of the gradient off each column is not done.
    - ``detach_loss``: the SAE's own losses (its error, its penalty, AuxK) are computed on a
      detached copy of x, so they train the SAE without moving the features it reads. The
      forward path ``recon`` has the same value and passes the rest of the model's gradient to x
      through the units that fired, as the activation does (dy/dpre = 1 on kept units):
      ``s_path = s + (pre(x) - pre(sg(x))) * 1[s != 0]``, sg the stop-gradient, so the activation
      (and BatchTopK's threshold) runs once.

    Centre c (``center``), because ReLU features share a large mean that makes the same tied
    units win every sample:

    - ``"none"``: c = 0; b_pre (zero-initialised, learned) is the only centring;
    - ``"ema"``: c <- c + momentum (mean_batch h - c) in training (the first batch copied; no
      gradient), fixed in evaluation and saved as ``input_mean``; the SAE works on
      x = (h - c) / r and ``recon = x_hat * r + c``; under ``"batch"`` r is the RMS of h - c.
      The data-mean centring of Bricken et al. 2023 and Gao et al. 2024, kept current as the
      trunk drifts;
    - ``"init"``: c = 0 and b_pre <- the mean of x over the first training batch, then learned
      (the data-mean initialisation of Anthropic's and OpenAI's SAEs); ``input_mean`` keeps it.

    ``momentum`` serves both running statistics (r and c).
    """

    input_rms: Tensor
    input_mean: Tensor

    def __init__(
        self,
        d_in: int = 256,
        width: int = 500,
        method: str = "topk",
        normalize_decoder: bool = False,
        input_norm: str = "none",
        norm_momentum: float = 0.1,
        center: str = "none",
        detach_loss: bool = False,
        **activation_kw: object,
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm={input_norm!r}; valid: {', '.join(INPUT_NORMS)}")
        if center not in CENTERS:
            raise ValueError(f"unknown sae center={center!r}; valid: {', '.join(CENTERS)}")
        self.input_norm = input_norm
        self.norm_momentum = norm_momentum
        self.center = center
        self.detach_loss = detach_loss
        # NaN until the first training batch, which is copied rather than averaged with 1.
        self.register_buffer("input_rms", torch.full((), math.nan))
        if center != "none":
            # Registered only when used, so checkpoints of uncentred models keep their keys.
            self.register_buffer("input_mean", torch.full((d_in,), math.nan))
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

    def pre_activations(self, x: Tensor) -> Tensor:
        """W_e (x - b_pre) + b_e (B, width) of normalised inputs x (B, d_in)."""
        return self.encoder(x - self.b_pre)

    def encode(self, x: Tensor) -> Tensor:
        """Codes s (B, width) of normalised inputs x (B, d_in)."""
        return self.activation(self.pre_activations(x))

    def decode(self, s: Tensor) -> Tensor:
        """Reconstruction x_hat (B, d_in) of codes s (B, width), in normalised units."""
        return self.decoder(s) + self.b_pre

    def input_center(self, h: Tensor) -> Tensor | None:
        """The centre c (d_in) subtracted from h (B, d_in), None without one; under ``"ema"`` a
        training batch is folded into the running mean first."""
        if self.center != "ema":
            return None
        if self.training:
            with torch.no_grad():
                batch_mean = h.detach().float().mean(0)
                blended = self.input_mean + self.norm_momentum * (batch_mean - self.input_mean)
                self.input_mean.copy_(torch.where(self.input_mean.isnan(), batch_mean, blended))
        return torch.nan_to_num(self.input_mean, nan=0.0).to(h.dtype)

    @torch.no_grad()
    def init_b_pre_(self, x: Tensor) -> None:
        """Under ``center="init"``: b_pre <- mean_batch x at the first training batch x (B, d_in)
        (``input_mean`` keeps it); a no-op afterwards and for the other centres."""
        if self.center != "init":
            return
        batch_mean = x.detach().float().mean(0)
        first = self.input_mean.isnan()
        # Written every step but changed only at the first: the NaN test stays on the device.
        self.b_pre.copy_(torch.where(first, batch_mean, self.b_pre))
        self.input_mean.copy_(torch.where(first, batch_mean, self.input_mean))

    @torch.no_grad()
    def init_b_pre_from_(self, h: Tensor) -> None:
        """b_pre <- mean_batch x of the normalised inputs x = (h - c) / r of raw features h
        (B, d_in), with the batch's own c (its mean under ``"ema"``) and r; running statistics
        are left untouched. With ``"ema"`` the centred mean is 0, so b_pre stays at 0."""
        if self.center == "ema":
            h = h - h.float().mean(0)
        x = h.float() / self.batch_scale(h)
        self.b_pre.copy_(x.mean(0).to(self.b_pre.dtype))

    def batch_scale(self, h: Tensor) -> Tensor:
        """The divisor r (0-d) that a training batch of (centred) inputs h (B, d_in) gets, without
        updating anything: sqrt(mean_{batch, features} h^2) under ``input_norm="batch"``,
        sqrt(mean_batch ||h||^2) under ``"norm"``, 1 under ``"none"``."""
        if self.input_norm == "none":
            return torch.ones((), dtype=h.dtype, device=h.device)
        mean_square = h.float().pow(2).mean()
        if self.input_norm == "norm":
            mean_square = mean_square * h.shape[-1]
        return mean_square.sqrt().clamp_min(1e-12)

    def input_scale(self, h: Tensor) -> Tensor:
        """The divisor r (0-d) of the input normalisation; updates the running mean in training."""
        if self.input_norm == "none":
            return self.batch_scale(h)
        if not self.training:
            return torch.nan_to_num(self.input_rms, nan=1.0).to(h.dtype)
        rms = self.batch_scale(h)
        with torch.no_grad():
            r = rms.detach()
            blended = self.input_rms + self.norm_momentum * (r - self.input_rms)
            self.input_rms.copy_(torch.where(self.input_rms.isnan(), r, blended))
        return rms.to(h.dtype)

    def forward(self, h: Tensor) -> SAEOutput:
        """Codes, normalised input x = (h - c) / r, its reconstruction, r, the pre-activations
        and the reconstruction of h, ``x_hat * r + c``. Under ``detach_loss`` codes, x, x_hat
        and pre are those of sg(x) (the SAE's losses read them) and only ``recon`` carries x's
        gradient."""
        c = self.input_center(h)
        if c is not None:
            h = h - c
        r = self.input_scale(h)
        x = h / r
        if self.training:
            self.init_b_pre_(x)
        live_x, x = x, x.detach() if self.detach_loss else x
        pre = self.pre_activations(x)
        s = self.activation(pre)
        x_hat = self.decode(s)
        path = x_hat
        if self.detach_loss and torch.is_grad_enabled():
            # The path's gradient reaches h only through the units that fired (see the class
            # docstring); the difference term is zero in value.
            live = self.pre_activations(live_x) - pre
            path = self.decode(s + live * (s != 0))
        recon = path * r if c is None else path * r + c
        return SAEOutput(s, x, x_hat, r, pre, recon)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every dictionary direction (column of W_d, shape d_in) to unit L2 norm."""
        w = self.decoder.weight
        w.div_(w.norm(dim=0, keepdim=True).clamp_min(1e-12))
