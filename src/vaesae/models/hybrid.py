"""The hybrid VAE-SAE: a conv VAE with a sparse autoencoder in its forward path or on its mean."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vaesae.models.activations import activation_class
from vaesae.models.init import INIT_SCHEMES, he_init_, set_output_bias_
from vaesae.models.outputs import VAESAEOutput
from vaesae.models.sae import CENTERS, SparseAutoencoder
from vaesae.models.vae import ConvDecoder, ConvEncoder, GaussianHead, reparameterize

SAE_SITES = ("hidden", "latent")


class VAESAE(nn.Module):
    """Conv VAE (d_z latents, Bernoulli decoder) with a ``width``-unit SAE.

    ``site="hidden"``: the SAE sits on the 256-d trunk features h and the latent head reads its
    reconstruction h_hat, so the whole VAE is trained through the sparse bottleneck.
    ``site="latent"``: the VAE path is the plain VAE and the SAE (d_in = d_z) learns a dictionary
    of the posterior mean mu; with ``stop_gradient`` (meaningful only at this site) mu is detached
    so the SAE losses do not shape the VAE; ``detach_sae_loss`` does the same at either site while
    keeping the forward path (:class:`SparseAutoencoder`, ``detach_loss``).
    ``k`` is the initial k of k-controlled rules (default: width, the schedule's usual start);
    penalty-controlled rules such as ``l1`` take their target from the schedule instead.
    ``rule_kw`` are further settings of the activation rule (e.g. JumpReLU's bandwidth);
    ``center`` is the SAE's input centring (:class:`SparseAutoencoder`); ``signed_trunk`` drops the
    ReLU after the trunk's last linear layer (:class:`ConvEncoder`).
    """

    def __init__(
        self,
        in_channels: int,
        d_z: int = 10,
        width: int = 500,
        method: str = "topk",
        k: int | None = None,
        site: str = "hidden",
        stop_gradient: bool = True,
        hidden_dim: int = 256,
        normalize_decoder: bool = False,
        input_norm: str = "none",
        detach_sae_loss: bool = False,
        center: str = CENTERS[0],
        signed_trunk: bool = False,
        rule_kw: dict[str, object] | None = None,
        init: str = "he",
        logvar_bias: float = 0.0,
    ) -> None:
        super().__init__()
        if site not in SAE_SITES:
            raise ValueError(f"unknown sae.site={site!r}; valid: {', '.join(SAE_SITES)}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"unknown model.init={init!r}; valid: {', '.join(INIT_SCHEMES)}")
        activation_kw: dict[str, Any] = dict(rule_kw or {})
        if activation_class(method).control == "k":
            activation_kw["k"] = k
        self.site = site
        self.stop_gradient = stop_gradient
        self.encoder = ConvEncoder(in_channels, hidden_dim, signed=signed_trunk)
        self.latent_head = GaussianHead(hidden_dim, d_z)
        self.decoder = ConvDecoder(in_channels, d_z, hidden_dim)
        self.sae = SparseAutoencoder(
            d_in=hidden_dim if site == "hidden" else d_z,
            width=width,
            method=method,
            normalize_decoder=normalize_decoder,
            input_norm=input_norm,
            detach_loss=detach_sae_loss,
            center=center,
            **activation_kw,
        )
        if init == "he":
            he_init_(self.encoder.net)
            he_init_(nn.Sequential(self.latent_head.linear))
            he_init_(self.decoder.net)
        with torch.no_grad():
            self.latent_head.linear.bias[d_z:].fill_(logvar_bias)

    @torch.no_grad()
    def init_from_data_(self, x: Tensor) -> None:
        """Data-dependent start from images x (B, C, 64, 64) in [0, 1]: the decoder's output bias
        at the logit of the mean intensity per channel and the SAE's b_pre at the mean of its
        normalised input (:mod:`vaesae.models.init`). Touches no running statistic."""
        set_output_bias_(self.decoder.net[-1], x)
        was_training = self.training
        self.eval()
        try:
            features = self.encoder(x)
            if self.site == "latent":
                features = self.latent_head(features)[0]
            self.sae.init_b_pre_from_(features)
        finally:
            self.train(was_training)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> VAESAEOutput:
        """x: images (B, C, 64, 64), float in [0, 1]; eps: the posterior noise (B, d_z) in
        training, drawn from the global generator when None."""
        features = self.encoder(x)
        if self.site == "hidden":
            sae = self.sae(features)
            mu, logvar = self.latent_head(sae.recon)
        else:
            mu, logvar = self.latent_head(features)
            sae = self.sae(mu.detach() if self.stop_gradient else mu)
        z = reparameterize(mu, logvar, eps) if self.training else mu
        return VAESAEOutput(
            self.decoder(z), mu, logvar, z, sae.x, sae.codes, sae.x_hat, sae.scale, sae.pre
        )
