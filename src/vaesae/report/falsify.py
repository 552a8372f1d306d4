"""Is the collapse intrinsic? The paper's own falsifier, tested arm by arm, under two criteria.

The paper names what would falsify its claim that the collapse (many dead units at k_end) is
intrinsic to compression: *low dead-neuron rates and preserved local interpretability after the
same neuron reduction, on the same datasets, with a different initial architecture or a
non-adaptive sparsity rule.* Each arm (`python -m vaesae.train arm=NAME`) is such a change.
Controls get no verdict: `baseline` (the paper's setup, the comparison for every criterion) and
the no-pressure controls (`no_squeeze`, and any arm trained without sparsity pressure, config
`arm.pressure` = none, such as `center_no_squeeze`): the same epochs without a squeeze.

Counted runs: a run of an arm counts when it has trained (`Run.untrained` is False) and its
`eval/l0` at the reference epoch is logged and within `L0_TOLERANCE` · k_end of k_end (criterion
a); the others are listed and left out of every figure of this section. A no-pressure control is
never squeezed, so its trained runs count.

Attribution = dead(arm, k_end) − dead(its own control, same epoch): the control is the arm's
config `arm.control` (a control of the same architecture, e.g. `center_no_squeeze` for `center`),
else `no_squeeze` (`control_runs`: of the same method, else of the other, since a no-pressure
control's Top-k and L1 runs are the same model); the control run is read at the arm run's
reference epoch number: a paired-t interval over seeds when every counted arm seed has a control
run of that seed, else Welch.

Two verdicts per arm × dataset × method (× variant), with `Settings` low_dead, quality_margin and
compression_margin; (c) and (d) are held to the same standard (they hold unless the arm is clearly
worse):

- (a) at k: >= 2 counted runs in the arm and in the baseline (and, for the compression
  criterion, in the control);
- (b) dead rate low (the paper's literal criterion): the arm's Student-t CI of dead at k_end has
  high end < low_dead and < the baseline's CI low end; clearly fails when its low end >=
  low_dead or >= the baseline's CI high;
- (b') no added deaths (the compression criterion): the attribution's CI high end <
  compression_margin; clearly fails when its low end > compression_margin;
- (c) interpretability preserved: clearly fails when the CI high end of the arm's mean alignment
  of described (alive) units at k_end < the baseline's CI low end; holds otherwise (factors
  covered are shown, a comparison of means only);
- (d) the model is as good: clearly fails when the Fieller CI of recon(arm) / recon(baseline)
  (`eval/recon` at k_end where logged, else `train/recon`; nats/image) has its low end >
  1 + quality_margin; holds otherwise.

*falsifies* when (a), (b) or (b'), (c) and (d) all hold; *does not falsify* when (a) holds and
one of the others clearly fails; *inconclusive* otherwise, so always below 2 seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vaesae.report.claims import revival_ci
from vaesae.report.loading import (
    BASELINE,
    L0_TOLERANCE,
    NO_SQUEEZE,
    NOT_AT_K_MARK,
    UNTRAINED_MARK,
    Condition,
    Run,
    dead_step,
    flatten_config,
    revival_share,
    squeezed,
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
    "recover_lines",
    "is_control",
    "control_arm",
    "COMPRESSION_MARGIN",
    "section",
    "methods_text",
]

LOW_DEAD = 0.10  # a dead rate whose CI lies below 10 % of the width is "low"
QUALITY_MARGIN = 0.05  # reconstruction may be at most 5 % worse than the baseline's
COMPRESSION_MARGIN = 0.02  # the squeeze "adds no deaths" when it adds < 2 pp of the width
CONTROLS = (BASELINE, NO_SQUEEZE)
RECOVER = "recover"  # the arm whose remedy acts only in the hold epochs (the paper's claim 3)
FALSIFIES, DOES_NOT_FALSIFY, INCONCLUSIVE = "falsifies", "does not falsify", "inconclusive"


@dataclass(frozen=True)
class Settings:
    """The verdicts' thresholds (`--low-dead`, `--quality-margin`, `--compression-margin`), as
    fractions."""

    low_dead: float = LOW_DEAD
    quality_margin: float = QUALITY_MARGIN
    compression_margin: float = COMPRESSION_MARGIN


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
    """One verdict of one arm × condition, the checks (a)–(d) behind it and why."""

    verdict: str
    checks: tuple[Check, Check, Check, Check]
    reason: str


@dataclass(frozen=True)
class ArmRow:
    """One arm × dataset × method (× variant): its complete runs, those counted, the counted
    baseline and the counted runs of its own no-pressure control (`control_arm`) of the same
    dataset × method × variant, and its two verdicts (None for a control): `verdict` by the
    paper's literal criterion, `compression` by the compression criterion."""

    cond: Condition
    runs: list[Run]
    counted: list[Run]
    baseline: list[Run]
    control: list[Run]
    verdict: Verdict | None
    compression: Verdict | None = None
    control_arm: str = NO_SQUEEZE

    @property
    def dead_ci(self) -> Interval:
        """Student-t CI of the mean dead rate at k_end of the counted runs."""
        dead = values(self.counted, "dead/primary", "reference")
        return mean_ci(dead, resolution=dead_step(self.counted))


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


def is_control(runs: list[Run], arm: str) -> bool:
    """`baseline`, or a no-pressure control: `no_squeeze` or any arm whose runs train without
    sparsity pressure (config `arm.pressure` = none, e.g. `center_no_squeeze`)."""
    return arm in CONTROLS or any(not squeezed(arm, r.config) for r in runs)


def control_arm(runs: list[Run]) -> str:
    """The no-pressure control an arm's attribution reads: its config's `arm.control`, else
    `no_squeeze` (the control of every arm that keeps the baseline's architecture)."""
    names = {flatten_config(r.config).get("arm.control") for r in runs} - {None}
    return str(names.pop()) if len(names) == 1 else NO_SQUEEZE


def counted(runs: list[Run], arm: str) -> list[Run]:
    """The runs that count: the trained ones, and of those outside the no-pressure controls
    (never squeezed) only the runs at k."""
    trained = [r for r in runs if not r.untrained]
    if arm != BASELINE and is_control(runs, arm):
        return trained
    return [r for r in trained if _at_k(r)]


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
        step = dead_step([*arm, *control])
        return Attribution(paired_diff_ci(dead, base, resolution=step), "paired", epochs, len(arm))
    base = [_dead_at(r, epochs[0]) for r in control]
    step = dead_step([*arm, *control])
    return Attribution(welch_diff_ci(dead, base, resolution=step), "Welch", epochs, len(arm))


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
    """(c): holds unless the arm's alignment is clearly lower (its CI high end < the baseline's
    CI low end), which clearly fails; factors covered are shown, a comparison of means only."""
    both = arm.defined and base.defined
    fails = both and arm.high < base.low
    text = (
        f"alignment {_num_ci(arm)} vs {_num_ci(base)}; factors covered "
        f"{factors_arm:.1f} vs {factors_base:.1f}"
    )
    return Check(bool(both and not fails), bool(fails), text)


def _check_quality(ratio: Interval, margin: float) -> Check:
    """(d): holds unless the model is clearly worse (the CI low end of recon(arm) /
    recon(baseline) > 1 + margin), which clearly fails: the same standard of evidence as (c)."""
    fails = ratio.defined and ratio.low > 1 + margin
    text = "n/a" if math.isnan(ratio.estimate) else f"recon ratio {ratio.estimate:.3f}"
    if ratio.defined:
        text += f" [{ratio.low:.3f}, {ratio.high:.3f}]"
    return Check(bool(ratio.defined and not fails), bool(fails), f"{text} vs ≤ {1 + margin:g}")


def _check_compression(att: Interval, margin: float, control: str) -> Check:
    """(b'): holds when the squeeze adds no deaths beyond the arm's own no-pressure control
    (attribution CI high end < margin); clearly fails when its low end > margin."""
    holds = att.defined and att.high < margin
    fails = att.defined and att.low > margin
    return Check(bool(holds), bool(fails), f"{_pp(att)} vs {control}, < {100 * margin:g} pp")


_NAMES = ("(a) at k", "(b) dead rate low", "(c) interpretability", "(d) quality")
_COMPRESSION_NAMES = ("(a) at k", "(b') no added deaths", "(c) interpretability", "(d) quality")


def _recon_column(runs: list[Run]) -> str:
    """`eval/recon` (decoded from the posterior mean on the fixed evaluation set) where every
    run logs it, else the training epoch's `train/recon`."""
    return "eval/recon" if runs and all("eval/recon" in r.columns for r in runs) else "train/recon"


def _decide(
    checks: tuple[Check, Check, Check, Check], names: tuple[str, ...], enough: bool
) -> Verdict:
    failed = [name for name, c in zip(names, checks, strict=True) if c.fails]
    open_ = [name for name, c in zip(names, checks, strict=True) if not c.holds]
    if not enough:
        return Verdict(INCONCLUSIVE, checks, "fewer than 2 counted seeds in the arm or baseline")
    if failed:
        return Verdict(DOES_NOT_FALSIFY, checks, "clearly fails: " + ", ".join(failed))
    if not open_:
        return Verdict(FALSIFIES, checks, "(a)–(d) all hold")
    return Verdict(INCONCLUSIVE, checks, "not shown: " + ", ".join(open_))


def judge(
    arm: list[Run],
    baseline: list[Run],
    n_runs: int,
    settings: Settings,
    control: list[Run] | None = None,
    control_name: str = NO_SQUEEZE,
) -> tuple[Verdict, Verdict]:
    """The two verdicts of an arm's counted runs (`n_runs`: its complete runs, counted or not)
    against the baseline's counted runs and its own no-pressure control's: the paper's literal
    criterion and the compression criterion, by the rules of the module docstring."""
    enough = len(arm) >= 2 and len(baseline) >= 2
    at_k = Check(
        enough,
        False,
        f"{len(arm)} of {n_runs} runs trained and at k (baseline {len(baseline)})",
    )

    def ci(runs: list[Run], column: str) -> Interval:
        step = dead_step(runs) if column.startswith("dead/") else 0.0
        return mean_ci(values(runs, column, "reference"), resolution=step)

    factors = [
        mean_std(values(r, "semantics/factors_covered", "reference"))[0] for r in (arm, baseline)
    ]
    column = _recon_column([*arm, *baseline])
    recon_arm, recon_base = (values(runs, column, "reference") for runs in (arm, baseline))
    semantics = _check_semantics(
        ci(arm, "semantics/mean_alignment"), ci(baseline, "semantics/mean_alignment"), *factors
    )
    quality = _check_quality(ratio_ci(recon_arm, recon_base), settings.quality_margin)
    dead = _check_dead(ci(arm, "dead/primary"), ci(baseline, "dead/primary"), settings.low_dead)
    literal = _decide((at_k, dead, semantics, quality), _NAMES, enough)
    att = attribution(arm, control or [])
    added = _check_compression(att.interval, settings.compression_margin, control_name)
    enough_control = enough and len(control or []) >= 2
    compression = _decide((at_k, added, semantics, quality), _COMPRESSION_NAMES, enough_control)
    if enough and not enough_control:
        compression = Verdict(
            INCONCLUSIVE, compression.checks, f"fewer than 2 counted {control_name} runs"
        )
    return literal, compression


def control_runs(groups: dict[Condition, list[Run]], cond: Condition, name: str) -> list[Run]:
    """The runs of control arm `name` for `cond`: those of the same dataset × method × variant,
    else those of another method. A no-pressure control trains no sparsity rule (k = width,
    lambda = 0), so its Top-k and L1 runs are the same model and a sweep may run it under one
    method only (`arm.methods`); it then serves every method."""
    same = groups.get(cond._replace(arm=name), [])
    if same:
        return same
    others = [
        runs
        for c, runs in groups.items()
        if c._replace(method=cond.method) == cond._replace(arm=name) and is_control(runs, name)
    ]
    return others[0] if others else []


def arm_rows(groups: dict[Condition, list[Run]], settings: Settings) -> list[ArmRow]:
    """One row per arm condition, in the groups' order, each judged against the baseline of its
    dataset × method × variant (controls: no verdict)."""
    rows = []
    for cond, runs in groups.items():
        base = counted(groups.get(cond._replace(arm=BASELINE), []), BASELINE)
        name = control_arm(runs)
        control = counted(control_runs(groups, cond, name), name)
        mine = counted(runs, cond.arm)
        if is_control(runs, cond.arm):
            rows.append(ArmRow(cond, runs, mine, base, control, None, None, name))
            continue
        literal, compression = judge(mine, base, len(runs), settings, control, name)
        rows.append(ArmRow(cond, runs, mine, base, control, literal, compression, name))
    return rows


def _where(cond: Condition) -> str:
    """'dataset / method' (with the variant), without the arm."""
    return cond._replace(arm="").label


def _criterion_line(rows: list[ArmRow], pick: str) -> str:
    judged = [r for r in rows if getattr(r, pick) is not None]
    verdicts = [(r, getattr(r, pick).verdict) for r in judged]
    hits = [f"{r.cond.arm} on {_where(r.cond)}" for r, v in verdicts if v == FALSIFIES]
    if hits:
        return "falsified by " + ", ".join(hits)
    if verdicts and all(v == DOES_NOT_FALSIFY for _, v in verdicts):
        return "not falsified by any arm"
    return "inconclusive"


def summary_line(rows: list[ArmRow]) -> str:
    """Per criterion, 'falsified by ARM on DATASET / METHOD[, ...]' when some arm falsifies, 'not
    falsified by any arm' when every arm's verdict is 'does not falsify', 'inconclusive'
    otherwise (no arm besides the controls, or some verdict inconclusive)."""
    return (
        f"intrinsic-collapse claim, literal criterion: {_criterion_line(rows, 'verdict')}; "
        f"compression criterion: {_criterion_line(rows, 'compression')}"
    )


def recover_lines(rows: list[ArmRow]) -> list[str]:
    """The paper's claim 3 (units dead at k_end stay dead) under the `recover` remedy, per
    condition: the mean revival share (`loading.revival_share`) over the counted seeds with its
    Student-t CI, and paired against the baseline's own revival (same seeds): 'the remedy
    revives more' when the paired CI of recover − baseline has its low end > 0."""
    out = []
    for row in rows:
        if row.cond.arm != RECOVER:
            continue
        mine = {r.seed: revival_share(r) for r in row.counted}
        base = {r.seed: revival_share(r) for r in row.baseline}
        share, base_share = revival_ci(list(mine.values())), revival_ci(list(base.values()))
        hold = min((r.final_epoch - r.reference_epoch for r in row.counted), default=0)
        pairs = [(x[0], base[seed][0]) for seed, x in mine.items() if seed in base]
        diff = paired_diff_ci([a for a, _ in pairs], [b for _, b in pairs])
        if not diff.defined:
            answer = "inconclusive (fewer than 2 seeds paired with the baseline)"
        else:
            answer = (
                "the remedy revives more than the baseline"
                if diff.low > 0
                else "no revival beyond the baseline's detected"
            )
        out.append(
            f"- claim 3 (units dead at k_end stay dead), {_where(row.cond)}: over {hold} hold "
            f"epoch(s) the remedy revives {_pct_ci(share)} of the units dead at k_end "
            f"(n = {len(row.counted)}), the baseline {_pct_ci(base_share)}; recover − baseline "
            f"(paired by seed, n = {len(pairs)}): {_pp(diff)}: **{answer}**."
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
        resolution=dead_step([*row.counted, *row.baseline]),
    )
    p = "" if math.isnan(dead.p_value) else f" (p = {dead.p_value:.3g})"
    column = _recon_column([*row.counted, *row.baseline])
    ratio = ratio_ci(
        values(row.counted, column, "reference"), values(row.baseline, column, "reference")
    )
    recon = "n/a"
    if not math.isnan(ratio.estimate):
        recon = f"{100 * (ratio.estimate - 1):+.1f} %"
        if ratio.defined:
            recon += f" [{100 * (ratio.low - 1):+.1f}, {100 * (ratio.high - 1):+.1f}]"
    return f"{100 * dead.difference:+.1f} pp{p}", recon


def _attribution_cell(row: ArmRow) -> str:
    if row.cond.arm != BASELINE and is_control(row.runs, row.cond.arm):
        return "–"
    att = attribution(row.counted, row.control)
    if not att.kind:
        return f"n/a (no {row.control_arm} runs)"
    first, last = att.epochs[0], att.epochs[-1]
    epochs = f"epoch {first}" if first == last else f"epochs {first}–{last}"
    return f"{_pp(att.interval)} vs {row.control_arm} ({att.kind}, {epochs})"


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
                fmt_mean_std(values(mine, _recon_column(mine), "reference"), digits=2),
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
        "attribution: − own control [95 % CI]",
        "recon k_end (nats/image)",
        "Δ recon vs baseline [95 % CI]",
        "MIG latent k_end",
        "alignment (alive) k_end",
        "factors covered",
        "revived in hold",
    ]
    return markdown_table(headers, lines)


def _verdict_table(rows: list[ArmRow], pick: str, names: tuple[str, ...]) -> str:
    lines = [
        [
            row.cond.arm,
            _where(row.cond),
            *(f"{c.state}: {c.text}" for c in getattr(row, pick).checks),
            f"**{getattr(row, pick).verdict}**",
            getattr(row, pick).reason,
        ]
        for row in rows
        if getattr(row, pick) is not None
    ]
    if not lines:
        return "_No arm besides the controls (baseline, no-pressure ones): nothing to judge._"
    return markdown_table(["arm", "condition", *names, "verdict", "why"], lines)


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
    text = f"**{summary_line(rows)}**\n\n"
    text += "The paper's literal criterion (an absolutely low dead rate):\n\n"
    text += _verdict_table(rows, "verdict", _NAMES)
    text += (
        "\n\nThe compression criterion (the squeeze adds no deaths beyond the arm's own "
        'no-pressure control; it falsifies "the collapse is intrinsic to compression"):\n\n'
    )
    text += _verdict_table(rows, "compression", _COMPRESSION_NAMES)
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
    """The Methods entry of the falsification section: the verdict rules with their settings."""
    low, margin = f"{100 * settings.low_dead:g} %", f"{100 * settings.quality_margin:g} %"
    added = f"{100 * settings.compression_margin:g} pp"
    bound = f"1 + quality_margin = {1 + settings.quality_margin:g}"
    return f"""\
- Is the collapse intrinsic? (the paper's falsifier: low dead-neuron rates and preserved local
  interpretability after the same neuron reduction, on the same datasets, with another initial
  architecture or a non-adaptive sparsity rule). Each arm (`arm.name`; runs without one are
  `baseline`) is compared with the baseline of the same dataset × method; `baseline` and the
  no-pressure controls (`no_squeeze`, and arms with `arm.pressure` = none) get no verdict. The
  paper's claims above are tested on the baseline arm only. Counted runs: trained (gap closed at
  k_end ≥ `min_gap_closed`) and, except in a no-pressure control, `eval/l0` at the reference
  epoch logged and within {100 * L0_TOLERANCE:g} % of k_end; the others are listed and left out
  of the section's statistics and figures.
  - attribution = dead(arm, k_end) − dead(own control, same epoch): the control is the arm's
    `arm.control` (a no-pressure run of the same architecture) or else `no_squeeze`, named in
    the table; a control run under one method only serves both (with k = width and lambda = 0
    its Top-k and L1 runs are the same model); it is read at the arm run's own reference epoch
    number: paired t over seeds when every arm seed has a control run of that seed, else Welch,
    d ± t(df) · √(s_a²/n_a + s_b²/n_b) with Welch–Satterthwaite df. Δ dead vs baseline: Welch
    t-test; Δ recon: Fieller CI of the ratio.
  - settings: low_dead = {low}, quality_margin = {margin}, compression_margin = {added}
    (`--low-dead`, `--quality-margin`, `--compression-margin`).
  - two verdicts per arm: the paper's literal criterion, (a) (b) (c) (d), and the compression
    criterion, (a) (b') (c) (d); the first asks for an absolutely low dead rate, which an arm can
    meet only if it also removes the deaths that happen without any squeeze; the second asks
    whether the squeeze itself kills units, and falsifies "the collapse is intrinsic to
    compression".
  - (a) at k: ≥ 2 counted runs in the arm and in the baseline (and ≥ 2 in the control for the
    compression criterion).
  - (b) dead rate low: the CI of the arm's dead rate at k_end has high end < {low} and < the
    baseline's CI low end; clearly fails when its low end ≥ {low} or ≥ the baseline's CI high end.
  - (b') no added deaths: the attribution's CI high end < {added}; clearly fails when its low
    end > {added}.
  - (c) interpretability preserved and (d) the model is as good are held to the same standard:
    each holds unless the arm is clearly worse, which clearly fails. (c): the CI high end of the
    arm's mean alignment of described (alive) units at k_end (`semantics/mean_alignment`) is
    below the baseline's CI low end. (d): the Fieller CI of recon(arm) / recon(baseline)
    (`eval/recon` at k_end where every run logs it, else `train/recon`; nats/image) has its low
    end > {bound}.
  - falsifies: all four hold; does not falsify: (a) holds and another clearly fails;
    inconclusive: otherwise (always with fewer than 2 counted seeds).
  - summary, per criterion: falsified by the arms that falsify; not falsified by any arm when
    every arm does not falsify; otherwise inconclusive.
  - `recover` (claim 3): per seed, share = |dead at k_end ∧ firing on ≥ the revival frequency at
    the final epoch| / |dead at k_end| (as the claim "extended training revives nothing");
    recover − baseline paired by seed, with a paired-t CI; "the remedy revives more than the
    baseline" when its low end > 0.
"""
