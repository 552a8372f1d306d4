"""Reading a sweep: every run directory below one or more folders, with its status checked.

A run directory is any folder holding `summary.json` or `metrics.csv`; one reached twice (through
overlapping sweep folders, or a folder passed twice) is read once, by its resolved path. A run
enters the statistics only when it is *complete*: status "completed", metrics.csv holds every
epoch 0..total_epochs-1 and a row for its reference_epoch (the "k_end" epoch), and that row's
`sparsity/k_last` (k at the epoch's last training step, where logged) is k_end. Every other run
stays in `Sweep.excluded` with the reason, so the report lists it instead of averaging it in.

A complete run is *not at k* when its `eval/l0` (the mean number of active codes per sample on the
evaluation set, measured at the end of the reference epoch) is more than `L0_TOLERANCE` · k_end
away from k_end: it stays in the statistics, flagged, but out of the Top-k vs L1 comparison.

A complete run is *untrained* when the share of the no-information gap that its evaluation
reconstruction has closed at the reference epoch (`eval/gap_closed`, `vaesae.metrics.progress`) is
below `min_gap_closed` (`MIN_GAP_CLOSED` unless `load_sweep` is told otherwise): its model still
sits near the mean-image reconstruction, so its dead rates describe a model that has not learnt.
It stays in the tables, flagged, and out of every verdict (`trained_groups`).

`load_sweep(..., rule=NAME)` reads `dead/NAME` wherever the report asks for `dead/primary` (each
run's own rule by default), so one sweep gives the report under every logged rule.

Arms: a run's `arm` is summary.json's `"arm"`, else its config's `arm.name`, else `baseline` (runs
recorded before arms existed). In a sweep holding more than one arm, or only a non-baseline one,
the arm is part of every condition and of its label; the `no_squeeze` control (k = the width, no
sparsity pressure) is not checked for `sparsity/k_last` = k_end, which it never reaches by design.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
from omegaconf import OmegaConf

from vaesae.records import read_metrics_csv

__all__ = [
    "L0_TOLERANCE",
    "NOT_AT_K_MARK",
    "MIN_GAP_CLOSED",
    "UNTRAINED_MARK",
    "trained_groups",
    "dead_step",
    "BASELINE",
    "NO_SQUEEZE",
    "ARM_ORDER",
    "RuleError",
    "Run",
    "Sweep",
    "Condition",
    "load_run",
    "load_sweep",
    "group_runs",
    "epoch_of",
    "values",
    "flatten_config",
    "frequency_tau",
    "report_rules",
    "SurvivorAlignment",
    "survivor_alignment",
    "run_survivor_alignment",
    "REVIVED_MIN_FREQUENCY",
    "revival_share",
    "squeezed",
]

# Sub-folders that never hold runs (Hydra, submitit, W&B, a run's own outputs).
_SKIP = {".hydra", ".submitit", "wandb", "checkpoints", "neurons"}
# Config keys that never split a condition by themselves: its own method / dataset / arm, the seed,
# and settings that change only speed or logging.
_NOT_VARIANT = (
    "seed",
    "run_name",
    "method.",
    "dataset.",
    "arm.",
    "data.root",
    "resume",
    "logger.",
    "trainer.threads",
    "trainer.progress_bar",
    "metrics.recon_images",
)
DATASET_ORDER = ("dsprites", "shapes3d")
METHOD_ORDER = ("topk", "l1")
# The two controls of the falsification section: the paper's setup, and the same training without
# sparsity pressure (the reference that attributes dead units to the squeeze).
BASELINE, NO_SQUEEZE = "baseline", "no_squeeze"
ARM_ORDER = (
    BASELINE,
    NO_SQUEEZE,
    "fixed_k",
    "center",
    "center_no_squeeze",
    "signed_trunk",
    "signed_trunk_no_squeeze",
    "auxk",
    "resample",
    "batchtopk",
    "jumprelu",
    "recover",
)
# A run is "not at k" when |L0 - k_end| > L0_TOLERANCE * k_end at its reference epoch; the
# report marks every row that holds such a run with NOT_AT_K_MARK.
L0_TOLERANCE = 0.10
NOT_AT_K_MARK = "†"
# A run is "untrained" when eval/gap_closed < MIN_GAP_CLOSED at its reference epoch (docs:
# "Initialisation" shows the curves this threshold separates); marked UNTRAINED_MARK.
MIN_GAP_CLOSED = 0.5
UNTRAINED_MARK = "‡"
# A unit dead at k_end counts as revived only when it fires on at least this fraction of the
# evaluation samples at the final epoch: a unit flickering across `never` on a fixed evaluation
# set is not a revival.
REVIVED_MIN_FREQUENCY = 1e-3
# Per-neuron transition counts, logged under the run's own rule; recomputed for another rule.
_TRANSITIONS = ("neurons/revived", "neurons/newly_dead")


class RuleError(ValueError):
    """A `--rule` that the sweep cannot report under."""


def frequency_tau(rule: str) -> Fraction | None:
    """The threshold tau of a frequency rule's name, exactly ('freq1e-4' -> 1/10000); None for
    the other rules."""
    if not rule.startswith("freq"):
        return None
    try:
        return Fraction(rule[4:])
    except ValueError:
        return None


class Condition(NamedTuple):
    """What seeds are averaged over: dataset, method, `variant`, the other config values
    (e.g. `schedule.kind=constant`) that differ between runs of the same arm ('' when none do),
    and `arm` ('' in a sweep of baseline runs only)."""

    dataset: str
    method: str
    variant: str = ""
    arm: str = ""

    @property
    def tag(self) -> str:
        """' [arm; variant]' (the parts that are set), '' when neither is."""
        parts = [x for x in (self.arm, self.variant) if x]
        return f" [{'; '.join(parts)}]" if parts else ""

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.method}{self.tag}"


@dataclass
class Run:
    """One run directory: its summary.json, metrics.csv rows (by epoch) and resolved config."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, float]]
    config: dict[str, Any]
    problem: str | None = None  # why the run is excluded; None for a complete run
    variant: str = ""
    rule: str | None = None  # the rule read as `dead/primary`; None: the run's own
    condition_arm: str = ""  # the arm as its condition names it ('' in a baseline-only sweep)
    min_gap_closed: float = MIN_GAP_CLOSED  # the "trained" guard's threshold

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
    def arm(self) -> str:
        return _arm_of(self.summary, self.config)

    @property
    def reference_epoch(self) -> int:
        """The epoch whose end-of-epoch evaluation runs at k = k_end (`summary.json`)."""
        return int(self.summary["reference_epoch"])

    @property
    def k_end(self) -> float:
        """k at the end of the schedule: `summary.json`, else the config; NaN when neither."""
        value = self.summary.get("k_end", flatten_config(self.config).get("schedule.k_end"))
        return math.nan if value is None else float(value)

    @property
    def eval_size(self) -> int | None:
        """N, the evaluation-set size every dead rule is measured on (`data.eval_size`)."""
        value = flatten_config(self.config).get("data.eval_size")
        return None if value is None else int(value)

    @property
    def primary_rule(self) -> str:
        """The rule read as `dead/primary`: the chosen one, else the run's own `threshold`."""
        return self.rule or str(self.summary.get("threshold", "?"))

    @property
    def l0_at_k_end(self) -> float:
        """`eval/l0` at the reference epoch: active codes per evaluation sample (NaN when not
        logged)."""
        return self.value("eval/l0", self.reference_epoch)

    @property
    def not_at_k(self) -> bool:
        """The achieved L0 at the reference epoch is more than `L0_TOLERANCE` · k_end off k_end
        (False when either is unknown)."""
        l0, k_end = self.l0_at_k_end, self.k_end
        return bool(abs(l0 - k_end) > L0_TOLERANCE * k_end)

    @property
    def gap_closed_at_k_end(self) -> float:
        """`eval/gap_closed` at the reference epoch: the share of the no-information gap the
        evaluation reconstruction has closed (NaN when not logged)."""
        return self.value("eval/gap_closed", self.reference_epoch)

    @property
    def untrained(self) -> bool:
        """The model has closed less than `min_gap_closed` of the gap by the reference epoch
        (False when not logged: such runs are listed as unchecked)."""
        return bool(self.gap_closed_at_k_end < self.min_gap_closed)

    @property
    def start_epoch(self) -> int | None:
        """The claims' early reference: the first epoch up to k_end at which the model has trained
        (`eval/gap_closed` >= `min_gap_closed`) and the squeeze does not bind yet (`eval/l0` <
        (1 - L0_TOLERANCE) · k at the epoch's end, `sparsity/k_last`). Epoch 0 of a barely trained
        model measures learning, not the squeeze. None when no epoch qualifies; a run that logs
        no `eval/gap_closed` is read as trained throughout."""
        logged = "eval/gap_closed" in self.columns
        for row in self.rows:
            epoch = int(row["epoch"])
            if epoch > self.reference_epoch:
                break
            trained = not logged or row.get("eval/gap_closed", math.nan) >= self.min_gap_closed
            k = row.get("sparsity/k_last", row.get("sparsity/k", math.nan))
            free = not row.get("eval/l0", math.nan) >= (1 - L0_TOLERANCE) * k
            if trained and free:
                return epoch
        return None

    def never_by_construction(self, rule: str) -> bool:
        """A frequency rule (fire on < tau of the N evaluation samples) with N · tau <= 1 flags
        exactly the neurons that never fire: one firing already meets the threshold."""
        tau, n = frequency_tau(rule), self.eval_size
        return tau is not None and n is not None and n * tau <= 1

    @property
    def final_epoch(self) -> int:
        return int(self.rows[-1]["epoch"])

    @property
    def condition(self) -> Condition:
        return Condition(self.dataset, self.method, self.variant, self.condition_arm)

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

    def _column(self, column: str) -> str:
        return f"dead/{self.rule}" if column == "dead/primary" and self.rule else column

    def value(self, column: str, epoch: int) -> float:
        """One figure of one epoch (NaN when the column was not logged). With a chosen `rule`,
        `dead/primary` reads that rule, and the revived / newly-dead counts are recomputed for
        it from the per-neuron arrays."""
        if self.rule and column in _TRANSITIONS:
            return self._transitions(epoch)[_TRANSITIONS.index(column)]
        return self.row(epoch).get(self._column(column), math.nan)

    def series(self, column: str) -> np.ndarray:
        """A column over all epochs, in epoch order (NaN where missing)."""
        if self.rule and column in _TRANSITIONS:
            return np.array([self.value(column, int(r["epoch"])) for r in self.rows])
        column = self._column(column)
        return np.array([r.get(column, math.nan) for r in self.rows], dtype=float)

    def _transitions(self, epoch: int) -> tuple[float, float]:
        """(revived, newly dead) under `rule` between the reference epoch and `epoch`, as
        training counts them under its own rule: NaN up to the reference epoch, or without the
        per-neuron arrays."""
        key = f"dead_{self.rule}"
        try:
            if epoch <= self.reference_epoch:
                raise KeyError(epoch)
            ref, now = self.neurons(self.reference_epoch)[key], self.neurons(epoch)[key]
        except (KeyError, OSError):
            return math.nan, math.nan
        return float((ref & ~now).sum()), float((~ref & now).sum())

    def neurons(self, epoch: int) -> dict[str, np.ndarray]:
        """Per-neuron arrays of an epoch (`neurons/epoch_XXX.npz`): frequency, alignment (runs
        recorded since it was added), normalized_mi, dead_<rule>, factor_names."""
        with np.load(self.path / "neurons" / f"epoch_{epoch:03d}.npz") as data:
            return {k: data[k] for k in data.files}


@dataclass
class Sweep:
    """All runs found below the sweep folders; `included` are the complete ones. `duplicates`
    counts run directories reached again through another folder (read once); `rule` is the rule
    read as `dead/primary` (None: each run's own); `min_gap_closed` the "trained" guard's
    threshold."""

    roots: list[Path]
    runs: list[Run] = field(default_factory=list)
    duplicates: int = 0
    rule: str | None = None
    min_gap_closed: float = MIN_GAP_CLOSED

    @property
    def included(self) -> list[Run]:
        return [r for r in self.runs if r.problem is None]

    def relative(self, path: Path) -> str:
        """`path` below the sweep folder that holds it (POSIX form), so that a report names no
        folder of the machine it ran on; the path itself when no sweep folder holds it."""
        for root in self.roots:
            if path.is_relative_to(root) and path != root:
                return path.relative_to(root).as_posix()
        return path.name if path in self.roots else path.as_posix()

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
        return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(hydra_cfg)))
    return {}


def _arm_of(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """summary.json's `arm`, else the config's `arm.name`, else `baseline`."""
    arm = summary.get("arm") or flatten_config(config).get("arm.name")
    return str(arm) if arm else BASELINE


def squeezed(arm: str, config: dict[str, Any]) -> bool:
    """Whether a run trained under sparsity pressure: not `no_squeeze` and not an arm whose
    config says `arm.pressure` = none (such a control keeps k at the width, lambda at 0)."""
    return arm != NO_SQUEEZE and flatten_config(config).get("arm.pressure") != "none"


def _problem(
    summary: dict[str, Any], rows: list[dict[str, float]], pressure: bool = True
) -> str | None:
    """Why a run cannot enter the statistics, or None when it is complete."""
    status = summary.get("status")
    if not summary:
        return "no summary.json"
    if status != "completed":
        error = summary.get("error")
        return f"status {status}" + (f": {error}" if error else "")
    if summary.get("reference_epoch") is None or "total_epochs" not in summary:
        return "summary.json lacks reference_epoch / total_epochs"
    epochs = [int(r["epoch"]) for r in rows]
    expected = list(range(int(summary["total_epochs"])))
    if epochs != expected:
        return f"metrics.csv holds epochs {_span(epochs)}, expected 0..{expected[-1]}"
    ref = int(summary["reference_epoch"])
    if ref not in epochs:
        return f"metrics.csv has no row for reference_epoch {ref} (holds {_span(epochs)})"
    k_last, k_end = rows[epochs.index(ref)].get("sparsity/k_last", math.nan), summary.get("k_end")
    # A no-pressure control keeps k at the width: it never reaches k_end.
    if pressure and k_end is not None and math.isfinite(k_last) and k_last != float(k_end):
        return f"sparsity/k_last = {k_last:g} at reference_epoch {ref}, not k_end = {k_end}"
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
    pressure = squeezed(_arm_of(summary, config), config)
    return Run(path, summary, rows, config, problem=_problem(summary, rows, pressure))


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
    """Label each run with its arm (when the sweep is not baseline-only) and with the config
    values that differ between runs of the same arm, so runs with e.g. another schedule or
    primary rule are never averaged with the rest. A value that differs only between arms (what
    an arm changes, e.g. `model.center` of the center arm) is the arm's, not a variant."""
    flat = [flatten_config(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(_NOT_VARIANT)})
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for run, f in zip(runs, flat, strict=True):
        by_arm.setdefault(run.arm, []).append(f)
    varying = [
        k
        for k in keys
        if any(len({json.dumps(f.get(k)) for f in group}) > 1 for group in by_arm.values())
    ]
    named = set(by_arm) != {BASELINE}
    for run, f in zip(runs, flat, strict=True):
        run.variant = " ".join(f"{k}={f[k]}" for k in varying if k in f)
        run.condition_arm = run.arm if named else ""


def report_rules(runs: list[Run]) -> list[str]:
    """The rules a report can be made under: logged by every run, and not a frequency rule that
    coincides with `never` by construction in one of them."""
    common = set.intersection(*(set(r.rules) for r in runs)) if runs else set()
    ordered = dict.fromkeys(x for r in runs for x in r.rules if x in common)
    return [x for x in ordered if not any(r.never_by_construction(x) for r in runs)]


def _use_rule(runs: list[Run], rule: str) -> None:
    """Make `rule` the one read as `dead/primary` in every complete run."""
    valid = report_rules(runs)
    if runs and rule not in valid:
        sizes = sorted({r.eval_size or 0 for r in runs if r.never_by_construction(rule)})
        if any(rule not in r.rules for r in runs):
            why = "not a dead-neuron rule (dead/NAME column) logged by every complete run"
        else:
            why = f"it coincides with 'never' at eval size {', '.join(map(str, sizes))} (N·τ <= 1)"
        raise RuleError(f"rule {rule!r}: {why}; valid names: {', '.join(valid) or 'none'}")
    for run in runs:
        run.rule = rule


def load_sweep(
    *roots: str | Path, rule: str | None = None, min_gap_closed: float = MIN_GAP_CLOSED
) -> Sweep:
    """Every run directory below `roots` (a run directory itself is accepted too), each read
    once however many roots reach it. `rule`: read `dead/<rule>` as `dead/primary` in every
    run (RuleError, naming the valid rules, when a complete run lacks it). `min_gap_closed`:
    the "trained" guard's threshold (`Run.untrained`)."""
    paths = [Path(r) for r in roots]
    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"sweep directory {p} does not exist")
    found = [d for p in paths for d in _run_dirs(p)]
    unique: dict[Path, Path] = {}
    for d in found:
        unique.setdefault(d.resolve(), d)
    runs = [load_run(d) for d in unique.values()]
    for run in runs:
        run.min_gap_closed = min_gap_closed
    included = [r for r in runs if r.problem is None]
    _assign_variants(included)
    if rule is not None:
        _use_rule(included, rule)
    return Sweep(paths, runs, len(found) - len(unique), rule, min_gap_closed)


def _order(cond: Condition) -> tuple:
    def rank(order: tuple[str, ...], name: str) -> tuple[int, str]:
        return (order.index(name) if name in order else len(order), name)

    return (
        rank(DATASET_ORDER, cond.dataset),
        rank(METHOD_ORDER, cond.method),
        cond.variant,
        rank(ARM_ORDER, cond.arm or BASELINE),
    )


def group_runs(runs: Iterable[Run]) -> dict[Condition, list[Run]]:
    """Runs by condition (dataset, method, variant, arm), conditions in paper order (the arms of
    a dataset × method together, controls first), runs by seed."""
    groups: dict[Condition, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.condition, []).append(run)
    return {c: sorted(groups[c], key=lambda r: r.seed) for c in sorted(groups, key=_order)}


def dead_step(runs: Iterable[Run]) -> float:
    """The step in which a dead rate moves, 1 / `model.width` (the largest over the runs; 0 when
    no run records its width): the resolution handed to the statistics of dead rates."""
    widths = [flatten_config(r.config).get("model.width") for r in runs]
    return max((1.0 / w for w in widths if w), default=0.0)


def trained_groups(groups: dict[Condition, list[Run]]) -> dict[Condition, list[Run]]:
    """The same conditions holding only their trained runs (`Run.untrained` is False): what
    every verdict reads."""
    return {c: [r for r in runs if not r.untrained] for c, runs in groups.items()}


def epoch_of(run: Run, epoch: int | str) -> int | None:
    """An epoch number, or 'start' (epoch 0), 'trained' (`Run.start_epoch`, None when no epoch
    qualifies), 'reference' (the run's reference_epoch) or 'final' (its last epoch)."""
    if not isinstance(epoch, str):
        return int(epoch)
    if epoch == "trained":
        return run.start_epoch
    return {"start": 0, "reference": run.reference_epoch, "final": run.final_epoch}[epoch]


def values(runs: Iterable[Run], column: str, epoch: int | str) -> np.ndarray:
    """One figure per run at `epoch` (see `epoch_of`), NaN where the column was not logged or
    the run has no such epoch."""
    out = []
    for run in runs:
        e = epoch_of(run, epoch)
        out.append(math.nan if e is None else run.value(column, e))
    return np.array(out, dtype=float)


@dataclass(frozen=True)
class SurvivorAlignment:
    """Mean alignment of the same units at an earlier and a later epoch, over `units` units
    (NaN means when there are none)."""

    before: float
    after: float
    units: int

    @property
    def fall(self) -> float:
        return self.before - self.after


def survivor_alignment(
    before: dict[str, np.ndarray], after: dict[str, np.ndarray]
) -> SurvivorAlignment:
    """Mean per-unit `alignment` of two epochs' per-neuron arrays over the same units: those with
    a finite alignment at both epochs (described at both: alive under the run's rule and firing
    often enough, `vaesae.metrics.neuron_semantics`). The alive populations of the two epochs
    differ (most epoch-0 units are dead at k_end), so comparing their means would mix a change
    of population into the change of semantics. No units, or arrays written before `alignment`
    was recorded, give NaN means."""
    if "alignment" not in before or "alignment" not in after:
        return SurvivorAlignment(math.nan, math.nan, 0)
    a, b = np.asarray(before["alignment"], float), np.asarray(after["alignment"], float)
    if a.shape != b.shape:
        raise ValueError(f"alignment arrays of different widths: {a.shape} vs {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return SurvivorAlignment(math.nan, math.nan, 0)
    return SurvivorAlignment(float(a[both].mean()), float(b[both].mean()), int(both.sum()))


def run_survivor_alignment(run: Run, start: int | str = 0) -> SurvivorAlignment:
    """`survivor_alignment` of a run from `start` (an epoch or a name of `epoch_of`) to its
    reference epoch (k_end); NaN when either epoch's per-neuron arrays are missing or the run has
    no such start epoch."""
    first = epoch_of(run, start)
    if first is None:
        return SurvivorAlignment(math.nan, math.nan, 0)
    epochs = (first, run.reference_epoch)
    if not all((run.path / "neurons" / f"epoch_{e:03d}.npz").exists() for e in epochs):
        return SurvivorAlignment(math.nan, math.nan, 0)
    return survivor_alignment(*(run.neurons(e) for e in epochs))


def revival_share(run: Run, min_frequency: float = REVIVED_MIN_FREQUENCY) -> tuple[float, int]:
    """(share, dead): of the `dead` units dead at the reference epoch (k_end) under the primary
    rule, the fraction that fire on >= `min_frequency` of the evaluation samples at the final
    epoch, |dead_ref ∧ (freq_final >= f_min)| / |dead_ref|, from the per-neuron arrays
    (`neurons/epoch_XXX.npz`). NaN without the arrays or hold epochs, or with no unit dead at
    k_end."""
    key = f"dead_{run.primary_rule}"
    if run.final_epoch <= run.reference_epoch:
        return math.nan, 0
    try:
        ref = run.neurons(run.reference_epoch)[key].astype(bool)
        frequency = np.asarray(run.neurons(run.final_epoch)["frequency"], float)
    except (KeyError, OSError):
        return math.nan, 0
    dead = int(ref.sum())
    if not dead:
        return math.nan, 0
    return float((ref & (frequency >= min_frequency)).sum()) / dead, dead
