"""report.md, summary.csv and the figures of a sweep, written atomically into one folder."""

from __future__ import annotations

import os
from pathlib import Path

from vaesae.atomic import write_text
from vaesae.report.claims import (
    ALPHA,
    INCONCLUSIVE,
    MIG_MARGIN,
    REVIVAL_MARGIN,
    Claim,
    evaluate_claims,
)
from vaesae.report.figures import write_figures
from vaesae.report.loading import Condition, Run, Sweep, flatten_config
from vaesae.report.paper import PAPER_PROTOCOL
from vaesae.report.stats import BOOTSTRAP_SEED, N_RESAMPLES
from vaesae.report.tables import (
    main_table,
    markdown_table,
    mig_table,
    ratio_table,
    recovery_table,
    rule_table,
    semantics_table,
    summary_csv,
)

__all__ = ["write_report", "report_markdown", "rules_of"]

_PROTOCOL_KEYS = (
    "schedule.kind",
    "schedule.granularity",
    "schedule.k_start",
    "schedule.k_end",
    "schedule.warmup_epochs",
    "schedule.schedule_epochs",
    "schedule.hold_epochs",
    "data.source",
    "data.epoch_size",
    "data.eval_size",
    "threshold.name",
    "model.width",
)

METHODS_TEXT = f"""\
- Dead rate: fraction of the {{width}} SAE neurons dead under a rule on the fixed evaluation set,
  shown in %. "k_end" is the row of each run's `reference_epoch` (the epoch at whose end k reached
  k_end); "final" is its last epoch (after the hold epochs); "epoch 0" is the first evaluation.
- mean ± std: mean and sample standard deviation (n − 1) over seeds; n = number of complete runs.
- Bootstrap CIs: 95 % percentile intervals from {N_RESAMPLES:,} resamples of the seeds with
  replacement (numpy `default_rng({BOOTSTRAP_SEED})`); for a ratio, each dataset's seeds are
  resampled on their own. With 3 seeds a bootstrap CI roughly spans the observed values.
- Welch t-test (`scipy.stats.ttest_ind(equal_var=False)`), two-sided, for L1 vs Top-k; paired
  t-test (`scipy.stats.ttest_rel`) for k_end vs final; level α = {ALPHA}.
- Verdict rules (each answers "inconclusive" below 2 seeds):
  - dead rate = paper: supported iff the paper's mean lies in our 95 % CI of the mean.
  - L1 ≥ Top-k: supported iff L1 − Top-k > 0 with Welch p < α; not supported iff < 0 with
    p < α; otherwise inconclusive (no detectable difference is not shown equality).
  - Shapes3D collapses more: supported iff the ratio CI's low end > 1; not supported iff its high
    end < 1. Ratio = paper: supported iff the paper's ratio lies in the CI.
  - extended training revives nothing: with drop = dead(k_end) − dead(final) per seed, supported
    iff the drop's CI high end < {100 * REVIVAL_MARGIN:g} pp; not supported iff the paired test
    has p < α and the mean drop > {100 * REVIVAL_MARGIN:g} pp.
  - MIG stable: with Δ = mig/latent(k_end) − mig/latent(epoch 0), supported iff the CI low end
    > −{MIG_MARGIN}; not supported iff its high end < −{MIG_MARGIN} (a rise never counts against).
  - collapse under rule r: rise = dead_r(k_end) − dead_r(epoch 0); supported iff every condition's
    CI low end > 0; not supported iff some condition's CI high end ≤ 0; inconclusive for `window`
    when fewer than `metrics.window` training samples were seen by k_end.
  - surviving neurons lose semantics: fall = mean alignment(epoch 0) − mean alignment(k_end) of the
    alive neurons; supported iff the CI low end > 0, not supported iff its high end < 0.
- Alignment of an alive neuron = max over factors of MI(neuron, factor) / H(factor); a factor is
  covered when some neuron with alignment ≥ `metrics.align_threshold` has it as best factor.
"""


def rules_of(runs: list[Run]) -> list[str]:
    """Dead-neuron rules logged by every run, in the order first seen."""
    common = set.intersection(*(set(r.rules) for r in runs)) if runs else set()
    return [rule for rule in dict.fromkeys(x for r in runs for x in r.rules) if rule in common]


def _show(value: object) -> str:
    """A config value as written in the YAML files (null for None)."""
    return "null" if value is None else str(value)


def _protocol(runs: list[Run]) -> str:
    flats = [flatten_config(r.config) for r in runs]
    rows, differs = [], []
    for key in _PROTOCOL_KEYS:
        seen = sorted({_show(f.get(key, "?")) for f in flats})
        paper = _show(PAPER_PROTOCOL[key]) if key in PAPER_PROTOCOL else ""
        rows.append([f"`{key}`", ", ".join(seen), paper])
        if paper and seen != [paper]:
            differs.append(f"`{key}`")
    seeds = sorted({r.seed for r in runs})
    rows.append(["seeds", ", ".join(map(str, seeds)), "0, 1, 2"])
    text = markdown_table(["setting", "this sweep", "paper"], rows)
    if differs:
        note = "Differs from the paper's protocol in " + ", ".join(differs) + ": every verdict "
        note += "below holds under this protocol only."
    else:
        note = "This is the paper's protocol."
    return f"{text}\n\n{note}"


def _runs_section(sweep: Sweep, groups: dict[Condition, list[Run]]) -> str:
    found = [
        [c.label, len(runs), ", ".join(str(r.seed) for r in runs)] for c, runs in groups.items()
    ]
    text = markdown_table(["condition", "n", "seeds"], found)
    excluded = [[r.name, r.status, r.problem or "", f"`{r.path}`"] for r in sweep.excluded]
    if excluded:
        text += "\n\nExcluded from every statistic:\n\n"
        text += markdown_table(["run", "status", "reason", "path"], excluded)
    else:
        text += "\n\nNo run was excluded."
    return text


def _claims_section(claims: list[Claim], groups: dict[Condition, list[Run]]) -> str:
    rows = [[c.claim, c.scope, c.statistic, c.n, f"**{c.verdict}**"] for c in claims]
    text = markdown_table(["claim", "scope", "statistic", "n", "verdict"], rows)
    if all(len(runs) < 2 for runs in groups.values()):
        text = (
            f"_Fewer than 2 seeds per condition: no CIs or tests, every verdict is "
            f"{INCONCLUSIVE}._\n\n" + text
        )
    return text


def report_markdown(sweep: Sweep, figures: dict[str, Path], out_dir: Path) -> str:
    """The whole report.md text of a loaded sweep."""
    groups = sweep.conditions()
    runs = sweep.included
    header = [
        "# vaesae report",
        "",
        "Sweep: " + ", ".join(f"`{p}`" for p in sweep.roots),
        f"Runs found: {len(sweep.runs)}; complete and included: {len(runs)}; "
        f"excluded: {len(sweep.excluded)}.",
    ]
    sections = ["\n".join(header), "## Runs\n\n" + _runs_section(sweep, groups)]
    if not runs:
        sections.append("_No complete run: nothing to aggregate._")
        return "\n\n".join(sections) + "\n"
    rules = rules_of(runs)
    primary = ", ".join(sorted({str(r.summary.get("threshold")) for r in runs}))
    width = ", ".join(sorted({str(flatten_config(r.config).get("model.width", "?")) for r in runs}))
    links = "\n\n".join(
        f"![{name}]({os.path.relpath(path, out_dir)})" for name, path in figures.items()
    )
    sections += [
        "## Protocol\n\n" + _protocol(runs),
        "## Verdicts\n\n" + _claims_section(evaluate_claims(groups, rules), groups),
        f"## 1. Dead neurons at k_end (primary rule: {primary})\n\n" + main_table(groups),
        "## 2. Every dead-neuron rule (dead %, epoch 0 → k_end → final)\n\n"
        + rule_table(groups, rules),
        "## 3. Shapes3D / dSprites dead-rate ratio (k_end)\n\n" + ratio_table(groups),
        "## 4. Extended training (k_end vs after the hold epochs)\n\n" + recovery_table(groups),
        "## 5. MIG (stable?)\n\n" + mig_table(groups),
        "## 6. Per-neuron semantics at k_end\n\n" + semantics_table(groups),
        "## Figures\n\n" + links,
        "## Methods\n\n" + METHODS_TEXT.format(width=width),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(sweep: Sweep, out_dir: str | Path) -> Path:
    """Write report.md, summary.csv and the figures into `out_dir`; returns report.md's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = sweep.conditions()
    figures = write_figures(groups, out_dir / "figures") if groups else {}
    write_text(out_dir / "summary.csv", summary_csv(sweep.runs))
    return write_text(out_dir / "report.md", report_markdown(sweep, figures, out_dir))
