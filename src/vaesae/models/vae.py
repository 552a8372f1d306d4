"""Conv VAE parts of the disentanglement literature (Higgins et al. 2017; Locatello et al. 2019)
for 64x64 images: a conv trunk to 256 features, a Gaussian latent head and a mirrored decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Four stride-2 convs take 64x64 down to 4x4 with 64 channels.
_CONV_CHANNELS = (32, 32, 64, 64)
_FEATURE_MAP = (64, 4, 4)


class ConvEncoder(nn.Module):
    """x (B, C, 64, 64) -> trunk features h (B, hidden_dim).

    conv 32-32-64-64 (kernel 4, stride 2, padding 1, ReLU) -> flatten 64*4*4 -> fc hidden_dim,
    then ReLU unless ``signed``: with ``signed=True`` the features are the fc layer's affine output
    and take both signs (h = W z + b instead of max(0, W z + b)).
    """

    def __init__(self, in_channels: int, hidden_dim: int = 256, signed: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_prev = in_channels
        for c in _CONV_CHANNELS:
            layers += [nn.Conv2d(c_prev, c, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            c_prev = c
        n_flat = _FEATURE_MAP[0] * _FEATURE_MAP[1] * _FEATURE_MAP[2]
        layers += [nn.Flatten(), nn.Linear(n_flat, hidden_dim)]
        if not signed:
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GaussianHead(nn.Module):
    """features (B, d_in) -> (mu, logvar), each (B, d_z), of the posterior N(mu, exp(logvar))."""

    def __init__(self, d_in: int = 256, d_z: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, 2 * d_z)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.linear(h).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """z (B, d_z) -> Bernoulli logits (B, C, 64, 64); the encoder's mirror.

    fc hidden_dim, ReLU -> fc 64*4*4, ReLU -> transposed convs 64-64-32-32-C (4, 2, 1) with ReLU
    between them.
    """

    def __init__(self, out_channels: int, d_z: int = 10, hidden_dim: int = 256) -> None:
        super().__init__()
        n_flat = _FEATURE_MAP[0] * _FEATURE_MAP[1] * _FEATURE_MAP[2]
        layers: list[nn.Module] = [
            nn.Linear(d_z, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, n_flat),
            nn.ReLU(),
            nn.Unflatten(1, _FEATURE_MAP),
        ]
        channels = (*reversed(_CONV_CHANNELS), out_channels)
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): a differentiable posterior sample.

    ``eps`` (mu's shape and dtype) is drawn from the global generator when None; a caller that
    draws it itself (a pack of runs, each with its own generator) passes it in."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps
