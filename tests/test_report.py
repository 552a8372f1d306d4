"""The report on synthetic sweeps with chosen numbers: tables, verdicts, excluded runs, one seed."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from report_fixtures import WIDTH, write_run
from scipy import stats

from vaesae.report import evaluate_claims, load_sweep
from vaesae.report.__main__ import main
from vaesae.report.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, rule_exclusions
from vaesae.report.document import rules_of
from vaesae.report.figures import dead_vs_epoch, dead_vs_k
from vaesae.report.loading import L0_TOLERANCE, Condition, RuleError
from vaesae.report.stats import mean_std, paired_test, welch_test

# Dead rate at k_end per seed: dSprites / Shapes3D for Top-k and L1.
TOPK_D, TOPK_S = [0.34, 0.344, 0.348], [0.60, 0.62, 0.64]
L1_D, L1_S = [0.50, 0.52, 0.54], [0.90, 0.91, 0.92]
L1_D_DROP = [0.10, 0.12, 0.14]  # L1 on dSprites revives neurons during the hold epochs


def paper_like_sweep(root, seeds=(0, 1, 2)):
    for s in seeds:
        write_run(root, "dsprites", "topk", s, TOPK_D[s])
        write_run(root, "shapes3d", "topk", s, TOPK_S[s])
        write_run(root, "dsprites", "l1", s, L1_D[s], L1_D[s] - L1_D_DROP[s])
        write_run(root, "shapes3d", "l1", s, L1_S[s], mig_ref=0.0)  # MIG collapses here
    return root


def table_row(text: str, section: str, first_cell: str) -> list[str]:
    """The cells of the table row starting with `first_cell` in the section whose heading starts
    with `section` (e.g. '## 1.')."""
    body = text.split(f"\n{section}", 1)[1].split("\n## ", 1)[0]
    for line in body.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row {first_cell!r}")


def test_mean_std_is_the_stated_formula():
    assert mean_std([1.0, 2.0, 3.0, math.nan]) == (2.0, 1.0, 3)
    assert math.isnan(mean_std([5.0])[1])


def test_tests_match_scipy():
    a, b = [1.0, 2.0, 3.5], [0.5, 0.7, 0.2, 0.1]
    ref = stats.ttest_ind(a, b, equal_var=False)
    res = welch_test(a, b)
    assert (res.statistic, res.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert res.difference == pytest.approx(np.mean(a) - np.mean(b)) and res.n == (3, 4)
    before, after = [0.5, 0.6, 0.7], [0.4, 0.45, 0.6]
    ref = stats.ttest_rel(after, before)
    res = paired_test(before, after)
    assert (res.statistic, res.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert res.difference == pytest.approx(-0.1166666, rel=1e-5)
    assert math.isnan(welch_test([1.0], [2.0, 3.0]).p_value)


def test_synthetic_sweep_gives_known_tables_and_verdicts(tmp_path):
    sweep = paper_like_sweep(tmp_path / "sweep")
    report = main([str(sweep), "--out", str(tmp_path / "out")])
    text = report.read_text()

    # The paper's table: mean ± sample std over seeds, the paper beside, MIG start -> k_end.
    assert table_row(text, "## 1.", "dsprites / topk")[1:8] == [
        "3", "34.4 ± 0.4", "34.4 ± 0.9", "34.4 ± 0.4", "0.200 ± 0.000", "0.210 ± 0.002",
        "0.050 ± 0.000",
    ]  # fmt: skip
    assert table_row(text, "## 1.", "dsprites / l1")[2:5] == [
        "52.0 ± 2.0",
        "41.7 ± 4.4",
        "40.0 ± 0.0",
    ]
    # Fieller–Welch: Welch df 2.5 at the estimate, t = 3.6 (worked by hand).
    assert table_row(text, "## 3.", "topk")[4:6] == ["1.80× [1.68, 1.93]", "1.8×"]

    groups = load_sweep(sweep).conditions()
    claims = {(c.claim, c.scope): c for c in evaluate_claims(groups, ["never", "magnitude"])}
    verdicts = {key: c.verdict for key, c in claims.items()}
    expected = {
        ("dead rate at k_end = 34.4 ± 0.9 %", "dsprites / topk"): SUPPORTED,
        ("dead rate at k_end = 41.7 ± 4.4 %", "dsprites / l1"): NOT_SUPPORTED,
        ("dead rate at k_end = 62.7 ± 1.3 %", "shapes3d / topk"): SUPPORTED,
        ("L1 collapses at least as much as Top-k (Welch t-test)", "dsprites"): SUPPORTED,
        ("Shapes3D collapses more than dSprites", "topk"): SUPPORTED,
        ("Shapes3D / dSprites ratio = 1.8×", "topk"): SUPPORTED,
        ("Shapes3D / dSprites ratio = 2.2×", "l1"): NOT_SUPPORTED,
        ("extended training revives nothing", "dsprites / topk"): SUPPORTED,
        ("extended training revives nothing", "dsprites / l1"): NOT_SUPPORTED,
        ("MIG stable (falls by < 25 % of its start)", "dsprites / topk"): SUPPORTED,
        ("MIG stable (falls by < 25 % of its start)", "shapes3d / l1"): NOT_SUPPORTED,
        ("surviving neurons lose factor semantics (mean alignment falls)", "shapes3d / l1"): (
            SUPPORTED
        ),
    }
    assert {k: verdicts[k] for k in expected} == expected
    rule_claims = [c for c in claims.values() if c.claim.startswith("collapse holds under rule")]
    assert [c.verdict for c in rule_claims] == [SUPPORTED, SUPPORTED]
    welch = stats.ttest_ind(L1_D, TOPK_D, equal_var=False)
    statistic = claims[("L1 collapses at least as much as Top-k (Welch t-test)", "dsprites")]
    assert f"p = {welch.pvalue:.3g}" in statistic.statistic and statistic.n == "3 / 3"
    for claim in claims.values():
        assert f"| {claim.claim} | {claim.scope} |" in text and f"**{claim.verdict}**" in text

    # Semantics: every alive neuron is aligned with `shape` only (report_fixtures).
    assert "orientation (3/3), pos_x (3/3), pos_y (3/3), scale (3/3)" in text
    names = (
        "dead_vs_k",
        "dead_vs_epoch",
        "mig_vs_epoch",
        "gap_closed_vs_epoch",
        "firing_histograms",
    )
    for name in names:
        assert (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 5000
        assert f"(figures/{name}.png)" in text
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and all(r["included"] == "True" for r in rows)
    row = next(r for r in rows if r["run"] == "l1-dsprites-s1-never")
    assert float(row["dead/primary@ref"]) == 0.52 and float(row["dead/primary@final"]) == 0.40
    # the run directory below the sweep folder: no folder of the machine it ran on
    assert row["path"] == "l1-dsprites-s1-never"
    assert str(tmp_path) not in (tmp_path / "out" / "summary.csv").read_text()


def test_global_quality_is_tested_under_every_logged_metric(tmp_path):
    # Modularity falls by 0.3 (not stable), SAP rises, DCI (logged at epoch 0 and k_end only)
    # moves by ~0.01; MIG stays as in the fixture. Seed-to-seed jitter gives CIs.
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        scores = {
            "modularity/latent": (0.9, 0.6 + jitter),
            "sap/latent": (0.2, 0.4 + jitter),
            "dci/disentanglement/latent": (0.5, 0.51 + jitter),
        }
        write_run(
            tmp_path, "dsprites", "topk", seed, 0.4, mig_ref=0.21 + jitter, global_scores=scores
        )
    claims = evaluate_claims(load_sweep(tmp_path).conditions(), ["never"])
    verdicts = {c.claim: c.verdict for c in claims if "stable" in c.claim}
    assert verdicts == {
        "MIG stable (falls by < 25 % of its start)": SUPPORTED,
        "modularity stable (falls by < 25 % of its start)": NOT_SUPPORTED,
        "SAP stable (falls by < 25 % of its start)": SUPPORTED,
    }  # DCI is logged at epochs 0 and k_end, not at the trained start (epoch 1): no claim


def test_failed_running_and_incomplete_runs_are_listed_and_excluded(tmp_path):
    sweep = paper_like_sweep(tmp_path / "sweep")
    write_run(sweep, "dsprites", "topk", 7, 0.99, status="failed", epochs=1)
    write_run(sweep, "dsprites", "topk", 8, 0.99, status="running", epochs=3)
    write_run(sweep, "dsprites", "topk", 9, 0.99, epochs=3)  # "completed" but a row is missing
    broken = sweep / "topk-dsprites-s10-never"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    text = main([str(sweep), "--out", str(tmp_path / "out")]).read_text()

    excluded = text.split("Excluded from every statistic:")[1].split("## ")[0]
    assert "| topk-dsprites-s7-never | failed | status failed: RuntimeError: boom |" in excluded
    assert "| topk-dsprites-s8-never | running | status running |" in excluded
    assert "metrics.csv holds epochs 0..2 (3 rows), expected 0..3" in excluded
    assert "topk-dsprites-s10-never" in excluded and "unreadable" in excluded
    assert "excluded: 4." in text
    # The 0.99 dead rates of the excluded runs are not averaged in.
    assert table_row(text, "## 1.", "dsprites / topk")[1:3] == ["3", "34.4 ± 0.4"]
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert rows["topk-dsprites-s7-never"]["included"] == "False"
    assert rows["topk-dsprites-s7-never"]["reason"].startswith("status failed")


def test_single_seed_reports_without_tests(tmp_path):
    sweep = paper_like_sweep(tmp_path / "sweep", seeds=(0,))
    text = main([str(sweep), "--out", str(tmp_path / "out")]).read_text()
    assert "Fewer than 2 seeds per condition" in text
    assert table_row(text, "## 1.", "dsprites / topk")[1:4] == ["1", "34.0", "34.4 ± 0.9"]
    claims = evaluate_claims(load_sweep(sweep).conditions(), ["never"])
    assert claims and {c.verdict for c in claims} == {INCONCLUSIVE}
    assert table_row(text, "## 3.", "topk")[4] == "1.76×"  # a point ratio, no CI
    assert (tmp_path / "out" / "figures" / "alignment_heatmaps.png").exists()


def test_runs_differing_in_config_are_separate_conditions(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        for kind in ("linear", "constant"):
            run = write_run(
                sweep / kind, "dsprites", "topk", seed, 0.3 if kind == "linear" else 0.1
            )
            config = json.loads((run / "config.json").read_text())
            config["schedule"] = {"kind": kind}
            config["trainer"] = {"threads": seed + 1}  # speed only: no new condition
            (run / "config.json").write_text(json.dumps(config))
    loaded = load_sweep(sweep)
    assert [c.label for c in loaded.conditions()] == [
        "dsprites / topk [schedule.kind=constant]",
        "dsprites / topk [schedule.kind=linear]",
    ]
    assert rules_of(loaded.included) == ["never", "magnitude", "window"]


def test_missing_sweep_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def section(text: str, heading: str) -> str:
    """The body of the report section whose heading starts with `heading` (e.g. '## 1.')."""
    return text.split(f"\n{heading}", 1)[1].split("\n## ", 1)[0]


def test_reference_epoch_without_a_row_or_not_at_k_end_is_excluded_and_listed(tmp_path):
    sweep = paper_like_sweep(tmp_path / "sweep")
    write_run(sweep, "dsprites", "topk", 8, 0.99, reference_epoch=7)  # no row for epoch 7
    write_run(sweep, "dsprites", "topk", 9, 0.99, k_last_ref=95.0)  # k_end epoch at k = 95
    text = main([str(sweep), "--out", str(tmp_path / "out")]).read_text()  # no KeyError
    excluded = text.split("Excluded from every statistic:")[1].split("## ")[0]
    assert (
        "| topk-dsprites-s8-never | completed | metrics.csv has no row for reference_epoch 7"
        in (excluded)
    )
    assert "sparsity/k_last = 95 at reference_epoch 2, not k_end = 50" in excluded
    assert table_row(text, "## 1.", "dsprites / topk")[1:3] == ["3", "34.4 ± 0.4"]
    # The same runs without the k_last column (older runs) are checked for the row only.
    loaded = load_sweep(sweep)
    assert {r.name for r in loaded.excluded} == {"topk-dsprites-s8-never", "topk-dsprites-s9-never"}


def test_runs_not_at_k_are_flagged_everywhere_and_make_their_claims_inconclusive(tmp_path):
    sweep = paper_like_sweep(tmp_path / "sweep")
    assert L0_TOLERANCE == 0.1
    off = 56.0  # active codes at k = 50: 12 % off
    write_run(sweep, "dsprites", "l1", 3, 0.90, l0_ref=off)
    write_run(sweep, "shapes3d", "l1", 3, 0.91, l0_ref=55.0)  # 10 % off: still at k
    text = main([str(sweep), "--out", str(tmp_path / "out")]).read_text()

    runs = {r.name: r for r in load_sweep(sweep).included}
    assert runs["l1-dsprites-s3-never"].not_at_k and not runs["l1-shapes3d-s3-never"].not_at_k
    assert "| l1-dsprites-s3-never | dsprites / l1 | 50 | 56.0 | +12% |" in section(text, "## Runs")
    for heading in ("## Runs", "## 1.", "## 2.", "## 4.", "## 5.", "## 6."):
        body = section(text, heading)
        assert "| dsprites / l1 † |" in body and "| dsprites / topk |" in body, heading
        assert "† marks rows that include runs *not at k*" in body, heading
    assert table_row(text, "## 3.", "l1 †")[1] == "4 / 4"
    assert table_row(text, "## 3.", "topk")[1] == "3 / 3"
    assert "| dead rate at k_end = 41.7 ± 4.4 % | dsprites / l1 † |" in text
    # Still averaged in (0.90 among 0.50, 0.52, 0.54) ...
    assert table_row(text, "## 1.", "dsprites / l1 †")[1:3] == ["4", "61.5 ± 19.1"]
    # ... but every claim that reads dsprites / l1 is inconclusive, and says why.
    claims = evaluate_claims(load_sweep(sweep).conditions(), ["never"])
    for claim in claims:
        reads_it = "dsprites / l1" in claim.scope or claim.scope in ("dsprites", "l1")
        reads_it |= claim.claim.startswith("collapse holds under rule")
        assert (
            claim.verdict == INCONCLUSIVE and "not at k †: l1-dsprites-s3-never" in claim.statistic
        ) or not reads_it, claim
    by_key = {(c.claim, c.scope): c for c in claims}
    assert by_key[("dead rate at k_end = 34.4 ± 0.9 %", "dsprites / topk")].verdict == SUPPORTED
    assert by_key[("L1 collapses at least as much as Top-k (Welch t-test)", "shapes3d")].n == (
        "4 / 3"
    )
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert rows["l1-dsprites-s3-never"]["not_at_k"] == "True"
    assert float(rows["l1-dsprites-s3-never"]["eval/l0@ref"]) == off
    assert rows["l1-dsprites-s0-never"]["not_at_k"] == "False"


def test_rule_option_makes_a_logged_rule_primary_everywhere(tmp_path, capsys):
    sweep = paper_like_sweep(tmp_path / "sweep")
    default = main([str(sweep), "--out", str(tmp_path / "default")]).read_text()
    text = main([str(sweep), "--out", str(tmp_path / "out"), "--rule", "magnitude"]).read_text()
    assert "## 1. Dead neurons at k_end (primary rule: magnitude)" in text
    assert "`magnitude` for every run, chosen with `--rule magnitude`" in text
    assert "primary rule: never" in default and "each run's own `threshold`" in default
    # Magnitude is 1.05 × never in the fixture: every table and claim follows it.
    assert table_row(text, "## 1.", "dsprites / l1")[2] == "54.6 ± 2.1"
    assert table_row(text, "## 2.", "dsprites / l1")[3].split(" → ")[1] == "54.6 ± 2.1"
    assert "ours 54.6 %" in text
    # Revived neurons are recounted under magnitude from the per-neuron arrays.
    revived = [
        round(WIDTH * (1.05 * d)) - round(WIDTH * (1.05 * (d - drop)))
        for d, drop in zip(L1_D, L1_D_DROP, strict=True)
    ]
    assert table_row(text, "## 4.", "dsprites / l1")[7] == f"{np.mean(revived):.1f} ± " + (
        f"{np.std(revived, ddof=1):.1f}"
    )
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["run"] == "l1-dsprites-s1-never")
    assert row["primary_rule"] == "magnitude"
    assert float(row["dead/primary@ref"]) == float(row["dead/magnitude@ref"])

    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--rule", "freq1e-3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "rule 'freq1e-3'" in err and "valid names: never, magnitude, window" in err


def test_rules_that_are_never_in_disguise_do_not_count_for_the_collapse_claim(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1, 2):
        for dataset, method, dead in (("dsprites", "topk", 0.34), ("dsprites", "l1", 0.5)):
            # freq1e-4 at N = 10,000: N·τ = 1, `never` by construction (an old run logged it).
            # freq1e-3 equals `never` in fact for Top-k, not for L1.
            extra = {"freq1e-4": 1.0, "freq1e-3": 1.0 if method == "topk" else 1.2}
            write_run(sweep, dataset, method, seed, dead, extra_rules=extra)
    text = main([str(sweep), "--out", str(tmp_path / "out")]).read_text()
    groups = load_sweep(sweep).conditions()
    rules = rules_of(load_sweep(sweep).included)
    assert rules == ["never", "magnitude", "window", "freq1e-4", "freq1e-3"]
    claims = {c.claim.split("`")[1]: c for c in evaluate_claims(groups, rules) if "rule" in c.claim}
    assert "freq1e-4" not in claims  # no condition left: no claim at all
    assert claims["freq1e-3"].scope == "1 of 2 conditions" and claims["freq1e-3"].n == "3"
    assert claims["magnitude"].scope == "all 2 conditions"
    verdicts = section(text, "## Verdicts")
    assert "- `freq1e-4` in every condition: N · τ = 10000 × 0.0001 ≤ 1" in verdicts
    assert (
        "- `freq1e-3` in dsprites / topk: its dead rate equals `dead/never` at every epoch of "
        "every run." in verdicts
    )
    with pytest.raises(RuleError, match="coincides with 'never' at eval size 10000"):
        load_sweep(sweep, rule="freq1e-4")
    # At N = 20,000 freq1e-4 is a real rule, here flagged only because it equals `never`.
    other = tmp_path / "big"
    for seed in (0, 1):
        write_run(other, "dsprites", "topk", seed, 0.3, eval_size=20_000, extra_rules=extra)
    assert load_sweep(other, rule="freq1e-4").rule == "freq1e-4"
    groups = load_sweep(other).conditions()
    assert rule_exclusions(groups, ["never", "freq1e-4"]) == {
        "freq1e-4": {
            Condition("dsprites", "topk"): (
                "its dead rate equals `dead/never` at every epoch of every run"
            )
        }
    }


def test_a_run_reached_twice_is_counted_once(tmp_path):
    sweep = paper_like_sweep(tmp_path / "sweep")
    inner = tmp_path / "sweep" / "nested"
    write_run(inner, "dsprites", "topk", 5, 0.346)
    (tmp_path / "sweep" / "link").symlink_to(inner / "topk-dsprites-s5-never")
    loaded = load_sweep(sweep, inner, sweep)
    assert len(loaded.runs) == 13 and loaded.duplicates == 1 + 1 + 14  # link, inner, sweep again
    assert [r.seed for r in loaded.conditions()[Condition("dsprites", "topk")]] == [0, 1, 2, 5]
    text = main([str(sweep), str(inner), "--out", str(tmp_path / "out")]).read_text()
    assert "Runs found: 13 (2 more reached again through overlapping sweep folders" in text
    assert table_row(text, "## Runs", "dsprites / topk")[1:3] == ["4", "0, 1, 2, 5"]
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 13


def test_figures_show_the_sample_std(tmp_path):
    """Error bars and bands are ±1 sample std (n − 1) over seeds, as in the tables; with n = 3
    the population std (n) is 18 % smaller."""
    groups = load_sweep(paper_like_sweep(tmp_path / "sweep")).conditions()
    dead = 100 * np.array(TOPK_S)  # shapes3d / topk at k_end and after the hold
    sample, population = np.std(dead, ddof=1), np.std(dead, ddof=0)
    assert sample == pytest.approx(2.0) and population < 0.9 * sample
    ax = dead_vs_k(groups).axes[1]  # shapes3d: topk then l1
    (_, _, (bars,)) = ax.containers[0]
    (low, high) = bars.get_segments()[0][:, 1]
    assert (high - low) / 2 == pytest.approx(sample)
    ax = dead_vs_epoch(groups).axes[1]
    band = ax.collections[0].get_paths()[0].vertices  # topk's band: upper and lower edge
    at_ref = band[np.isclose(band[:, 0], 2)][:, 1]
    assert at_ref.max() - at_ref.min() == pytest.approx(2 * sample)


def test_bands_stay_inside_the_range_of_a_rate(tmp_path):
    # Dead rates 0 %, 0 % and 9 % at k_end: mean 3 %, std 5.2 %; the band stops at 0.
    for seed, dead in enumerate((0.0, 0.0, 0.09)):
        write_run(tmp_path, "dsprites", "topk", seed, dead)
    band = dead_vs_epoch(load_sweep(tmp_path).conditions()).axes[0].collections[0]
    edges = band.get_paths()[0].vertices
    assert edges[:, 1].min() == 0.0
    assert edges[:, 1].max() == pytest.approx(3.0 + np.std([0.0, 0.0, 9.0], ddof=1))
