"""torchmetrics wrappers: accumulate over batches (and processes), compute once per epoch."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vaesae.metrics.dead import DEAD_KINDS, FiringSummary, dead_mask
from vaesae.metrics.mutual_info import MIGResult, mig
from vaesae.metrics.semantics import NeuronSemantics, semantics_from_mi


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


class CodeMetrics:
    """What :class:`MIGMetric` computes: ``mig`` (:class:`MIGResult`) and ``semantics``
    (:class:`NeuronSemantics`, or None when not requested).

    Not a dataclass on purpose: torchmetrics squeezes one-element tensors inside dataclasses
    returned by ``compute()`` (a single factor's ``per_factor`` would become a scalar).
    """

    __slots__ = ("mig", "semantics")

    def __init__(self, mig: MIGResult, semantics: NeuronSemantics | None) -> None:
        self.mig = mig
        self.semantics = semantics

    def __repr__(self) -> str:
        return f"CodeMetrics(mig={self.mig.score:.4f}, semantics={self.semantics is not None})"


class MIGMetric(Metric):
    """Collects codes [B, D] and integer factors [B, K] over batches; ``compute()`` gives MIG and,
    if ``with_semantics``, the per-neuron semantics of the alive neurons, as a :class:`CodeMetrics`.

    Alive neurons are those not dead under rule ``dead_kind`` / ``dead_value`` (see
    :func:`vaesae.metrics.dead_mask`) over the collected codes; the MI matrix is computed once and
    shared by both results. Equal to :func:`vaesae.metrics.mig` and
    :func:`vaesae.metrics.neuron_semantics` on the concatenation of all batches.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    codes: list[Tensor]
    factors: list[Tensor]

    def __init__(
        self,
        num_bins: int = 20,
        with_semantics: bool = True,
        dead_kind: str = "never",
        dead_value: float = 0.0,
        align_threshold: float = 0.1,
        select_threshold: float = 0.05,
        **kwargs: Any,
    ) -> None:
        if dead_kind not in DEAD_KINDS:
            raise ValueError(
                f"unknown dead-neuron rule {dead_kind!r}; valid kinds: {', '.join(DEAD_KINDS)}"
            )
        super().__init__(**kwargs)
        self.num_bins = num_bins
        self.with_semantics = with_semantics
        self.dead_kind = dead_kind
        self.dead_value = dead_value
        self.align_threshold = align_threshold
        self.select_threshold = select_threshold
        self.add_state("codes", [], dist_reduce_fx="cat")
        self.add_state("factors", [], dist_reduce_fx="cat")

    def update(self, codes: Tensor, factors: Tensor) -> None:
        if codes.dim() != 2 or factors.dim() != 2 or codes.shape[0] != factors.shape[0]:
            raise ValueError(
                "expected codes [B, D] and factors [B, K] with the same B, got "
                f"{tuple(codes.shape)} and {tuple(factors.shape)}"
            )
        self.codes.append(codes.detach())
        self.factors.append(factors.detach())

    def compute(self) -> CodeMetrics:
        codes, factors = dim_zero_cat(self.codes), dim_zero_cat(self.factors)
        result = mig(codes, factors, self.num_bins)
        semantics = None
        if self.with_semantics:
            alive = ~dead_mask(codes, self.dead_kind, self.dead_value)
            semantics = semantics_from_mi(
                result.mi, result.entropy, alive, self.align_threshold, self.select_threshold
            )
        return CodeMetrics(result, semantics)
