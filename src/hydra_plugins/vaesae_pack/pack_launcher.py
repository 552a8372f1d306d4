"""`hydra/launcher=pack`: a sweep's jobs grouped by pack key and each pack trained in one process.

Hydra finds launchers only in the ``hydra_plugins`` namespace, so the class lives here; the
engine is `vaesae.pack`. Every job still gets Hydra's run directory (with its ``.hydra/``
files) before any training, then the packs train one after another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger("vaesae")


class PackLauncher(Launcher):
    """Launch a multirun as packs (`vaesae.pack.engine.train_pack`).

    ``mode``: auto | loop | vmap (`vaesae.pack.keys.pack_mode_for`); ``max_members``: the
    largest pack (a larger group is split in order); ``n_jobs``: packs trained at a time, each
    in its own process (the joblib launcher's setting, so an experiment that sets it for joblib
    keeps its meaning); ``capture``: replay each epoch's stacked step from a CUDA graph (vmap
    on a GPU only); ``overlap``: measure each epoch's end on a background thread while the
    next epoch trains.
    """

    def __init__(
        self,
        mode: str = "auto",
        max_members: int = 48,
        n_jobs: int = 1,
        capture: bool = False,
        overlap: bool = False,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.capture = bool(capture)
        self.overlap = bool(overlap)
        self.max_members = int(max_members)
        self.n_jobs = int(n_jobs)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from vaesae.pack.launch import collect_job, train_packs

        assert self.config is not None and self.hydra_context is not None
        for name in ("max_members", "n_jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"hydra.launcher.{name}={getattr(self, name)} must be >= 1")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Collecting %d jobs into packs", len(job_overrides))
        jobs: list[Any] = []
        returns: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            ret = run_job(
                hydra_context=self.hydra_context,
                task_function=lambda cfg: collect_job(cfg, jobs),
                config=sweep_config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            returns.append(ret)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        # A job's outcome is in its summary.json, which the sweep's failure list reads.
        train_packs(
            jobs, sweep_dir, self.mode, self.max_members, self.n_jobs, self.capture, self.overlap
        )
        return returns
