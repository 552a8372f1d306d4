"""The paper's claims, each tested on the sweep with an explicit verdict rule.

Verdicts are "supported", "not supported" or "inconclusive" (under this sweep's protocol), at
level ALPHA = 0.05 and with 95 % bootstrap CIs over seeds (`vaesae.report.stats`). Rules:

- dead rate matches the paper (per dataset × method): supported when the paper's mean lies inside
  our CI of the mean dead rate at k_end (primary rule), not supported when outside.
- L1 collapses at least as much as Top-k (per dataset): Welch t-test L1 vs Top-k at k_end;
  supported when L1 is higher with p < ALPHA, not supported when L1 is lower with p < ALPHA,
  otherwise inconclusive (no detectable difference is not evidence of equality).
- collapse grows with complexity (per method): CI of the Shapes3D / dSprites ratio of mean dead
  rates; supported when its low end > 1, not supported when its high end < 1.
- the ratio equals the paper's 1.8× / 2.2×: supported when the paper's ratio is inside the CI.
- extended training revives nothing (per dataset × method): drop = dead(k_end) − dead(final),
  per seed; supported when the CI's high end < REVIVAL_MARGIN (any recovery is below one
  percentage point of the width), not supported when the paired t-test gives p < ALPHA with a
  mean drop > REVIVAL_MARGIN, otherwise inconclusive. Needs hold epochs.
- MIG stays stable (per dataset × method): change = mig/latent(k_end) − mig/latent(epoch 0);
  supported when the CI's low end > −MIG_MARGIN (MIG falls by less than 0.05), not supported when
  its high end < −MIG_MARGIN; a rise is reported but never counts against stability.
- the collapse holds under every dead-neuron rule (per rule): rise = dead(k_end) − dead(epoch 0);
  supported when the CI's low end > 0 in every condition, not supported when some condition's
  CI high end is ≤ 0 (no rise at all under that rule); inconclusive for the `window` rule when
  fewer than `metrics.window` training samples had been seen by k_end (it cannot flag anyone).
- surviving neurons lose factor semantics (per dataset × method, the referee's test):
  fall = mean alignment of alive neurons at epoch 0 − at k_end; supported when the CI's low end
  > 0, not supported when its high end < 0.
Every rule answers "inconclusive" with fewer than 2 seeds (a CI or test needs n ≥ 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vaesae.report.loading import Condition, Run, flatten_config, values
from vaesae.report.paper import PAPER_DEAD_PCT, PAPER_RATIO
from vaesae.report.stats import (
    Interval,
    TestResult,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    paired_test,
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
    "evaluate_claims",
]

ALPHA = 0.05
MIG_MARGIN = 0.05  # MIG units (MIG is in [0, 1])
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
        ci = bootstrap_mean_ci(values(runs, "dead/primary", "reference"))
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
    Shapes3D vs dSprites per method (key='dataset'), within one variant."""
    a_name, b_name = ("l1", "topk") if key == "method" else ("shapes3d", "dsprites")
    out = []
    for cond, runs in groups.items():
        if getattr(cond, key) != a_name:
            continue
        other = cond._replace(**{key: b_name})
        if other in groups:
            fixed = cond.dataset if key == "method" else cond.method
            scope = fixed + (f" [{cond.variant}]" if cond.variant else "")
            out.append((fixed, scope, runs, groups[other]))
    return out


def _method_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for _, scope, l1, topk in _pairs(groups, "method"):
        a = values(l1, "dead/primary", "reference")
        b = values(topk, "dead/primary", "reference")
        test = welch_test(a, b)
        out.append(
            Claim(
                "L1 collapses at least as much as Top-k (Welch t-test)",
                scope,
                f"L1 − Top-k = {100 * test.difference:+.1f} pp, {_p(test)}",
                f"{test.n[0]} / {test.n[1]}",
                verdict_greater(test),
            )
        )
    return out


def _ratio_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for method, scope, shapes, dsprites in _pairs(groups, "dataset"):
        ratio = bootstrap_ratio_ci(
            values(shapes, "dead/primary", "reference"),
            values(dsprites, "dead/primary", "reference"),
        )
        text = f"ratio {ratio.estimate:.2f}×" + (
            f" [{ratio.low:.2f}, {ratio.high:.2f}]" if ratio.defined else " (no CI)"
        )
        n = f"{len(dsprites)} / {len(shapes)}"
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
        drop = bootstrap_mean_ci(ref - final)
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


def _mig_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for cond, runs in groups.items():
        change = bootstrap_mean_ci(
            values(runs, "mig/latent", "reference") - values(runs, "mig/latent", "start")
        )
        span = f" [{change.low:+.3f}, {change.high:+.3f}]" if change.defined else " (no CI)"
        out.append(
            Claim(
                f"MIG stable (falls by < {MIG_MARGIN})",
                cond.label,
                f"Δ mig/latent {change.estimate:+.3f}{span}",
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


def _rule_claims(groups: dict[Condition, list[Run]], rules: list[str]) -> list[Claim]:
    out = []
    for rule in rules:
        column = f"dead/{rule}"
        claim = f"collapse holds under rule `{rule}` (dead rate rises from epoch 0 to k_end)"
        if rule == "window" and any(_window_too_long(runs) for runs in groups.values()):
            text = "`metrics.window` exceeds the training samples seen by k_end"
            out.append(Claim(claim, f"all {len(groups)} conditions", text, "–", INCONCLUSIVE))
            continue
        rises = {
            cond: bootstrap_mean_ci(
                values(runs, column, "reference") - values(runs, column, "start")
            )
            for cond, runs in groups.items()
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
                f"all {len(rises)} conditions",
                f"smallest rise: {weakest.label} {_pp(rises[weakest])}",
                ", ".join(str(len(groups[c])) for c in rises),
                verdict,
            )
        )
    return out


def _semantics_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for cond, runs in groups.items():
        fall = bootstrap_mean_ci(
            values(runs, "semantics/mean_alignment", "start")
            - values(runs, "semantics/mean_alignment", "reference")
        )
        span = f" [{fall.low:+.3f}, {fall.high:+.3f}]" if fall.defined else " (no CI)"
        out.append(
            Claim(
                "surviving neurons lose factor semantics (mean alignment falls)",
                cond.label,
                f"fall {fall.estimate:+.3f}{span}",
                f"{len(runs)}",
                verdict_above(fall, 0.0),
            )
        )
    return out


def evaluate_claims(groups: dict[Condition, list[Run]], rules: list[str]) -> list[Claim]:
    """Every claim that the sweep's conditions can test, in the report's order."""
    return [
        *_dead_claims(groups),
        *_method_claims(groups),
        *_ratio_claims(groups),
        *_recovery_claims(groups),
        *_mig_claims(groups),
        *_rule_claims(groups, rules),
        *_semantics_claims(groups),
    ]
