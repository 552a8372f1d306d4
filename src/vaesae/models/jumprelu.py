"""JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders"): a learned per-unit threshold and an L0 penalty, both trained
through straight-through pseudo-derivatives."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaesae.models.activations import SparseActivation, register_activation

# theta's floor: a threshold at or below 0 would let negative pre-activations through.
THETA_MIN = 1e-6


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
    """s_i = pre_i * H(pre_i - theta_i), with a learned per-unit threshold theta (> 0).

    Penalty: the L0 norm sum_i H(pre_i - theta_i), mean over the batch, so lambda * penalty
    prices each active unit directly (lambda is driven like the L1 rule's, to make L0 track k).
    Neither the jump nor the step has a useful derivative for theta, so both use the paper's
    straight-through pseudo-derivatives with the rectangle kernel K and bandwidth eps:

        d JumpReLU / d theta := -(theta / eps) K((pre - theta) / eps)
        d H(pre - theta) / d theta := -(1 / eps) K((pre - theta) / eps)

    while the pre-activations get the exact derivative (H(pre - theta) through the jump, none
    through the L0 term): sparsity is bought by raising theta, reconstruction pushes it down.
    theta is the parameter itself (as in SAELens), floored at ``THETA_MIN`` in the forward pass
    (with a straight-through gradient, so a threshold pushed below the floor can come back):
    under Adam a parameter moves by about the learning rate per step, so theta can cross the
    pre-activations' range (~0.1 under the ``norm`` input, where E||x||^2 = 1) within a few hundred
    steps; a log-parameterised theta would move by lr * theta, 1,000 times slower at 1e-3.
    Defaults theta_init = eps = 1e-3 are the paper's.
    """

    control = "penalty"

    def __init__(self, width: int, theta_init: float = 1e-3, bandwidth: float = 1e-3) -> None:
        super().__init__(width)
        if theta_init <= 0 or bandwidth <= 0:
            raise ValueError(
                f"jumprelu theta_init={theta_init} and bandwidth={bandwidth} must be > 0"
            )
        self.bandwidth = bandwidth
        self.threshold = nn.Parameter(torch.full((width,), float(theta_init)))

    @property
    def theta(self) -> Tensor:
        # The floor passes the gradient straight through: a plain clamp would give a threshold
        # pushed below it no gradient at all, so the L0 term could never raise it again.
        floored = self.threshold.clamp_min(THETA_MIN)
        return self.threshold + (floored - self.threshold).detach()

    def forward(self, pre: Tensor) -> Tensor:
        return jump_relu(pre, self.theta, self.bandwidth)

    def penalty(self, pre: Tensor, codes: Tensor) -> Tensor:
        """L0 = sum_i H(pre_i - theta_i), mean over the batch (straight-through for theta)."""
        return step(pre, self.theta, self.bandwidth).sum(-1).mean()

    def extra_repr(self) -> str:
        return f"width={self.width}, bandwidth={self.bandwidth}"
