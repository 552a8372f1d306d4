"""The hybrid VAE-SAE: a conv VAE with a sparse autoencoder in its forward path or on its mean."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from vaesae.models.activations import activation_class
from vaesae.models.sae import INPUT_NORMS, SparseAutoencoder
from vaesae.models.vae import ConvDecoder, ConvEncoder, GaussianHead, reparameterize

SAE_SITES = ("hidden", "latent")


class VAESAEOutput(NamedTuple):
    """Everything one forward pass produces (B = batch size)."""

    logits: Tensor  # (B, C, 64, 64) Bernoulli logits of the reconstruction
    mu: Tensor  # (B, d_z) posterior mean
    logvar: Tensor  # (B, d_z) posterior log-variance
    z: Tensor  # (B, d_z) decoder input: a posterior sample in train mode, mu in eval mode
    h: Tensor  # (B, d_in) SAE input h / r: trunk features (site=hidden) or mu (site=latent)
    codes: Tensor  # (B, width) SAE activations s
    h_hat: Tensor  # (B, d_in) SAE reconstruction of h / r (the SAE's own, normalised units)
    scale: Tensor  # () the SAE's input normalisation r: raw features are h * r


class VAESAE(nn.Module):
    """Conv VAE (d_z latents, Bernoulli decoder) with a ``width``-unit SAE.

    ``site="hidden"``: the SAE sits on the 256-d trunk features h and the latent head reads its
    reconstruction h_hat, so the whole VAE is trained through the sparse bottleneck.
    ``site="latent"``: the VAE path is the plain VAE and the SAE (d_in = d_z) learns a dictionary
    of the posterior mean mu; with ``stop_gradient`` (meaningful only at this site) mu is detached
    so the SAE losses do not shape the VAE.
    ``k`` is the initial k of k-controlled rules (default: width, the schedule's usual start);
    penalty-controlled rules such as ``l1`` take their target from the schedule instead.
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
        normalize_decoder: bool = True,
        input_norm: str = INPUT_NORMS[0],
    ) -> None:
        super().__init__()
        if site not in SAE_SITES:
            raise ValueError(f"unknown sae.site={site!r}; valid: {', '.join(SAE_SITES)}")
        activation_kw = {"k": k} if activation_class(method).control == "k" else {}
        self.site = site
        self.stop_gradient = stop_gradient
        self.encoder = ConvEncoder(in_channels, hidden_dim)
        self.latent_head = GaussianHead(hidden_dim, d_z)
        self.decoder = ConvDecoder(in_channels, d_z, hidden_dim)
        self.sae = SparseAutoencoder(
            d_in=hidden_dim if site == "hidden" else d_z,
            width=width,
            method=method,
            normalize_decoder=normalize_decoder,
            input_norm=input_norm,
            **activation_kw,
        )

    def forward(self, x: Tensor) -> VAESAEOutput:
        """x: images (B, C, 64, 64), float in [0, 1]."""
        features = self.encoder(x)
        if self.site == "hidden":
            codes, h, h_hat, scale = self.sae(features)
            mu, logvar = self.latent_head(h_hat * scale)
        else:
            mu, logvar = self.latent_head(features)
            codes, h, h_hat, scale = self.sae(mu.detach() if self.stop_gradient else mu)
        z = reparameterize(mu, logvar) if self.training else mu
        return VAESAEOutput(self.decoder(z), mu, logvar, z, h, codes, h_hat, scale)
