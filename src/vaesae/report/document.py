"""report.md, summary.csv and the figures of a sweep, written atomically into one folder."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from vaesae.atomic import write_text
from vaesae.metrics.semantics import MIN_FIRING, NUM_BINS, NUM_PERMUTATIONS
from vaesae.report.claims import (
    ALPHA,
    INCONCLUSIVE,
    MIN_START_SCORE,
    REVIVAL_MARGIN,
    STABLE_MARGIN,
    Claim,
    evaluate_claims,
    rule_exclusions,
)
from vaesae.report.falsify import (
    DEFAULT_SETTINGS,
    Settings,
    arm_rows,
    has_arms,
    methods_text,
    paper_conditions,
    section,
    summary_line,
)
from vaesae.report.figures import write_arm_figures, write_figures
from vaesae.report.loading import (
    L0_TOLERANCE,
    NOT_AT_K_MARK,
    REVIVED_MIN_FREQUENCY,
    UNTRAINED_MARK,
    Condition,
    Run,
    Sweep,
    flatten_config,
)
from vaesae.report.neurons import copy_neuron_pictures, neuron_section
from vaesae.report.paper import PAPER_PROTOCOL
from vaesae.report.stats import CONFIDENCE
from vaesae.report.tables import (
    NOT_AT_K_NOTE,
    UNTRAINED_NOTE,
    condition_label,
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
  shown in %. "k_end" is the row of each run's `reference_epoch` (the epoch whose end-of-epoch
  evaluation runs at k = k_end); a run whose metrics.csv has no row for it, or whose
  `sparsity/k_last` (k at that epoch's last training step) is not k_end there, is excluded and
  listed. "final" is its last epoch (after the hold epochs); "epoch 0" is the first evaluation.
- Primary rule: {{primary}}.
  Every rule is logged at every epoch, so `python -m vaesae.report SWEEP --rule NAME` (NAME
  one of the `dead/NAME` columns: never, magnitude, window, freq1e-3, …) reports the same runs
  under another rule, in every table, claim and figure; no threshold sweep is needed. Under
  `--rule` the revived / newly-dead counts are recounted for the rule from the per-neuron
  arrays; the per-neuron semantics (alive = not dead under the run's own rule) stay as trained.
- Runs: every run directory below the sweep folders, each counted once by its resolved path
  however many of the folders reach it; only status "completed" runs with every epoch enter a
  statistic, every other run is listed under Runs and never averaged.
- Not at k ({NOT_AT_K_MARK}): a run whose achieved L0 at the reference epoch is more than
  {100 * L0_TOLERANCE:g} % of k_end away from k_end. L0 is `eval/l0`, the mean number of active
  codes per sample on the evaluation set, measured at the end of the reference epoch (not the
  training-batch `sparsity/l0`); a run that does not log it is not checked. Such a run stays in
  every mean and is marked {NOT_AT_K_MARK} wherever it is counted, and every claim whose
  conditions hold it is inconclusive (it measures another sparsity).
- Untrained ({UNTRAINED_MARK}): a run whose evaluation reconstruction at the reference epoch has
  closed less than min_gap_closed = {{min_gap_closed:g}} of the no-information gap
  (`--min-gap-closed`):
  gap closed = (B_mean − recon) / (B_mean − B_floor), with recon the evaluation set's Bernoulli
  reconstruction decoded from the posterior mean (nats/image), B_mean = Σ_p H(mean pixel p) the
  cost of the data's mean image (what a decoder that ignores its input achieves) and B_floor =
  mean_i Σ_p H(x_ip) that of the targets themselves (0 for binary dSprites), both from the
  evaluation set. Such a model still sits near the mean-image reconstruction and its dead rates
  describe units of a model that has not learnt: it stays in every mean, marked {UNTRAINED_MARK},
  and is left out of every verdict (n counts the runs read); a run that does not log
  `eval/gap_closed` is not checked.
- mean ± std: mean and sample standard deviation (n − 1) over seeds; n = number of complete runs.
- CIs: {100 * CONFIDENCE:g} % intervals over seeds that treat the per-seed values as normal
  (exact at any n ≥ 2; none below 2 seeds); t(df) is the {(1 + CONFIDENCE) / 2:g} quantile of
  Student's t with df degrees of freedom.
  - a mean: Student-t, mean ± t(n − 1) · s / √n.
  - a per-seed difference (drop, Δ MIG, rise): paired t on d_i = a_i − b_i of the same seed,
    mean(d) ± t(n − 1) · sd(d) / √n.
  - a ratio of the mean dead rates of two independent groups (Shapes3D / dSprites): Fieller
    interval, the ρ with |mean(a) − ρ · mean(b)| ≤ t(df) · √(s_a²/n_a + ρ² · s_b²/n_b), df the
    Welch–Satterthwaite degrees of freedom at the estimate; no CI when the denominator's mean is
    not significantly different from 0 (the set is then unbounded).
- Welch t-test (`scipy.stats.ttest_ind(equal_var=False)`), two-sided, for L1 vs Top-k; paired
  t-test (`scipy.stats.ttest_rel`) for k_end vs final; level α = {ALPHA}.
- Verdict rules (each answers "inconclusive" below 2 seeds, and for every condition that holds a
  run not at k, naming it; each reads the trained runs only):
  - dead rate = paper: supported iff the paper's mean lies in our CI of the mean.
  - L1 ≥ Top-k: supported iff L1 − Top-k > 0 with Welch p < α; not supported iff < 0 with
    p < α; otherwise inconclusive (no detectable difference is not shown equality).
  - Shapes3D collapses more: supported iff the ratio CI's low end > 1; not supported iff its high
    end < 1. Ratio = paper: supported iff the paper's ratio lies in the CI.
  - extended training revives nothing: per seed, share = |dead at k_end ∧ firing on ≥
    {REVIVED_MIN_FREQUENCY:g} of the evaluation samples at the final epoch| / |dead at k_end|
    (from the per-neuron arrays, so new deaths cannot hide revivals, and a unit that flickers
    across `never` on the fixed evaluation set is not counted); supported iff the Student-t CI
    of the mean share lies below {100 * REVIVAL_MARGIN:g} %; not supported iff it lies above.
  - MIG stable (and modularity, SAP, DCI disentanglement / completeness / informativeness of the
    latent mean, where logged at both epochs): with Δ = metric(k_end) − metric(trained start) per
    seed and S the mean at the trained start, supported iff the CI low end >
    −{STABLE_MARGIN:g} · S; not supported iff its high end < −{STABLE_MARGIN:g} · S; inconclusive
    when S < {MIN_START_SCORE:g} (nothing to lose). A rise never counts against.
  - collapse under rule r: rise = dead_r(k_end) − dead_r(trained start); supported iff every
    counted condition's CI low end > 0; not supported iff some counted condition's CI high end ≤ 0;
    inconclusive for `window` when fewer than `metrics.window` training samples were seen by
    k_end. A condition is not counted (and is listed under the verdicts) where r is `never` in
    disguise: a frequency rule with N · τ ≤ 1 (N = `data.eval_size`: one firing already meets
    τ), or a rule whose dead rate equals `dead/never` at every epoch of every run.
  - surviving neurons lose semantics: per seed, fall = mean alignment(trained start) − mean
    alignment(k_end) of the same units, the survivors (described at both epochs); supported iff
    the Student-t CI of the mean fall has its low end > 0, not supported iff its high end < 0.
  - trained start: per run, the first epoch at which the model has trained (gap closed ≥
    min_gap_closed) and the squeeze does not bind yet (`eval/l0` < {100 - 100 * L0_TOLERANCE:g} % of
    k at the epoch's end). Epoch 0 would measure a model that is still learning (dead rates fall
    and alignment rises as it learns), not the squeeze; a run without such an epoch is not
    counted in these three claims.
  - resolution: a dead rate moves in steps of Δ = 1 / width, so seeds can repeat a value
    exactly; every interval and test of dead rates floors each group's variance at Δ² / 12 (the
    quantisation noise of that grid), never giving a zero-width interval or p = 0; other
    quantities with no spread at all have no interval (inconclusive).
- Per-neuron semantics (`vaesae.metrics.neuron_semantics`) describe the units alive under the
  run's rule that fire on ≥ {MIN_FIRING} evaluation samples. For unit d and factor v, two
  channels, MI in nats: the value channel, I(c; v) on the samples where d fires, c = the quantile
  bin ({NUM_BINS} bins) of d's activation among its own firing values; and the gate channel,
  I(1[d fires]; v) on all samples. Each is chance-adjusted and normalised,
  s = (I − I0) / (min(H(code), H(v)) − I0), with I0 the mean MI over {NUM_PERMUTATIONS} random
  permutations of the factor labels (so at the unit's own firing frequency);
  nmi(d, v) = the larger of the two (≤ 1, ≈ 0 by chance). A unit that copies a factor scores 1
  at any firing frequency. Alignment = max over factors of nmi; a factor is covered when some
  unit with alignment ≥ `metrics.align_threshold` has it as best factor.
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


def _footnoted(text: str) -> str:
    """A section with the not-at-k and untrained footnotes when one of its rows is marked."""
    if f" {NOT_AT_K_MARK} |" in text or f" {NOT_AT_K_MARK} {UNTRAINED_MARK} |" in text:
        text += f"\n\n{NOT_AT_K_NOTE}"
    return text + f"\n\n{UNTRAINED_NOTE}" if f" {UNTRAINED_MARK} |" in text else text


def _mark_rows(table: str, groups: dict[Condition, list[Run]]) -> str:
    """Mark the rows of a per-condition table (first cell = the label) built without
    `condition_label`; rows already marked stay as they are."""
    lines = table.split("\n")
    for cond, runs in groups.items():
        marked = condition_label(cond, runs)
        if marked != cond.label:
            old = f"| {cond.label} |"
            lines = [f"| {marked} |" + x[len(old) :] if x.startswith(old) else x for x in lines]
    return "\n".join(lines)


def _not_at_k(runs: list[Run]) -> str:
    flagged = [
        [
            r.name,
            r.condition.label,
            f"{r.k_end:g}",
            f"{r.l0_at_k_end:.1f}",
            f"{r.l0_at_k_end / r.k_end - 1:+.0%}",
        ]
        for r in runs
        if r.not_at_k
    ]
    text = ""
    if flagged:
        text += (
            f"\n\nNot at k ({NOT_AT_K_MARK}: `eval/l0` at the reference epoch more than "
            f"{100 * L0_TOLERANCE:g} % off k_end; kept in the means, every claim on its "
            "condition inconclusive):\n\n"
        )
        text += markdown_table(["run", "condition", "k_end", "eval/l0 at k_end", "off by"], flagged)
    unchecked = [r.name for r in runs if math.isnan(r.l0_at_k_end)]
    if unchecked:
        text += f"\n\nNot checked for L0 (no `eval/l0` logged): {', '.join(unchecked)}."
    return text


def _untrained(runs: list[Run], threshold: float) -> str:
    flagged = [
        [
            r.name,
            r.condition.label,
            f"{r.gap_closed_at_k_end:.2f}",
            f"{r.value('eval/recon', r.reference_epoch):.1f}",
        ]
        for r in runs
        if r.untrained
    ]
    text = ""
    if flagged:
        text += (
            f"\n\nUntrained ({UNTRAINED_MARK}: the evaluation reconstruction had closed less than "
            f"min_gap_closed = {threshold:g} of the no-information gap at k_end; kept in the "
            "means, left out of every verdict):\n\n"
        )
        headers = ["run", "condition", "gap closed at k_end", "eval recon at k_end (nats/image)"]
        text += markdown_table(headers, flagged)
    unchecked = [r.name for r in runs if math.isnan(r.gap_closed_at_k_end)]
    if unchecked:
        text += (
            f"\n\nNot checked for training (no `eval/gap_closed` logged): {', '.join(unchecked)}."
        )
    return text


def _runs_section(sweep: Sweep, groups: dict[Condition, list[Run]]) -> str:
    found = [
        [condition_label(c, runs), len(runs), ", ".join(str(r.seed) for r in runs)]
        for c, runs in groups.items()
    ]
    text = markdown_table(["condition", "n", "seeds"], found)
    text += _not_at_k(sweep.included)
    text += _untrained(sweep.included, sweep.min_gap_closed)
    excluded = [
        [r.name, r.status, r.problem or "", f"`{sweep.relative(r.path)}`"] for r in sweep.excluded
    ]
    if excluded:
        text += "\n\nExcluded from every statistic:\n\n"
        text += markdown_table(["run", "status", "reason", "path"], excluded)
    else:
        text += "\n\nNo run was excluded."
    return _footnoted(text)


def _exclusion_lines(groups: dict[Condition, list[Run]], rules: list[str]) -> str:
    """Which rule was not counted where in 'collapse holds under rule', and why."""
    lines = []
    for rule, reasons in rule_exclusions(groups, rules).items():
        by_reason: dict[str, list[str]] = {}
        for cond, why in reasons.items():
            by_reason.setdefault(why, []).append(cond.label)
        for why, labels in by_reason.items():
            where = "every condition" if len(labels) == len(groups) else ", ".join(labels)
            lines.append(f"- `{rule}` in {where}: {why}.")
    if not lines:
        return ""
    head = (
        "Rules not counted as evidence that collapse holds under every rule (they flag the same "
        "neurons as `never` there):"
    )
    return "\n\n" + head + "\n\n" + "\n".join(lines)


def _claims_section(
    claims: list[Claim], groups: dict[Condition, list[Run]], rules: list[str]
) -> str:
    marked = {c.label: condition_label(c, runs) for c, runs in groups.items()}
    claims = [replace(c, scope=marked.get(c.scope, c.scope)) for c in claims]
    rows = [[c.claim, c.scope, c.statistic, c.n, f"**{c.verdict}**"] for c in claims]
    text = markdown_table(["claim", "scope", "statistic", "n", "verdict"], rows)
    if all(len(runs) < 2 for runs in groups.values()):
        text = (
            f"_Fewer than 2 seeds per condition: no CIs or tests, every verdict is "
            f"{INCONCLUSIVE}._\n\n" + text
        )
    return _footnoted(text + _exclusion_lines(groups, rules))


def _verdicts(groups: dict[Condition, list[Run]], rules: list[str], arms: str | None) -> str:
    """The paper's claims on `paper_conditions`; with arms (`arms`: the falsification section's
    summary line), on the baseline's runs, and the arms' summary after them."""
    paper = paper_conditions(groups)
    if not paper:
        text = "_No baseline runs: the paper's claims are tested on the baseline arm only._"
    else:
        text = _claims_section(evaluate_claims(paper, rules), paper, rules)
    if arms is None:
        return text
    head = "Tested on the baseline arm's runs; the other arms are tested in section 7.\n\n"
    return head + text + f"\n\nSection 7: {arms}."


def report_markdown(
    sweep: Sweep, figures: dict[str, Path], out_dir: Path, settings: Settings = DEFAULT_SETTINGS
) -> str:
    """The whole report.md text of a loaded sweep (`settings`: the falsification verdict's)."""
    groups = sweep.conditions()
    runs = sweep.included
    again = (
        f" ({sweep.duplicates} more reached again through overlapping sweep folders, counted once)"
        if sweep.duplicates
        else ""
    )
    header = [
        "# vaesae report",
        "",
        "Sweep: " + ", ".join(f"`{p}`" for p in sweep.roots),
        f"Runs found: {len(sweep.runs)}{again}; complete and included: {len(runs)}; "
        f"excluded: {len(sweep.excluded)}.",
    ]
    sections = ["\n".join(header), "## Runs\n\n" + _runs_section(sweep, groups)]
    if not runs:
        sections.append("_No complete run: nothing to aggregate._")
        return "\n\n".join(sections) + "\n"
    rules = rules_of(runs)
    primary = ", ".join(sorted({r.primary_rule for r in runs}))
    primary_text = (
        f"`{sweep.rule}` for every run, chosen with `--rule {sweep.rule}`"
        if sweep.rule
        else f"each run's own `threshold`, logged as `dead/primary` (this sweep: {primary})"
    )
    width = ", ".join(sorted({str(flatten_config(r.config).get("model.width", "?")) for r in runs}))
    links = "\n\n".join(
        f"![{name}]({os.path.relpath(path, out_dir)})" for name, path in figures.items()
    )
    rows = arm_rows(groups, settings) if has_arms(groups) else []
    sections += [
        "## Protocol\n\n" + _protocol(runs),
        "## Verdicts\n\n" + _verdicts(groups, rules, summary_line(rows) if rows else None),
        f"## 1. Dead neurons at k_end (primary rule: {primary})\n\n"
        + _footnoted(main_table(groups)),
        "## 2. Every dead-neuron rule (dead %, epoch 0 → k_end → final)\n\n"
        + _footnoted(rule_table(groups, rules)),
        "## 3. Shapes3D / dSprites dead-rate ratio (k_end)\n\n" + _footnoted(ratio_table(groups)),
        "## 4. Extended training (k_end vs after the hold epochs)\n\n"
        + _footnoted(recovery_table(groups)),
        "## 5. MIG (stable?)\n\n" + _footnoted(mig_table(groups)),
        "## 6. Per-neuron semantics at k_end\n\n"
        + _footnoted(_mark_rows(semantics_table(groups), groups)),
    ]
    if rows:
        sections.append("## 7. Is the collapse intrinsic?\n\n" + section(rows))
    methods = METHODS_TEXT.format(
        width=width, primary=primary_text, min_gap_closed=sweep.min_gap_closed
    )
    sections += [
        "## What surviving units respond to\n\n" + neuron_section(groups, out_dir),
        "## Figures\n\n" + links,
        "## Methods\n\n" + methods + (methods_text(settings) if rows else ""),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(sweep: Sweep, out_dir: str | Path, settings: Settings = DEFAULT_SETTINGS) -> Path:
    """Write report.md, summary.csv and the figures into `out_dir`; returns report.md's path.
    The per-condition figures show `paper_conditions` (the baseline arm's, when there are arms),
    the arm figures every arm."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = sweep.conditions()
    paper = paper_conditions(groups)
    figures = write_figures(paper, out_dir / "figures", sweep.min_gap_closed) if paper else {}
    if has_arms(groups):
        rows = arm_rows(groups, settings)
        figures |= write_arm_figures(rows, settings.low_dead, out_dir / "figures")
    copy_neuron_pictures(groups, out_dir)
    write_text(out_dir / "summary.csv", summary_csv(sweep.runs, sweep.relative))
    return write_text(out_dir / "report.md", report_markdown(sweep, figures, out_dir, settings))
