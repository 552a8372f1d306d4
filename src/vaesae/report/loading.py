"""Reading a sweep: every run directory below one or more folders, with its status checked.

A run directory is any folder holding `summary.json` or `metrics.csv`. A run enters the statistics
only when it is *complete*: status "completed", and metrics.csv holds every epoch 0..total_epochs-1,
reference_epoch included. Every other run stays in `Sweep.excluded` with the reason, so the report
lists it instead of averaging it in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import OmegaConf

from vaesae.records import read_metrics_csv

__all__ = [
    "Run",
    "Sweep",
    "Condition",
    "load_run",
    "load_sweep",
    "group_runs",
    "epoch_of",
    "values",
    "flatten_config",
]

# Sub-folders that never hold runs (Hydra, submitit, W&B, a run's own outputs).
_SKIP = {".hydra", ".submitit", "wandb", "checkpoints", "neurons"}
# Config keys that never split a condition: its own method / dataset, the seed, and settings that
# change only speed or logging.
_NOT_VARIANT = (
    "seed",
    "run_name",
    "method.",
    "dataset.",
    "data.root",
    "resume",
    "logger.",
    "trainer.threads",
    "trainer.progress_bar",
    "metrics.recon_images",
)
DATASET_ORDER = ("dsprites", "shapes3d")
METHOD_ORDER = ("topk", "l1")


class Condition(NamedTuple):
    """What seeds are averaged over: dataset, method and `variant`, the other config values
    (e.g. `schedule.kind=constant`) that differ between runs of the sweep ('' when none do)."""

    dataset: str
    method: str
    variant: str = ""

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.method}" + (f" [{self.variant}]" if self.variant else "")


@dataclass
class Run:
    """One run directory: its summary.json, metrics.csv rows (by epoch) and resolved config."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, float]]
    config: dict[str, Any]
    problem: str | None = None  # why the run is excluded; None for a complete run
    variant: str = ""

    @property
    def name(self) -> str:
        return str(self.summary.get("run_name") or self.path.name)

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset", "?"))

    @property
    def method(self) -> str:
        return str(self.summary.get("method", "?"))

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", -1))

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def reference_epoch(self) -> int:
        """The epoch at whose end k reached k_end (`summary.json`)."""
        return int(self.summary["reference_epoch"])

    @property
    def final_epoch(self) -> int:
        return int(self.rows[-1]["epoch"])

    @property
    def condition(self) -> Condition:
        return Condition(self.dataset, self.method, self.variant)

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []

    @property
    def rules(self) -> list[str]:
        """Dead-neuron rules logged by this run (`dead/<rule>` columns, `primary` excluded)."""
        return [c[5:] for c in self.columns if c.startswith("dead/") and c != "dead/primary"]

    def row(self, epoch: int) -> dict[str, float]:
        for r in self.rows:
            if int(r["epoch"]) == epoch:
                return r
        raise KeyError(f"{self.name}: no metrics row for epoch {epoch}")

    def value(self, column: str, epoch: int) -> float:
        """One figure of one epoch (NaN when the column was not logged)."""
        return self.row(epoch).get(column, math.nan)

    def series(self, column: str) -> np.ndarray:
        """A column over all epochs, in epoch order (NaN where missing)."""
        return np.array([r.get(column, math.nan) for r in self.rows], dtype=float)

    def neurons(self, epoch: int) -> dict[str, np.ndarray]:
        """Per-neuron arrays of an epoch (`neurons/epoch_XXX.npz`): frequency, normalized_mi,
        dead_<rule>, factor_names."""
        with np.load(self.path / "neurons" / f"epoch_{epoch:03d}.npz") as data:
            return {k: data[k] for k in data.files}


@dataclass
class Sweep:
    """All runs found below the sweep folders; `included` are the complete ones."""

    roots: list[Path]
    runs: list[Run] = field(default_factory=list)

    @property
    def included(self) -> list[Run]:
        return [r for r in self.runs if r.problem is None]

    @property
    def excluded(self) -> list[Run]:
        return [r for r in self.runs if r.problem is not None]

    def conditions(self) -> dict[Condition, list[Run]]:
        return group_runs(self.included)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _read_config(path: Path) -> dict[str, Any]:
    """The resolved config.json written by training, else Hydra's (unresolved) config.yaml."""
    if (path / "config.json").exists():
        return _read_json(path / "config.json")
    hydra_cfg = path / ".hydra" / "config.yaml"
    if hydra_cfg.exists():
        return OmegaConf.to_container(OmegaConf.load(hydra_cfg), resolve=False)
    return {}


def _problem(summary: dict[str, Any], rows: list[dict[str, float]]) -> str | None:
    """Why a run cannot enter the statistics, or None when it is complete."""
    status = summary.get("status")
    if not summary:
        return "no summary.json"
    if status != "completed":
        error = summary.get("error")
        return f"status {status}" + (f": {error}" if error else "")
    if "reference_epoch" not in summary or "total_epochs" not in summary:
        return "summary.json lacks reference_epoch / total_epochs"
    epochs = [int(r["epoch"]) for r in rows]
    expected = list(range(int(summary["total_epochs"])))
    if epochs != expected:
        return f"metrics.csv holds epochs {_span(epochs)}, expected 0..{expected[-1]}"
    return None


def _span(epochs: list[int]) -> str:
    return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} rows)" if epochs else "none"


def load_run(path: str | Path) -> Run:
    """Read one run directory; unreadable files make an excluded run, never an exception."""
    path = Path(path)
    try:
        summary = _read_json(path / "summary.json")
        metrics = path / "metrics.csv"
        rows = (
            sorted(read_metrics_csv(metrics), key=lambda r: r["epoch"]) if metrics.exists() else []
        )
        config = _read_config(path)
    except Exception as err:  # any unreadable file (OS, JSON, CSV, YAML) excludes the run
        return Run(path, {}, [], {}, problem=f"unreadable: {type(err).__name__}: {err}")
    return Run(path, summary, rows, config, problem=_problem(summary, rows))


def _run_dirs(root: Path) -> Iterable[Path]:
    if (root / "summary.json").exists() or (root / "metrics.csv").exists():
        yield root
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _SKIP):
        yield from _run_dirs(child)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"group.key": value}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _assign_variants(runs: list[Run]) -> None:
    """Label each run with the config values that differ within the sweep, so runs with e.g.
    another schedule or primary rule are never averaged with the rest."""
    flat = [flatten_config(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(_NOT_VARIANT)})
    varying = [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]
    for run, f in zip(runs, flat, strict=True):
        run.variant = " ".join(f"{k}={f[k]}" for k in varying if k in f)


def load_sweep(*roots: str | Path) -> Sweep:
    """Every run directory below `roots` (a run directory itself is accepted too)."""
    paths = [Path(r) for r in roots]
    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"sweep directory {p} does not exist")
    runs = [load_run(d) for p in paths for d in _run_dirs(p)]
    _assign_variants([r for r in runs if r.problem is None])
    return Sweep(paths, runs)


def _order(cond: Condition) -> tuple:
    def rank(order: tuple[str, ...], name: str) -> tuple[int, str]:
        return (order.index(name) if name in order else len(order), name)

    return (rank(DATASET_ORDER, cond.dataset), rank(METHOD_ORDER, cond.method), cond.variant)


def group_runs(runs: Iterable[Run]) -> dict[Condition, list[Run]]:
    """Runs by condition (dataset, method, variant), conditions in paper order, runs by seed."""
    groups: dict[Condition, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.condition, []).append(run)
    return {c: sorted(groups[c], key=lambda r: r.seed) for c in sorted(groups, key=_order)}


def epoch_of(run: Run, epoch: int | str) -> int:
    """An epoch number, or 'start' (epoch 0), 'reference' (the run's reference_epoch) or
    'final' (its last epoch)."""
    named = {"start": 0, "reference": run.reference_epoch, "final": run.final_epoch}
    return named[epoch] if isinstance(epoch, str) else int(epoch)


def values(runs: Iterable[Run], column: str, epoch: int | str) -> np.ndarray:
    """One figure per run at `epoch` (see `epoch_of`), NaN where the column was not logged."""
    return np.array([run.value(column, epoch_of(run, epoch)) for run in runs], dtype=float)
