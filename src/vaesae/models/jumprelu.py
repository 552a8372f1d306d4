"""JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders"): a learned per-unit threshold and an L0 penalty, both trained
through straight-through pseudo-derivatives."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaesae.models.activations import SparseActivation, register_activation


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K(u) = 1[-1/2 < u < 1/2] (integrates to 1)."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _theta_grad(grad: Tensor, theta: Tensor) -> Tensor:
    """Sum a (..., width) gradient over every leading dimension, in theta's dtype."""
    return grad.reshape(-1, theta.shape[-1]).sum(0).to(theta.dtype)


class _JumpReLU(torch.autograd.Function):
    """y = pre * H(pre - theta); dy/dpre = H(pre - theta),
    dy/dtheta := -(theta / eps) K((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, theta = ctx.saved_tensors
        t = theta.to(pre.dtype)
        d_theta = -(t / ctx.eps) * rectangle((pre - t) / ctx.eps)
        return grad * (pre > t), _theta_grad(grad * d_theta, theta), None


class _Step(torch.autograd.Function):
    """y = H(pre - theta); dy/dpre = 0 (the true derivative almost everywhere),
    dy/dtheta := -(1 / eps) K((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, theta = ctx.saved_tensors
        t = theta.to(pre.dtype)
        d_theta = -rectangle((pre - t) / ctx.eps) / ctx.eps
        return None, _theta_grad(grad * d_theta, theta), None


def jump_relu(pre: Tensor, theta: Tensor, eps: float) -> Tensor:
    """JumpReLU_theta(pre) = pre * H(pre - theta), per unit (theta broadcasts over the last
    dimension), with the straight-through derivative for theta of bandwidth ``eps``."""
    return _JumpReLU.apply(pre, theta, eps)


def step(pre: Tensor, theta: Tensor, eps: float) -> Tensor:
    """The Heaviside step H(pre - theta) with the straight-through derivative for theta of
    bandwidth ``eps`` (and none for pre)."""
    return _Step.apply(pre, theta, eps)


@register_activation("jumprelu")
class JumpReLU(SparseActivation):
    """s_i = pre_i * H(pre_i - theta_i), theta = exp(log_theta) learned per unit (> 0).

    Penalty: the L0 norm sum_i H(pre_i - theta_i), mean over the batch, so lambda * penalty
    prices each active unit directly (lambda is driven like the L1 rule's, to make L0 track k).
    Neither the jump nor the step has a useful derivative for theta, so both use the paper's
    straight-through pseudo-derivatives with the rectangle kernel K and bandwidth eps:

        d JumpReLU / d theta := -(theta / eps) K((pre - theta) / eps)
        d H(pre - theta) / d theta := -(1 / eps) K((pre - theta) / eps)

    while the pre-activations get the exact derivative (H(pre - theta) through the jump, none
    through the L0 term): sparsity is bought by raising theta, reconstruction pushes it down.
    Defaults theta_init = eps = 1e-3 are the paper's, for inputs scaled to E||x||^2 = d_in, which
    the SAE's ``input_norm="batch"`` also gives; without it they are in the trunk's own units.
    theta moves by about the learning rate per step in log space, so reaching a threshold of
    order 1 from 1e-3 takes thousands of steps.
    """

    control = "penalty"

    def __init__(self, width: int, theta_init: float = 1e-3, bandwidth: float = 1e-3) -> None:
        super().__init__(width)
        if theta_init <= 0 or bandwidth <= 0:
            raise ValueError(
                f"jumprelu theta_init={theta_init} and bandwidth={bandwidth} must be > 0"
            )
        self.bandwidth = bandwidth
        self.log_theta = nn.Parameter(torch.full((width,), math.log(theta_init)))

    @property
    def theta(self) -> Tensor:
        return self.log_theta.exp()

    def forward(self, pre: Tensor) -> Tensor:
        return jump_relu(pre, self.theta, self.bandwidth)

    def penalty(self, pre: Tensor, codes: Tensor) -> Tensor:
        """L0 = sum_i H(pre_i - theta_i), mean over the batch (straight-through for theta)."""
        return step(pre, self.theta, self.bandwidth).sum(-1).mean()

    def extra_repr(self) -> str:
        return f"width={self.width}, bandwidth={self.bandwidth}"
