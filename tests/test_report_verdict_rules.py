"""Verdict rules that cannot decide the answer by construction (constructed sweeps): revivals that
new deaths hide, a score with nothing to lose, the trained start, and the compression criterion."""

from __future__ import annotations

import numpy as np
import pytest
from report_fixtures import REFERENCE_EPOCH, TOTAL_EPOCHS, WIDTH, write_run

from vaesae.report import evaluate_claims, load_sweep
from vaesae.report.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, verdict_stable
from vaesae.report.falsify import DEFAULT_SETTINGS, DOES_NOT_FALSIFY, FALSIFIES, arm_rows
from vaesae.report.loading import revival_share
from vaesae.report.stats import Interval

DEAD = (0.34, 0.35, 0.36)


def _claims(root, name):
    return [c for c in evaluate_claims(load_sweep(root).conditions(), ["never"]) if name in c.claim]


def _rewrite(run, epoch, dead, frequency=None):
    path = run / "neurons" / f"epoch_{epoch:03d}.npz"
    with np.load(path) as data:
        arrays = dict(data)
    arrays["dead_never"] = dead
    arrays["frequency"] = np.where(dead, 0.0, 0.1) if frequency is None else frequency
    np.savez(path, **arrays)


def test_revivals_hidden_by_new_deaths_are_not_supported(tmp_path):
    # The dead rate is the same at k_end and after the hold (net drop 0), but a tenth of the units
    # dead at k_end fire again while as many others die.
    for s, rate in enumerate(DEAD):
        run = write_run(tmp_path, "dsprites", "topk", s, rate)
        n = round(WIDTH * rate)
        ref = np.arange(WIDTH) < n
        final = (np.arange(WIDTH) >= n // 10) & (np.arange(WIDTH) < n + n // 10)
        assert ref.sum() == final.sum()
        _rewrite(run, REFERENCE_EPOCH, ref)
        _rewrite(run, TOTAL_EPOCHS - 1, final)
    runs = load_sweep(tmp_path).included
    assert [revival_share(r)[0] for r in sorted(runs, key=lambda r: r.seed)] == pytest.approx(
        [(round(WIDTH * d) // 10) / round(WIDTH * d) for d in DEAD]
    )
    (claim,) = _claims(tmp_path, "revives nothing")
    assert claim.verdict == NOT_SUPPORTED and claim.statistic.startswith("revived 9.9 %")


def test_a_unit_that_only_flickers_is_not_a_revival(tmp_path):
    for s, rate in enumerate(DEAD):
        run = write_run(tmp_path, "dsprites", "topk", s, rate)
        ref = np.arange(WIDTH) < round(WIDTH * rate)
        frequency = np.where(ref, 0.0, 0.1)
        frequency[:5] = 5e-4  # five dead units fire once on 2,000 samples: below 1e-3
        _rewrite(run, TOTAL_EPOCHS - 1, ref & (np.arange(WIDTH) >= 5), frequency)
    (claim,) = _claims(tmp_path, "revives nothing")
    assert claim.verdict == SUPPORTED


def test_a_score_with_nothing_to_lose_is_inconclusive(tmp_path):
    # MIG 0.02 at the start: a fall to 0 is within any absolute margin, and says nothing.
    for s, rate in enumerate(DEAD):
        write_run(tmp_path, "dsprites", "topk", s, rate, mig_start=0.02, mig_ref=0.0)
    (claim,) = _claims(tmp_path, "MIG stable")
    assert claim.verdict == INCONCLUSIVE and "nothing to lose" in claim.statistic
    assert verdict_stable(Interval(-0.01, -0.02, 0.0), 0.2) == SUPPORTED  # within 25 % of 0.2
    assert verdict_stable(Interval(-0.1, -0.12, -0.08), 0.2) == NOT_SUPPORTED


def test_claims_start_from_the_trained_epoch_before_the_squeeze_binds(tmp_path):
    for s, rate in enumerate(DEAD):
        write_run(tmp_path, "dsprites", "topk", s, rate)
    runs = load_sweep(tmp_path).included
    # Epoch 0 has closed none of the gap; epoch 1 has trained and k (275) is above L0 (150).
    assert {r.start_epoch for r in runs} == {1}
    # A run whose squeeze binds before it trains has no such epoch: nothing to compare with.
    late = write_run(tmp_path / "late", "dsprites", "topk", 0, 0.3, l0_ref=50.0, gap_closed=0.8)
    rows = load_sweep(late).included[0]
    rows.rows[1]["eval/l0"] = rows.rows[1]["sparsity/k_last"]  # binding at epoch 1
    assert rows.start_epoch is None


def _arm(root, arm, dead, **kwargs):
    for s, rate in enumerate(dead):
        write_run(root, "dsprites", "topk", s, rate, arm=arm, recon=100.0 + s, **kwargs)


def test_an_arm_as_dead_as_its_own_control_falsifies_the_compression_criterion_only(tmp_path):
    _arm(tmp_path, "baseline", (0.60, 0.62, 0.64))
    _arm(tmp_path, "no_squeeze", (0.33, 0.34, 0.36), l0_ref=400)
    # The arm loses exactly the units its no-pressure control loses: the squeeze adds nothing,
    # yet a third of the units are dead, far above the literal criterion's 10 %.
    _arm(tmp_path, "center", (0.33, 0.342, 0.36), arm_config={"control": "no_squeeze"})
    rows = {r.cond.arm: r for r in arm_rows(load_sweep(tmp_path).conditions(), DEFAULT_SETTINGS)}
    center = rows["center"]
    assert center.verdict.verdict == DOES_NOT_FALSIFY
    assert center.verdict.reason == "clearly fails: (b) dead rate low"
    assert center.compression.verdict == FALSIFIES, center.compression
    assert center.control_arm == "no_squeeze"
    # The same arm with 10 pp added by the squeeze clearly fails the compression criterion.
    more = tmp_path / "more"
    _arm(more, "baseline", (0.60, 0.62, 0.64))
    _arm(more, "no_squeeze", (0.33, 0.34, 0.36), l0_ref=400)
    _arm(more, "center", (0.43, 0.445, 0.46))
    rows = {r.cond.arm: r for r in arm_rows(load_sweep(more).conditions(), DEFAULT_SETTINGS)}
    assert rows["center"].compression.verdict == DOES_NOT_FALSIFY


def test_an_arm_is_attributed_against_its_own_architectures_control(tmp_path):
    _arm(tmp_path, "baseline", (0.60, 0.62, 0.64))
    _arm(tmp_path, "no_squeeze", (0.33, 0.34, 0.36), l0_ref=400)
    _arm(
        tmp_path,
        "center_no_squeeze",
        (0.20, 0.21, 0.22),
        l0_ref=400,
        arm_config={"pressure": "none", "control": "center_no_squeeze"},
    )
    _arm(tmp_path, "center", (0.30, 0.31, 0.32), arm_config={"control": "center_no_squeeze"})
    rows = {r.cond.arm: r for r in arm_rows(load_sweep(tmp_path).conditions(), DEFAULT_SETTINGS)}
    assert rows["center_no_squeeze"].verdict is None  # a control: no verdict
    center = rows["center"]
    assert center.control_arm == "center_no_squeeze"
    assert "vs center_no_squeeze" in center.compression.checks[1].text
    assert center.compression.checks[1].text.startswith("+10.0 pp")
    assert center.compression.verdict == DOES_NOT_FALSIFY


def test_a_no_pressure_control_run_under_topk_serves_the_l1_arm(tmp_path):
    # The sweep runs center_no_squeeze once, under Top-k (its L1 run would be the same model), with
    # k held at the width: complete, not excluded for missing k_end, and the L1 arm's control.
    def write(arm, method, dead, **kwargs):
        for s, rate in enumerate(dead):
            write_run(tmp_path, "dsprites", method, s, rate, arm=arm, recon=100.0 + s, **kwargs)

    write("baseline", "l1", (0.60, 0.62, 0.64))
    control = {"pressure": "none", "control": "center_no_squeeze"}
    write(
        "center_no_squeeze",
        "topk",
        (0.20, 0.21, 0.22),
        l0_ref=400,
        k_last_ref=500,
        arm_config=control,
    )
    write("center", "l1", (0.30, 0.31, 0.32), arm_config={"control": "center_no_squeeze"})
    sweep = load_sweep(tmp_path)
    assert not sweep.excluded
    rows = {r.cond.arm: r for r in arm_rows(sweep.conditions(), DEFAULT_SETTINGS)}
    center = rows["center"]
    assert center.cond.method == "l1"
    assert [r.condition.method for r in center.control] == ["topk"] * 3
    assert center.compression.checks[1].text.startswith("+10.0 pp")
    assert center.compression.verdict == DOES_NOT_FALSIFY
