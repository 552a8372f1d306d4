"""Sparse activation rules of the SAE: pre-activations (B, width) -> non-negative codes (B, width).

Each rule is one small module registered under its method name, so a new rule is one class with
``@register_activation("name")`` (``batchtopk`` and ``jumprelu`` live in their own files). A rule
declares how its sparsity is controlled, which is all the schedule callback needs to know:

- ``control = "k"``: the rule has a mutable integer ``k`` (active units per sample) that the
  schedule sets directly;
- ``control = "penalty"``: sparsity comes from the loss term ``lambda * rule.penalty(pre, codes)``
  whose coefficient lambda a controller drives so that the measured L0 tracks the scheduled k.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from vaesae.models.losses import l1_norm

ACTIVATIONS: dict[str, type[SparseActivation]] = {}
CONTROLS = ("k", "penalty")


class SparseActivation(nn.Module):
    """Base class of the activation rules; ``width`` is the number of SAE units."""

    method: ClassVar[str]
    control: ClassVar[str]

    def __init__(self, width: int) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"SAE width={width} must be >= 1")
        self.width = width

    def penalty(self, pre: Tensor, codes: Tensor) -> Tensor:
        """The sparsity term that lambda multiplies, mean over the batch (0-d).

        Default: ||s||_1 = sum_i |s_i| (the L1 rule's penalty; k-controlled rules report it with
        lambda = 0). ``pre`` (B, width) are the pre-activations that gave ``codes`` (B, width).
        """
        return l1_norm(codes)


RuleT = TypeVar("RuleT", bound=type[SparseActivation])


def register_activation(name: str) -> Callable[[RuleT], RuleT]:
    """Class decorator adding an activation rule to ``ACTIVATIONS`` under ``name``."""

    def add(cls: RuleT) -> RuleT:
        if name in ACTIVATIONS:
            raise ValueError(f"activation method {name!r} is already registered")
        if cls.control not in CONTROLS:
            raise ValueError(
                f"{cls.__name__}.control={cls.control!r}; valid: {', '.join(CONTROLS)}"
            )
        cls.method = name
        ACTIVATIONS[name] = cls
        return cls

    return add


def activation_class(method: str) -> type[SparseActivation]:
    """The registered rule class for ``method``; ValueError naming the valid methods otherwise."""
    try:
        return ACTIVATIONS[method]
    except KeyError:
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown sparse activation method={method!r}; valid: {valid}") from None


def make_activation(method: str, width: int, **kw: object) -> SparseActivation:
    """Build the rule ``method`` for an SAE of ``width`` units; ``kw`` go to its constructor."""
    return activation_class(method)(width, **kw)


@register_activation("topk")
class TopK(SparseActivation):
    """s = ReLU(pre) on the k largest pre-activations of each sample, 0 elsewhere.

    At most k codes per row are non-zero (fewer when fewer than k pre-activations are positive).
    The gradient reaches only the kept units; dropped units get exactly zero gradient.
    """

    control = "k"

    def __init__(self, width: int, k: int | None = None) -> None:
        super().__init__(width)
        self.k = width if k is None else k

    @property
    def k(self) -> int:
        return self._k

    @k.setter
    def k(self, value: int) -> None:
        if isinstance(value, bool) or int(value) != value or not 1 <= value <= self.width:
            raise ValueError(
                f"topk k={value!r} must be an integer with 1 <= k <= width={self.width}"
            )
        self._k = int(value)

    def forward(self, pre: Tensor) -> Tensor:
        if self._k >= self.width:
            return torch.relu(pre)
        values, indices = pre.topk(self._k, dim=-1, sorted=False)
        # ReLU commutes with selecting the largest entries, so applying it to the kept values
        # only is the same as top-k of ReLU(pre) and avoids a full-width pass.
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def extra_repr(self) -> str:
        return f"width={self.width}, k={self._k}"


@register_activation("l1")
class L1ReLU(SparseActivation):
    """s = ReLU(pre); sparsity comes from the loss term lambda * mean_batch(sum_i |s_i|)
    (the inherited :meth:`SparseActivation.penalty`)."""

    control = "penalty"

    def forward(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def extra_repr(self) -> str:
        return f"width={self.width}"
