"""Report figures, drawn with matplotlib's object API (Agg renders them; no pyplot state):
curves over epochs and k with mean ± std bands over seeds, firing-frequency histograms and
per-neuron alignment heatmaps; for a sweep with arms, dead rate per epoch and at k_end by arm
(`vaesae.report.falsify`). Each function returns a `Figure`; `write_figures` and
`write_arm_figures` save them as PNGs, atomically. Every spread is the sample standard deviation
(n − 1, `_std`), as in the tables; "primary rule" is the one the sweep was loaded with
(`load_sweep(rule=...)`)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaesae.atomic import atomic_path
from vaesae.evaluation import HIST_NAMES
from vaesae.report.falsify import ArmRow
from vaesae.report.loading import MIN_GAP_CLOSED, NO_SQUEEZE, Condition, Run

__all__ = [
    "dead_vs_k",
    "dead_vs_epoch",
    "mig_vs_epoch",
    "gap_closed_vs_epoch",
    "firing_histograms",
    "alignment_heatmaps",
    "write_figures",
    "arm_dead_vs_epoch",
    "arm_dead_at_k_end",
    "write_arm_figures",
]

HIST_LABELS = ("never", "≤1e-4", "1e-4–1e-3", "1e-3–1e-2", "1e-2–1e-1", ">1e-1")


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def _stack(runs: list[Run], column: str, last_epoch: int | None = None) -> np.ndarray:
    """[seeds, epochs] of a column, truncated to the shortest run (or to `last_epoch`)."""
    series = [r.series(column) for r in runs]
    length = min(len(s) for s in series)
    if last_epoch is not None:
        length = min(length, last_epoch + 1)
    return np.stack([s[:length] for s in series])


def _std(ys: np.ndarray) -> np.ndarray:
    """Sample standard deviation over seeds (axis 0, n − 1, NaN ignored), like `mean_std`."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with < 2 finite values: NaN
        return np.nanstd(ys, axis=0, ddof=1)


def _band(ax: Axes, x: np.ndarray, ys: np.ndarray, label: str, top: float = 100.0, **style) -> None:
    """Mean line with a ±1 std band over seeds (no band for a single seed), the band cut to the
    quantity's range [0, top] (a rate of 3 % ± 5 does not go below 0)."""
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(ys, axis=0)
        line = ax.plot(x, mean, label=f"{label} (n={len(ys)})", **style)[0]
        if len(ys) > 1:
            std = _std(ys)
            low, high = np.clip(mean - std, 0, top), np.clip(mean + std, 0, top)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)


def _by_dataset(groups: dict[Condition, list[Run]]) -> dict[str, dict[Condition, list[Run]]]:
    out: dict[str, dict[Condition, list[Run]]] = {}
    for cond, runs in groups.items():
        out.setdefault(cond.dataset, {})[cond] = runs
    return out


def _panels(n: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * n, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)
    return fig, list(axes[0])


def _series_label(cond: Condition) -> str:
    return cond.method + cond.tag


def dead_vs_k(groups: dict[Condition, list[Run]]) -> Figure:
    """Dead rate (primary rule) against k over the schedule (epoch 0 .. reference epoch), with
    the rate after the hold epochs as a marker at k_end."""
    datasets = _by_dataset(groups)
    fig, axes = _panels(len(datasets))
    for ax, (dataset, conds) in zip(axes, datasets.items(), strict=True):
        for cond, runs in conds.items():
            ref = min(r.reference_epoch for r in runs)
            k = np.nanmean(_stack(runs, "sparsity/k", ref), axis=0)
            _band(ax, k, 100 * _stack(runs, "dead/primary", ref), _series_label(cond))
            final = 100 * np.array([r.series("dead/primary")[-1] for r in runs])
            ax.errorbar(
                k[-1],
                np.nanmean(final),
                yerr=_std(final) if len(final) > 1 else None,
                fmt="s",
                color=ax.lines[-1].get_color(),
                markersize=5,
            )
        ax.invert_xaxis()
        ax.set(
            title=f"{dataset}: dead rate vs k (■ after hold)",
            xlabel="k (active units)",
            ylabel="dead neurons (%)",
        )
        ax.legend(fontsize=8)
    return fig


def dead_vs_epoch(groups: dict[Condition, list[Run]]) -> Figure:
    """Dead rate (primary rule) per epoch; the dotted line marks the end of the schedule."""
    datasets = _by_dataset(groups)
    fig, axes = _panels(len(datasets))
    for ax, (dataset, conds) in zip(axes, datasets.items(), strict=True):
        for cond, runs in conds.items():
            ys = 100 * _stack(runs, "dead/primary")
            _band(ax, np.arange(ys.shape[1]), ys, _series_label(cond))
        ref = min(r.reference_epoch for runs in conds.values() for r in runs)
        ax.axvline(ref, color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"{dataset}: dead rate per epoch", xlabel="epoch", ylabel="dead neurons (%)")
        ax.legend(fontsize=8)
    return fig


def mig_vs_epoch(groups: dict[Condition, list[Run]]) -> Figure:
    """MIG of the latent means (solid) and of the SAE codes (dashed) per epoch."""
    datasets = _by_dataset(groups)
    fig, axes = _panels(len(datasets))
    for ax, (dataset, conds) in zip(axes, datasets.items(), strict=True):
        for i, (cond, runs) in enumerate(conds.items()):
            color = f"C{i}"
            for column, style in (("mig/latent", "-"), ("mig/sae", "--")):
                ys = _stack(runs, column)
                label = f"{_series_label(cond)} {column.split('/')[1]}"
                _band(ax, np.arange(ys.shape[1]), ys, label, 1.0, color=color, linestyle=style)
        ref = min(r.reference_epoch for runs in conds.values() for r in runs)
        ax.axvline(ref, color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"{dataset}: MIG per epoch", xlabel="epoch", ylabel="MIG")
        ax.legend(fontsize=8)
    return fig


def gap_closed_vs_epoch(
    groups: dict[Condition, list[Run]], min_gap_closed: float = MIN_GAP_CLOSED
) -> Figure:
    """Share of the no-information gap closed by the evaluation reconstruction
    (`eval/gap_closed`), one thin line per run so a run stuck near the mean image stands out;
    the dashed line is the "trained" guard's threshold, the dotted one k_end."""
    datasets = _by_dataset(groups)
    fig, axes = _panels(len(datasets))
    for ax, (dataset, conds) in zip(axes, datasets.items(), strict=True):
        for i, (cond, runs) in enumerate(conds.items()):
            for j, run in enumerate(runs):
                ys = run.series("eval/gap_closed")
                label = f"{_series_label(cond)} (n={len(runs)})" if j == 0 else None
                ax.plot(np.arange(len(ys)), ys, color=f"C{i}", linewidth=1, label=label)
        ref = min(r.reference_epoch for runs in conds.values() for r in runs)
        ax.axvline(ref, color="grey", linestyle=":", linewidth=1)
        ax.axhline(min_gap_closed, color="black", linestyle="--", linewidth=1)
        ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.0)
        ax.set(
            title=f"{dataset}: share of the no-information gap closed",
            xlabel="epoch",
            ylabel="gap closed (eval)",
        )
        ax.legend(fontsize=8)
    return fig


def firing_histograms(groups: dict[Condition, list[Run]]) -> Figure:
    """Neurons per firing-frequency decade at epoch 0 (k_start) and at the reference epoch
    (k_end), mean over seeds with ±1 std error bars."""
    fig, axes = _panels(len(groups), width=4.2)
    x = np.arange(len(HIST_NAMES))
    for ax, (cond, runs) in zip(axes, groups.items(), strict=True):
        for shift, (label, pick) in zip(
            (-0.2, 0.2),
            (("epoch 0", lambda r: 0), ("k_end", lambda r: r.reference_epoch)),
            strict=True,
        ):
            counts = np.array([[r.value(h, pick(r)) for h in HIST_NAMES] for r in runs])
            err = _std(counts) if len(runs) > 1 else None
            ax.bar(x + shift, counts.mean(axis=0), width=0.4, yerr=err, label=label)
        ax.set_xticks(x, HIST_LABELS, rotation=45, ha="right", fontsize=8)
        ax.set(title=f"{cond.label} (n={len(runs)})", ylabel="neurons", xlabel="firing frequency")
        ax.legend(fontsize=8)
    return fig


def _heatmap_rows(run: Run) -> tuple[np.ndarray, list[str]]:
    """Normalised MI of the units described at the reference epoch (finite `alignment`; for runs
    recorded before it, the units alive under the primary rule), sorted by their assigned factor
    and then by alignment, and the factor names."""
    arrays = run.neurons(run.reference_epoch)
    nmi = arrays["normalized_mi"]
    if "alignment" in arrays:
        alive = nmi[np.isfinite(arrays["alignment"])]
    else:
        dead = arrays.get(f"dead_{run.summary.get('threshold')}")
        alive = nmi[~dead] if dead is not None else nmi[nmi.max(axis=1) > 0]
    order = np.lexsort((-alive.max(axis=1), alive.argmax(axis=1))) if len(alive) else []
    return alive[order], [str(n) for n in arrays["factor_names"]]


def alignment_heatmaps(groups: dict[Condition, list[Run]]) -> Figure:
    """Per-neuron chance-adjusted normalised MI (described units × factors) at k_end, for the
    lowest-seed run of each condition; values below 0 (below chance) show as 0."""
    fig, axes = _panels(len(groups), width=3.2, height=4.5)
    image = None
    for ax, (cond, runs) in zip(axes, groups.items(), strict=True):
        run = runs[0]
        if not (run.path / "neurons" / f"epoch_{run.reference_epoch:03d}.npz").exists():
            ax.set_title(f"{cond.label}: no per-neuron arrays")
            continue
        nmi, names = _heatmap_rows(run)
        if len(nmi):
            image = ax.imshow(
                nmi, aspect="auto", interpolation="nearest", vmin=0, vmax=1, cmap="viridis"
            )
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(
            title=f"{cond.label}\nseed {run.seed}, epoch {run.reference_epoch}",
            ylabel=f"described units ({len(nmi)})",
        )
    if image is not None:
        fig.colorbar(image, ax=axes, label="normalised MI above chance", shrink=0.8)
    return fig


def write_figures(
    groups: dict[Condition, list[Run]], out_dir: Path, min_gap_closed: float = MIN_GAP_CLOSED
) -> dict[str, Path]:
    """Every figure of the report into `out_dir`, by name (the gap-closed curves only when a
    run logs `eval/gap_closed`)."""
    makers = {
        "dead_vs_k": dead_vs_k,
        "dead_vs_epoch": dead_vs_epoch,
        "mig_vs_epoch": mig_vs_epoch,
        "firing_histograms": firing_histograms,
        "alignment_heatmaps": alignment_heatmaps,
    }
    if any("eval/gap_closed" in r.columns for runs in groups.values() for r in runs):
        makers["gap_closed_vs_epoch"] = functools.partial(
            gap_closed_vs_epoch, min_gap_closed=min_gap_closed
        )
    return {name: _save(make(groups), out_dir / f"{name}.png") for name, make in makers.items()}


def arm_dead_vs_epoch(rows: list[ArmRow]) -> Figure:
    """Dead rate (primary rule) per epoch of each arm's counted runs, mean ± 1 std band over
    seeds, one panel per dataset × method (× variant); no_squeeze dashed, the dotted line at the
    arms' first reference epoch (k_end)."""
    panels: dict[Condition, list[ArmRow]] = {}
    for row in rows:
        panels.setdefault(row.cond._replace(arm=""), []).append(row)
    fig, axes = _panels(len(panels))
    for ax, (where, arms) in zip(axes, panels.items(), strict=True):
        for i, row in enumerate(arms):
            if not row.counted:
                continue
            ys = 100 * _stack(row.counted, "dead/primary")
            style = "--" if row.cond.arm == NO_SQUEEZE else "-"
            _band(ax, np.arange(ys.shape[1]), ys, row.cond.arm, color=f"C{i % 10}", linestyle=style)
        refs = [
            r.reference_epoch for row in arms if row.cond.arm != NO_SQUEEZE for r in row.counted
        ]
        if refs:
            ax.axvline(min(refs), color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"{where.label}: dead rate by arm", xlabel="epoch", ylabel="dead neurons (%)")
        ax.legend(fontsize=7)
    return fig


def arm_dead_at_k_end(rows: list[ArmRow], low_dead: float) -> Figure:
    """Dead rate at k_end per arm (counted runs): the mean with its 95 % Student-t CI as error
    bars (none below 2 seeds), one bar per method (× variant), one panel per dataset; the dotted
    line is the verdict's `low_dead`."""
    datasets: dict[str, list[ArmRow]] = {}
    for row in rows:
        datasets.setdefault(row.cond.dataset, []).append(row)
    fig, axes = _panels(len(datasets), width=6.0, height=4.0)
    for ax, (dataset, drows) in zip(axes, datasets.items(), strict=True):
        arms = list(dict.fromkeys(row.cond.arm for row in drows))
        series = list(dict.fromkeys(row.cond._replace(dataset="", arm="") for row in drows))
        width = 0.8 / len(series)
        for j, kind in enumerate(series):
            mine = [r for r in drows if r.cond._replace(dataset="", arm="") == kind and r.counted]
            cis = [r.dead_ci for r in mine]
            x = (
                np.array([arms.index(r.cond.arm) for r in mine])
                + (j - (len(series) - 1) / 2) * width
            )
            y = np.array([100 * ci.estimate for ci in cis])
            bars = ax.bar(x, y, width=width, label=kind.method + kind.tag)
            ok = [ci.defined for ci in cis]
            if any(ok):
                err = np.array([[ci.estimate - ci.low, ci.high - ci.estimate] for ci in cis]).T
                ax.errorbar(
                    x[ok], y[ok], yerr=100 * err[:, ok], fmt="none", ecolor="black", capsize=3
                )
            ax.bar_label(
                bars, [f"n={len(r.counted)}" for r in mine], label_type="center", fontsize=6
            )
        ax.axhline(100 * low_dead, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
        ax.set(title=f"{dataset}: dead rate at k_end (95 % CI)", ylabel="dead neurons (%)")
        ax.legend(fontsize=8)
    return fig


def write_arm_figures(rows: list[ArmRow], low_dead: float, out_dir: Path) -> dict[str, Path]:
    """The falsification section's figures into `out_dir`, by name."""
    figures = {
        "arm_dead_vs_epoch": arm_dead_vs_epoch(rows),
        "arm_dead_at_k_end": arm_dead_at_k_end(rows, low_dead),
    }
    return {name: _save(fig, out_dir / f"{name}.png") for name, fig in figures.items()}
