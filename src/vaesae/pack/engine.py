"""The pack engine: the jobs of a sweep that share a pack key, trained together in one process.

Each member is assembled by the single engine's code (`vaesae.assembly`) and keeps its own run
directory, generators, optimizer, callbacks and files; the engine only owns the loop. Per epoch:
every member's epoch start, then the epoch's steps, then every member's epoch end (evaluation,
metrics row, pictures, W&B, checkpoint). With ``overlap`` the measuring part of the epoch ends
runs on a background thread while the next epoch trains (`vaesae.pack.deferred`). A member
whose loss turns non-finite, or whose code raises, is frozen and marked failed; the others go
on.

Two ways to take a step (``mode``):

- ``loop``: each member's steps of the epoch through its own module (`Member.step`), member
  after member. Bitwise the run it would be alone. On a CPU this is the faster way (docs:
  Scaling).
- ``vmap``: all members in one vectorised forward and backward over stacked weights
  (`vaesae.pack.stacked`), one Adam over the stacked parameters. Equal to the runs alone up to
  the last bits that batched kernels change (docs: Scaling gives the measured tolerance).
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from vaesae.assembly import assemble, config_dict, run_meta, run_plan
from vaesae.atomic import write_json
from vaesae.config import ConfigError, validate_config
from vaesae.pack.deferred import EpochEndWorker
from vaesae.pack.keys import PACK_MODES, pack_key, pack_mode_for
from vaesae.pack.member import Member
from vaesae.pack.stacked import StackedStep, evaluate_stacked
from vaesae.walltime import format_duration, seconds_left, smaller_sizes_hint

__all__ = ["PackJob", "build_member", "train_pack"]

log = logging.getLogger("vaesae")


@dataclass(frozen=True)
class PackJob:
    """One job of a pack: its composed config and its run directory."""

    cfg: DictConfig
    run_dir: Path


def _device(cfg: DictConfig) -> torch.device:
    if cfg.trainer.accelerator == "gpu":
        return torch.device("cuda")
    return torch.device("cpu")


def build_member(
    job: PackJob, index: int = 0, pack_id: str = "pack", group: str = "pack"
) -> Member | None:
    """The member of ``job``, restored from its checkpoint under ``resume``; None for a job
    that is already complete. A job whose config or assembly fails leaves a failed summary."""
    from vaesae.train import resume_point, run_loggers

    cfg, run_dir = job.cfg, job.run_dir
    plan = run_plan(cfg)
    meta = {**run_meta(cfg, plan), "engine": "pack", "pack_id": pack_id, "pack_member": index}
    resume_from = resume_point(cfg, run_dir)
    if resume_from is True:
        return None
    try:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        parts = assemble(cfg, run_dir, plan, meta)
        loggers = run_loggers(cfg, run_dir, group, own_run=True)
        member = Member(parts, run_dir, _device(cfg), index, loggers)
    except Exception as err:
        write_json(
            run_dir / "summary.json",
            {**meta, "status": "failed", "error": f"{type(err).__name__}: {err}"},
        )
        log.error(
            "pack %s member %d (%s) failed to build:\n%s",
            pack_id,
            index,
            cfg.run_name,
            traceback.format_exc(),
        )
        return None
    write_json(run_dir / "config.json", config_dict(cfg))
    if isinstance(resume_from, Path):
        with member.scope():
            member.restore(resume_from)
    return member


def _guarded(member: Member, what: str, fn, *args: Any) -> None:
    """Run ``fn`` in ``member``'s scope (generators, log file); an exception fails the member
    alone, with the traceback in its train.log."""
    with member.scope():
        try:
            fn(*args)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:
            name = member.parts.meta["run_name"]
            log.error("%s: %s failed:\n%s", name, what, traceback.format_exc())
            member.fail(f"{type(err).__name__}: {err}")


def _log_time_left(pack_id: str, members: list[Member], rounds_s: list[float]) -> None:
    """After an epoch of the pack: the epochs done and the time left at the mean epoch's wall
    time so far (the members' epochs and evaluations together); after the first, a CPU pack
    expected to run for hours names the smaller sizes."""
    running = [m for m in members if m.status == "running"]
    if not running:
        return
    total = max(m.parts.plan.total_epochs for m in running)
    rounds_left = max(m.parts.plan.total_epochs - m.epoch for m in running)
    left = seconds_left(sum(rounds_s) / len(rounds_s), rounds_left)
    log.info(
        "pack %s: %d of %d epochs done (%d member(s) running), about %s left",
        pack_id,
        total - rounds_left,
        total,
        len(running),
        format_duration(left),
    )
    if len(rounds_s) == 1:
        hint = smaller_sizes_hint(left + rounds_s[0], running[0].device.type)
        if hint:
            log.warning("pack %s: %s", pack_id, hint)


def train_pack(
    jobs: list[PackJob],
    pack_id: str = "pack",
    group: str = "pack",
    mode: str = "auto",
    capture: bool = False,
    overlap: bool = False,
) -> list[dict[str, Any]]:
    """Train ``jobs`` (one pack key) together; returns each job's status and run directory.

    ``mode``: ``loop``, ``vmap`` or ``auto`` (vmap on a GPU for the members it can stack, loop
    otherwise; `vaesae.pack.keys.pack_mode_for`). ``capture``: replay each epoch's stacked step
    from a CUDA graph (`vaesae.pack.stacked.StackedStep`); needs ``vmap`` on a GPU.
    ``overlap``: measure each epoch's end (evaluation metrics, pictures, W&B, checkpoint) on a
    background thread while the next epoch trains; the files are those of the epoch ends run in
    place. Raises ConfigError before any work when a config is invalid, the jobs do not share a
    pack key, or capture is asked for where it cannot run.
    """
    if mode not in (*PACK_MODES, "auto"):
        raise ConfigError(f"pack mode={mode!r} is not valid; choose one of: auto, loop, vmap")
    for job in jobs:
        validate_config(job.cfg)
    if len({pack_key(job.cfg) for job in jobs}) > 1:
        raise ConfigError(
            "the jobs of a pack must share their pack key (data, model, activation family, "
            "remedy, sizes, epochs, precision, accelerator): group them with "
            "vaesae.pack.launch.group_packs"
        )
    if mode == "auto" or mode == "vmap":
        mode = pack_mode_for([job.cfg for job in jobs], requested=mode)
    if capture and jobs and (mode != "vmap" or jobs[0].cfg.trainer.accelerator != "gpu"):
        raise ConfigError(
            f"hydra.launcher.capture=true needs mode=vmap on a GPU (trainer=gpu), got mode={mode}"
            f" on {jobs[0].cfg.trainer.accelerator}; set capture=false"
        )
    if jobs and jobs[0].cfg.trainer.threads:
        torch.set_num_threads(int(jobs[0].cfg.trainer.threads))
    built = [build_member(job, i, pack_id, group) for i, job in enumerate(jobs)]
    members = [m for m in built if m is not None]
    log.info("pack %s: %d member(s) to train (%s)", pack_id, len(members), mode)
    for m in members:
        _guarded(m, "start", m.start)
    if capture and members and not members[0].parts.datamodule.dataset.renders_on_device:
        log.warning(
            "pack %s: capture off: the official file's images are gathered on the host, which a"
            " CUDA graph cannot replay; the pack steps eagerly",
            pack_id,
        )
        capture = False
    stacked = StackedStep(members, capture) if mode == "vmap" and members else None
    worker = EpochEndWorker(members[0].device) if overlap and members else None
    rounds_s: list[float] = []
    try:
        while unfinished := [m for m in members if not m.done]:
            round_start = time.perf_counter()
            # Members resumed from different epochs: the ones behind catch up first.
            lowest = min(m.epoch for m in unfinished)
            active = [m for m in unfinished if m.epoch == lowest]
            for m in active:
                _guarded(m, "epoch start", m.epoch_start)
            steps = active[0].parts.plan.steps_per_epoch
            running = [m for m in active if m.status == "running"]
            if stacked is not None and running:
                stacked.sync_from_members(unfinished, running)
                stacked.epoch(running, steps)
                stacked.sync_to_members(running)
            elif stacked is None:
                # Member-major: a member's whole epoch, then the next member's. The members are
                # independent, so the order changes no figure, and each keeps its weights warm
                # in the CPU's caches for the epoch.
                for m in active:
                    if m.status == "running":
                        _guarded(m, f"epoch {m.epoch}", m.steps, steps)
            if worker is not None:
                # The last epoch's ends have measured while this one trained; their results
                # are back in the members before these ends hand over.
                waited = worker.drain()
                log.debug("pack %s: waited %.2f s for the last epoch ends", pack_id, waited)
            if stacked is not None:
                # One batched forward evaluates them all; their metrics stay per member.
                evaluate_stacked(
                    [m for m in active if m.status == "running" and not bool(m.nonfinite)]
                )
            for m in active:
                if m.status == "running":
                    _guarded(m, "epoch end", m.epoch_end, worker)
            rounds_s.append(time.perf_counter() - round_start)
            _log_time_left(pack_id, members, rounds_s)
        if worker is not None:
            worker.close()
    except BaseException:
        # Killed or broken as a whole: the epoch ends handed over still write their
        # checkpoints, and every unfinished member can resume from its last.ckpt.
        if worker is not None:
            worker.close()
        for m in members:
            if m.status == "running":
                m.finish("interrupted")
        raise
    for m in members:
        m.finish("completed")
    return [{"status": m.status, "run_dir": str(m.run_dir), "error": m.error} for m in members]
