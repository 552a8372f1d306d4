"""Lightning callback applying the sparsity schedule k(t) to the model during training.

Protocol with the LightningModule:

- ``pl_module.model`` is a :class:`vaesae.models.VAESAE`; the callback reaches the activation rule
  at ``pl_module.model.sae.activation`` and reads its ``control``.
- ``pl_module.l1_coef`` (float or 0-d tensor) multiplies the L1 term in the module's loss. For
  penalty-controlled rules (``l1``) the callback overwrites it before every training batch; for
  k-controlled rules (``topk``) it only logs it.
- ``training_step`` returns a dict with at least ``"loss"`` and ``"l0"``, the batch's mean number
  of non-zero codes per sample as a detached scalar tensor (``vae_sae_loss(...)["l0"]``).

Before each training batch k(t) is computed at t = epoch + batch_idx / batches_per_epoch
(``granularity="step"``) or t = epoch (``"epoch"``) and, for k-controlled rules, written to the
activation's ``k``. After each batch a penalty-controlled rule's lambda takes one step of the
controller in :mod:`vaesae.sparsity.l1_controller` towards L0 = k(t + ``l1_track_lead`` steps),
which also reads the target ``l1_lead`` steps ahead and its slope ``l1_ff_lead`` steps ahead.
Logged per epoch: the mean target ``sparsity/k``, the target of the epoch's last step
``sparsity/k_last`` (the k that the end-of-epoch evaluation sees), the mean achieved
``sparsity/l0`` and the mean ``sparsity/l1_coef``. k and the controller's state are saved in
checkpoints, so a resumed run continues with the same values. Everything per step stays on the
model's device: no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import lightning.pytorch as pl
import torch
from torch import Tensor

from vaesae.models.activations import SparseActivation, TopK
from vaesae.sparsity.l1_controller import (
    L1_COEF_INIT,
    L1_COEF_MAX,
    L1_COEF_MIN,
    L1_FF_LEAD,
    L1_KFF,
    L1_KI,
    L1_KI_NEAR,
    L1_KNEE,
    L1_KP,
    L1_LEAD,
    L1_MAX_FALL,
    L1_MAX_RISE,
    L1_NEAR,
    L1_SMOOTHING,
    L1_TRACK_LEAD,
    L1Gains,
    L1Inputs,
    L1State,
    l1_advance,
    l1_initial_state,
    l1_inputs,
    l1_state_to,
)
from vaesae.sparsity.schedule import KSchedule

if TYPE_CHECKING:
    # Type-only: the callbacks are built before, and without, the training module.
    from vaesae.module import VAESAEModule

GRANULARITIES = ("step", "epoch")
# What the squeeze applies: the schedule's k(t); none (k = width, lambda = 0: the no-squeeze
# control); or k_end from the first step (the non-adaptive rule).
PRESSURES = ("schedule", "none", "fixed")


class StepTargets(NamedTuple):
    """A step's targets: ``k`` (the step's own), ``k_tracked`` (``track_lead`` steps on: the
    controller's set point), ``k_ahead`` (``lead`` steps on) and ``slope_ahead``
    (log(k(t + d - 1) / k(t + d)), d = ``ff_lead``; None without feed-forward)."""

    k: int
    k_tracked: int
    k_ahead: int
    slope_ahead: float | None


class SparsityScheduleCallback(pl.Callback):
    """Drive the SAE's sparsity along ``schedule``: k directly (topk) or lambda by control (l1).

    ``schedule`` is a :class:`KSchedule` or a mapping of its fields (e.g. a Hydra config node).
    The ``l1_*`` arguments are the controller's settings (:class:`L1Gains`, whose fields they
    name without the prefix); a bad one raises ValueError naming it. ``pressure`` (PRESSURES)
    replaces the target: ``"none"`` keeps k = width (k-controlled rules) and lambda = 0 (penalty
    rules, no controller), ``"fixed"`` targets k_end from the first step; the schedule's epochs,
    and so the reference epoch, stay those of ``schedule``.
    """

    def __init__(
        self,
        schedule: KSchedule | Mapping[str, Any],
        granularity: str = "step",
        l1_coef_init: float = L1_COEF_INIT,
        l1_coef_min: float = L1_COEF_MIN,
        l1_coef_max: float = L1_COEF_MAX,
        l1_ki: float = L1_KI,
        l1_ki_near: float = L1_KI_NEAR,
        l1_near: float = L1_NEAR,
        l1_kp: float = L1_KP,
        l1_kff: float = L1_KFF,
        l1_smoothing: float = L1_SMOOTHING,
        l1_max_rise: float = L1_MAX_RISE,
        l1_max_fall: float = L1_MAX_FALL,
        l1_lead: int = L1_LEAD,
        l1_ff_lead: int = L1_FF_LEAD,
        l1_knee: float = L1_KNEE,
        l1_track_lead: int = L1_TRACK_LEAD,
        l1_engage_at_knee: bool = False,
        pressure: str = "schedule",
    ) -> None:
        if pressure not in PRESSURES:
            raise ValueError(f"unknown pressure={pressure!r}; valid: {', '.join(PRESSURES)}")
        self.pressure = pressure
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"unknown schedule granularity={granularity!r}; valid: {', '.join(GRANULARITIES)}"
            )
        self.gains = L1Gains(
            coef_init=l1_coef_init,
            coef_min=l1_coef_min,
            coef_max=l1_coef_max,
            ki=l1_ki,
            ki_near=l1_ki_near,
            near=l1_near,
            kp=l1_kp,
            kff=l1_kff,
            smoothing=l1_smoothing,
            max_rise=l1_max_rise,
            max_fall=l1_max_fall,
            lead=l1_lead,
            ff_lead=l1_ff_lead,
            knee=l1_knee,
            track_lead=l1_track_lead,
            engage_at_knee=l1_engage_at_knee,
        )
        self.schedule = schedule if isinstance(schedule, KSchedule) else KSchedule(**schedule)
        self.granularity = granularity
        self.k: int = self.schedule.k(0.0)
        self.k_ahead: int = self.k  # the target gains.lead steps after the current one
        self.k_tracked: int = self.k  # the target gains.track_lead steps on, the loop's set point
        self.slope_ahead: float | None = None  # log(k(t + d - 1) / k(t + d)), d = gains.ff_lead
        self.l1: L1State = l1_initial_state(self.gains)
        # Device copies of host scalars for logging, rebuilt only when the value changes: building
        # a CUDA tensor from a Python number blocks the host, which must not happen every step.
        self._device_scalars: dict[str, tuple[float, Tensor]] = {}

    @property
    def l1_coef(self) -> float | Tensor:
        """The lambda that the next training step uses."""
        return self.l1.coef

    def target(self, epoch: float, width: int) -> int:
        """The k the rule is held to at training time ``epoch`` under this pressure."""
        if self.pressure == "none":
            return width
        if self.pressure == "fixed":
            return self.schedule.k_end
        return self.schedule.k(epoch)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        self.schedule.validate(width=_activation(pl_module).width)

    def on_train_start(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        if self.granularity == "step" and not math.isfinite(trainer.num_training_batches):
            raise ValueError(
                "schedule granularity='step' needs a train dataloader with a length;"
                " use granularity='epoch'"
            )

    def step_targets(self, trainer: pl.Trainer, batch_idx: int, width: int) -> StepTargets:
        """The targets of step ``batch_idx`` of the current epoch: a pure function of the
        schedule, the pressure and the step, so a pack can tabulate an epoch's at its start."""

        def k_at(steps_on: int) -> int:
            return self.target(self._time(trainer, batch_idx + steps_on), width)

        d = self.gains.ff_lead
        return StepTargets(
            k_at(0),
            k_at(self.gains.track_lead),
            k_at(self.gains.lead),
            math.log(k_at(d - 1) / k_at(d)) if d else None,
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: VAESAEModule, batch: Any, batch_idx: int
    ) -> None:
        activation = _activation(pl_module)
        targets = self.step_targets(trainer, batch_idx, activation.width)
        self.k, self.k_tracked, self.k_ahead, self.slope_ahead = targets
        if activation.control == "k":
            cast(TopK, activation).k = self.k
        elif self.pressure == "none":
            pl_module.l1_coef = 0.0
        else:
            integral = self.l1.integral
            if not (isinstance(integral, Tensor) and integral.device == pl_module.device):
                self.l1 = l1_state_to(self.l1, pl_module.device)
            pl_module.l1_coef = self.l1.coef

    def _time(self, trainer: pl.Trainer, batch_idx: int) -> float:
        """Training time in epochs at batch ``batch_idx`` of the current epoch (may run past it)."""
        batches = trainer.num_training_batches
        if self.granularity == "step":
            return trainer.current_epoch + batch_idx / batches
        return float(trainer.current_epoch + batch_idx // batches)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: VAESAEModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if outputs is None:  # training_step skipped this batch
            return
        if not isinstance(outputs, Mapping) or "l0" not in outputs:
            raise KeyError(
                "SparsityScheduleCallback needs training_step to return a dict with 'l0'"
                " (mean non-zero codes per sample, detached)"
            )
        l0 = outputs["l0"]
        if self.controls(pl_module):
            # `l1_control_step`'s composition, with the inputs a pack's stacked step also reads.
            advanced = l1_advance(self.l1, l0, self.control_inputs())
            self.l1 = advanced._replace(k_prev=float(self.k_tracked))
            pl_module.l1_coef = self.l1.coef
        self.log_step(pl_module, l0)

    def controls(self, pl_module: VAESAEModule) -> bool:
        """Whether this run's lambda is driven by the controller (a penalty rule under pressure)."""
        return _activation(pl_module).control == "penalty" and self.pressure != "none"

    def control_inputs(self) -> L1Inputs:
        """This step's controller inputs (host numbers): what :meth:`on_train_batch_end` steps
        with."""
        targets = StepTargets(self.k, self.k_tracked, self.k_ahead, self.slope_ahead)
        return self.inputs_at(self.l1.k_prev, targets)

    def inputs_at(self, k_prev: float, targets: StepTargets) -> L1Inputs:
        """The controller inputs of a step with ``targets`` after a step whose set point was
        ``k_prev`` (0 before the run's first): what a pack tabulates for an epoch's steps
        (`vaesae.pack.stacked`)."""
        return l1_inputs(
            k_prev,
            targets.k_tracked,
            self.schedule.k_end,
            self.gains,
            targets.k_ahead,
            targets.slope_ahead,
        )

    def log_step(self, pl_module: VAESAEModule, l0: Tensor) -> None:
        """The step's k, L0 and lambda (after the controller's step), as epoch means."""
        l1_coef = pl_module.l1_coef
        if not isinstance(l1_coef, Tensor):
            l1_coef = self._device_scalar("l1_coef", l1_coef, pl_module.device)
        k = self._device_scalar("k", self.k, pl_module.device)
        # batch_size=1: the epoch value is the plain mean over steps, whatever the batch holds.
        for name, value in step_logs(k, l0, l1_coef).items():
            pl_module.log(name, value, on_step=False, on_epoch=True, batch_size=1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        k_last = self._device_scalar("k", self.k, pl_module.device)
        pl_module.log("sparsity/k_last", k_last, on_step=False, on_epoch=True, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        # .item() gives Python floats, which hold float32 values exactly: a resumed run continues
        # bit-identically.
        l1 = {k: v.item() if isinstance(v, Tensor) else v for k, v in self.l1._asdict().items()}
        return {"k": self.k, "l1": l1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "l1" not in state_dict:
            raise ValueError(
                "checkpoint written by the earlier L1 controller (no 'l1' state): start the run"
                " afresh"
            )
        self.k = int(state_dict["k"])
        self.l1 = L1State(**state_dict["l1"])

    def _device_scalar(self, name: str, value: float, device: torch.device) -> Tensor:
        cached = self._device_scalars.get(name)
        if cached is None or cached[0] != value or cached[1].device != device:
            cached = (value, torch.tensor(float(value), dtype=torch.float32, device=device))
            self._device_scalars[name] = cached
        return cached[1]


def step_logs(k: Tensor, l0: Tensor, l1_coef: Tensor) -> dict[str, Tensor]:
    """The figures a training step logs (each an epoch mean over steps, weight 1): k (float32),
    the step's L0, and the lambda after the controller's step. One value per run, or (N,) for
    N runs stepped together (a pack)."""
    return {"sparsity/k": k, "sparsity/l0": l0, "sparsity/l1_coef": l1_coef}


def _activation(pl_module: VAESAEModule) -> SparseActivation:
    return pl_module.model.sae.activation
