"""The pack launcher's work (`hydra/launcher=pack`): collect a sweep's jobs, group them by pack
key, train each pack. The Hydra plugin class (`hydra_plugins.vaesae_pack`) only calls these."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vaesae.atomic import write_json
from vaesae.config import ConfigError, validate_config
from vaesae.pack.engine import PackJob, train_pack
from vaesae.pack.keys import pack_key

__all__ = ["collect_job", "group_packs", "train_packs", "train_one_pack"]

log = logging.getLogger("vaesae")


def collect_job(cfg: DictConfig, jobs: list[PackJob]) -> None:
    """Hydra's task function under the pack launcher: keep the job for its pack (after the same
    checks as a job run alone: a combination that does not exist is dropped, a config error
    leaves a failed summary.json)."""
    from vaesae.train import job_applies, record_config_error

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not job_applies(cfg, run_dir):
        return
    try:
        validate_config(cfg)
    except ConfigError as err:
        record_config_error(cfg, run_dir, err)
        log.error("job %s: %s", cfg.run_name, err)
        return
    jobs.append(PackJob(cfg, run_dir))


def group_packs(jobs: Sequence[PackJob], max_members: int) -> list[list[PackJob]]:
    """Jobs grouped by `pack_key`, in the sweep's order, each group split into packs of at most
    ``max_members``."""
    groups: dict[tuple, list[PackJob]] = {}
    for job in jobs:
        groups.setdefault(pack_key(job.cfg), []).append(job)
    return [
        group[i : i + max_members]
        for group in groups.values()
        for i in range(0, len(group), max_members)
    ]


def train_packs(
    jobs: Sequence[PackJob],
    sweep_dir: Path,
    mode: str,
    max_members: int,
    n_jobs: int = 1,
    capture: bool = False,
    overlap: bool = False,
) -> None:
    """Train every pack of ``jobs``, ``n_jobs`` packs at a time (each in its own process when
    more than one); a pack that fails as a whole marks its unfinished jobs failed (with the
    reason) and the other packs go on. ``capture``, ``overlap``: as `train_pack`."""
    packs = group_packs(jobs, max_members)
    log.info("%d job(s) in %d pack(s)", len(jobs), len(packs))
    work = [
        (pack, f"{sweep_dir.name}-p{n}", sweep_dir.name, mode, capture, overlap)
        for n, pack in enumerate(packs)
    ]
    if n_jobs > 1 and len(packs) > 1:
        from joblib import Parallel, delayed

        Parallel(n_jobs=min(n_jobs, len(packs)), backend="loky")(
            delayed(train_one_pack)(*args) for args in work
        )
    else:
        for args in work:
            train_one_pack(*args)


def train_one_pack(
    pack: list[PackJob],
    pack_id: str,
    group: str,
    mode: str,
    capture: bool = False,
    overlap: bool = False,
) -> None:
    """`train_pack`, with a failure of the pack as a whole written to its jobs' summaries."""
    if not logging.getLogger().handlers:  # a worker process: log to its stderr
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        train_pack(pack, pack_id=pack_id, group=group, mode=mode, capture=capture, overlap=overlap)
    except Exception as err:
        log.error("pack %s failed:\n%s", pack_id, traceback.format_exc())
        for job in pack:
            summary = job.run_dir / "summary.json"
            if not summary.exists() or json.loads(summary.read_text()).get("status") != "completed":
                write_json(
                    summary,
                    {
                        "run_name": str(job.cfg.run_name),
                        "engine": "pack",
                        "pack_id": pack_id,
                        "status": "failed",
                        "error": f"{type(err).__name__}: {err}",
                    },
                )
