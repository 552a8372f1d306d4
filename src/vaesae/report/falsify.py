"""Is the collapse intrinsic? The paper's own falsifier, tested arm by arm.

The paper names what would falsify its claim that the collapse (many dead units at k_end) is
intrinsic to compression: *low dead-neuron rates and preserved local interpretability after the
same neuron reduction, on the same datasets, with a different initial architecture or a
non-adaptive sparsity rule.* Each arm (`python -m vaesae.train arm=NAME`) is such a change. Two
arms are controls and get no verdict: `baseline` (the paper's setup, the comparison for every
criterion) and `no_squeeze` (no sparsity pressure, the same epochs: the reference that attributes
dead units to the squeeze).

Counted runs: a run of an arm counts when it has trained (`Run.untrained` is False) and its
`eval/l0` at the reference epoch is logged and within `L0_TOLERANCE` · k_end of k_end (criterion
a); the others are listed and left out of every figure of this section. `no_squeeze` is never
squeezed, so its trained runs count.

Attribution = dead(arm, k_end) − dead(no_squeeze, same epoch), the no_squeeze run read at the arm
run's reference epoch number (not at its own): a paired-t interval over seeds when every counted
arm seed has a no_squeeze run of that seed, else a Welch interval of the difference of means.

Verdict per arm × dataset × method (× variant), with `Settings` low_dead and quality_margin:

- (a) at k: >= 2 counted runs in the arm and in the baseline;
- (b) dead rate low: the arm's Student-t CI of dead at k_end has high end < low_dead and < the
  baseline's CI low end; clearly fails when its low end >= low_dead or >= the baseline's CI high;
- (c) interpretability preserved: the CI high end of the arm's mean alignment of described (alive)
  units at k_end is >= the baseline's CI low end (not clearly lower), and its mean factors covered
  >= the baseline's; clearly fails when that CI high end < the baseline's CI low end (a shortfall
  of factors covered alone compares means only, and is never clear);
- (d) the model is as good: the Fieller CI of recon(arm) / recon(baseline) (`train/recon` at
  k_end, nats/image) has high end <= 1 + quality_margin (non-inferiority shown); clearly fails
  when its low end > 1 + quality_margin.

*falsifies* when (a)–(d) all hold; *does not falsify* when (a) holds and one of (b)–(d) clearly
fails (the falsifier needs all of them); *inconclusive* otherwise, so always below 2 seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vaesae.report.loading import (
    BASELINE,
    L0_TOLERANCE,
    NO_SQUEEZE,
    NOT_AT_K_MARK,
    UNTRAINED_MARK,
    Condition,
    Run,
    values,
)
from vaesae.report.stats import (
    Interval,
    mean_ci,
    mean_std,
    paired_diff_ci,
    ratio_ci,
    welch_diff_ci,
    welch_test,
)
from vaesae.report.tables import fmt_mean_std, markdown_table

__all__ = [
    "LOW_DEAD",
    "QUALITY_MARGIN",
    "CONTROLS",
    "RECOVER",
    "FALSIFIES",
    "DOES_NOT_FALSIFY",
    "INCONCLUSIVE",
    "Settings",
    "DEFAULT_SETTINGS",
    "Attribution",
    "Check",
    "Verdict",
    "ArmRow",
    "has_arms",
    "paper_conditions",
    "counted",
    "attribution",
    "judge",
    "arm_rows",
    "summary_line",
    "revival_share",
    "recover_lines",
    "section",
    "methods_text",
]

LOW_DEAD = 0.10  # a dead rate whose CI lies below 10 % of the width is "low"
QUALITY_MARGIN = 0.05  # reconstruction may be at most 5 % worse than the baseline's
CONTROLS = (BASELINE, NO_SQUEEZE)
RECOVER = "recover"  # the arm whose remedy acts only in the hold epochs (the paper's claim 3)
FALSIFIES, DOES_NOT_FALSIFY, INCONCLUSIVE = "falsifies", "does not falsify", "inconclusive"


@dataclass(frozen=True)
class Settings:
    """The verdict's thresholds (`--low-dead`, `--quality-margin`), as fractions."""

    low_dead: float = LOW_DEAD
    quality_margin: float = QUALITY_MARGIN


DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True)
class Attribution:
    """dead(arm, k_end) − dead(no_squeeze, same epoch): the interval, how it was made ('paired'
    or 'Welch'; '' without no_squeeze runs), the epochs read and the number of arm runs."""

    interval: Interval
    kind: str
    epochs: tuple[int, ...]
    n: int


@dataclass(frozen=True)
class Check:
    """One criterion: whether it holds, whether it clearly fails, and its numbers."""

    holds: bool
    fails: bool
    text: str

    @property
    def state(self) -> str:
        return "holds" if self.holds else "clearly fails" if self.fails else "open"


@dataclass(frozen=True)
class Verdict:
    """The verdict of one arm × condition, the checks (a)–(d) behind it and why."""

    verdict: str
    checks: tuple[Check, Check, Check, Check]
    reason: str


@dataclass(frozen=True)
class ArmRow:
    """One arm × dataset × method (× variant): its complete runs, those counted, the counted
    baseline and the no_squeeze runs of the same dataset × method × variant, and the verdict
    (None for a control)."""

    cond: Condition
    runs: list[Run]
    counted: list[Run]
    baseline: list[Run]
    control: list[Run]
    verdict: Verdict | None

    @property
    def dead_ci(self) -> Interval:
        """Student-t CI of the mean dead rate at k_end of the counted runs."""
        return mean_ci(values(self.counted, "dead/primary", "reference"))


def has_arms(groups: dict[Condition, list[Run]]) -> bool:
    """The sweep holds more than one arm."""
    return len({cond.arm for cond in groups}) > 1


def paper_conditions(groups: dict[Condition, list[Run]]) -> dict[Condition, list[Run]]:
    """The conditions the paper's claims and per-condition figures are about: every condition of
    a single-arm sweep, else the baseline arm's (the other arms are this section's)."""
    if not has_arms(groups):
        return groups
    return {cond: runs for cond, runs in groups.items() if cond.arm == BASELINE}


def _at_k(run: Run) -> bool:
    """`eval/l0` at the reference epoch is logged and within L0_TOLERANCE · k_end of k_end."""
    return math.isfinite(run.l0_at_k_end) and not run.not_at_k


def counted(runs: list[Run], arm: str) -> list[Run]:
    """The runs that count: the trained ones, and of those outside no_squeeze (never squeezed)
    only the runs at k."""
    trained = [r for r in runs if not r.untrained]
    return trained if arm == NO_SQUEEZE else [r for r in trained if _at_k(r)]


def _dead_at(run: Run, epoch: int) -> float:
    """Dead rate (primary rule) at `epoch`; NaN when the run has no such epoch."""
    return run.value("dead/primary", epoch) if 0 <= epoch <= run.final_epoch else math.nan


def attribution(arm: list[Run], control: list[Run]) -> Attribution:
    """dead(arm run, its reference epoch e) − dead(no_squeeze, epoch e). Paired t over seeds
    (`paired_diff_ci`) when every arm seed has a no_squeeze run of the same seed; otherwise the
    Welch interval of the difference of means (`welch_diff_ci`), the no_squeeze runs read at the
    arm's smallest reference epoch."""
    epochs = tuple(sorted({r.reference_epoch for r in arm}))
    if not arm or not control:
        return Attribution(Interval(math.nan, math.nan, math.nan), "", epochs, len(arm))
    dead = values(arm, "dead/primary", "reference")
    by_seed = {r.seed: r for r in control}
    if all(r.seed in by_seed for r in arm):
        base = [_dead_at(by_seed[r.seed], r.reference_epoch) for r in arm]
        return Attribution(paired_diff_ci(dead, base), "paired", epochs, len(arm))
    base = [_dead_at(r, epochs[0]) for r in control]
    return Attribution(welch_diff_ci(dead, base), "Welch", epochs, len(arm))


def _pct_ci(ci: Interval) -> str:
    """A CI of a fraction, in %."""
    if math.isnan(ci.estimate):
        return "n/a"
    text = f"{100 * ci.estimate:.1f} %"
    return text + (f" [{100 * ci.low:.1f}, {100 * ci.high:.1f}]" if ci.defined else " (no CI)")


def _num_ci(ci: Interval) -> str:
    if math.isnan(ci.estimate):
        return "n/a"
    return f"{ci.estimate:.3f}" + (f" [{ci.low:.3f}, {ci.high:.3f}]" if ci.defined else " (no CI)")


def _check_dead(arm: Interval, base: Interval, low_dead: float) -> Check:
    """(b): holds when arm.high < low_dead and < base.low; clearly fails when arm.low >= low_dead
    or >= base.high."""
    holds = arm.defined and base.defined and arm.high < min(low_dead, base.low)
    fails = arm.defined and (arm.low >= low_dead or (base.defined and arm.low >= base.high))
    return Check(bool(holds), bool(fails), f"{_pct_ci(arm)} vs baseline {_pct_ci(base)}")


def _check_semantics(
    arm: Interval, base: Interval, factors_arm: float, factors_base: float
) -> Check:
    """(c): holds when arm.high >= base.low (alignment not clearly lower) and mean factors
    covered >= the baseline's; clearly fails when arm.high < base.low."""
    both = arm.defined and base.defined
    holds = both and arm.high >= base.low and factors_arm >= factors_base
    fails = both and arm.high < base.low
    text = (
        f"alignment {_num_ci(arm)} vs {_num_ci(base)}; factors covered "
        f"{factors_arm:.1f} vs {factors_base:.1f}"
    )
    return Check(bool(holds), bool(fails), text)


def _check_quality(ratio: Interval, margin: float) -> Check:
    """(d): holds when ratio.high <= 1 + margin; clearly fails when ratio.low > 1 + margin."""
    holds = ratio.defined and ratio.high <= 1 + margin
    fails = ratio.defined and ratio.low > 1 + margin
    text = "n/a" if math.isnan(ratio.estimate) else f"recon ratio {ratio.estimate:.3f}"
    if ratio.defined:
        text += f" [{ratio.low:.3f}, {ratio.high:.3f}]"
    return Check(bool(holds), bool(fails), f"{text} vs ≤ {1 + margin:g}")


_NAMES = ("(a) at k", "(b) dead rate low", "(c) interpretability", "(d) quality")


def judge(arm: list[Run], baseline: list[Run], n_runs: int, settings: Settings) -> Verdict:
    """The verdict of an arm's counted runs against the baseline's counted runs (`n_runs`: the
    arm's complete runs, counted or not), by the rule of the module docstring."""
    enough = len(arm) >= 2 and len(baseline) >= 2
    at_k = Check(
        enough,
        False,
        f"{len(arm)} of {n_runs} runs trained and at k (baseline {len(baseline)})",
    )

    def ci(runs: list[Run], column: str) -> Interval:
        return mean_ci(values(runs, column, "reference"))

    factors = [
        mean_std(values(r, "semantics/factors_covered", "reference"))[0] for r in (arm, baseline)
    ]
    recon = [values(runs, "train/recon", "reference") for runs in (arm, baseline)]
    checks = (
        at_k,
        _check_dead(ci(arm, "dead/primary"), ci(baseline, "dead/primary"), settings.low_dead),
        _check_semantics(
            ci(arm, "semantics/mean_alignment"),
            ci(baseline, "semantics/mean_alignment"),
            *factors,
        ),
        _check_quality(ratio_ci(*recon), settings.quality_margin),
    )
    failed = [name for name, c in zip(_NAMES, checks, strict=True) if c.fails]
    open_ = [name for name, c in zip(_NAMES, checks, strict=True) if not c.holds]
    if not enough:
        return Verdict(INCONCLUSIVE, checks, "fewer than 2 counted seeds in the arm or baseline")
    if failed:
        return Verdict(DOES_NOT_FALSIFY, checks, "clearly fails: " + ", ".join(failed))
    if not open_:
        return Verdict(FALSIFIES, checks, "(a)–(d) all hold")
    return Verdict(INCONCLUSIVE, checks, "not shown: " + ", ".join(open_))


def arm_rows(groups: dict[Condition, list[Run]], settings: Settings) -> list[ArmRow]:
    """One row per arm condition, in the groups' order, each judged against the baseline of its
    dataset × method × variant (controls: no verdict)."""
    rows = []
    for cond, runs in groups.items():
        base = counted(groups.get(cond._replace(arm=BASELINE), []), BASELINE)
        control = counted(groups.get(cond._replace(arm=NO_SQUEEZE), []), NO_SQUEEZE)
        mine = counted(runs, cond.arm)
        verdict = None if cond.arm in CONTROLS else judge(mine, base, len(runs), settings)
        rows.append(ArmRow(cond, runs, mine, base, control, verdict))
    return rows


def _where(cond: Condition) -> str:
    """'dataset / method' (with the variant), without the arm."""
    return cond._replace(arm="").label


def summary_line(rows: list[ArmRow]) -> str:
    """'intrinsic-collapse claim: falsified by ARM on DATASET / METHOD[, ...]' when some arm
    falsifies; '... not falsified by any arm' when every arm's verdict is 'does not falsify';
    '... inconclusive' otherwise (no arm besides the controls, or some verdict inconclusive)."""
    judged = [r for r in rows if r.verdict is not None]
    hits = [f"{r.cond.arm} on {_where(r.cond)}" for r in judged if r.verdict.verdict == FALSIFIES]
    if hits:
        return "intrinsic-collapse claim: falsified by " + ", ".join(hits)
    if judged and all(r.verdict.verdict == DOES_NOT_FALSIFY for r in judged):
        return "intrinsic-collapse claim: not falsified by any arm"
    return "intrinsic-collapse claim: inconclusive"


def revival_share(run: Run) -> float:
    """Of the units dead at the reference epoch (k_end) under the primary rule, the fraction
    alive at the final epoch: |dead_ref ∧ ¬dead_final| / |dead_ref|, from the per-neuron dead
    masks (`neurons/epoch_XXX.npz`). NaN without the arrays, without hold epochs, or with no
    unit dead at k_end."""
    key = f"dead_{run.primary_rule}"
    if run.final_epoch <= run.reference_epoch:
        return math.nan
    try:
        ref = run.neurons(run.reference_epoch)[key].astype(bool)
        final = run.neurons(run.final_epoch)[key].astype(bool)
    except (KeyError, OSError):
        return math.nan
    dead = int(ref.sum())
    return float((ref & ~final).sum()) / dead if dead else math.nan


def recover_lines(rows: list[ArmRow]) -> list[str]:
    """The paper's claim 3 (units dead at k_end stay dead) under the `recover` remedy, per
    condition: the mean revival share over the counted seeds with its Student-t CI; 'revives
    dead units' when the CI's low end > 0, 'no revival detected' when it is not."""
    out = []
    for row in rows:
        if row.cond.arm != RECOVER:
            continue
        share = mean_ci([revival_share(r) for r in row.counted])
        hold = min((r.final_epoch - r.reference_epoch for r in row.counted), default=0)
        if not share.defined:
            answer = "inconclusive (fewer than 2 seeds with units dead at k_end)"
        else:
            answer = "revives dead units" if share.low > 0 else "no revival detected"
        out.append(
            f"- claim 3 (units dead at k_end stay dead), {_where(row.cond)}: the remedy revives "
            f"{_pct_ci(share)} of the units dead at k_end during {hold} hold epoch(s) "
            f"(n = {len(row.counted)}): **{answer}**."
        )
    return out


def _pp(ci: Interval) -> str:
    if math.isnan(ci.estimate):
        return "n/a"
    text = f"{100 * ci.estimate:+.1f} pp"
    return text + (f" [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]" if ci.defined else "")


def _vs_baseline(row: ArmRow) -> tuple[str, str]:
    """(Δ dead at k_end with Welch p, Δ recon as (ratio − 1) with its Fieller CI) vs baseline."""
    if row.cond.arm == BASELINE or not row.baseline or not row.counted:
        return "–", "–"
    dead = welch_test(
        values(row.counted, "dead/primary", "reference"),
        values(row.baseline, "dead/primary", "reference"),
    )
    p = "" if math.isnan(dead.p_value) else f" (p = {dead.p_value:.3g})"
    ratio = ratio_ci(
        values(row.counted, "train/recon", "reference"),
        values(row.baseline, "train/recon", "reference"),
    )
    recon = "n/a"
    if not math.isnan(ratio.estimate):
        recon = f"{100 * (ratio.estimate - 1):+.1f} %"
        if ratio.defined:
            recon += f" [{100 * (ratio.low - 1):+.1f}, {100 * (ratio.high - 1):+.1f}]"
    return f"{100 * dead.difference:+.1f} pp{p}", recon


def _attribution_cell(row: ArmRow) -> str:
    if row.cond.arm == NO_SQUEEZE:
        return "–"
    att = attribution(row.counted, row.control)
    if not att.kind:
        return "n/a (no no_squeeze runs)"
    first, last = att.epochs[0], att.epochs[-1]
    epochs = f"epoch {first}" if first == last else f"epochs {first}–{last}"
    return f"{_pp(att.interval)} ({att.kind}, {epochs})"


def _table(rows: list[ArmRow]) -> str:
    lines = []
    for row in rows:
        runs, mine = row.runs, row.counted
        flag = f" {NOT_AT_K_MARK}" if any(r.not_at_k for r in runs) else ""
        flag += f" {UNTRAINED_MARK}" if any(r.untrained for r in runs) else ""
        d_dead, d_recon = _vs_baseline(row)
        lines.append(
            [
                row.cond.arm,
                _where(row.cond),
                f"{len(mine)}" if len(mine) == len(runs) else f"{len(mine)} of {len(runs)}",
                fmt_mean_std(values(runs, "eval/l0", "reference")) + flag,
                fmt_mean_std(values(mine, "dead/primary", "reference"), 100),
                fmt_mean_std(values(mine, "dead/primary", "final"), 100),
                d_dead,
                _attribution_cell(row),
                fmt_mean_std(values(mine, "train/recon", "reference"), digits=2),
                d_recon,
                fmt_mean_std(values(mine, "mig/latent", "reference"), digits=3),
                fmt_mean_std(values(mine, "semantics/mean_alignment", "reference"), digits=3),
                fmt_mean_std(values(mine, "semantics/factors_covered", "reference")),
                fmt_mean_std(values(mine, "neurons/revived", "final")),
            ]
        )
    headers = [
        "arm",
        "condition",
        "n",
        "L0 at k_end",
        "dead % k_end",
        "dead % final",
        "Δ dead vs baseline",
        "attribution: − no_squeeze [95 % CI]",
        "recon k_end (nats/image)",
        "Δ recon vs baseline [95 % CI]",
        "MIG latent k_end",
        "alignment (alive) k_end",
        "factors covered",
        "revived in hold",
    ]
    return markdown_table(headers, lines)


def _verdict_table(rows: list[ArmRow]) -> str:
    lines = [
        [
            row.cond.arm,
            _where(row.cond),
            *(f"{c.state}: {c.text}" for c in row.verdict.checks),
            f"**{row.verdict.verdict}**",
            row.verdict.reason,
        ]
        for row in rows
        if row.verdict is not None
    ]
    if not lines:
        return "_No arm besides the controls (baseline, no_squeeze): nothing to judge._"
    return markdown_table(["arm", "condition", *_NAMES, "verdict", "why"], lines)


def _left_out(rows: list[ArmRow]) -> str:
    """The runs not counted, with their L0 and the share of the gap they closed."""
    out = [
        f"{r.name} (L0 {fmt_mean_std([r.l0_at_k_end])} at k_end {r.k_end:g}"
        + (f"; {UNTRAINED_MARK} gap closed {r.gap_closed_at_k_end:.2f}" if r.untrained else "")
        + ")"
        for row in rows
        for r in row.runs
        if all(r is not c for c in row.counted)
    ]
    if not out:
        return ""
    return (
        f"\n\nLeft out, not at k (`eval/l0` at k_end missing or more than "
        f"{100 * L0_TOLERANCE:g} % off k_end) or untrained ({UNTRAINED_MARK}: less than "
        f"`min_gap_closed` of the no-information gap closed at k_end): " + ", ".join(out) + "."
    )


def section(rows: list[ArmRow]) -> str:
    """The markdown body of 'Is the collapse intrinsic?' from a sweep's `arm_rows`."""
    text = f"**{summary_line(rows)}**\n\n" + _verdict_table(rows)
    recover = recover_lines(rows)
    if recover:
        text += "\n\n" + "\n".join(recover)
    text += (
        "\n\nPer arm, over the counted seeds (mean ± std; L0 over every run, "
        f"{NOT_AT_K_MARK} when one is not at k, {UNTRAINED_MARK} when one is untrained). "
        "Attribution reads no_squeeze at the arm's own "
        "reference epoch (the epoch named), not at no_squeeze's:\n\n" + _table(rows)
    )
    return text + _left_out(rows)


def methods_text(settings: Settings) -> str:
    """The Methods entry of the falsification section: the verdict rule with its settings."""
    low, margin = f"{100 * settings.low_dead:g} %", f"{100 * settings.quality_margin:g} %"
    bound = f"1 + quality_margin = {1 + settings.quality_margin:g}"
    return f"""\
- Is the collapse intrinsic? (the paper's falsifier: low dead-neuron rates and preserved local
  interpretability after the same neuron reduction, on the same datasets, with another initial
  architecture or a non-adaptive sparsity rule). Each arm (`arm.name`; runs without one are
  `baseline`) is compared with the baseline of the same dataset × method; `baseline` and
  `no_squeeze` are controls without a verdict. The paper's claims above are tested on the
  baseline arm only. Counted runs: trained (gap closed at k_end ≥ `min_gap_closed`) and, except
  in no_squeeze, `eval/l0` at the reference epoch logged and within {100 * L0_TOLERANCE:g} % of
  k_end; the others are listed and left out of the section's statistics and figures.
  - attribution = dead(arm, k_end) − dead(no_squeeze, same epoch), the no_squeeze run read at the
    arm run's own reference epoch number: paired t over seeds when every arm seed has a
    no_squeeze run of that seed, else Welch, d ± t(df) · √(s_a²/n_a + s_b²/n_b) with
    Welch–Satterthwaite df. Δ dead vs baseline: Welch t-test; Δ recon: Fieller CI of the ratio.
  - settings: low_dead = {low}, quality_margin = {margin} (`--low-dead`, `--quality-margin`).
  - (a) at k: ≥ 2 counted runs in the arm and in the baseline.
  - (b) dead rate low: the CI of the arm's dead rate at k_end has high end < {low} and < the
    baseline's CI low end; clearly fails when its low end ≥ {low} or ≥ the baseline's CI high end.
  - (c) interpretability preserved: the CI high end of the arm's mean alignment of described
    (alive) units at k_end (`semantics/mean_alignment`) is ≥ the baseline's CI low end, and its
    mean factors covered ≥ the baseline's; clearly fails when that CI high end < the baseline's
    CI low end (a shortfall of factors covered alone, a comparison of means, is never clear).
  - (d) the model is as good: the Fieller CI of recon(arm) / recon(baseline) (`train/recon` at
    k_end, nats/image) has high end ≤ {bound} (non-inferiority shown); clearly fails
    when its low end > {bound}.
  - falsifies: (a)–(d) all hold; does not falsify: (a) holds and one of (b)–(d) clearly fails;
    inconclusive: otherwise (always with fewer than 2 counted seeds).
  - summary: falsified by the arms that falsify; not falsified by any arm when every arm does
    not falsify; otherwise inconclusive.
  - `recover` (claim 3): per seed, share = |dead at k_end ∧ alive at the final epoch| / |dead at
    k_end| from the primary rule's per-neuron dead masks; mean with a Student-t CI; "revives dead
    units" when its low end > 0.
"""
