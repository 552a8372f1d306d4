"""Dead-neuron rules, the training-window counter and dead/alive transitions.

A neuron *fires* on a sample when its activation is > 0. The rules:

- ``never``: fires on no sample;
- ``magnitude``: maximum activation over the samples <= ``value`` (e.g. 1e-3). The threshold is
  absolute, so it is comparable across runs only when activations have a fixed scale: the
  configured SAE's normalised input (``input_norm="norm"``: units of the input's RMS norm)
  gives them one; with the raw objective it is in the trunk's own units;
- ``frequency``: fraction of samples on which it fires < ``value`` (e.g. 1e-3), only with
  N * ``value`` > 1 samples: at N <= 1/``value`` a single firing already reaches the threshold, so
  "fires less often than ``value``" is "never fires" and the rule would repeat ``never``;
- ``window`` (training only, :class:`SamplesSinceFired`): has not fired in the last W training
  samples.

All rules are decided from three sufficient statistics, the per-neuron fire count and maximum
activation and the number of samples (:class:`FiringSummary`), so the one-shot function
:func:`dead_mask` and the streaming :class:`vaesae.metrics.FiringStats` share one implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

DEAD_KINDS = ("never", "magnitude", "frequency")


class FiringSummary:
    """Per-neuron firing statistics over a set of samples, and the dead rules decided from them.

    Attributes:
        fire_count: LongTensor[M], number of samples with activation > 0.
        max_activation: float64 Tensor[M], largest activation seen (``-inf`` before any sample).
        num_samples: number of samples N.

    Not a dataclass on purpose: torchmetrics squeezes one-element tensors inside dataclasses
    returned by ``compute()``, which would turn a width-1 layer's vectors into scalars.
    """

    __slots__ = ("fire_count", "max_activation", "num_samples")

    def __init__(self, fire_count: Tensor, max_activation: Tensor, num_samples: int) -> None:
        self.fire_count = fire_count
        self.max_activation = max_activation
        self.num_samples = int(num_samples)

    @classmethod
    def from_activations(cls, acts: Tensor) -> FiringSummary:
        """Summarise activations ``acts`` [N, M] (N samples, M neurons)."""
        if acts.dim() != 2:
            raise ValueError(
                f"activations must be a 2-D [samples, neurons] tensor, got {acts.dim()}-D"
            )
        acts = acts.detach()
        if acts.shape[0] == 0:
            max_activation = torch.full(
                (acts.shape[1],), -math.inf, dtype=torch.float64, device=acts.device
            )
        else:
            max_activation = acts.amax(0).to(torch.float64)
        return cls((acts > 0).sum(0), max_activation, acts.shape[0])

    def __repr__(self) -> str:
        return f"FiringSummary(width={self.fire_count.numel()}, num_samples={self.num_samples})"

    def frequency(self) -> Tensor:
        """Firing frequency per neuron, ``fire_count / num_samples`` in [0, 1] (float64 [M])."""
        if self.num_samples == 0:
            raise ValueError("firing frequency is undefined before any sample was seen")
        return self.fire_count.to(torch.float64) / self.num_samples

    def dead_mask(self, kind: str, value: float = 0.0) -> Tensor:
        """BoolTensor[M]: True where the neuron is dead under rule ``kind``, threshold ``value``.

        ``never``: fire_count == 0 (``value`` unused); ``magnitude``: max activation <= ``value``;
        ``frequency``: fire_count / N < ``value``, with 0 < ``value`` <= 1 and N * ``value`` > 1.
        At N <= 1/``value`` one firing already gives frequency 1/N >= ``value``, so the rule marks
        exactly the neurons that never fire; it is refused rather than reported as a second rule.
        """
        if kind not in DEAD_KINDS:
            raise ValueError(
                f"unknown dead-neuron rule {kind!r}; valid kinds: {', '.join(DEAD_KINDS)}"
            )
        if self.num_samples == 0:
            raise ValueError("dead-neuron rules need at least one sample")
        if kind == "never":
            return self.fire_count == 0
        if kind == "magnitude":
            return self.max_activation <= value
        if not 0.0 < value <= 1.0:
            raise ValueError(f"the frequency rule needs a threshold in (0, 1], got {value}")
        if self.num_samples < min_samples_for_frequency(value):
            raise ValueError(
                f"the frequency rule with threshold {value:g} needs at least "
                f"{min_samples_for_frequency(value)} samples, got {self.num_samples}: with fewer, "
                "one firing already reaches the threshold, so the rule would equal 'never'"
            )
        return self.frequency() < value


def min_samples_for_frequency(value: float) -> int:
    """Smallest N with ``N * value > 1``: the fewest samples on which the ``frequency`` rule can
    mark a neuron that fires (once, at frequency 1/N < ``value``) as dead, i.e. differ from
    ``never``. For value = 1e-3 that is 1001."""
    n = math.floor(1.0 / value) + 1
    # 1/value is rounded, so the estimate can be one off either way; settle it with the rule's test.
    while (n - 1) * value > 1.0:
        n -= 1
    while n * value <= 1.0:
        n += 1
    return n


def dead_mask(acts: Tensor, kind: str, value: float = 0.0) -> Tensor:
    """Dead neurons of activations ``acts`` [N, M] under rule ``kind``: BoolTensor[M].

    ``kind`` is one of ``never`` (no sample with activation > 0), ``magnitude`` (max activation
    <= ``value``) or ``frequency`` (fraction of samples with activation > 0 is < ``value``; refused
    with a ValueError unless N * ``value`` > 1, since otherwise it coincides with ``never``).
    """
    return FiringSummary.from_activations(acts).dead_mask(kind, value)


class SamplesSinceFired(nn.Module):
    """Per neuron, the number of training samples seen since it last fired (the ``window`` rule).

    ``samples_since_fired[m]`` is 0 when neuron m fired on the latest sample, and counts every
    sample since its last firing otherwise (all samples seen, if it never fired). A buffer, so it
    follows the module across devices and is saved in ``state_dict`` / checkpoints. Counts are per
    process: under data parallelism each rank counts the samples it sees.
    """

    samples_since_fired: Tensor

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("samples_since_fired", torch.zeros(width, dtype=torch.long))

    @torch.no_grad()
    def update(self, acts: Tensor) -> None:
        """Advance the counters by a batch of activations ``acts`` [B, M], in sample order."""
        if acts.dim() != 2 or acts.shape[1] != self.samples_since_fired.numel():
            raise ValueError(
                f"expected activations of shape [batch, {self.samples_since_fired.numel()}], "
                f"got {tuple(acts.shape)}"
            )
        if acts.shape[0] == 0:
            return
        self.samples_since_fired.copy_(advance_since_fired(self.samples_since_fired, acts))

    def dead_mask(self, window: int) -> Tensor:
        """BoolTensor[M]: True where the neuron has not fired in the last ``window`` samples."""
        if window < 1:
            raise ValueError(f"window must be a positive number of samples, got {window}")
        return self.samples_since_fired >= window


@torch.no_grad()
def advance_since_fired(since: Tensor, acts: Tensor) -> Tensor:
    """Samples since each neuron last fired, after a batch: ``since`` [..., M] counts before it,
    ``acts`` [..., B, M] the batch's activations in sample order (any leading dimensions, e.g.
    the members of a pack). A neuron that fired counts the samples after its last firing in the
    batch; one that did not adds B."""
    fired = (acts.detach() > 0).flip(-2).to(torch.uint8)
    # argmax returns the first maximum: on the reversed batch, that is the distance from the
    # batch's last sample back to the neuron's last firing.
    since_last = fired.argmax(-2)
    fired_any = fired.amax(-2).bool()
    return torch.where(fired_any, since_last, since + acts.shape[-2])


@dataclass(frozen=True, eq=False)
class DeadTransitions:
    """Neurons that changed state between a reference point and now.

    Attributes:
        revived: BoolTensor[M], dead at the reference point and alive now.
        newly_dead: BoolTensor[M], alive at the reference point and dead now.
    """

    revived: Tensor
    newly_dead: Tensor

    @property
    def num_revived(self) -> int:
        return int(self.revived.sum())

    @property
    def num_newly_dead(self) -> int:
        return int(self.newly_dead.sum())


def dead_transitions(dead_before: Tensor, dead_now: Tensor) -> DeadTransitions:
    """Compare dead masks (BoolTensor[M]) taken at a reference epoch and now."""
    if dead_before.shape != dead_now.shape or dead_before.dim() != 1:
        raise ValueError(
            "dead masks must be 1-D and of equal shape, got "
            f"{tuple(dead_before.shape)} and {tuple(dead_now.shape)}"
        )
    if dead_before.dtype != torch.bool or dead_now.dtype != torch.bool:
        raise ValueError("dead masks must be boolean tensors")
    return DeadTransitions(revived=dead_before & ~dead_now, newly_dead=~dead_before & dead_now)
