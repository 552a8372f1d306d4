"""The "trained" guard: a run whose model has not closed enough of the no-information gap by
k_end is flagged and left out of every verdict, and the report says why."""

from __future__ import annotations

import csv

import pytest
from report_fixtures import write_run

from vaesae.report import evaluate_claims, load_sweep
from vaesae.report.__main__ import main
from vaesae.report.claims import INCONCLUSIVE
from vaesae.report.falsify import Settings as FalsifySettings
from vaesae.report.falsify import arm_rows
from vaesae.report.loading import MIN_GAP_CLOSED

TRAINED_DEAD = [0.34, 0.35, 0.36]
UNTRAINED_DEAD = 0.75  # an untrained model's "dead" rate, far from the trained seeds'


def _sweep(root, untrained_gap: float = 0.2):
    for s, dead in enumerate(TRAINED_DEAD):
        write_run(root, "dsprites", "topk", s, dead)
    write_run(root, "dsprites", "topk", 3, UNTRAINED_DEAD, gap_closed=untrained_gap)
    return root


def _claim(claims, name):
    return next(c for c in claims if c.claim.startswith(name))


def test_untrained_run_is_flagged_left_out_of_verdicts_and_named(tmp_path):
    sweep = load_sweep(_sweep(tmp_path / "sweep"))
    runs = sweep.included
    assert [r.untrained for r in sorted(runs, key=lambda r: r.seed)] == [False] * 3 + [True]
    claims = evaluate_claims(sweep.conditions(), ["never"])
    dead = _claim(claims, "dead rate at k_end")
    assert dead.n == "3"  # the trained seeds only
    assert dead.statistic.startswith("ours 35.0 %")  # the untrained 75 % is not averaged in

    text = main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]).read_text()
    assert "| dsprites / topk ‡ | 4 | 0, 1, 2, 3 |" in text
    assert "| topk-dsprites-s3-never | dsprites / topk | 0.20 |" in text
    assert f"min_gap_closed = {MIN_GAP_CLOSED:g}" in text  # the rule, in Runs and in Methods
    assert "Untrained (‡)" in text.split("## Methods", 1)[1]
    with open(tmp_path / "out" / "summary.csv") as fh:
        rows = {int(r["seed"]): r for r in csv.DictReader(fh)}
    assert rows[3]["untrained"] == "True" and rows[0]["untrained"] == "False"
    assert float(rows[3]["gap_closed@ref"]) == pytest.approx(0.2)
    assert float(rows[0]["gap_closed@ref"]) == pytest.approx(0.8)
    assert {"fvu@start", "fvu@ref", "fvu@final"} <= set(rows[0])


def test_the_threshold_is_a_setting(tmp_path):
    root = _sweep(tmp_path / "sweep", untrained_gap=0.4)
    assert load_sweep(root).included[-1].untrained  # 0.4 < the default 0.5
    relaxed = load_sweep(root, min_gap_closed=0.3)
    assert not any(r.untrained for r in relaxed.included)
    assert _claim(evaluate_claims(relaxed.conditions(), ["never"]), "dead rate").n == "4"
    text = main([str(root), "--out", str(tmp_path / "o"), "--min-gap-closed", "0.3"]).read_text()
    assert "min_gap_closed = 0.3" in text and "‡ |" not in text
    with pytest.raises(SystemExit):
        main([str(root), "--min-gap-closed", "1.5"])


def test_a_condition_with_no_trained_run_is_inconclusive_and_says_why(tmp_path):
    root = tmp_path / "sweep"
    for s in range(3):
        write_run(root, "shapes3d", "l1", s, 0.9, gap_closed=0.1)
    claims = evaluate_claims(load_sweep(root).conditions(), ["never"])
    assert len(claims) == 1
    assert claims[0].verdict == INCONCLUSIVE and "no trained run" in claims[0].statistic


def test_untrained_arm_runs_do_not_count_in_the_falsifier(tmp_path):
    root = tmp_path / "sweep"
    for s in range(3):
        write_run(root, "dsprites", "topk", s, 0.5, arm="baseline")
        write_run(root, "dsprites", "topk", s, 0.3, arm="no_squeeze", l0_ref=400)
        # A broken model has few dead units for the wrong reason: untrained, it must not count.
        write_run(root, "dsprites", "topk", s, 0.01, arm="center", gap_closed=0.1)
    rows = {r.cond.arm: r for r in arm_rows(load_sweep(root).conditions(), FalsifySettings())}
    assert rows["center"].counted == []
    assert rows["center"].verdict.verdict == INCONCLUSIVE
    assert len(rows["no_squeeze"].counted) == 3 and len(rows["baseline"].counted) == 3
