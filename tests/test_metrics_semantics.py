"""Per-unit semantics on constructed codes with known answers, and the same-units comparison."""

import math

import numpy as np
import pytest
import torch

from vaesae.metrics import (
    firing_discretize,
    histogram_discretize,
    mutual_information,
    neuron_semantics,
)
from vaesae.report.claims import NOT_SUPPORTED, SUPPORTED, _semantics_claims
from vaesae.report.loading import (
    Condition,
    Run,
    SurvivorAlignment,
    run_survivor_alignment,
    survivor_alignment,
)

# Evaluation-set size and dSprites' factors (shape, scale, orientation, pos_x, pos_y).
N = 10_000
SIZES = (3, 6, 40, 32, 32)
POS_X = 3
FREQUENCIES = (1.0, 0.5, 0.1, 0.02)
# A perfect encoder scores 1 at every firing frequency, to rounding.
EXACT = 1e-12
# Every combination of three factors, 10 times: factors exactly independent in the sample.
FACTORS = torch.cartesian_prod(torch.arange(3), torch.arange(4), torch.arange(5)).repeat(10, 1)


@pytest.fixture(scope="module")
def dsprites_factors() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.stack([torch.randint(0, size, (N,), generator=g) for size in SIZES], 1)


def fire_on(fraction: float, values: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A unit firing with `values` on a random `fraction` of the N samples, silent elsewhere."""
    chosen = torch.randperm(N, generator=g)[: round(fraction * N)]
    out = torch.zeros(N, dtype=torch.float64)
    out[chosen] = values[chosen].double()
    return out


def test_copy_scores_one_at_every_firing_frequency(dsprites_factors):
    g = torch.Generator().manual_seed(1)
    pos_x = dsprites_factors[:, POS_X].double() + 1
    relu = torch.relu(pos_x - 29)  # fires on the last 3 of 32 positions only
    codes = torch.stack([fire_on(f, pos_x, g) for f in FREQUENCIES] + [relu], 1)
    s = neuron_semantics(codes, dsprites_factors)
    assert s.neurons.tolist() == [0, 1, 2, 3, 4]
    assert s.alignment.tolist() == pytest.approx([1.0] * 5, abs=EXACT)
    assert s.assigned_factor.tolist() == [POS_X] * 5
    assert (s.selectivity > 0.9).all()  # nothing about the other factors
    # The previous definition, MI / H(pos_x) with MIG's bins, fell with the firing frequency.
    mi, entropy = mutual_information(codes, dsprites_factors)
    old = (mi[:4, POS_X] / entropy[POS_X]).tolist()
    assert old[0] > 0.8 and old[2] < 0.1 and old[3] < 0.02


def test_noise_scores_near_zero_at_every_firing_frequency(dsprites_factors):
    g = torch.Generator().manual_seed(2)
    for f in FREQUENCIES:
        uniform = [fire_on(f, torch.rand(N, generator=g) + 0.01, g) for _ in range(20)]
        gates = [fire_on(f, torch.ones(N), g) for _ in range(20)]  # random on / off only
        s = neuron_semantics(torch.stack(uniform + gates, 1), dsprites_factors)
        assert s.neurons.numel() == 40
        assert float(s.alignment[:20].mean()) <= 0.05, f
        assert float(s.alignment[20:].mean()) <= 0.05, f
        assert float(s.alignment.max()) <= 0.1, f


def test_factor_plus_noise_is_monotone_in_noise_and_steady_in_frequency(dsprites_factors):
    g = torch.Generator().manual_seed(3)
    pos_x = dsprites_factors[:, POS_X].double()
    sds = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 1000.0)  # in positions
    scores = []
    for f in (1.0, 0.1, 0.02):
        noisy = [100 + pos_x + sd * torch.randn(N, generator=g, dtype=torch.float64) for sd in sds]
        a = neuron_semantics(torch.stack([fire_on(f, x, g) for x in noisy], 1), dsprites_factors)
        assert a.alignment[0] == pytest.approx(1.0, abs=EXACT)
        assert (a.alignment.diff() < 0).all(), f
        assert 0.3 < a.alignment[3] < 0.7  # sd 2 positions: half the information
        assert a.alignment[-1] <= 0.05
        scores.append(a.alignment)
    scores = torch.stack(scores)
    assert (scores.amax(0) - scores.amin(0)).max() <= 0.1  # same encoder, f from 1 to 0.02


def test_one_outlier_leaves_the_copy_high(dsprites_factors):
    g = torch.Generator().manual_seed(4)
    pos_x = dsprites_factors[:, POS_X].double() + 1
    for f in FREQUENCIES:
        code = fire_on(f, pos_x, g)
        firing = code.nonzero().flatten()
        code[firing[0]] = 1e6
        assert neuron_semantics(code[:, None], dsprites_factors).alignment[0] >= 0.99
        rest = firing[1:]
        assert firing_discretize(code[:, None])[rest, 0].unique().numel() == 10
        # MIG's equal-width bins put every other sample into the lowest bin.
        assert histogram_discretize(code[:, None])[rest, 0].unique().tolist() == [0]


def test_firing_discretize_known_bins():
    codes = torch.tensor(
        [
            [0.0, 2.0, 0.0],
            [5.0, 2.0, 0.0],
            [1.0, 2.0, -1.0],
            [2.0, 1.0, 0.0],
            [3.0, 2.0, 0.0],
            [4.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0],
            [6.0, 0.0, 0.0],
            [7.0, 0.0, 0.0],
            [8.0, 0.0, 0.0],
            [9.0, 0.0, 0.0],
            [10.0, 0.0, 0.0],
        ]
    )
    bins = firing_discretize(codes, num_bins=5)
    # Column 0: 10 firing values 1..10, edges at ranks 2, 4, 6, 8 = values 3, 5, 7, 9.
    assert bins[:, 0].tolist() == [0, 3, 1, 1, 2, 2, 0, 0, 3, 4, 4, 5, 5]
    # Column 1: equal values share a bin; column 2 never fires.
    assert bins[:, 1].tolist() == [5, 5, 5, 1, 5] + [0] * 8
    assert bins[:, 2].tolist() == [0] * 13
    assert torch.equal(firing_discretize(codes.double(), num_bins=5), bins)
    assert firing_discretize(torch.zeros(3, 2)).abs().sum() == 0
    with pytest.raises(ValueError, match="finite"):
        firing_discretize(torch.tensor([[math.inf], [1.0]]))


def test_detector_scores_one_through_the_gate(dsprites_factors):
    g = torch.Generator().manual_seed(5)
    heart = dsprites_factors[:, 0] == 0
    constant = heart.double()  # fires on one shape, always with the same activation
    scaled = torch.where(heart, torch.rand(N, generator=g, dtype=torch.float64) + 0.1, 0.0)
    s = neuron_semantics(torch.stack([constant, scaled], 1), dsprites_factors)
    assert s.alignment.tolist() == pytest.approx([1.0, 1.0], abs=EXACT)
    assert s.assigned_factor.tolist() == [0, 0]


def constructed_codes() -> torch.Tensor:
    """Units: 0, 1 copy factors 0, 1; 2 mixes factors 0 and 1; 3 is dead (zero); 4 is dead
    (negative, though informative); 5 fires always with one value; 6 fires on 50 samples only;
    7 carries a coarsening of factor 2 (a function of it)."""
    f = FACTORS.double()
    rare = torch.zeros(len(f))
    rare[::12] = 1.0 + f[::12, 2]
    return torch.stack(
        [
            f[:, 0] + 1,
            f[:, 1] * 0.5 + 0.1,
            f[:, 0] * 4 + f[:, 1] + 1,
            torch.zeros(len(f)),
            -f[:, 2] - 1,
            torch.ones(len(f)),
            rare,
            torch.div(f[:, 2], 2, rounding_mode="floor") + 1,
        ],
        1,
    )


def test_semantics_of_constructed_codes():
    s = neuron_semantics(constructed_codes(), FACTORS)
    assert s.neurons.tolist() == [0, 1, 2, 5, 7] and s.num_alive == 6
    nmi = s.normalized_mi
    assert nmi.dtype == torch.float64 and nmi.shape == (5, 3)
    # Copies and the coarse copy: exactly 1 for their factor, 0 (at or below chance) elsewhere.
    for row, factor in ((0, 0), (1, 1), (4, 2)):
        expected = torch.zeros(3, dtype=torch.float64)
        expected[factor] = 1.0
        torch.testing.assert_close(nmi[row], expected, rtol=0, atol=EXACT)
    # The mixture: 10 quantile bins of its 12 values still determine factor 0, not factor 1.
    assert nmi[2, 0] == pytest.approx(1.0, abs=EXACT) and 0.5 < nmi[2, 1] < 0.95
    assert nmi[3].tolist() == [0.0, 0.0, 0.0]  # a constant activation tells nothing
    assert s.alignment.tolist() == pytest.approx([1, 1, 1, 0, 1], abs=EXACT)
    assert s.selectivity[[0, 1, 4]].tolist() == pytest.approx([1, 1, 1], abs=EXACT)
    assert float(s.selectivity[2]) == pytest.approx(1 - float(nmi[2, 1]), abs=EXACT)
    assert s.assigned_factor[[0, 1, 2, 4]].tolist() == [0, 1, 0, 2]
    assert s.mean_alignment == pytest.approx(0.8, abs=EXACT)
    assert s.frac_aligned == pytest.approx(0.8) and s.frac_selective == pytest.approx(0.8)
    assert s.factors_covered == 3 and s.uncovered_factors == ()
    assert s.summary() == {
        "num_alive": 6.0,
        "num_described": 5.0,
        "mean_alignment": s.mean_alignment,
        "frac_aligned": s.frac_aligned,
        "frac_selective": s.frac_selective,
        "factors_covered": 3.0,
    }
    assert torch.equal(neuron_semantics(constructed_codes(), FACTORS).normalized_mi, nmi)


def test_explicit_alive_mask_min_firing_and_thresholds():
    alive = torch.tensor([True, True, False, True, False, False, True, False])
    s = neuron_semantics(constructed_codes(), FACTORS, alive=alive)
    assert s.neurons.tolist() == [0, 1] and s.num_alive == 4
    assert s.factors_covered == 2 and s.uncovered_factors == (2,)
    rare = neuron_semantics(constructed_codes(), FACTORS, min_firing=50)
    assert rare.neurons.tolist() == [0, 1, 2, 5, 6, 7]
    strict = neuron_semantics(constructed_codes(), FACTORS, align_threshold=1.5)
    assert strict.frac_aligned == 0.0 and strict.uncovered_factors == (0, 1, 2)
    with pytest.raises(ValueError, match="alive"):
        neuron_semantics(constructed_codes(), FACTORS, alive=alive[:3])


def test_depends_only_on_the_order_of_each_units_firing_values():
    codes = constructed_codes()
    s, scaled = neuron_semantics(codes, FACTORS), neuron_semantics(codes * 8, FACTORS)
    assert torch.equal(s.normalized_mi, scaled.normalized_mi)


def test_no_described_unit():
    s = neuron_semantics(-constructed_codes().abs(), FACTORS)
    assert s.neurons.numel() == 0 and s.normalized_mi.shape == (0, 3)
    assert math.isnan(s.mean_alignment) and math.isnan(s.frac_aligned)
    assert s.factors_covered == 0 and s.uncovered_factors == (0, 1, 2)
    assert s.summary()["num_described"] == 0.0


def test_single_factor_and_constant_factor():
    codes = constructed_codes()
    single = neuron_semantics(codes, FACTORS[:, 2:])
    assert torch.equal(single.selectivity, single.alignment)
    assert single.alignment[-1] == pytest.approx(1.0, abs=EXACT)
    factors = FACTORS.clone()
    factors[:, 1] = 7  # zero entropy: nothing can encode it
    s = neuron_semantics(codes, factors)
    assert not s.normalized_mi.isnan().any()
    assert s.normalized_mi[:, 1].abs().max() == 0.0
    assert s.uncovered_factors == (1,)


# Same-units comparison of the report: units 0, 2, 3 are described at both epochs.
BEFORE = np.array([0.9, 0.8, 0.2, 0.1, np.nan, 0.5])
AFTER = np.array([0.7, np.nan, 0.2, 0.3, 0.6, np.nan])


def test_survivor_alignment_compares_the_same_units():
    same = survivor_alignment({"alignment": BEFORE}, {"alignment": AFTER})
    assert same.units == 3
    assert (same.before, same.after) == pytest.approx((0.4, 0.4))
    assert same.fall == pytest.approx(0.0)
    # The alive populations' means (0.5 -> 0.45) would have reported a fall of 0.05.
    assert np.nanmean(BEFORE) - np.nanmean(AFTER) == pytest.approx(0.05)
    missing = survivor_alignment({"normalized_mi": np.zeros((6, 2))}, {"alignment": AFTER})
    assert missing.units == 0 and math.isnan(missing.fall)
    with pytest.raises(ValueError, match="widths"):
        survivor_alignment({"alignment": BEFORE}, {"alignment": AFTER[:4]})


def run_with_alignment(path, before: np.ndarray, after: np.ndarray, seed: int = 0) -> Run:
    """A run whose epoch 0 and reference epoch (2) per-neuron arrays hold these alignments; its
    squeeze binds only at epoch 2, so epoch 0 is its trained start."""
    (path / "neurons").mkdir(parents=True)
    for epoch, alignment in ((0, before), (2, after)):
        np.savez(path / "neurons" / f"epoch_{epoch:03d}.npz", alignment=alignment)
    rows = [
        {"epoch": e, "eval/l0": min(k, 150.0), "sparsity/k_last": k}
        for e, k in enumerate((500.0, 275.0, 50.0))
    ]
    return Run(path, {"reference_epoch": 2, "seed": seed}, rows, {})


def test_survivor_alignment_of_runs_and_the_claim(tmp_path):
    run = run_with_alignment(tmp_path / "a", BEFORE, AFTER)
    assert run_survivor_alignment(run) == survivor_alignment(run.neurons(0), run.neurons(2))
    empty = Run(tmp_path / "none", {"reference_epoch": 2}, [], {})
    assert run_survivor_alignment(empty).units == 0
    cond = Condition("dsprites", "topk")
    # Survivors fall by 0.1, 0.12, 0.08: supported; the same units rising: not supported.
    falling = [
        run_with_alignment(tmp_path / f"f{s}", BEFORE, BEFORE - 0.1 - d, s)
        for s, d in enumerate((0.0, 0.02, -0.02))
    ]
    rising = [
        run_with_alignment(tmp_path / f"r{s}", BEFORE, BEFORE + 0.1 + d, s)
        for s, d in enumerate((0.0, 0.02, -0.02))
    ]
    (claim,) = _semantics_claims({cond: falling})
    assert claim.verdict == SUPPORTED and claim.n == "3"
    assert claim.statistic.startswith("fall +0.100 [") and "(5–5 per seed)" in claim.statistic
    (claim,) = _semantics_claims({cond: rising})
    assert claim.verdict == NOT_SUPPORTED
    assert SurvivorAlignment(0.5, 0.25, 2).fall == 0.25
