"""Markdown tables of the report and the per-run summary.csv."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from vaesae.evaluation import HIST_NAMES
from vaesae.report.loading import (
    L0_TOLERANCE,
    NOT_AT_K_MARK,
    UNTRAINED_MARK,
    Condition,
    Run,
    dead_step,
    run_survivor_alignment,
    values,
)
from vaesae.report.paper import PAPER_DEAD_PCT, PAPER_RATIO
from vaesae.report.stats import Interval, mean_ci, mean_std, paired_diff_ci, paired_test, ratio_ci

__all__ = [
    "NOT_AT_K_NOTE",
    "UNTRAINED_NOTE",
    "markdown_table",
    "condition_label",
    "fmt_mean_std",
    "main_table",
    "rule_table",
    "ratio_table",
    "recovery_table",
    "mig_table",
    "semantics_table",
    "uncovered_factors",
    "summary_csv",
]


NOT_AT_K_NOTE = (
    f"{NOT_AT_K_MARK} marks rows that include runs *not at k*: their achieved L0 (`eval/l0` at "
    f"the reference epoch) is more than {100 * L0_TOLERANCE:g} % off k_end (listed under Runs)."
)


UNTRAINED_NOTE = (
    f"{UNTRAINED_MARK} marks rows that include *untrained* runs: their evaluation reconstruction "
    "had closed less than `min_gap_closed` of the no-information gap at k_end (listed under "
    "Runs); the rows' means include them, every verdict leaves them out."
)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def condition_label(cond: Condition, runs: Iterable[Run]) -> str:
    """The condition's label, marked with NOT_AT_K_MARK when one of its runs is not at k and
    with UNTRAINED_MARK when one is untrained."""
    runs = list(runs)
    label = cond.label + (f" {NOT_AT_K_MARK}" if any(r.not_at_k for r in runs) else "")
    return label + (f" {UNTRAINED_MARK}" if any(r.untrained for r in runs) else "")


def fmt_mean_std(x: np.ndarray | Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """'mean ± std' of the finite values (only the mean for one value, 'n/a' for none)."""
    mean, std, n = mean_std(np.asarray(x) * scale)
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def _ci(estimate: float, low: float, high: float, digits: int) -> str:
    """A signed difference with its CI."""
    if math.isnan(estimate):
        return "n/a"
    if math.isnan(low):
        return f"{estimate:+.{digits}f}"
    return f"{estimate:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _ratio(ci: Interval) -> str:
    if math.isnan(ci.estimate):
        return "n/a"
    return f"{ci.estimate:.2f}×" + (f" [{ci.low:.2f}, {ci.high:.2f}]" if ci.defined else "")


def _pct(runs: list[Run], column: str, epoch: int | str) -> str:
    return fmt_mean_std(values(runs, column, epoch), 100)


def main_table(groups: dict[Condition, list[Run]]) -> str:
    """The paper's table: dead rate (primary rule, %) at k_end and after the hold epochs, MIG at
    the start (epoch 0) and at k_end, the paper's dead rate beside."""
    rows = []
    for cond, runs in groups.items():
        paper = PAPER_DEAD_PCT.get((cond.dataset, cond.method))
        rows.append(
            [
                condition_label(cond, runs),
                len(runs),
                _pct(runs, "dead/primary", "reference"),
                f"{paper[0]} ± {paper[1]}" if paper else "–",
                _pct(runs, "dead/primary", "final"),
                fmt_mean_std(values(runs, "mig/latent", "start"), digits=3),
                fmt_mean_std(values(runs, "mig/latent", "reference"), digits=3),
                fmt_mean_std(values(runs, "mig/sae", "reference"), digits=3),
            ]
        )
    headers = [
        "condition",
        "n",
        "dead % at k_end",
        "paper dead %",
        "dead % final",
        "MIG latent, epoch 0",
        "MIG latent, k_end",
        "MIG SAE, k_end",
    ]
    return markdown_table(headers, rows)


def rule_table(groups: dict[Condition, list[Run]], rules: list[str]) -> str:
    """Dead rate (%) at epoch 0 → k_end → final under every rule."""
    rows = [
        [condition_label(cond, runs), len(runs)]
        + [
            " → ".join(_pct(runs, f"dead/{rule}", e) for e in ("start", "reference", "final"))
            for rule in rules
        ]
        for cond, runs in groups.items()
    ]
    return markdown_table(["condition", "n", *rules], rows)


def ratio_table(groups: dict[Condition, list[Run]]) -> str:
    """Shapes3D / dSprites ratio of mean dead rates (primary rule, k_end) with its
    Fieller–Welch CI (`ratio_ci`)."""
    rows = []
    for cond, shapes in groups.items():
        other = cond._replace(dataset="dsprites")
        if cond.dataset != "shapes3d" or other not in groups:
            continue
        dsprites = groups[other]
        a = values(shapes, "dead/primary", "reference")
        b = values(dsprites, "dead/primary", "reference")
        ratio = ratio_ci(a, b, resolution=dead_step([*shapes, *dsprites]))
        paper = PAPER_RATIO.get(cond.method)
        flag = any(r.not_at_k for r in (*shapes, *dsprites))
        rows.append(
            [
                cond.method + cond.tag + (f" {NOT_AT_K_MARK}" if flag else ""),
                f"{len(b)} / {len(a)}",
                fmt_mean_std(b, 100),
                fmt_mean_std(a, 100),
                _ratio(ratio),
                f"{paper}×" if paper else "–",
            ]
        )
    headers = [
        "method",
        "n (dSprites / Shapes3D)",
        "dSprites dead %",
        "Shapes3D dead %",
        "ratio [95 % CI]",
        "paper",
    ]
    return markdown_table(headers, rows) if rows else "_Needs both datasets for a method._"


def recovery_table(groups: dict[Condition, list[Run]]) -> str:
    """Dead rate at k_end vs after the hold epochs (paired per seed), revived / newly dead."""
    rows = []
    for cond, runs in groups.items():
        ref = values(runs, "dead/primary", "reference")
        final = values(runs, "dead/primary", "final")
        drop = paired_diff_ci(ref, final, resolution=dead_step(runs))
        test = paired_test(ref, final, resolution=dead_step(runs))
        rows.append(
            [
                condition_label(cond, runs),
                len(runs),
                min(r.final_epoch - r.reference_epoch for r in runs),
                fmt_mean_std(ref, 100),
                fmt_mean_std(final, 100),
                _ci(100 * drop.estimate, 100 * drop.low, 100 * drop.high, 1),
                "n/a" if math.isnan(test.p_value) else f"{test.statistic:.2f} / {test.p_value:.3g}",
                fmt_mean_std(values(runs, "neurons/revived", "final")),
                fmt_mean_std(values(runs, "neurons/newly_dead", "final")),
            ]
        )
    headers = [
        "condition",
        "n",
        "hold epochs",
        "dead % k_end",
        "dead % final",
        "drop pp [95 % CI]",
        "paired t / p",
        "revived",
        "newly dead",
    ]
    return markdown_table(headers, rows)


def mig_table(groups: dict[Condition, list[Run]]) -> str:
    """MIG of the latent means and of the SAE codes: epoch 0, k_end, final, change with a CI."""
    rows = []
    for cond, runs in groups.items():
        row: list[object] = [condition_label(cond, runs), len(runs)]
        for code in ("latent", "sae"):
            column = f"mig/{code}"
            start, ref = values(runs, column, "start"), values(runs, column, "reference")
            change = paired_diff_ci(ref, start)
            row += [
                fmt_mean_std(start, digits=3),
                fmt_mean_std(ref, digits=3),
                fmt_mean_std(values(runs, column, "final"), digits=3),
                _ci(change.estimate, change.low, change.high, 3),
            ]
        rows.append(row)
    headers = ["condition", "n"] + [
        f"{code} {what}"
        for code in ("latent", "SAE")
        for what in ("epoch 0", "k_end", "final", "Δ [95 % CI]")
    ]
    return markdown_table(headers, rows)


def uncovered_factors(run: Run, epoch: int, align_threshold: float) -> list[str]:
    """Factors that no neuron is aligned with at `epoch`: no neuron has its largest normalised MI
    with the factor and an alignment (that largest value) >= `align_threshold`."""
    arrays = run.neurons(epoch)
    nmi = arrays["normalized_mi"]
    names = [str(n) for n in arrays["factor_names"]]
    aligned = nmi.max(axis=1) >= align_threshold
    covered = set(nmi.argmax(axis=1)[aligned].tolist()) if nmi.size else set()
    return [name for k, name in enumerate(names) if k not in covered]


def _align_threshold(run: Run) -> float:
    return float(run.config.get("metrics", {}).get("align_threshold", 0.1))


def semantics_table(groups: dict[Condition, list[Run]]) -> str:
    """Per-neuron factor semantics at k_end: alive and described units; the survivors (units
    described at both epoch 0 and k_end), their mean alignment at epoch 0 → k_end and its per-seed
    change with a Student-t CI; the fractions of aligned and selective units; and the factors left
    without an aligned unit (in how many seeds)."""
    rows = []
    for cond, runs in groups.items():
        missing: dict[str, int] = {}
        for run in runs:
            path = run.path / "neurons" / f"epoch_{run.reference_epoch:03d}.npz"
            if path.exists():
                for name in uncovered_factors(run, run.reference_epoch, _align_threshold(run)):
                    missing[name] = missing.get(name, 0) + 1
        survivors = [run_survivor_alignment(run) for run in runs]
        change = mean_ci([s.after - s.before for s in survivors])
        rows.append(
            [
                cond.label,
                len(runs),
                _f(runs, "semantics/num_alive", "reference", 0),
                _f(runs, "semantics/num_described", "reference", 0),
                fmt_mean_std([s.units if s.units else math.nan for s in survivors], digits=0),
                fmt_mean_std([s.before for s in survivors], digits=3)
                + " → "
                + fmt_mean_std([s.after for s in survivors], digits=3),
                _ci(change.estimate, change.low, change.high, 3),
                _f(runs, "semantics/frac_aligned", "reference", 2),
                _f(runs, "semantics/frac_selective", "reference", 2),
                _f(runs, "semantics/factors_covered", "reference", 1),
                ", ".join(f"{k} ({v}/{len(runs)})" for k, v in sorted(missing.items())) or "none",
            ]
        )
    headers = [
        "condition",
        "n",
        "alive neurons",
        "described",
        "survivors",
        "survivors' mean alignment, epoch 0 → k_end",
        "Δ [95 % CI]",
        "frac. aligned",
        "frac. selective",
        "factors covered",
        "factors without an aligned neuron (seeds)",
    ]
    return markdown_table(headers, rows)


def _f(runs: list[Run], column: str, epoch: int | str, digits: int) -> str:
    return fmt_mean_std(values(runs, column, epoch), digits=digits)


def summary_csv(runs: list[Run], where: Callable[[Path], str] = Path.as_posix) -> str:
    """One row per run found (excluded ones too, with the reason): identity (with the arm),
    status, the rule read as `dead/primary`, the not-at-k and untrained flags, the run
    directory as `where` writes it (the report: below the sweep folder), and the key figures at
    epoch 0, k_end ('ref') and the last epoch ('final'); `gap_closed` and `fvu` are
    `eval/gap_closed` and `eval/fvu`."""
    dead = {c for r in runs if r.problem is None for c in r.columns if c.startswith("dead/")}
    figures = [*sorted(dead), "eval/l0", "train/recon", "eval/recon", "mig/latent", "mig/sae"]
    figures += [
        "eval/gap_closed",
        "eval/fvu",
        "neurons/revived",
        "neurons/newly_dead",
        "semantics/mean_alignment",
        "semantics/num_alive",
        "semantics/factors_covered",
        *HIST_NAMES,
    ]
    header = [
        "run",
        "dataset",
        "method",
        "seed",
        "arm",
        "variant",
        "status",
        "included",
        "reason",
        "primary_rule",
        "not_at_k",
        "untrained",
        "reference_epoch",
        "final_epoch",
        "path",
    ]
    short = {"eval/gap_closed": "gap_closed", "eval/fvu": "fvu"}
    header += [f"{short.get(f, f)}@{e}" for f in figures for e in ("start", "ref", "final")]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for run in runs:
        row: list[object] = [
            run.name,
            run.dataset,
            run.method,
            run.seed,
            run.arm,
            run.variant,
            run.status,
            run.problem is None,
            run.problem or "",
        ]
        if run.problem is None:
            row += [run.primary_rule, run.not_at_k, run.untrained]
            row += [run.reference_epoch, run.final_epoch]
            row += [where(run.path)]
            for f in figures:
                row += [values([run], f, e)[0] for e in ("start", "reference", "final")]
        else:
            row += ["", "", "", "", "", where(run.path)] + [""] * (3 * len(figures))
        writer.writerow(row)
    return buf.getvalue()
