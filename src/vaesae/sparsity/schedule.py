"""Sparsity schedules k(t): how many SAE units may be active per sample at training time t.

Time t is in epochs and may be fractional (per-step granularity passes
``epoch + batch_idx / batches_per_epoch``; per-epoch granularity passes the integer epoch).
The protocol has three phases: ``warmup_epochs`` at k_start, the decay from k_start to k_end over
``schedule_epochs``, then ``hold_epochs`` at k_end (the paper's extended training). With the
decay progress p = clip((t - warmup_epochs) / schedule_epochs, 0, 1), the kinds are

- ``linear``:      k_start + (k_end - k_start) * p
- ``cosine``:      k_end + (k_start - k_end) * (1 + cos(pi * p)) / 2     (half cosine)
- ``exponential``: k_start * (k_end / k_start) ** p                      (geometric)
- ``step``:        k_start + (k_end - k_start) * floor(n_steps * p) / n_steps: n_steps equal drops,
                   each segment of the decay lasting schedule_epochs / n_steps, the last drop
                   (to k_end) at the end of the decay, like the other kinds
- ``constant``:    k_end at every t, the non-adaptive control.

k is rounded half up to an integer and clamped to [k_end, k_start], so every kind is monotone
non-increasing and equals k_end exactly from the end of the decay on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("linear", "cosine", "exponential", "step", "constant")


def validate_schedule(
    kind: str,
    k_start: int,
    k_end: int,
    warmup_epochs: int = 0,
    schedule_epochs: int = 50,
    hold_epochs: int = 100,
    n_steps: int = 5,
    width: int | None = None,
) -> None:
    """Raise ValueError (one line naming the setting and its valid range) for a bad schedule.

    ``width`` (the SAE's number of units) is checked against when given.
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind={kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")
    if k_end < 1:
        raise ValueError(f"schedule k_end={k_end} must be >= 1")
    if k_start < k_end:
        raise ValueError(f"schedule k_start={k_start} must be >= k_end={k_end}")
    if width is not None and k_end > width:
        raise ValueError(f"schedule k_end={k_end} must be <= the SAE width={width}")
    if width is not None and k_start > width:
        raise ValueError(f"schedule k_start={k_start} must be <= the SAE width={width}")
    if schedule_epochs <= 0:
        raise ValueError(f"schedule_epochs={schedule_epochs} must be > 0")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs={warmup_epochs} must be >= 0")
    if hold_epochs < 0:
        raise ValueError(f"hold_epochs={hold_epochs} must be >= 0")
    if n_steps < 1:
        raise ValueError(f"schedule n_steps={n_steps} must be >= 1")


def k_schedule(
    epoch: float,
    kind: str,
    k_start: int = 500,
    k_end: int = 50,
    warmup_epochs: int = 0,
    schedule_epochs: int = 50,
    n_steps: int = 5,
) -> int:
    """k at training time ``epoch`` (fractional epochs allowed); see the module docstring.

    The hold phase needs no parameter here: k stays k_end from the end of the decay on.
    """
    if kind == "constant":
        return k_end
    # Progress is computed from epochs (not from p * n_steps) so integer step boundaries are exact.
    elapsed = min(max(epoch - warmup_epochs, 0.0), schedule_epochs)
    p = elapsed / schedule_epochs
    if kind == "linear":
        k = k_start + (k_end - k_start) * p
    elif kind == "cosine":
        k = k_end + (k_start - k_end) * 0.5 * (1.0 + math.cos(math.pi * p))
    elif kind == "exponential":
        k = k_start * (k_end / k_start) ** p
    elif kind == "step":
        k = k_start + (k_end - k_start) * math.floor(elapsed * n_steps / schedule_epochs) / n_steps
    else:
        raise ValueError(f"unknown schedule kind={kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")
    return min(max(math.floor(k + 0.5), k_end), k_start)


def schedule_end_epoch(warmup_epochs: int, schedule_epochs: int) -> int:
    """First (0-based) epoch at which k == k_end throughout: warmup_epochs + schedule_epochs."""
    return warmup_epochs + schedule_epochs


def total_epochs(warmup_epochs: int, schedule_epochs: int, hold_epochs: int) -> int:
    """Length of the whole protocol in epochs: warmup + schedule + hold."""
    return warmup_epochs + schedule_epochs + hold_epochs


@dataclass(frozen=True)
class KSchedule:
    """A validated schedule; the parameters of :func:`k_schedule` plus the hold phase."""

    kind: str = "linear"
    k_start: int = 500
    k_end: int = 50
    warmup_epochs: int = 0
    schedule_epochs: int = 50
    hold_epochs: int = 100
    n_steps: int = 5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, width: int | None = None) -> None:
        """Raise ValueError for bad parameters, or for k outside [1, width] when width is given."""
        validate_schedule(
            self.kind,
            self.k_start,
            self.k_end,
            self.warmup_epochs,
            self.schedule_epochs,
            self.hold_epochs,
            self.n_steps,
            width=width,
        )

    def k(self, epoch: float) -> int:
        """k at training time ``epoch`` (in epochs, fractional allowed)."""
        return k_schedule(
            epoch,
            self.kind,
            self.k_start,
            self.k_end,
            self.warmup_epochs,
            self.schedule_epochs,
            self.n_steps,
        )

    @property
    def end_epoch(self) -> int:
        """First (0-based) epoch at which k == k_end throughout."""
        return schedule_end_epoch(self.warmup_epochs, self.schedule_epochs)

    @property
    def total_epochs(self) -> int:
        """warmup + schedule + hold epochs."""
        return total_epochs(self.warmup_epochs, self.schedule_epochs, self.hold_epochs)

    def reference_epoch(self, granularity: str, steps_per_epoch: int) -> int | None:
        """The "k_end" epoch: the first epoch whose end-of-epoch evaluation runs at k = k_end.

        The evaluation after epoch e uses the k of e's last training step, at time
        t = e + (steps_per_epoch - 1) / steps_per_epoch (``granularity="step"``) or t = e
        (``"epoch"``). That is the schedule's last epoch when its last step has already rounded
        to k_end (a linear ramp with many steps per epoch), and otherwise the first hold epoch
        (``step`` kind, per-epoch granularity, short epochs). None when neither is trained: a run
        without hold epochs that never evaluates at k_end.
        """
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch={steps_per_epoch} must be >= 1")
        last_step = (steps_per_epoch - 1) / steps_per_epoch if granularity == "step" else 0.0
        for epoch in range(max(self.end_epoch - 1, 0), self.total_epochs):
            if self.k(epoch + last_step) == self.k_end:
                return epoch
        return None
