"""Streaming firing statistics: accumulated over evaluation batches (and summed across processes
under data parallelism), computed once per epoch. The per-epoch evaluation uses it."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from vaesae.metrics.dead import FiringSummary


class FiringStats(Metric):
    """Streaming per-neuron firing statistics of a layer of ``width`` neurons.

    ``update(acts)`` with activations [B, width] adds to the per-neuron fire count (activation
    > 0), the running maximum activation and the sample count; states are summed / maxed across
    processes. ``compute()`` returns a :class:`FiringSummary`, whose ``dead_mask(kind, value)`` is
    exactly :func:`vaesae.metrics.dead_mask` on the concatenation of all batches, and whose
    ``frequency()`` is the firing-frequency vector. The shortcuts below call ``compute()``.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    fire_count: Tensor
    max_activation: Tensor
    num_samples: Tensor

    def __init__(self, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = width
        self.add_state("fire_count", torch.zeros(width, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "max_activation",
            torch.full((width,), -math.inf, dtype=torch.float64),
            dist_reduce_fx="max",
        )
        self.add_state("num_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, acts: Tensor) -> None:
        if acts.dim() != 2 or acts.shape[1] != self.width:
            raise ValueError(
                f"expected activations of shape [batch, {self.width}], got {tuple(acts.shape)}"
            )
        batch = FiringSummary.from_activations(acts)
        self.fire_count += batch.fire_count
        self.max_activation = torch.maximum(self.max_activation, batch.max_activation)
        self.num_samples += batch.num_samples

    def compute(self) -> FiringSummary:
        return FiringSummary(
            self.fire_count.clone(), self.max_activation.clone(), int(self.num_samples)
        )

    def dead_mask(self, kind: str, value: float = 0.0) -> Tensor:
        """BoolTensor[width]: dead neurons over all batches so far, as :func:`dead_mask`."""
        return self.compute().dead_mask(kind, value)

    def frequency(self) -> Tensor:
        """Firing frequency per neuron over all batches so far (float64 [width])."""
        return self.compute().frequency()
