"""A run assembled from its composed config: the data, the model, the callbacks and the plan.

Both engines build their runs here, so a job trained alone (`vaesae.train.train`, under a
Lightning Trainer) and the same job trained as a member of a pack (`vaesae.pack`) get the same
objects from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vaesae.arms import arm_callbacks, arm_module_kw
from vaesae.config import epoch_samples, reference_epoch, schedule_of, steps_per_epoch
from vaesae.data.datamodule import GroundTruthDataModule
from vaesae.evaluation import EvalSettings, EvaluationCallback
from vaesae.module import VAESAEModule
from vaesae.pictures.callback import NeuronPicturesCallback, PictureSettings
from vaesae.pictures.compute import resolve_epochs
from vaesae.precision import TrainPrecision, resolve_channels_last, resolve_precision
from vaesae.records import LastCheckpoint, RunRecorder
from vaesae.sparsity import KSchedule, SparsityScheduleCallback
from vaesae.walltime import RunProgressBar, WallTimeEstimate
from vaesae.wandb_media import WandbMedia

__all__ = ["RunPlan", "RunParts", "run_plan", "run_meta", "eval_settings", "assemble"]


@dataclass(frozen=True)
class RunPlan:
    """What a config implies for the run's course, derived once: the k schedule, the optimizer
    steps per epoch, the reference epoch (k reaches k_end at its end), the epoch count, the
    training samples per epoch, and the numeric path (precision, memory layout)."""

    schedule: KSchedule
    steps_per_epoch: int
    reference_epoch: int | None
    total_epochs: int
    epoch_samples: int
    precision: TrainPrecision
    channels_last: bool


@dataclass
class RunParts:
    """Everything a job trains with; ``callbacks`` in the order Lightning calls them."""

    plan: RunPlan
    meta: dict[str, Any]
    datamodule: GroundTruthDataModule
    module: VAESAEModule
    callbacks: list[pl.Callback]
    recorder: RunRecorder
    evaluation: EvaluationCallback


def run_plan(cfg: DictConfig) -> RunPlan:
    schedule = schedule_of(cfg)
    return RunPlan(
        schedule=schedule,
        steps_per_epoch=steps_per_epoch(cfg),
        reference_epoch=reference_epoch(cfg),
        total_epochs=schedule.total_epochs,
        epoch_samples=epoch_samples(cfg),
        precision=resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
        channels_last=resolve_channels_last(cfg.trainer.channels_last, cfg.trainer.accelerator),
    )


def run_meta(cfg: DictConfig, plan: RunPlan) -> dict[str, Any]:
    """The identity of a run, repeated at the top of its summary.json."""
    return {
        "run_name": cfg.run_name,
        "method": cfg.method.name,
        "arm": cfg.arm.name,
        "dataset": cfg.dataset.name,
        "seed": int(cfg.seed),
        "threshold": cfg.threshold.name,
        "schedule": cfg.schedule.kind,
        "k_start": int(cfg.schedule.k_start),
        "k_end": int(cfg.schedule.k_end),
        "reference_epoch": plan.reference_epoch,
        "total_epochs": plan.total_epochs,
        "precision": plan.precision,
        "channels_last": plan.channels_last,
    }


def eval_settings(cfg: DictConfig) -> EvalSettings:
    m = cfg.metrics
    return EvalSettings(
        primary_kind=cfg.threshold.kind,
        primary_value=float(cfg.threshold.get("value", 0.0)),
        magnitude_eps=float(m.magnitude_eps),
        frequencies=tuple(float(f) for f in m.frequencies),
        window=int(m.window),
        dense_frequency=float(m.dense_frequency),
        num_bins=int(m.num_bins),
        align_threshold=float(m.align_threshold),
        select_threshold=float(m.select_threshold),
        dci_samples=int(m.dci_samples),
        dci_sae=bool(m.dci_sae),
    )


def assemble(cfg: DictConfig, run_dir: Path, plan: RunPlan, meta: dict[str, Any]) -> RunParts:
    """Build the data module, the model and the callbacks of a validated config."""
    schedule = plan.schedule
    # The data and model groups are their constructors' arguments (``_target_``); the other
    # groups' settings are added here (`vaesae.config` checked both targets). Plain containers
    # (``_convert_``), so the module's saved hyperparameters load without OmegaConf.
    dm = instantiate(cfg.data, dataset=cfg.dataset.name, seed=int(cfg.seed), _convert_="all")
    module = instantiate(
        cfg.model,
        in_channels=cfg.dataset.in_channels,
        k_start=schedule.k_start,
        **arm_module_kw(cfg, schedule, plan.epoch_samples),
        beta=cfg.loss.beta,
        alpha=cfg.loss.alpha,
        lr=cfg.optim.lr,
        channels_last=plan.channels_last,
        _convert_="all",
    )
    # The L1 controller's settings (conf/method/l1.yaml), checked by the callback.
    controller = {k: v for k, v in cfg.method.items() if isinstance(k, str) and k.startswith("l1_")}
    dci_epochs = resolve_epochs(
        list(cfg.metrics.dci_epochs), plan.reference_epoch, plan.total_epochs
    )
    evaluation = EvaluationCallback(eval_settings(cfg), plan.reference_epoch, dci_epochs)
    recorder = RunRecorder(run_dir, meta, evaluation, cfg.metrics.recon_images)
    pictures = NeuronPicturesCallback(
        run_dir,
        evaluation,
        PictureSettings.from_config(cfg.pictures, plan.reference_epoch, plan.total_epochs),
    )
    walltime = WallTimeEstimate(
        plan.steps_per_epoch * plan.total_epochs,
        plan.total_epochs,
        cfg.trainer.accelerator,
        name=str(cfg.run_name),
    )
    callbacks: list[pl.Callback] = [
        SparsityScheduleCallback(
            schedule, cfg.schedule.granularity, pressure=cfg.arm.pressure, **controller
        ),
        # Before the evaluation and the recorder, which read what they log each epoch.
        *arm_callbacks(cfg, schedule, plan.epoch_samples),
        evaluation,
        recorder,
        # After the evaluation (it reads its per-unit figures) and the recorder (so the
        # pictures' time is not counted as training time).
        pictures,
        # After the pictures, which it sends to W&B; a no-op without a W&B logger.
        WandbMedia(
            evaluation,
            pictures.settings.epochs,
            plan.reference_epoch,
            run_dir,
            evaluation.settings.primary_name,
        ),
        # After the evaluation and the pictures, so an epoch's end is timed with them.
        walltime,
        LastCheckpoint(run_dir),
    ]
    if cfg.trainer.progress_bar:
        callbacks.append(RunProgressBar(walltime))
    return RunParts(plan, meta, dm, module, callbacks, recorder, evaluation)


def config_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, for config.json and W&B."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}
