"""How long a run will take: the estimate at the measured rate, logged once the first steps are
timed, and a progress bar that shows the epoch and the time left.

The estimate is the remaining steps at the measured seconds per step, plus, once an epoch has
ended, the remaining epochs' evaluations at the measured seconds per evaluation:

    left = (total_steps - steps_done) * step_s + (epochs - epochs_done) * eval_s

A paper-protocol run on a CPU takes days, so a CPU run expected to last longer than
``LONG_CPU_RUN_S`` says which smaller sizes exist.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

if TYPE_CHECKING:
    # Type-only: the callbacks are built before, and without, the training module.
    from vaesae.module import VAESAEModule

__all__ = [
    "LONG_CPU_RUN_S",
    "RunProgressBar",
    "WallTimeEstimate",
    "format_duration",
    "seconds_left",
    "smaller_sizes_hint",
]

log = logging.getLogger("vaesae")

# "More than a few hours": beyond this a CPU run names the smaller experiment sizes.
LONG_CPU_RUN_S = 3 * 3600.0
# Steps not timed (first-step set-up, allocator warm-up), then steps timed for the estimate.
WARMUP_STEPS = 3
TIMED_STEPS = 20


def seconds_left(
    step_s: float,
    steps_left: int,
    eval_s: float | None = None,
    evals_left: int = 0,
) -> float:
    """Seconds until the run ends: ``steps_left * step_s`` (seconds per training step) plus
    ``evals_left * eval_s`` (seconds per end-of-epoch evaluation, None while none was timed)."""
    if step_s < 0 or steps_left < 0 or evals_left < 0:
        raise ValueError("step time and counts must be non-negative")
    return steps_left * step_s + (evals_left * eval_s if eval_s is not None else 0.0)


def format_duration(seconds: float) -> str:
    """'45 s', '7 min 30 s', '2 h 05 min', '3 d 04 h': two units at most, rounded down."""
    s = max(0, int(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def smaller_sizes_hint(seconds: float, accelerator: str) -> str | None:
    """What to run instead when a CPU run would take more than ``LONG_CPU_RUN_S``; else None."""
    if accelerator != "cpu" or seconds <= LONG_CPU_RUN_S:
        return None
    return (
        f"this run needs about {format_duration(seconds)} on this CPU. Smaller sizes: "
        "experiment=demo (the CPU demo, ~10 min for 4 runs on 2 cores), experiment=smoke "
        "(seconds); the paper protocol is a GPU job (trainer=gpu, docs: Scaling out)"
    )


class WallTimeEstimate(pl.Callback):
    """Times the training steps and the end-of-epoch evaluations of this process, logs the
    expected wall time after the first ``TIMED_STEPS`` steps (past ``WARMUP_STEPS``) and the time
    left after every epoch, and answers :meth:`left` for the progress bar.

    ``total_steps`` is the run's steps over all epochs; ``epochs`` its epoch count; ``name`` the
    run's name in the log. ``log_progress=False`` keeps the timing but not the log lines (a pack
    member: the pack logs its own, as its members share the process's time). Add it after the
    evaluation callbacks, so an epoch's end is timed with them.
    """

    def __init__(
        self,
        total_steps: int,
        epochs: int,
        accelerator: str,
        name: str = "",
        log_progress: bool = True,
    ) -> None:
        self.total_steps = total_steps
        self.epochs = epochs
        self.accelerator = accelerator
        self.name = name
        self.log_progress = log_progress
        self.step_s: float | None = None
        self.eval_s: float | None = None
        self._steps = 0
        self._timed = 0.0
        self._last_step = 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: VAESAEModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        # A step is the time from the previous step's end within the same epoch, so the
        # evaluations between epochs stay out of the step rate.
        if batch_idx > 0:
            self._steps += 1
            if self._steps > WARMUP_STEPS:
                self._timed += now - self._last_step
                self.step_s = self._timed / (self._steps - WARMUP_STEPS)
            if self._steps == WARMUP_STEPS + TIMED_STEPS and self.log_progress:
                self._report()
        self._last_step = now

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        # After the evaluation callbacks (see the class docstring): since the epoch's last step
        # they evaluated, recorded and drew.
        self.eval_s = time.perf_counter() - self._last_step
        left = self.left(trainer.global_step, trainer.current_epoch + 1)
        if self.log_progress and left is not None:
            log.info(
                "%s: %d of %d epochs done, about %s left",
                self.name,
                trainer.current_epoch + 1,
                self.epochs,
                format_duration(left),
            )

    def left(self, steps_done: int, epochs_done: int) -> float | None:
        """Seconds left after ``steps_done`` steps and ``epochs_done`` evaluations; None before a
        step was timed."""
        if self.step_s is None:
            return None
        return seconds_left(
            self.step_s,
            max(0, self.total_steps - steps_done),
            self.eval_s,
            max(0, self.epochs - epochs_done),
        )

    def _report(self) -> None:
        assert self.step_s is not None
        total = seconds_left(self.step_s, self.total_steps)
        log.info(
            "expected wall time: %s for %d training steps at %.3f s/step (measured over %d "
            "steps), plus each epoch's evaluation",
            format_duration(total),
            self.total_steps,
            self.step_s,
            TIMED_STEPS,
        )
        hint = smaller_sizes_hint(total, self.accelerator)
        if hint:
            log.warning(hint)


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, described ``Epoch e/E`` and showing the run's time left (``left``)."""

    def __init__(self, estimate: WallTimeEstimate) -> None:
        super().__init__()
        self.estimate = estimate

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"Epoch {trainer.current_epoch + 1}/{self.estimate.epochs}"
        )

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items: dict[str, Any] = dict(super().get_metrics(trainer, pl_module))
        items.pop("v_num", None)
        left = self.estimate.left(trainer.global_step, trainer.current_epoch)
        if left is not None:
            items["left"] = format_duration(left)
        return items
