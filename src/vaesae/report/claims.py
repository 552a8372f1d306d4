"""The paper's claims, each tested on the sweep with an explicit verdict rule.

Verdicts are "supported", "not supported" or "inconclusive" (under this sweep's protocol), at
level ALPHA = 0.05 and with 95 % t intervals over seeds (`vaesae.report.stats`: Student-t for a
mean, paired t for per-seed differences, Fieller–Welch for a ratio). "Primary rule" is each run's
own rule, or the one chosen with `--rule`. Rules:

- dead rate matches the paper (per dataset × method): supported when the paper's mean lies inside
  our Student-t CI of the mean dead rate at k_end (primary rule), not supported when outside.
- L1 collapses at least as much as Top-k (per dataset): Welch t-test L1 vs Top-k at k_end, over
  the runs *at k* only (`Run.not_at_k`: a run whose achieved L0 is not k_end compares another
  sparsity); supported when L1 is higher with p < ALPHA, not supported when L1 is lower with
  p < ALPHA, otherwise inconclusive (no detectable difference is not evidence of equality).
- collapse grows with complexity (per method): Fieller–Welch CI of the Shapes3D / dSprites ratio
  of mean dead rates; supported when its low end > 1, not supported when its high end < 1.
- the ratio equals the paper's 1.8× / 2.2×: supported when the paper's ratio is inside the CI.
- extended training revives nothing (per dataset × method): drop = dead(k_end) − dead(final),
  per seed; supported when the paired-t CI's high end < REVIVAL_MARGIN (any recovery is below one
  percentage point of the width), not supported when the paired t-test gives p < ALPHA with a
  mean drop > REVIVAL_MARGIN, otherwise inconclusive. Needs hold epochs.
- global quality stays stable (per dataset × method and per metric of the latent mean: MIG,
  modularity, SAP, DCI disentanglement / completeness / informativeness, each in [0, 1]):
  change = metric(k_end) − metric(epoch 0); supported when the paired-t CI's low end >
  −MIG_MARGIN (falls by less than 0.05), not supported when its high end < −MIG_MARGIN; a rise is
  reported but never counts against it. A metric not logged at both epochs is left out.
- the collapse holds under every dead-neuron rule (per rule): rise = dead(k_end) − dead(epoch 0);
  supported when the paired-t CI's low end > 0 in every condition, not supported when some
  condition's CI high end is ≤ 0 (no rise at all under that rule); inconclusive for the `window`
  rule when fewer than `metrics.window` training samples had been seen by k_end (it cannot flag
  anyone). A condition does not count for a rule that is `never` in disguise there
  (`rule_exclusions`): a frequency rule with N · tau <= 1 (N = `data.eval_size`), or a rule whose
  dead rate equals `dead/never` at every epoch of every run of the condition.
- surviving neurons lose factor semantics (per dataset × method, the referee's test): per seed,
  fall = mean alignment at epoch 0 − at k_end of the same units, those described at both epochs
  (`loading.survivor_alignment`); supported when the Student-t CI of the mean fall has its low end
  > 0, not supported when its high end < 0.
Every rule answers "inconclusive" with fewer than 2 seeds (a CI or test needs n ≥ 2).
Every rule reads the trained runs only (`loading.trained_groups`): a run whose model has not closed
`min_gap_closed` of the no-information gap by k_end (`Run.untrained`) is left out of every claim,
and n counts the runs that were read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vaesae.report.loading import (
    NOT_AT_K_MARK,
    Condition,
    Run,
    flatten_config,
    frequency_tau,
    run_survivor_alignment,
    trained_groups,
    values,
)
from vaesae.report.paper import PAPER_DEAD_PCT, PAPER_RATIO
from vaesae.report.stats import (
    Interval,
    TestResult,
    mean_ci,
    paired_diff_ci,
    paired_test,
    ratio_ci,
    welch_test,
)

__all__ = [
    "ALPHA",
    "MIG_MARGIN",
    "REVIVAL_MARGIN",
    "SUPPORTED",
    "NOT_SUPPORTED",
    "INCONCLUSIVE",
    "Claim",
    "verdict_contains",
    "verdict_above",
    "verdict_greater",
    "verdict_no_recovery",
    "rule_exclusions",
    "evaluate_claims",
]

ALPHA = 0.05
MIG_MARGIN = 0.05  # units of the metric (MIG and the other global metrics are in [0, 1])
REVIVAL_MARGIN = 0.01  # fraction of the SAE width (one percentage point)
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One verdict line: the claim, where it was tested, the statistic behind it, n, verdict."""

    claim: str
    scope: str
    statistic: str
    n: str
    verdict: str


def verdict_contains(ci: Interval, value: float) -> str:
    """Supported when `value` lies in the CI, not supported when outside, else inconclusive."""
    if not ci.defined:
        return INCONCLUSIVE
    return SUPPORTED if ci.contains(value) else NOT_SUPPORTED


def verdict_above(ci: Interval, bound: float) -> str:
    """Supported when the whole CI lies above `bound`, not supported when it lies below."""
    if not ci.defined:
        return INCONCLUSIVE
    if ci.low > bound:
        return SUPPORTED
    return NOT_SUPPORTED if ci.high < bound else INCONCLUSIVE


def verdict_greater(test: TestResult, alpha: float = ALPHA) -> str:
    """Two-sided test of a > b: supported when significant with a > b, not supported when
    significant with a < b, inconclusive when not significant or undefined."""
    if math.isnan(test.p_value) or test.p_value >= alpha:
        return INCONCLUSIVE
    return SUPPORTED if test.difference > 0 else NOT_SUPPORTED


def verdict_no_recovery(
    drop: Interval, test: TestResult, margin: float = REVIVAL_MARGIN, alpha: float = ALPHA
) -> str:
    """Supported when the CI of the drop in dead rate stays below `margin`; not supported when the
    paired test shows a significant drop larger than `margin`; else inconclusive."""
    if drop.defined and drop.high < margin:
        return SUPPORTED
    if not math.isnan(test.p_value) and test.p_value < alpha and -test.difference > margin:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f} %"


def _pp(ci: Interval) -> str:
    """A CI of a difference of fractions, in percentage points."""
    if not ci.defined:
        return f"{100 * ci.estimate:+.1f} pp (no CI)"
    return f"{100 * ci.estimate:+.1f} pp [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]"


def _pp_value(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.1f} pp"


def _p(test: TestResult) -> str:
    return (
        "p n/a" if math.isnan(test.p_value) else f"t = {test.statistic:.2f}, p = {test.p_value:.3g}"
    )


def _dead_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for cond, runs in groups.items():
        paper = PAPER_DEAD_PCT.get((cond.dataset, cond.method))
        if paper is None:
            continue
        ci = mean_ci(values(runs, "dead/primary", "reference"))
        span = f"[{_pct(ci.low)}, {_pct(ci.high)}]" if ci.defined else "(no CI)"
        out.append(
            Claim(
                f"dead rate at k_end = {paper[0]} ± {paper[1]} %",
                cond.label,
                f"ours {_pct(ci.estimate)} {span}",
                f"{len(runs)}",
                verdict_contains(ci, paper[0] / 100),
            )
        )
    return out


def _pairs(
    groups: dict[Condition, list[Run]], key: str
) -> list[tuple[str, str, list[Run], list[Run]]]:
    """(fixed name, scope, group a, group b): L1 vs Top-k per dataset (key='method') or
    Shapes3D vs dSprites per method (key='dataset'), within one variant and arm."""
    a_name, b_name = ("l1", "topk") if key == "method" else ("shapes3d", "dsprites")
    out = []
    for cond, runs in groups.items():
        if getattr(cond, key) != a_name:
            continue
        other = cond._replace(**{key: b_name})
        if other in groups:
            fixed = cond.dataset if key == "method" else cond.method
            scope = fixed + cond.tag
            out.append((fixed, scope, runs, groups[other]))
    return out


def _method_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    """L1 vs Top-k over the runs at k: a run whose L0 missed k_end is left out (named)."""
    out = []
    for _, scope, l1, topk in _pairs(groups, "method"):
        a = values([r for r in l1 if not r.not_at_k], "dead/primary", "reference")
        b = values([r for r in topk if not r.not_at_k], "dead/primary", "reference")
        test = welch_test(a, b)
        off = [r.name for r in (*l1, *topk) if r.not_at_k]
        text = f"L1 − Top-k = {_pp_value(test.difference)}, {_p(test)}"
        if off:
            text += f"; left out, not at k: {', '.join(off)}"
        out.append(
            Claim(
                "L1 collapses at least as much as Top-k (Welch t-test)",
                scope,
                text,
                f"{test.n[0]} / {test.n[1]}",
                verdict_greater(test),
            )
        )
    return out


def _ratio_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for method, scope, shapes, dsprites in _pairs(groups, "dataset"):
        ratio = ratio_ci(
            values(shapes, "dead/primary", "reference"),
            values(dsprites, "dead/primary", "reference"),
        )
        text = f"ratio {ratio.estimate:.2f}×" + (
            f" [{ratio.low:.2f}, {ratio.high:.2f}]" if ratio.defined else " (no CI)"
        )
        n = f"{len(dsprites)} / {len(shapes)}"
        if any(r.not_at_k for r in (*shapes, *dsprites)):
            scope += f" {NOT_AT_K_MARK}"
        out.append(
            Claim(
                "Shapes3D collapses more than dSprites", scope, text, n, verdict_above(ratio, 1.0)
            )
        )
        if method in PAPER_RATIO:
            paper = PAPER_RATIO[method]
            out.append(
                Claim(
                    f"Shapes3D / dSprites ratio = {paper}×",
                    scope,
                    text,
                    n,
                    verdict_contains(ratio, paper),
                )
            )
    return out


def _recovery_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for cond, runs in groups.items():
        ref = values(runs, "dead/primary", "reference")
        final = values(runs, "dead/primary", "final")
        revived = values(runs, "neurons/revived", "final")
        hold = min(r.final_epoch - r.reference_epoch for r in runs)
        if hold <= 0:
            out.append(
                Claim(
                    "extended training revives nothing",
                    cond.label,
                    "no hold epochs",
                    f"{len(runs)}",
                    INCONCLUSIVE,
                )
            )
            continue
        drop = paired_diff_ci(ref, final)
        test = paired_test(ref, final)
        out.append(
            Claim(
                "extended training revives nothing",
                cond.label,
                f"drop {_pp(drop)} after {hold} hold epoch(s), {_p(test)}, "
                f"revived {np.nanmean(revived):.1f} neurons",
                f"{test.n[0]}",
                verdict_no_recovery(drop, test),
            )
        )
    return out


# Global quality beyond MIG (issue: "global quality stays stable" should hold under every
# metric): column, label. Each is in [0, 1] and tested like MIG; a metric a sweep did not log
# (DCI at epochs it did not compute) is left out.
GLOBAL_METRICS = (
    ("mig/latent", "MIG"),
    ("modularity/latent", "modularity"),
    ("sap/latent", "SAP"),
    ("dci/disentanglement/latent", "DCI disentanglement"),
    ("dci/completeness/latent", "DCI completeness"),
    ("dci/informativeness/latent", "DCI informativeness"),
)


def _global_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for column, label in GLOBAL_METRICS:
        for cond, runs in groups.items():
            after, before = values(runs, column, "reference"), values(runs, column, "start")
            if column != "mig/latent" and not np.isfinite(after - before).any():
                continue
            change = paired_diff_ci(after, before)
            span = f" [{change.low:+.3f}, {change.high:+.3f}]" if change.defined else " (no CI)"
            out.append(
                Claim(
                    f"{label} stable (falls by < {MIG_MARGIN})",
                    cond.label,
                    f"Δ {column} {change.estimate:+.3f}{span}",
                    f"{len(runs)}",
                    verdict_above(change, -MIG_MARGIN),
                )
            )
    return out


def _window_too_long(runs: list[Run]) -> bool:
    """True when the `window` rule could not flag any neuron by k_end: fewer training samples
    than `metrics.window` had been seen (epoch_size null = the dataset size, always enough)."""
    for run in runs:
        cfg = flatten_config(run.config)
        epoch_size, window = cfg.get("data.epoch_size"), cfg.get("metrics.window")
        if epoch_size and window and (run.reference_epoch + 1) * epoch_size < window:
            return True
    return False


def _equals_never(run: Run, rule: str) -> bool:
    """The rule's dead rate equals `dead/never` at every epoch (both logged, or both missing)."""
    a, b = run.series(f"dead/{rule}"), run.series("dead/never")
    same = np.isclose(a, b, rtol=0.0, atol=1e-12) | (np.isnan(a) & np.isnan(b))
    return bool(same.all())


def rule_exclusions(
    groups: dict[Condition, list[Run]], rules: list[str]
) -> dict[str, dict[Condition, str]]:
    """{rule: {condition: why}} for the conditions in which a rule other than `never` cannot be
    independent evidence of collapse, because it flags the same neurons as `never`:

    - by construction: a frequency rule (fires on < tau of the N evaluation samples) with
      N · tau <= 1, where one firing already meets tau (N = `data.eval_size` of a run);
    - in fact: the rule's dead rate equals `dead/never` at every epoch of every run."""
    out: dict[str, dict[Condition, str]] = {}
    for rule in rules:
        if rule == "never":
            continue
        reasons = {}
        for cond, runs in groups.items():
            sizes = sorted({r.eval_size for r in runs if r.never_by_construction(rule)})
            if sizes:
                reasons[cond] = (
                    f"N · τ = {', '.join(map(str, sizes))} × {float(frequency_tau(rule)):g} ≤ 1: "
                    "one firing already meets τ, so it flags exactly the never-firing neurons"
                )
            elif all(_equals_never(r, rule) for r in runs):
                reasons[cond] = "its dead rate equals `dead/never` at every epoch of every run"
        if reasons:
            out[rule] = reasons
    return out


def _rule_claims(groups: dict[Condition, list[Run]], rules: list[str]) -> list[Claim]:
    out = []
    excluded = rule_exclusions(groups, rules)
    for rule in rules:
        column = f"dead/{rule}"
        claim = f"collapse holds under rule `{rule}` (dead rate rises from epoch 0 to k_end)"
        counted = {c: runs for c, runs in groups.items() if c not in excluded.get(rule, {})}
        if not counted:
            continue  # `never` in every condition: listed under the verdicts, no evidence
        if rule == "window" and any(_window_too_long(runs) for runs in counted.values()):
            text = "`metrics.window` exceeds the training samples seen by k_end"
            out.append(Claim(claim, _conditions(counted, groups), text, "–", INCONCLUSIVE))
            continue
        rises = {
            cond: paired_diff_ci(values(runs, column, "reference"), values(runs, column, "start"))
            for cond, runs in counted.items()
        }
        rises = {c: ci for c, ci in rises.items() if not math.isnan(ci.estimate)}
        if not rises:
            continue
        verdicts = [verdict_above(ci, 0.0) for ci in rises.values()]
        if all(v == SUPPORTED for v in verdicts):
            verdict = SUPPORTED
        elif any(ci.defined and ci.high <= 0 for ci in rises.values()):
            verdict = NOT_SUPPORTED
        else:
            verdict = INCONCLUSIVE
        weakest = min(rises, key=lambda c: rises[c].low if rises[c].defined else rises[c].estimate)
        out.append(
            Claim(
                claim,
                _conditions(rises, groups),
                f"smallest rise: {weakest.label} {_pp(rises[weakest])}",
                ", ".join(str(len(groups[c])) for c in rises),
                verdict,
            )
        )
    return out


def _conditions(counted: dict[Condition, object], groups: dict[Condition, list[Run]]) -> str:
    """Scope of a per-rule claim: 'all n conditions', or 'm of n conditions' after exclusions."""
    if len(counted) == len(groups):
        return f"all {len(groups)} conditions"
    return f"{len(counted)} of {len(groups)} conditions"


def _semantics_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for cond, runs in groups.items():
        survivors = [run_survivor_alignment(run) for run in runs]
        fall = mean_ci([s.fall for s in survivors])
        units = sorted(s.units for s in survivors if s.units > 0)
        if units:
            span = f" [{fall.low:+.3f}, {fall.high:+.3f}]" if fall.defined else " (no CI)"
            statistic = (
                f"fall {fall.estimate:+.3f}{span} over the same units "
                f"({units[0]}–{units[-1]} per seed)"
            )
        else:
            statistic = "no units described at both epoch 0 and k_end"
        n = f"{len(units)}" if len(units) == len(runs) else f"{len(units)} of {len(runs)}"
        out.append(
            Claim(
                "surviving neurons lose factor semantics (mean alignment falls)",
                cond.label,
                statistic,
                n,
                verdict_above(fall, 0.0),
            )
        )
    return out


def evaluate_claims(groups: dict[Condition, list[Run]], rules: list[str]) -> list[Claim]:
    """Every claim that the sweep's conditions can test on their trained runs, in the report's
    order; a condition left with no trained run gets one inconclusive line that says so."""
    trained = trained_groups(groups)
    empty = [
        Claim(
            "every claim",
            cond.label,
            f"no trained run: all {len(groups[cond])} closed less than min_gap_closed of the "
            "no-information gap by k_end",
            "0",
            INCONCLUSIVE,
        )
        for cond, runs in trained.items()
        if not runs
    ]
    groups = {c: runs for c, runs in trained.items() if runs}
    return [
        *empty,
        *_dead_claims(groups),
        *_method_claims(groups),
        *_ratio_claims(groups),
        *_recovery_claims(groups),
        *_global_claims(groups),
        *_rule_claims(groups, rules),
        *_semantics_claims(groups),
    ]
