"""Sweeps for the report tests: synthetic run directories with chosen numbers, written the way
training writes them, and real 2-job smoke sweeps through the joblib and submitit_local launchers
(run once per test session, shared by the report and notebook tests)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaesae.evaluation import HIST_NAMES

FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
WIDTH = 500  # a real run's SAE width: dead rates move in steps of 1/500
TOTAL_EPOCHS = 4
REFERENCE_EPOCH = 2
K_END = 50
EVAL_SIZE = 10_000
NATURAL_L0 = 150  # active codes per sample before the squeeze binds
# Seed-to-seed spread of MIG and alignment at k_end (-1, 0, +1 times this for seeds 0, 1, 2), so
# their per-seed changes are not constant (real runs never are).
SEED_JITTER = 0.002
# Every rule's dead rate is the `never` curve times a factor: `never` is the primary rule, the
# others differ from it wherever a neuron is dead (so each is independent evidence).
RULE_FACTORS = {"never": 1.0, "magnitude": 1.05, "window": 0.9}


def write_run(
    sweep: Path,
    dataset: str,
    method: str,
    seed: int,
    dead_ref: float,
    dead_final: float | None = None,
    mig_start: float = 0.20,
    mig_ref: float = 0.21,
    align_start: float = 0.30,
    align_ref: float = 0.20,
    status: str = "completed",
    epochs: int = TOTAL_EPOCHS,
    *,
    l0_ref: float = K_END,
    eval_size: int | None = EVAL_SIZE,
    extra_rules: dict[str, float] | None = None,
    reference_epoch: int = REFERENCE_EPOCH,
    k_last_ref: float | None = None,
    arm: str | None = None,
    recon: float = 100.0,
    factors_covered: float = 4.0,
    arm_config: dict | None = None,
    global_scores: dict[str, tuple[float, float]] | None = None,
    gap_closed: float = 0.8,
) -> Path:
    """A run whose dead rate climbs 0 -> dead_ref at REFERENCE_EPOCH, then ends at dead_final,
    under every rule scaled by RULE_FACTORS (and `extra_rules`, name -> factor); MIG and
    alignment go start -> ref (+ the seed's jitter) and stay. k reaches K_END at
    REFERENCE_EPOCH; the achieved `eval/l0` is min(k, NATURAL_L0) before it and `l0_ref` from
    then on; every alive unit's `alignment` is the
    run's (NaN for dead units). summary.json names `reference_epoch` as
    the k_end epoch, whose `sparsity/k_last` is `k_last_ref` (default: that epoch's k).
    Per-neuron arrays (every rule's dead mask) at every epoch. `train/recon` is `recon` and
    `semantics/factors_covered` is `factors_covered` at every epoch. `arm`: recorded in
    summary.json and as config `arm.name` (with `arm_config`'s other keys), and in the run name
    (`<method>-<arm>-<dataset>-s<seed>-never`); None writes a run from before arms existed.
    `eval/gap_closed` is 0 at epoch 0 and `gap_closed` from epoch 1 on (0.8: a trained run).
    `global_scores`: column -> (start, ref) values like MIG's; a `dci/` column is logged only at
    epoch 0 and REFERENCE_EPOCH (empty elsewhere), as DCI at its default epochs."""
    dead_final = dead_ref if dead_final is None else dead_final
    jitter = SEED_JITTER * (seed % 3 - 1)
    factors = {**RULE_FACTORS, **(extra_rules or {})}
    run = sweep / "-".join([method, *([arm] if arm else []), dataset, f"s{seed}", "never"])
    run.mkdir(parents=True)
    dead = np.interp(
        range(TOTAL_EPOCHS), [0, REFERENCE_EPOCH, TOTAL_EPOCHS - 1], [0, dead_ref, dead_final]
    )
    rows = []
    for epoch in range(epochs):
        after = epoch >= REFERENCE_EPOCH
        k = 500 - (500 - K_END) * min(epoch, REFERENCE_EPOCH) / REFERENCE_EPOCH
        rates = {rule: min(1.0, f * dead[epoch]) for rule, f in factors.items()}
        row = {
            "epoch": epoch,
            "sparsity/k": k,
            "sparsity/k_last": k_last_ref
            if k_last_ref is not None and epoch == reference_epoch
            else k,
            # Below the squeeze the codes' natural L0; Top-k binds once k falls under it.
            "eval/l0": l0_ref if after else min(k, NATURAL_L0),
            **{f"dead/{rule}": rate for rule, rate in rates.items()},
            "dead/primary": rates["never"],
            "mig/latent": mig_ref + jitter if after else mig_start,
            "mig/sae": 0.05,
            "neurons/revived": float(round(WIDTH * max(dead_ref - dead[epoch], 0)))
            if after
            else "",
            "neurons/newly_dead": 0.0 if after else "",
            "semantics/mean_alignment": align_ref + jitter if after else align_start,
            "semantics/num_alive": WIDTH * (1 - dead[epoch]),
            "semantics/frac_aligned": 0.5,
            "semantics/frac_selective": 0.25,
            "semantics/factors_covered": factors_covered,
            "train/recon": recon,
            "eval/gap_closed": gap_closed * min(epoch, 1),
        }
        for column, (start, ref) in (global_scores or {}).items():
            logged = not column.startswith("dci/") or epoch in (0, REFERENCE_EPOCH)
            row[column] = (ref if after else start) if logged else ""
        row.update({name: float(i) for i, name in enumerate(HIST_NAMES)})
        rows.append(row)
        nmi = np.zeros((WIDTH, len(FACTORS)))
        nmi[:, 0] = 0.5  # every alive neuron aligned with `shape`: the other factors uncovered
        masks = {rule: np.arange(WIDTH) < round(WIDTH * rate) for rule, rate in rates.items()}
        dead_mask = masks["never"]
        nmi[dead_mask] = 0
        (run / "neurons").mkdir(exist_ok=True)
        np.savez(
            run / "neurons" / f"epoch_{epoch:03d}.npz",
            frequency=np.where(dead_mask, 0.0, 0.1),
            alignment=np.where(dead_mask, np.nan, align_ref + jitter if after else align_start),
            normalized_mi=nmi,
            **{f"dead_{rule}": mask for rule, mask in masks.items()},
            factor_names=np.array(FACTORS),
        )
    with open(run / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "run_name": run.name,
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "threshold": "never",
        "schedule": "linear",
        "k_start": 500,
        "k_end": K_END,
        "reference_epoch": reference_epoch,
        "total_epochs": TOTAL_EPOCHS,
        "status": status,
        "epochs_completed": epochs,
    }
    if status == "failed":
        summary["error"] = "RuntimeError: boom"
    if arm:
        summary["arm"] = arm
    (run / "summary.json").write_text(json.dumps(summary))
    config = {
        "seed": seed,
        "method": {"name": method},
        "dataset": {"name": dataset},
        "model": {"width": WIDTH},
        "data": {"eval_size": eval_size},
    }
    if arm:
        config["arm"] = {"name": arm, **(arm_config or {})}
    (run / "config.json").write_text(json.dumps(config))
    return run


# A smoke sweep small enough for the test suite: 2 epochs (k 500 -> 50, then 1 hold epoch).
TINY = [
    "experiment=smoke",
    "dataset=dsprites",
    "method=topk,l1",
    "trainer.threads=1",
    "schedule.schedule_epochs=1",
    "schedule.hold_epochs=1",
    "data.epoch_size=128",
    "data.eval_size=300",
    "data.eval_batch_size=300",
]
LAUNCHERS = {
    "joblib": ["seed=0", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["seed=1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
}
_SWEEPS: dict[Path, dict[str, Path]] = {}


def smoke_sweeps(factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{launcher: sweep dir} of two 2-job sweeps (Top-k and L1 on dSprites; seed 0 through
    joblib, seed 1 through submitit_local), made once per session."""
    base = factory.getbasetemp()
    if base not in _SWEEPS:
        sweeps = {}
        for name, args in LAUNCHERS.items():
            sweep = base / "smoke_sweeps" / name
            cmd = [sys.executable, "-m", "vaesae.train", "-m", *TINY, *args]
            done = subprocess.run(
                [*cmd, f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stderr[-3000:]
            sweeps[name] = sweep
        _SWEEPS[base] = sweeps
    return _SWEEPS[base]
