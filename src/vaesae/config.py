"""Checks of a composed training config, run before any data is loaded or any step is taken.

Hydra itself rejects unknown group options (listing the valid ones); this module rejects values
that compose but cannot work, each with one line that names the setting and its valid range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vaesae.arms import REMEDIES, REMEDY_PHASES, arm_methods, remedy_window, resample_epochs
from vaesae.data import DATASETS, FACTOR_SPACES, SOURCES
from vaesae.data.datamodule import GroundTruthDataModule
from vaesae.metrics import min_samples_for_frequency
from vaesae.models import (
    ACTIVATIONS,
    CENTERS,
    INIT_SCHEMES,
    INPUT_NORMS,
    SAE_SITES,
    activation_class,
)
from vaesae.module import VAESAEModule
from vaesae.pictures.compute import EPOCH_NAMES, VIEWS
from vaesae.precision import resolve_channels_last, resolve_precision
from vaesae.sparsity import GRANULARITIES, KSchedule, validate_schedule
from vaesae.sparsity.callback import PRESSURES

__all__ = [
    "ConfigError",
    "validate_config",
    "schedule_of",
    "steps_per_epoch",
    "epoch_samples",
    "reference_epoch",
    "THRESHOLD_KINDS",
    "LOGGERS",
]

THRESHOLD_KINDS = ("never", "magnitude", "frequency", "window")
LOGGERS = ("csv", "wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")


class ConfigError(ValueError):
    """A setting that composes but cannot be trained with."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _choice(name: str, value: object, valid: tuple[str, ...] | list[str]) -> None:
    _require(value in valid, f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")


def _positive(name: str, value: object) -> None:
    _require(
        isinstance(value, int | float) and value > 0,
        f"{name}={value} must be a positive number",
    )


def schedule_of(cfg: DictConfig) -> KSchedule:
    """The run's k schedule (raises ValueError for bad parameters)."""
    s = cfg.schedule
    return KSchedule(
        s.kind, s.k_start, s.k_end, s.warmup_epochs, s.schedule_epochs, s.hold_epochs, s.n_steps
    )


def steps_per_epoch(cfg: DictConfig) -> int:
    """Training steps per epoch: floor(samples per epoch / batch size) (the last partial batch is
    dropped); samples per epoch is data.epoch_size, or the size of the dataset's factor grid."""
    samples = cfg.data.epoch_size
    if samples is None:
        samples = len(FACTOR_SPACES[cfg.dataset.name])
    return int(samples) // int(cfg.data.batch_size)


def epoch_samples(cfg: DictConfig) -> int:
    """Training samples an epoch actually uses: steps_per_epoch * batch size."""
    return steps_per_epoch(cfg) * int(cfg.data.batch_size)


def reference_epoch(cfg: DictConfig) -> int | None:
    """The epoch whose end-of-epoch evaluation runs at k = k_end ("dead at k_end" is read there);
    None when the run has no such epoch. See :meth:`vaesae.sparsity.KSchedule.reference_epoch`."""
    return schedule_of(cfg).reference_epoch(cfg.schedule.granularity, steps_per_epoch(cfg))


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first impossible setting of a training config."""
    _choice("dataset", cfg.dataset.name, DATASETS)
    _choice("data.source", cfg.data.source, SOURCES)
    _choice("method", cfg.method.name, sorted(ACTIVATIONS))
    _choice("model.site", cfg.model.site, SAE_SITES)
    _choice("model.input_norm", cfg.model.input_norm, INPUT_NORMS)
    _choice("model.center", cfg.model.center, CENTERS)
    _choice("model.init", cfg.model.init, INIT_SCHEMES)
    _choice("schedule.granularity", cfg.schedule.granularity, GRANULARITIES)
    _choice("threshold.kind", cfg.threshold.kind, THRESHOLD_KINDS)
    _choice("logger", cfg.logger.name, LOGGERS)
    if cfg.logger.name == "wandb":
        _choice("logger.mode", cfg.logger.mode, WANDB_MODES)
    for name in (
        "data.batch_size",
        "data.eval_size",
        "data.eval_batch_size",
        "model.width",
        "optim.lr",
        "metrics.window",
        "metrics.num_bins",
    ):
        section, key = name.split(".")
        _positive(name, cfg[section][key])
    _require(cfg.model.d_z >= 2, f"model.d_z={cfg.model.d_z} must be >= 2 (MIG compares two codes)")
    for name in ("beta", "alpha"):
        _require(cfg.loss[name] >= 0, f"loss.{name}={cfg.loss[name]} must be >= 0")
    epoch_size = cfg.data.epoch_size
    _require(
        epoch_size is None or epoch_size >= cfg.data.batch_size,
        f"data.epoch_size={epoch_size} must be null or >= data.batch_size={cfg.data.batch_size}",
    )
    s = cfg.schedule
    try:
        validate_schedule(
            s.kind,
            s.k_start,
            s.k_end,
            s.warmup_epochs,
            s.schedule_epochs,
            s.hold_epochs,
            s.n_steps,
            width=cfg.model.width,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _require(
        reference_epoch(cfg) is not None,
        f"schedule kind={s.kind} with granularity={s.granularity} and hold_epochs={s.hold_epochs}"
        f" never evaluates the model at k_end={s.k_end} (the last schedule epoch ends at a larger"
        " k), so 'dead at k_end' would not exist: set schedule.hold_epochs >= 1",
    )
    if cfg.threshold.kind == "frequency":
        needed = min_samples_for_frequency(cfg.threshold.value)
        _require(
            cfg.data.eval_size >= needed,
            f"threshold={cfg.threshold.name} (frequency < {cfg.threshold.value:g}) needs "
            f"data.eval_size >= {needed}, got {cfg.data.eval_size}: raise data.eval_size or pick "
            "another threshold (never, magnitude, window, or a larger frequency)",
        )
    if cfg.threshold.kind == "magnitude":
        _require(cfg.threshold.value >= 0, f"threshold.value={cfg.threshold.value} must be >= 0")
    for resolve, key in (
        (resolve_precision, "precision"),
        (resolve_channels_last, "channels_last"),
    ):
        try:
            resolve(cfg.trainer[key], cfg.trainer.accelerator)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    _validate_targets(cfg)
    _validate_arm(cfg)
    _validate_pictures(cfg)
    _validate_metrics(cfg)
    if cfg.trainer.accelerator == "gpu":
        _require(
            torch.cuda.is_available(),
            "trainer=gpu but no CUDA device is visible; use trainer=cpu",
        )


def _validate_targets(cfg: DictConfig) -> None:
    """`data._target_` and `model._target_` name the data module and training module classes
    (or subclasses of them), which `vaesae.assembly` instantiates with the group's settings."""
    for group, base in (("data", GroundTruthDataModule), ("model", VAESAEModule)):
        target = cfg[group].get("_target_")
        default = f"{base.__module__}.{base.__qualname__}"
        try:
            cls = get_class(str(target))
        except Exception:
            raise ConfigError(
                f"{group}._target_={target!r} is not an importable class; the default is {default}"
            ) from None
        _require(
            issubclass(cls, base),
            f"{group}._target_={target} is not a {base.__name__} (nor a subclass of one); the "
            f"default is {default}",
        )


def _validate_arm(cfg: DictConfig) -> None:
    """The arm applies to the method, and its settings are in range (`vaesae.arms`)."""
    arm, method = cfg.arm, cfg.method.name
    _choice("arm.remedy", arm.remedy, REMEDIES)
    valid = arm_methods(arm)
    remedy = f" (remedy {arm.remedy})" if arm.remedy != "none" else ""
    _require(
        method in valid,
        f"arm={arm.name}{remedy} does not apply to method={method}; valid combinations: "
        + ", ".join(f"arm={arm.name} method={m}" for m in valid),
    )
    _choice("arm.remedy_phase", arm.remedy_phase, REMEDY_PHASES)
    _choice("arm.pressure", arm.pressure, PRESSURES)
    if arm.rule is not None:
        _choice("arm.rule", arm.rule, sorted(ACTIVATIONS))
        rule, own = activation_class(arm.rule).control, activation_class(method).control
        _require(
            rule == own,
            f"arm.rule={arm.rule} (control {rule}) cannot replace method={method} (control {own})",
        )
    if arm.remedy == "auxk":
        _positive("arm.auxk_coef", arm.auxk_coef)
        _require(
            arm.auxk_k is None or (isinstance(arm.auxk_k, int) and arm.auxk_k >= 1),
            f"arm.auxk_k={arm.auxk_k} must be null or an integer >= 1",
        )
        _validate_window(cfg, "arm.auxk_window", arm.auxk_window)
    if arm.remedy == "resample":
        _positive("arm.resample_pool", arm.resample_pool)
        _require(
            all(0 <= f <= 1 for f in arm.resample_at),
            f"arm.resample_at={list(arm.resample_at)} must be fractions in [0, 1]",
        )
        window = _validate_window(cfg, "arm.resample_window", arm.resample_window)
        samples = epoch_samples(cfg)
        for f, t in zip(arm.resample_at, resample_epochs(arm, schedule_of(cfg)), strict=True):
            _require(
                t * samples >= window,
                f"arm.resample_at point {f} (epoch {t:g}, {t * samples:,.0f} training "
                f"samples) comes before one dead window ({window:,} samples) has passed, so it "
                "could never find a dead unit: move the point later or shorten "
                "arm.resample_window",
            )


def _validate_window(cfg: DictConfig, name: str, value: int | None) -> int:
    """A remedy's dead window: null (the default) or a positive number of samples no longer than
    the squeeze (a longer one cannot see the squeeze's victims before k_end); returns it."""
    if value is not None:
        _positive(name, value)
    schedule = schedule_of(cfg)
    samples = epoch_samples(cfg)
    window = remedy_window(value, samples, schedule)
    squeeze = schedule.schedule_epochs * samples
    _require(
        window <= squeeze,
        f"{name}={window:,} training samples is longer than the squeeze ({squeeze:,} samples, "
        f"{schedule.schedule_epochs} epochs): the remedy could not see a unit silenced by the "
        "squeeze before k_end; use null (one epoch or a tenth of the squeeze) or a shorter window",
    )
    return window


def _validate_epochs(name: str, epochs: Sequence[object], total: int) -> None:
    """A list of epochs: names (first, reference, final) or numbers within the run."""
    _require(
        OmegaConf.is_list(epochs) or isinstance(epochs, list | tuple),
        f"{name}={epochs!r} must be a list, e.g. [{', '.join(EPOCH_NAMES)}] ([] for none)",
    )
    for entry in epochs:
        number = isinstance(entry, int) and not isinstance(entry, bool) and 0 <= entry < total
        _require(
            entry in EPOCH_NAMES or number,
            f"{name} entry {entry!r} is not valid; choose one of: "
            f"{', '.join(EPOCH_NAMES)}, or an epoch number 0..{total - 1}",
        )


def _validate_metrics(cfg: DictConfig) -> None:
    """`metrics.dci_*`: the DCI epochs, and enough samples for a 2:1 train/test split."""
    m = cfg.metrics
    _validate_epochs("metrics.dci_epochs", m.dci_epochs, schedule_of(cfg).total_epochs)
    n = m.dci_samples
    _require(
        isinstance(n, int) and not isinstance(n, bool) and n >= 3,
        f"metrics.dci_samples={n!r} must be an integer >= 3 (trees fitted on 2/3, tested on 1/3)",
    )


def _validate_pictures(cfg: DictConfig) -> None:
    """`pictures.*`: epochs named or numbered within the run, known views, positive counts."""
    p = cfg.pictures
    _validate_epochs("pictures.epochs", p.epochs, schedule_of(cfg).total_epochs)
    _require(
        OmegaConf.is_list(p.views) or isinstance(p.views, list | tuple),
        f"pictures.views={p.views!r} must be a list of: {', '.join(VIEWS)}",
    )
    for view in p.views:
        _choice("pictures.views entry", view, VIEWS)
    for key in ("num_units", "images_per_unit"):
        value = p[key]
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"pictures.{key}={value!r} must be an integer >= 1",
        )
    _require(
        p.images_per_unit <= cfg.data.eval_size,
        f"pictures.images_per_unit={p.images_per_unit} must be <= data.eval_size="
        f"{cfg.data.eval_size} (the images are evaluation samples)",
    )
    steps = p.traversal_steps
    _require(
        isinstance(steps, int) and not isinstance(steps, bool) and steps >= 2,
        f"pictures.traversal_steps={steps!r} must be an integer >= 2 (0 and the largest "
        "activation at least)",
    )
