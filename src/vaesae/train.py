"""Hydra entry point: `vaesae-train [group=option ...]` (add `-m` for a sweep).

`train(cfg, run_dir)` builds the data module, the model and the callbacks from a composed config
and trains; `main` adds Hydra's run directory and keeps one failed job of a sweep from stopping
the others (its summary.json says `failed` and why).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vaesae.arms import arm_callbacks, arm_methods, arm_module_kw
from vaesae.atomic import write_json
from vaesae.config import (
    ConfigError,
    epoch_samples,
    reference_epoch,
    schedule_of,
    steps_per_epoch,
    validate_config,
)
from vaesae.console import quiet_lightning_notes, silence_lightning_pytree_warning
from vaesae.data.datamodule import GroundTruthDataModule
from vaesae.evaluation import EvalSettings, EvaluationCallback
from vaesae.module import VAESAEModule
from vaesae.pictures.callback import NeuronPicturesCallback, PictureSettings
from vaesae.pictures.compute import resolve_epochs
from vaesae.precision import resolve_channels_last, resolve_precision
from vaesae.records import LastCheckpoint, RunRecorder
from vaesae.sparsity import SparsityScheduleCallback
from vaesae.walltime import RunProgressBar, WallTimeEstimate
from vaesae.wandb_media import WandbMedia

__all__ = ["train", "main", "CONF_DIR", "SweepFailures"]

# The configs ship inside the package, so an installed wheel finds them from any directory.
CONF_DIR = Path(__file__).resolve().parent / "conf"
log = logging.getLogger("vaesae")

silence_lightning_pytree_warning()


def _eval_settings(cfg: DictConfig) -> EvalSettings:
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


def _loggers(cfg: DictConfig, run_dir: Path, group: str) -> list:
    if cfg.logger.name != "wandb":
        return []
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        name=cfg.run_name,
        group=group,
        save_dir=str(run_dir),
        mode=cfg.logger.mode,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    # Lightning 2.6 always hands wandb.init `anonymous=None`; wandb 0.31 counts any value as
    # set and prints a deprecation warning for a setting this project never uses, once per run.
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous", False) is None:
        del init_kwargs["anonymous"]
    return [logger]


def run_meta(cfg: DictConfig) -> dict[str, Any]:
    schedule = schedule_of(cfg)
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
        "reference_epoch": reference_epoch(cfg),
        "total_epochs": schedule.total_epochs,
    }


def train(cfg: DictConfig, run_dir: str | Path, group: str = "single") -> dict[str, Any]:
    """Train one run into `run_dir`; returns its summary. Raises ConfigError before any work."""
    run_dir = Path(run_dir)
    validate_config(cfg)
    # The run's plan, derived once from the config and handed to every callback.
    schedule = schedule_of(cfg)
    steps, ref_epoch = steps_per_epoch(cfg), reference_epoch(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(int(cfg.trainer.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    resume_from = None
    if cfg.resume:
        # Re-running a sweep with resume=true skips finished jobs, continues interrupted ones from
        # their last epoch and starts the jobs that never wrote a checkpoint.
        summary = run_dir / "summary.json"
        if summary.exists() and json.loads(summary.read_text()).get("status") == "completed":
            log.info("%s already completed: nothing to resume", run_dir)
            return {"status": "completed", "run_dir": str(run_dir)}
        if ckpt.exists():
            resume_from = str(ckpt)
        else:
            log.warning("resume=true but %s does not exist: starting from scratch", ckpt)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    channels_last = resolve_channels_last(cfg.trainer.channels_last, cfg.trainer.accelerator)
    meta = {**run_meta(cfg), "precision": precision, "channels_last": channels_last}
    samples = epoch_samples(cfg)
    try:
        dm = GroundTruthDataModule(
            cfg.dataset.name,
            source=cfg.data.source,
            root=cfg.data.root,
            batch_size=cfg.data.batch_size,
            epoch_size=cfg.data.epoch_size,
            eval_size=cfg.data.eval_size,
            seed=int(cfg.seed),
            eval_seed=int(cfg.data.eval_seed),
            eval_batch_size=cfg.data.eval_batch_size,
        )
        module = VAESAEModule(
            in_channels=cfg.dataset.in_channels,
            d_z=cfg.model.d_z,
            width=cfg.model.width,
            k_start=schedule.k_start,
            site=cfg.model.site,
            stop_gradient=cfg.model.stop_gradient,
            normalize_decoder=cfg.model.normalize_decoder,
            input_norm=cfg.model.input_norm,
            detach_sae_loss=cfg.model.detach_sae_loss,
            center=cfg.model.center,
            signed_trunk=cfg.model.signed_trunk,
            init=cfg.model.init,
            logvar_bias=cfg.model.logvar_bias,
            data_init=cfg.model.data_init,
            **arm_module_kw(cfg, schedule, samples),
            beta=cfg.loss.beta,
            alpha=cfg.loss.alpha,
            lr=cfg.optim.lr,
            channels_last=channels_last,
        )
        # The L1 controller's settings (conf/method/l1.yaml), checked by the callback.
        controller = {k: v for k, v in cfg.method.items() if k.startswith("l1_")}
        dci_epochs = resolve_epochs(list(cfg.metrics.dci_epochs), ref_epoch, schedule.total_epochs)
        evaluation = EvaluationCallback(_eval_settings(cfg), ref_epoch, dci_epochs)
        recorder = RunRecorder(run_dir, meta, evaluation, cfg.metrics.recon_images)
        pictures = NeuronPicturesCallback(
            run_dir,
            evaluation,
            PictureSettings.from_config(cfg.pictures, ref_epoch, schedule.total_epochs),
        )
        walltime = WallTimeEstimate(
            steps * schedule.total_epochs,
            schedule.total_epochs,
            cfg.trainer.accelerator,
        )
        callbacks = [
            SparsityScheduleCallback(
                schedule, cfg.schedule.granularity, pressure=cfg.arm.pressure, **controller
            ),
            # Before the evaluation and the recorder, which read what they log each epoch.
            *arm_callbacks(cfg, schedule, samples),
            evaluation,
            recorder,
            # After the evaluation (it reads its per-unit figures) and the recorder (so the
            # pictures' time is not counted as training time).
            pictures,
            # After the pictures, which it sends to W&B; a no-op without a W&B logger.
            WandbMedia(
                evaluation,
                pictures.settings.epochs,
                ref_epoch,
                run_dir,
                evaluation.settings.primary_name,
            ),
            # After the evaluation and the pictures, so an epoch's end is timed with them.
            walltime,
            LastCheckpoint(run_dir),
        ]
        if cfg.trainer.progress_bar:
            callbacks.append(RunProgressBar(walltime))
        trainer = pl.Trainer(
            max_epochs=schedule.total_epochs,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            precision=precision,
            logger=_loggers(cfg, run_dir, group) or False,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=cfg.trainer.progress_bar,
            enable_model_summary=False,
            # Everything is logged per epoch; this only keeps Lightning from warning that an
            # epoch has fewer steps than its default interval of 50.
            log_every_n_steps=min(50, steps),
            default_root_dir=str(run_dir),
        )
    except Exception as err:
        # A job that fails while building its data, model, loggers or Trainer still leaves a
        # summary.json, so the sweep's report lists it.
        write_json(
            run_dir / "summary.json",
            {**meta, "status": "failed", "error": f"{type(err).__name__}: {err}"},
        )
        raise
    write_json(run_dir / "config.json", OmegaConf.to_container(cfg, resolve=True))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    except BaseException as err:
        # Lightning turns Ctrl-C into SystemExit and SIGTERM into SIGTERMException (a SystemExit):
        # the run can resume from last.ckpt, so it is interrupted, not failed.
        stopped = isinstance(err, KeyboardInterrupt | SystemExit)
        recorder.finish(
            "interrupted" if stopped else "failed", error=f"{type(err).__name__}: {err}"
        )
        raise
    status = "completed" if trainer.state.status.value == "finished" else "interrupted"
    recorder.finish(status)
    return {"status": status, "run_dir": str(run_dir)}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    quiet_lightning_notes()  # they add nothing to a run's own log lines
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    group = Path(hc.sweep.dir).name if multirun else "single"
    if multirun and cfg.method.name not in arm_methods(cfg.arm):
        # A sweep over arm x method holds combinations that do not exist (AuxK with L1): they are
        # not jobs, so they leave no run directory for the report or the failure list to read.
        log.info(
            "skipped %s: arm=%s does not apply to method=%s",
            cfg.run_name,
            cfg.arm.name,
            cfg.method.name,
        )
        _discard_job_dir(run_dir)
        return
    try:
        train(cfg, run_dir, group)
    except ConfigError as err:
        write_json(
            run_dir / "summary.json",
            {**_safe_meta(cfg), "status": "failed", "error": f"ConfigError: {err}"},
        )
        if not multirun:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        log.error("job %s: %s", cfg.run_name, err)
    except Exception:
        if not multirun:
            raise
        # One failed job must not stop the sweep: its summary.json already says why.
        log.error("job %s failed:\n%s", cfg.run_name, traceback.format_exc())
    finally:
        if cfg.logger.name == "wandb":
            import wandb

            wandb.finish()


class SweepFailures(Callback):
    """Hydra callback: after a multirun, list the jobs whose summary.json is not `completed`.

    A failed job does not stop the sweep (`main` logs it and goes on), so without this a sweep in
    which every job failed would exit 0; the names are kept for `cli`, which exits 1.
    """

    failed: list[str] = []

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        bad = []
        for summary in sorted(sweep_dir.glob("*/summary.json")):
            info = json.loads(summary.read_text())
            if info.get("status") != "completed":
                bad.append(f"{summary.parent.name}: {info.get('status')} ({info.get('error', '')})")
        SweepFailures.failed = bad
        if bad:
            print(f"{len(bad)} job(s) of {sweep_dir} did not complete:", file=sys.stderr)
            for line in bad:
                print(f"  {line}", file=sys.stderr)


def _discard_job_dir(run_dir: Path) -> None:
    """Remove the directory Hydra made for a job that does not run, if it holds only Hydra's
    own files (its .hydra/ folder and the job log); anything else is left alone."""
    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if all(e.name == ".hydra" or e.suffix == ".log" for e in entries):
        shutil.rmtree(run_dir, ignore_errors=True)


def _safe_meta(cfg: DictConfig) -> dict[str, Any]:
    try:
        return run_meta(cfg)
    except (ValueError, KeyError):
        return {"run_name": str(cfg.get("run_name"))}


def threshold_sweep(argv: list[str]) -> str | None:
    """The command-line override that sweeps `threshold` in a multirun, if any.

    Such a sweep trains identical models (every dead-neuron rule is logged in every run; the
    threshold only picks the primary one), so `cli` refuses it before any work.
    """
    if not {"-m", "--multirun"} & set(argv):
        return None
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "threshold" and "," in value:
            return arg
    return None


def cli() -> None:
    """`python -m vaesae.train`: run (or sweep), then exit 1 if a job of the sweep failed."""
    swept = threshold_sweep(sys.argv[1:])
    if swept:
        print(
            f"error: '{swept}' would train the same model once per threshold: every rule is "
            "logged in every run. Train once and choose the rule in the report: "
            "python -m vaesae.report SWEEP_DIR --rule NAME",
            file=sys.stderr,
        )
        sys.exit(2)
    main()
    # Hydra instantiates the callback from `vaesae.train`, which is not this `__main__` module.
    from vaesae.train import SweepFailures as registered

    if registered.failed:
        sys.exit(1)


if __name__ == "__main__":
    cli()
