"""The report on synthetic sweeps with chosen numbers: tables, verdicts, excluded runs, one seed."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from report_fixtures import write_run
from scipy import stats

from vaesae.report import evaluate_claims, load_sweep
from vaesae.report.__main__ import main
from vaesae.report.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from vaesae.report.document import rules_of
from vaesae.report.stats import (
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    mean_std,
    paired_test,
    welch_test,
)

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


def test_mean_std_and_bootstrap_are_the_stated_formulas():
    assert mean_std([1.0, 2.0, 3.0, math.nan]) == (2.0, 1.0, 3)
    assert math.isnan(mean_std([5.0])[1])
    ci = bootstrap_mean_ci([0.0, 1.0, 2.0, 3.0])
    assert ci.estimate == 1.5 and 0.0 <= ci.low < 1.5 < ci.high <= 3.0
    assert bootstrap_mean_ci([0.0, 1.0, 2.0, 3.0]) == ci  # seeded: reproducible to the digit
    assert bootstrap_mean_ci([0.2, 0.2]).low == pytest.approx(0.2)
    assert not bootstrap_mean_ci([0.2]).defined
    ratio = bootstrap_ratio_ci([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
    assert ratio.estimate == pytest.approx(2.0) and ratio.low < 2.0 < ratio.high
    assert not bootstrap_ratio_ci([1.0, 2.0], [0.0, 0.0]).defined  # unbounded ratio


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
        "3", "34.4 ± 0.4", "34.4 ± 0.9", "34.4 ± 0.4", "0.200 ± 0.000", "0.210 ± 0.000",
        "0.050 ± 0.000",
    ]  # fmt: skip
    assert table_row(text, "## 1.", "dsprites / l1")[2:5] == [
        "52.0 ± 2.0",
        "41.7 ± 4.4",
        "40.0 ± 0.0",
    ]
    assert table_row(text, "## 3.", "topk")[4:6] == ["1.80× [1.74, 1.86]", "1.8×"]

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
        ("MIG stable (falls by < 0.05)", "dsprites / topk"): SUPPORTED,
        ("MIG stable (falls by < 0.05)", "shapes3d / l1"): NOT_SUPPORTED,
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
    for name in ("dead_vs_k", "dead_vs_epoch", "mig_vs_epoch", "firing_histograms"):
        assert (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 5000
        assert f"(figures/{name}.png)" in text
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and all(r["included"] == "True" for r in rows)
    row = next(r for r in rows if r["run"] == "l1-dsprites-s1-never")
    assert float(row["dead/primary@ref"]) == 0.52 and float(row["dead/primary@final"]) == 0.40


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
