"""Arms: what `arm=<name>` (conf/arm/) changes in a run, turned into the module's arguments and
the extra callbacks.

An arm is a config under ``arm`` (every arm extends conf/arm/baseline.yaml, so every field
exists) plus, for `center` and `signed_trunk`, a model setting. Its fields:

- ``methods``: the methods it applies to (`vaesae.config.validate_config` refuses the others);
- ``pressure``: the schedule callback's sparsity pressure (schedule | none | fixed);
- ``rule``, ``rule_kw``: an activation rule that replaces the method's, and its settings;
- ``remedy`` (none | auxk | resample) and ``remedy_phase`` (all: from the first step | hold:
  only from the end of the schedule, epoch >= warmup + schedule_epochs), with the ``auxk_*`` and
  ``resample_*`` settings of the remedies.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from vaesae.remedies import AUXK_METHODS, ResampleCallback
from vaesae.sparsity import KSchedule

__all__ = [
    "REMEDIES",
    "REMEDY_PHASES",
    "arm_methods",
    "arm_module_kw",
    "arm_callbacks",
    "remedy_start_epoch",
    "resample_epochs",
    "default_remedy_window",
    "remedy_window",
]

REMEDIES = ("none", "auxk", "resample")
REMEDY_PHASES = ("all", "hold")
# Remedies that work only with some methods; the others combine with any.
REMEDY_METHODS = {"auxk": AUXK_METHODS}


def arm_methods(arm: DictConfig) -> tuple[str, ...]:
    """The methods ``arm`` applies to: its ``methods`` that its remedy also allows."""
    allowed = REMEDY_METHODS.get(arm.remedy)
    return tuple(m for m in arm.methods if allowed is None or m in allowed)


def remedy_start_epoch(arm: DictConfig, schedule: KSchedule) -> int:
    """First epoch of the remedy: 0 (``remedy_phase=all``) or the first hold epoch (``hold``)."""
    return 0 if arm.remedy_phase == "all" else schedule.end_epoch


def resample_epochs(arm: DictConfig, schedule: KSchedule) -> list[float]:
    """Training times (epochs) of the resampling points: each fraction f of ``resample_at`` is
    warmup + f * schedule_epochs (``remedy_phase=all``: during the squeeze, f = 1 at its end) or
    end of the schedule + f * hold_epochs (``hold``)."""
    if arm.remedy_phase == "all":
        start, length = schedule.warmup_epochs, schedule.schedule_epochs
    else:
        start, length = schedule.end_epoch, schedule.hold_epochs
    return [start + float(f) * length for f in arm.resample_at]


def default_remedy_window(epoch_samples: int, schedule_epochs: int) -> int:
    """min(one epoch, a tenth of the squeeze) in training samples: a unit the squeeze silences is
    seen as dead by the remedy well before k_end (Gao et al. use 10M tokens in runs of billions;
    BatchTopK's reference code, 5 batches)."""
    return max(1, min(epoch_samples, epoch_samples * schedule_epochs // 10))


def remedy_window(window: int | None, epoch_samples: int, schedule: KSchedule) -> int:
    """A remedy's dead window in training samples: ``window`` when set, else the default."""
    if window is not None:
        return int(window)
    return default_remedy_window(epoch_samples, schedule.schedule_epochs)


def arm_module_kw(cfg: DictConfig, schedule: KSchedule, epoch_samples: int) -> dict[str, Any]:
    """`VAESAEModule` arguments set by the arm: the activation rule, its settings and AuxK
    (``epoch_samples``: training samples per epoch, for the default dead window)."""
    arm = cfg.arm
    auxk = None
    if arm.remedy == "auxk":
        auxk = {
            "coef": float(arm.auxk_coef),
            "k_aux": None if arm.auxk_k is None else int(arm.auxk_k),
            "window": remedy_window(arm.auxk_window, epoch_samples, schedule),
            "start_epoch": remedy_start_epoch(arm, schedule),
        }
    return {
        "method": arm.rule or cfg.method.name,
        "rule_kw": OmegaConf.to_container(arm.rule_kw, resolve=True),
        "auxk": auxk,
    }


def arm_callbacks(cfg: DictConfig, schedule: KSchedule, epoch_samples: int) -> list[pl.Callback]:
    """The callbacks the arm adds to training (neuron resampling)."""
    arm = cfg.arm
    if arm.remedy != "resample":
        return []
    return [
        ResampleCallback(
            resample_epochs(arm, schedule),
            window=remedy_window(arm.resample_window, epoch_samples, schedule),
            pool_size=int(arm.resample_pool),
            seed=int(cfg.seed),
        )
    ]
