"""Initialisation of the VAE-SAE: weights at construction, data-dependent biases at the first step.

``"he"`` (the default) initialises every layer of the VAE for the ReLU network it is (He et al.
2015, "Delving deep into rectifiers"): weights ~ N(0, gain^2 / fan_in) with zero biases, gain
sqrt(2) before a ReLU and 1 before a linear output (the latent head, the decoder's logits). The
fan-in of a transposed convolution is what one output pixel actually receives,
c_in * (kernel / stride)^2, not PyTorch's c_out * kernel^2. Why: with PyTorch's default layer init
(uniform of bound 1/sqrt(fan_in) with non-zero biases) the biases dominate the trunk's
pre-activations, its features are nearly constant across images, the posterior mean barely varies
under the posterior noise, and the VAE starts in the no-information state (docs: "Initialisation").
``"torch"`` keeps PyTorch's defaults, for comparison with runs made before.

Data-dependent companions, set from a sample of training images before the first step
(:func:`init_from_data_`):

- the decoder's output bias at the logit of the data's mean intensity per channel, so the first
  reconstruction is the mean colour rather than grey (Karpathy's "init well" recipe; the same idea
  as initialising a classifier's bias at the class prior);
- the SAE's b_pre at the mean of its normalised input (Bricken et al. 2023 and Gao et al. 2024
  start it at the data's geometric median; the mean is the L2 version), so the codes describe
  how an image differs from the average instead of the average itself.

The posterior's log-variance bias starts at ``logvar_bias`` (default 0: unit posterior noise).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

INIT_SCHEMES = ("he", "torch")


def he_std(fan_in: int, relu: bool) -> float:
    """sqrt(gain^2 / fan_in) with gain^2 = 2 before a ReLU (He et al. 2015), 1 before none."""
    return math.sqrt((2.0 if relu else 1.0) / fan_in)


def effective_fan_in(layer: nn.Module) -> int:
    """Inputs that one output unit sums: c_in * prod(kernel) for Linear and Conv2d, and
    c_in * prod(kernel / stride) for ConvTranspose2d (each output pixel is reached by one
    kernel tap in every stride-sized block)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, nn.ConvTranspose2d):
        taps = math.prod(k // s for k, s in zip(layer.kernel_size, layer.stride, strict=True))
        return layer.in_channels * max(taps, 1)
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels * math.prod(layer.kernel_size) // layer.groups
    raise TypeError(f"no fan-in rule for {type(layer).__name__}")


def he_init_(net: nn.Sequential) -> None:
    """He-normal weights and zero biases for every Linear / conv layer of a Sequential; a layer
    followed by a ReLU gets gain sqrt(2), the others gain 1."""
    layers = list(net)
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            continue
        relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
        with torch.no_grad():
            layer.weight.normal_(0.0, he_std(effective_fan_in(layer), relu))
            if layer.bias is not None:
                layer.bias.zero_()


@torch.no_grad()
def set_output_bias_(layer: nn.Module, x: Tensor, eps: float = 1e-4) -> Tensor:
    """bias_c <- logit(mean of channel c of images x (B, C, H, W) in [0, 1]), the mean clipped to
    [eps, 1 - eps]; returns the new bias. A zero-weight decoder then outputs the mean colour."""
    bias = layer.bias
    if not isinstance(bias, Tensor):
        raise ValueError(f"{layer} has no bias to set from the data")
    mean = x.float().mean(dim=(0, 2, 3)).clamp(eps, 1.0 - eps)
    bias.copy_(torch.logit(mean).to(bias.dtype))
    return bias
