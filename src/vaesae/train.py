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
from omegaconf import DictConfig

from vaesae.arms import arm_methods
from vaesae.assembly import assemble, config_dict, run_meta, run_plan
from vaesae.atomic import write_json
from vaesae.config import ConfigError, validate_config
from vaesae.console import quiet_lightning_notes, silence_lightning_pytree_warning

__all__ = ["train", "main", "CONF_DIR", "SweepFailures"]

# The configs ship inside the package, so an installed wheel finds them from any directory.
CONF_DIR = Path(__file__).resolve().parent / "conf"
log = logging.getLogger("vaesae")

silence_lightning_pytree_warning()


def run_loggers(cfg: DictConfig, run_dir: Path, group: str, own_run: bool = False) -> list:
    """The run's W&B logger (none for csv or none). ``own_run``: start its W&B run at once as a
    new run of this process (a pack's members each get one; Lightning's logger would otherwise
    attach every member to the first member's run)."""
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
        config=config_dict(cfg),
    )
    # Lightning 2.6 always hands wandb.init `anonymous=None`; wandb 0.31 counts any value as
    # set and prints a deprecation warning for a setting this project never uses, once per run.
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous", False) is None:
        del init_kwargs["anonymous"]
    if own_run and isinstance(init_kwargs, dict):
        import wandb

        logger._experiment = wandb.init(**init_kwargs, reinit="create_new")
    return [logger]


def resume_point(cfg: DictConfig, run_dir: Path) -> Path | None | bool:
    """Under ``resume=true``: True when the run already completed, its ``last.ckpt`` when one
    exists, else None (start afresh: a job that never wrote a checkpoint). None without resume."""
    if not cfg.resume:
        return None
    summary = run_dir / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("status") == "completed":
        log.info("%s already completed: nothing to resume", run_dir)
        return True
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        return ckpt
    log.warning("resume=true but %s does not exist: starting from scratch", ckpt)
    return None


def train(cfg: DictConfig, run_dir: str | Path, group: str = "single") -> dict[str, Any]:
    """Train one run into `run_dir`; returns its summary. Raises ConfigError before any work."""
    run_dir = Path(run_dir)
    validate_config(cfg)
    # The run's plan, derived once from the config and handed to every part.
    plan = run_plan(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(int(cfg.trainer.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # Re-running a sweep with resume=true skips finished jobs, continues interrupted ones from
    # their last epoch and starts the jobs that never wrote a checkpoint.
    resume_from = resume_point(cfg, run_dir)
    if resume_from is True:
        return {"status": "completed", "run_dir": str(run_dir)}
    meta = {**run_meta(cfg, plan), "engine": "lightning"}
    try:
        parts = assemble(cfg, run_dir, plan, meta)
        trainer = pl.Trainer(
            max_epochs=plan.total_epochs,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            precision=plan.precision,
            logger=run_loggers(cfg, run_dir, group) or False,
            callbacks=parts.callbacks,
            enable_checkpointing=False,
            enable_progress_bar=cfg.trainer.progress_bar,
            enable_model_summary=False,
            # Everything is logged per epoch; this only keeps Lightning from warning that an
            # epoch has fewer steps than its default interval of 50.
            log_every_n_steps=min(50, plan.steps_per_epoch),
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
    write_json(run_dir / "config.json", config_dict(cfg))
    try:
        trainer.fit(
            parts.module,
            datamodule=parts.datamodule,
            ckpt_path=None if resume_from is None else str(resume_from),
        )
    except BaseException as err:
        # Lightning turns Ctrl-C into SystemExit and SIGTERM into SIGTERMException (a SystemExit):
        # the run can resume from last.ckpt, so it is interrupted, not failed.
        stopped = isinstance(err, KeyboardInterrupt | SystemExit)
        parts.recorder.finish(
            "interrupted" if stopped else "failed", error=f"{type(err).__name__}: {err}"
        )
        raise
    status = "completed" if trainer.state.status.value == "finished" else "interrupted"
    parts.recorder.finish(status)
    return {"status": status, "run_dir": str(run_dir)}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    quiet_lightning_notes()  # they add nothing to a run's own log lines
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    group = Path(hc.sweep.dir).name if multirun else "single"
    if multirun and not job_applies(cfg, run_dir):
        return
    try:
        train(cfg, run_dir, group)
    except ConfigError as err:
        record_config_error(cfg, run_dir, err)
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


def job_applies(cfg: DictConfig, run_dir: Path) -> bool:
    """False for a sweep's combination that does not exist (an arm with a method it does not
    apply to, e.g. AuxK with L1): it is not a job, so its directory is removed and the report
    and the failure list never see it."""
    if cfg.method.name in arm_methods(cfg.arm):
        return True
    log.info(
        "skipped %s: arm=%s does not apply to method=%s",
        cfg.run_name,
        cfg.arm.name,
        cfg.method.name,
    )
    _discard_job_dir(run_dir)
    return False


def record_config_error(cfg: DictConfig, run_dir: Path, err: ConfigError) -> None:
    """A job refused by its config leaves a failed summary.json naming the setting."""
    write_json(
        run_dir / "summary.json",
        {**_safe_meta(cfg), "status": "failed", "error": f"ConfigError: {err}"},
    )


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
        return run_meta(cfg, run_plan(cfg))
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
