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
activation's ``k``. After each batch a penalty-controlled rule's lambda takes one controller step
towards L0 = k(t). The epoch means of the target ``sparsity/k``, the achieved ``sparsity/l0`` and
``sparsity/l1_coef`` are logged. k and lambda are saved in checkpoints, so a resumed run continues
with the same values. Everything per step stays on the model's device: no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from vaesae.models.activations import SparseActivation
from vaesae.sparsity.l1_controller import (
    L1_COEF_INIT,
    L1_COEF_MAX,
    L1_COEF_MIN,
    L1_ETA,
    update_l1_coef,
)
from vaesae.sparsity.schedule import KSchedule

GRANULARITIES = ("step", "epoch")


class SparsityScheduleCallback(pl.Callback):
    """Drive the SAE's sparsity along ``schedule``: k directly (topk) or lambda by control (l1).

    ``schedule`` is a :class:`KSchedule` or a mapping of its fields (e.g. a Hydra config node).
    ``l1_coef_init``, ``l1_eta``, ``l1_coef_min`` and ``l1_coef_max`` are lambda's initial value
    and the controller's gain and clamp range (see :func:`update_l1_coef`).
    """

    def __init__(
        self,
        schedule: KSchedule | Mapping[str, Any],
        granularity: str = "step",
        l1_coef_init: float = L1_COEF_INIT,
        l1_eta: float = L1_ETA,
        l1_coef_min: float = L1_COEF_MIN,
        l1_coef_max: float = L1_COEF_MAX,
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"unknown schedule granularity={granularity!r}; valid: {', '.join(GRANULARITIES)}"
            )
        if not 0 < l1_coef_min <= l1_coef_init <= l1_coef_max:
            raise ValueError(
                f"need 0 < l1_coef_min={l1_coef_min} <= l1_coef_init={l1_coef_init}"
                f" <= l1_coef_max={l1_coef_max}"
            )
        if l1_eta <= 0:
            raise ValueError(f"l1_eta={l1_eta} must be > 0")
        self.schedule = schedule if isinstance(schedule, KSchedule) else KSchedule(**schedule)
        self.granularity = granularity
        self.l1_eta = l1_eta
        self.l1_coef_min = l1_coef_min
        self.l1_coef_max = l1_coef_max
        self.k: int = self.schedule.k(0.0)
        self.l1_coef: float | Tensor = l1_coef_init
        # Device copies of host scalars for logging, rebuilt only when the value changes: building
        # a CUDA tensor from a Python number blocks the host, which must not happen every step.
        self._device_scalars: dict[str, tuple[float, Tensor]] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.schedule.validate(width=_activation(pl_module).width)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.granularity == "step" and not math.isfinite(trainer.num_training_batches):
            raise ValueError(
                "schedule granularity='step' needs a train dataloader with a length;"
                " use granularity='epoch'"
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        epoch = float(trainer.current_epoch)
        if self.granularity == "step":
            epoch += batch_idx / trainer.num_training_batches
        self.k = self.schedule.k(epoch)
        activation = _activation(pl_module)
        if activation.control == "k":
            activation.k = self.k
        else:
            if not isinstance(self.l1_coef, Tensor) or self.l1_coef.device != pl_module.device:
                self.l1_coef = torch.tensor(
                    float(self.l1_coef), dtype=torch.float32, device=pl_module.device
                )
            pl_module.l1_coef = self.l1_coef

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
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
        if _activation(pl_module).control == "penalty":
            self.l1_coef = update_l1_coef(
                self.l1_coef, l0, self.k, self.l1_eta, self.l1_coef_min, self.l1_coef_max
            )
            pl_module.l1_coef = self.l1_coef
        l1_coef = pl_module.l1_coef
        if not isinstance(l1_coef, Tensor):
            l1_coef = self._device_scalar("l1_coef", l1_coef, pl_module.device)
        # batch_size=1: the epoch value is the plain mean over steps, whatever the batch holds.
        log = {"on_step": False, "on_epoch": True, "batch_size": 1}
        pl_module.log("sparsity/k", self._device_scalar("k", self.k, pl_module.device), **log)
        pl_module.log("sparsity/l0", l0, **log)
        pl_module.log("sparsity/l1_coef", l1_coef, **log)

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "l1_coef": float(self.l1_coef)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.k = int(state_dict["k"])
        self.l1_coef = float(state_dict["l1_coef"])

    def _device_scalar(self, name: str, value: float, device: torch.device) -> Tensor:
        cached = self._device_scalars.get(name)
        if cached is None or cached[0] != value or cached[1].device != device:
            cached = (value, torch.tensor(float(value), dtype=torch.float32, device=device))
            self._device_scalars[name] = cached
        return cached[1]


def _activation(pl_module: pl.LightningModule) -> SparseActivation:
    return pl_module.model.sae.activation
