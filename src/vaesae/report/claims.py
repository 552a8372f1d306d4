"""The paper's claims, each tested on the sweep with an explicit verdict rule.

Verdicts are "supported", "not supported" or "inconclusive" (under this sweep's protocol), at
level ALPHA = 0.05 and with 95 % t intervals over seeds (`vaesae.report.stats`: Student-t for a
mean, paired t for per-seed differences, Fieller–Welch for a ratio). "Primary rule" is each run's
own rule, or the one chosen with `--rule`. Rules:

- dead rate matches the paper (per dataset × method): supported when the paper's mean lies inside
  our Student-t CI of the mean dead rate at k_end (primary rule), not supported when outside.
- L1 collapses at least as much as Top-k (per dataset): Welch t-test L1 vs Top-k at k_end;
  supported when L1 is higher with p < ALPHA, not supported when L1 is lower with p < ALPHA,
  otherwise inconclusive (no detectable difference is not evidence of equality).
- collapse grows with complexity (per method): Fieller–Welch CI of the Shapes3D / dSprites ratio
  of mean dead rates; supported when its low end > 1, not supported when its high end < 1.
- the ratio equals the paper's 1.8× / 2.2×: supported when the paper's ratio is inside the CI.
- extended training revives nothing (per dataset × method): per seed, the revival share = of the
  units dead at k_end, the fraction firing on >= REVIVED_MIN_FREQUENCY of the evaluation samples
  at the final epoch (`loading.revival_share`; new deaths cannot hide revivals); supported when
  the Student-t CI of the mean share lies below REVIVAL_MARGIN, not supported when it lies above,
  otherwise inconclusive. Needs hold epochs.
- global quality stays stable (per dataset × method and per metric of the latent mean: MIG,
  modularity, SAP, DCI disentanglement / completeness / informativeness, each in [0, 1]):
  change = metric(k_end) − metric(trained start) per seed; supported when the paired-t CI's low
  end > −STABLE_MARGIN · start (start = the mean at the trained start), not supported when its
  high end < −STABLE_MARGIN · start; inconclusive when start < MIN_START_SCORE (nothing to lose).
  A rise never counts against it. A metric not logged at both epochs is left out.
- the collapse holds under every dead-neuron rule (per rule): rise = dead(k_end) − dead(trained
  start); supported when the paired-t CI's low end > 0 in every condition, not supported when
  some condition's CI high end is ≤ 0 (no rise at all under that rule); inconclusive for the
  `window` rule when fewer than `metrics.window` training samples had been seen by k_end (it
  cannot flag anyone). A condition does not count for a rule that is `never` in disguise there
  (`rule_exclusions`): a frequency rule with N · tau <= 1 (N = `data.eval_size`), or a rule whose
  dead rate equals `dead/never` at every epoch of every run of the condition.
- surviving neurons lose factor semantics (per dataset × method, the referee's test): per seed,
  fall = mean alignment at the trained start − at k_end of the same units, those described at
  both epochs (`loading.survivor_alignment`); supported when the Student-t CI of the mean fall
  has its low end > 0, not supported when its high end < 0.

The trained start (`Run.start_epoch`) is the first epoch at which the model has trained (gap
closed >= min_gap_closed) and the squeeze does not bind yet (L0 below k): epoch 0 measures a
model that is still learning, so a change from it mixes learning into the squeeze's effect.
Dead-rate statistics floor their variances at the rate's resolution 1 / width
(`vaesae.report.stats`). Every rule answers "inconclusive" with fewer than 2 seeds (a CI or test
needs n ≥ 2) and for every condition that holds a run *not at k* (`Run.not_at_k`: it measures
another sparsity; the statistic names it). Every rule reads the trained runs only
(`loading.trained_groups`): a run whose model has not closed `min_gap_closed` of the
no-information gap by k_end (`Run.untrained`) is left out of every claim, and n counts the runs
that were read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from vaesae.report.loading import (
    NOT_AT_K_MARK,
    REVIVED_MIN_FREQUENCY,
    Condition,
    Run,
    dead_step,
    flatten_config,
    frequency_tau,
    revival_share,
    run_survivor_alignment,
    trained_groups,
    values,
)
from vaesae.report.paper import PAPER_DEAD_PCT, PAPER_RATIO
from vaesae.report.stats import (
    Interval,
    TestResult,
    mean_ci,
    mean_std,
    paired_diff_ci,
    ratio_ci,
    welch_test,
)

__all__ = [
    "ALPHA",
    "STABLE_MARGIN",
    "MIN_START_SCORE",
    "REVIVAL_MARGIN",
    "SUPPORTED",
    "NOT_SUPPORTED",
    "INCONCLUSIVE",
    "Claim",
    "verdict_contains",
    "verdict_above",
    "verdict_greater",
    "verdict_no_revival",
    "verdict_stable",
    "revival_ci",
    "rule_exclusions",
    "evaluate_claims",
]

ALPHA = 0.05
# A global score is "stable" when it falls by less than STABLE_MARGIN of its value at the trained
# start; below MIN_START_SCORE it has nothing to lose, and the claim cannot be tested.
STABLE_MARGIN = 0.25
MIN_START_SCORE = 0.1
REVIVAL_MARGIN = 0.01  # share of the units dead at k_end (one in a hundred)
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One verdict line: the claim, where it was tested, the statistic behind it, n, verdict."""

    claim: str
    scope: str
    statistic: str
    n: str
    verdict: str
    conditions: tuple[Condition, ...] = ()  # what it reads (not printed): for the not-at-k rule


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
        ci = mean_ci(values(runs, "dead/primary", "reference"), resolution=dead_step(runs))
        span = f"[{_pct(ci.low)}, {_pct(ci.high)}]" if ci.defined else "(no CI)"
        out.append(
            Claim(
                f"dead rate at k_end = {paper[0]} ± {paper[1]} %",
                cond.label,
                f"ours {_pct(ci.estimate)} {span}",
                f"{len(runs)}",
                verdict_contains(ci, paper[0] / 100),
                (cond,),
            )
        )
    return out


def _pairs(
    groups: dict[Condition, list[Run]], key: str
) -> list[tuple[str, str, list[Run], list[Run], tuple[Condition, Condition]]]:
    """(fixed name, scope, group a, group b, (condition a, condition b)): L1 vs Top-k per
    dataset (key='method') or Shapes3D vs dSprites per method (key='dataset'), within one
    variant and arm."""
    a_name, b_name = ("l1", "topk") if key == "method" else ("shapes3d", "dsprites")
    out = []
    for cond, runs in groups.items():
        if getattr(cond, key) != a_name:
            continue
        other = cond._replace(**{key: b_name})
        if other in groups:
            fixed = cond.dataset if key == "method" else cond.method
            scope = fixed + cond.tag
            out.append((fixed, scope, runs, groups[other], (cond, other)))
    return out


def _method_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    """L1 vs Top-k at k_end, per dataset."""
    out = []
    for _, scope, l1, topk, conds in _pairs(groups, "method"):
        a = values(l1, "dead/primary", "reference")
        b = values(topk, "dead/primary", "reference")
        test = welch_test(a, b, resolution=dead_step([*l1, *topk]))
        out.append(
            Claim(
                "L1 collapses at least as much as Top-k (Welch t-test)",
                scope,
                f"L1 − Top-k = {_pp_value(test.difference)}, {_p(test)}",
                f"{test.n[0]} / {test.n[1]}",
                verdict_greater(test),
                conds,
            )
        )
    return out


def _ratio_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for method, scope, shapes, dsprites, conds in _pairs(groups, "dataset"):
        ratio = ratio_ci(
            values(shapes, "dead/primary", "reference"),
            values(dsprites, "dead/primary", "reference"),
            resolution=dead_step([*shapes, *dsprites]),
        )
        text = f"ratio {ratio.estimate:.2f}×" + (
            f" [{ratio.low:.2f}, {ratio.high:.2f}]" if ratio.defined else " (no CI)"
        )
        n = f"{len(dsprites)} / {len(shapes)}"
        out.append(
            Claim(
                "Shapes3D collapses more than dSprites",
                scope,
                text,
                n,
                verdict_above(ratio, 1.0),
                conds,
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
                    conds,
                )
            )
    return out


def revival_ci(shares: list[tuple[float, int]]) -> Interval:
    """Student-t CI of the mean of (share, units dead at k_end) pairs from
    `loading.revival_share`, one per run, floored at the share's resolution 1 / (fewest units
    dead at k_end)."""
    dead = [d for _, d in shares if d]
    return mean_ci([x for x, _ in shares], resolution=1.0 / min(dead) if dead else 0.0)


def verdict_no_revival(share: Interval, margin: float = REVIVAL_MARGIN) -> str:
    """Supported when the CI of the mean revival share lies below `margin`, not supported when
    it lies above it, else inconclusive."""
    if not share.defined:
        return INCONCLUSIVE
    if share.high < margin:
        return SUPPORTED
    return NOT_SUPPORTED if share.low > margin else INCONCLUSIVE


def _recovery_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for cond, runs in groups.items():
        claim = "extended training revives nothing"
        hold = min(r.final_epoch - r.reference_epoch for r in runs)
        if hold <= 0:
            out.append(
                Claim(claim, cond.label, "no hold epochs", f"{len(runs)}", INCONCLUSIVE, (cond,))
            )
            continue
        shares = [revival_share(r) for r in runs]
        share = revival_ci(shares)
        n = sum(math.isfinite(x) for x, _ in shares)
        out.append(
            Claim(
                claim,
                cond.label,
                f"revived {_share(share)} of the units dead at k_end after {hold} hold "
                f"epoch(s) (firing on ≥ {REVIVED_MIN_FREQUENCY:g} of the evaluation samples)",
                f"{n}",
                verdict_no_revival(share),
                (cond,),
            )
        )
    return out


def _share(ci: Interval) -> str:
    if math.isnan(ci.estimate):
        return "n/a"
    text = f"{100 * ci.estimate:.1f} %"
    return text + (f" [{100 * ci.low:.1f}, {100 * ci.high:.1f}]" if ci.defined else " (no CI)")


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


def verdict_stable(change: Interval, start: float, margin: float = STABLE_MARGIN) -> str:
    """A score is stable when it falls by less than `margin` of its starting value: supported
    when the CI low end of the change > −margin · start, not supported when the CI high end <
    −margin · start; inconclusive when the start is below MIN_START_SCORE (nothing to lose)."""
    if not start >= MIN_START_SCORE:
        return INCONCLUSIVE
    return verdict_above(change, -margin * start)


def _global_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for column, label in GLOBAL_METRICS:
        for cond, runs in groups.items():
            after, before = values(runs, column, "reference"), values(runs, column, "trained")
            if column != "mig/latent" and not np.isfinite(after - before).any():
                continue
            change = paired_diff_ci(after, before)
            start = mean_std(before)[0]
            span = f" [{change.low:+.3f}, {change.high:+.3f}]" if change.defined else " (no CI)"
            text = f"Δ {column} {change.estimate:+.3f}{span} from {start:.3f}"
            if not start >= MIN_START_SCORE:
                text += f" (below {MIN_START_SCORE:g}: nothing to lose)"
            out.append(
                Claim(
                    f"{label} stable (falls by < {100 * STABLE_MARGIN:g} % of its start)",
                    cond.label,
                    text,
                    f"{int(np.isfinite(after - before).sum())}",
                    verdict_stable(change, start),
                    (cond,),
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
            sizes = sorted(
                {size for r in runs if r.never_by_construction(rule) and (size := r.eval_size)}
            )
            tau = frequency_tau(rule)
            if sizes and tau is not None:
                reasons[cond] = (
                    f"N · τ = {', '.join(map(str, sizes))} × {float(tau):g} ≤ 1: "
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
        claim = (
            f"collapse holds under rule `{rule}` (dead rate rises from the trained start to k_end)"
        )
        counted = {c: runs for c, runs in groups.items() if c not in excluded.get(rule, {})}
        if not counted:
            continue  # `never` in every condition: listed under the verdicts, no evidence
        if rule == "window" and any(_window_too_long(runs) for runs in counted.values()):
            text = "`metrics.window` exceeds the training samples seen by k_end"
            scope = _conditions(counted, groups)
            out.append(Claim(claim, scope, text, "–", INCONCLUSIVE, tuple(counted)))
            continue
        rises = {
            cond: paired_diff_ci(
                values(runs, column, "reference"),
                values(runs, column, "trained"),
                resolution=dead_step(runs),
            )
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
                tuple(rises),
            )
        )
    return out


def _conditions(counted: Mapping[Condition, object], groups: dict[Condition, list[Run]]) -> str:
    """Scope of a per-rule claim: 'all n conditions', or 'm of n conditions' after exclusions."""
    if len(counted) == len(groups):
        return f"all {len(groups)} conditions"
    return f"{len(counted)} of {len(groups)} conditions"


def _semantics_claims(groups: dict[Condition, list[Run]]) -> list[Claim]:
    out = []
    for cond, runs in groups.items():
        survivors = [run_survivor_alignment(run, "trained") for run in runs]
        fall = mean_ci([s.fall for s in survivors])
        units = sorted(s.units for s in survivors if s.units > 0)
        if units:
            span = f" [{fall.low:+.3f}, {fall.high:+.3f}]" if fall.defined else " (no CI)"
            statistic = (
                f"fall {fall.estimate:+.3f}{span} over the same units "
                f"({units[0]}–{units[-1]} per seed)"
            )
        else:
            statistic = "no units described at both the trained start and k_end"
        n = f"{len(units)}" if len(units) == len(runs) else f"{len(units)} of {len(runs)}"
        out.append(
            Claim(
                "surviving neurons lose factor semantics (mean alignment falls)",
                cond.label,
                statistic,
                n,
                verdict_above(fall, 0.0),
                (cond,),
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
    claims = [
        *_dead_claims(groups),
        *_method_claims(groups),
        *_ratio_claims(groups),
        *_recovery_claims(groups),
        *_global_claims(groups),
        *_rule_claims(groups, rules),
        *_semantics_claims(groups),
    ]
    return [*empty, *(_at_k_only(c, groups) for c in claims)]


def _at_k_only(claim: Claim, groups: dict[Condition, list[Run]]) -> Claim:
    """Every claim reads k_end: one whose conditions hold a run not at k (its L0 measures
    another sparsity) is inconclusive, and its statistic names those runs."""
    off = [r.name for c in claim.conditions for r in groups.get(c, []) if r.not_at_k]
    if not off:
        return claim
    return replace(
        claim,
        statistic=f"{claim.statistic}; not at k {NOT_AT_K_MARK}: {', '.join(off)}",
        verdict=INCONCLUSIVE,
    )
