"""Per-neuron semantics on constructed codes with known answers."""

import math

import numpy as np
import pytest
import torch

from vaesae.metrics import neuron_semantics
from vaesae.metrics.reference import reference_mig

APPROX = {"abs": 1e-12}
# every combination of three factors, 10 times: factors exactly independent in the sample
FACTORS = torch.cartesian_prod(torch.arange(3), torch.arange(4), torch.arange(5)).repeat(10, 1)
# H(f2 // 2) / H(f2): f2 uniform on 5 values, f2 // 2 takes values with probabilities .4, .4, .2
PARTIAL = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)) / math.log(5)


def constructed_codes() -> torch.Tensor:
    """Neurons: 0-2 copy factors 0-2; 3 mixes factors 0 and 1; 4 is dead (zero); 5 is dead
    (negative, though informative); 6 fires always and carries nothing; 7 carries part of f2."""
    f = FACTORS.double()
    return torch.stack(
        [
            f[:, 0],
            f[:, 1] * 0.5 + 0.1,
            f[:, 2],
            f[:, 0] * 4 + f[:, 1],
            torch.zeros(len(f)),
            -f[:, 2] - 1,
            torch.ones(len(f)),
            torch.div(f[:, 2], 2, rounding_mode="floor"),
        ],
        1,
    )


def test_semantics_of_constructed_codes():
    s = neuron_semantics(constructed_codes(), FACTORS)
    assert s.neurons.tolist() == [0, 1, 2, 3, 6, 7]
    expected_nmi = [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [0, 0, 0],
        [0, 0, PARTIAL],
    ]
    np.testing.assert_allclose(s.normalized_mi.numpy(), expected_nmi, rtol=0, atol=1e-12)
    assert s.alignment.tolist() == pytest.approx([1, 1, 1, 1, 0, PARTIAL], **APPROX)
    assert s.selectivity.tolist() == pytest.approx([1, 1, 1, 0, 0, PARTIAL], **APPROX)
    assert s.assigned_factor[[0, 1, 2, 5]].tolist() == [0, 1, 2, 2]
    assert int(s.assigned_factor[3]) in (0, 1)  # a tie between the two factors it mixes
    assert s.mean_alignment == pytest.approx((4 + PARTIAL) / 6, **APPROX)
    assert s.frac_aligned == pytest.approx(5 / 6, **APPROX)
    assert s.frac_selective == pytest.approx(4 / 6, **APPROX)
    assert s.factors_covered == 3 and s.uncovered_factors == ()
    assert s.summary() == {
        "num_alive": 6.0,
        "mean_alignment": s.mean_alignment,
        "frac_aligned": s.frac_aligned,
        "frac_selective": s.frac_selective,
        "factors_covered": 3.0,
    }


def test_explicit_alive_mask_and_uncovered_factor():
    alive = torch.tensor([True, True, False, True, False, False, True, False])
    s = neuron_semantics(constructed_codes(), FACTORS, alive=alive)
    assert s.neurons.tolist() == [0, 1, 3, 6]
    assert s.factors_covered == 2 and s.uncovered_factors == (2,)
    assert s.frac_aligned == pytest.approx(3 / 4, **APPROX)


def test_thresholds_are_parameters():
    codes = constructed_codes()
    strict = neuron_semantics(codes, FACTORS, align_threshold=0.7, select_threshold=0.7)
    assert strict.frac_aligned == pytest.approx(4 / 6, **APPROX)
    assert strict.frac_selective == pytest.approx(3 / 6, **APPROX)
    assert strict.factors_covered == 3  # factor 2 is still covered by its copy
    none = neuron_semantics(codes, FACTORS, align_threshold=1.5, select_threshold=1.5)
    assert none.frac_aligned == 0.0 and none.frac_selective == 0.0
    assert none.factors_covered == 0 and none.uncovered_factors == (0, 1, 2)
    assert (none.align_threshold, none.select_threshold) == (1.5, 1.5)


def test_normalized_mi_matches_reference_on_random_codes():
    g = torch.Generator().manual_seed(0)
    factors = torch.randint(0, 6, (1500, 3), generator=g)
    codes = torch.relu(torch.randn(1500, 10, generator=g) + 0.5 * factors[:, [0] * 10] - 2.0)
    codes[:, 4] = 0.0
    s = neuron_semantics(codes, factors)
    ref = reference_mig(codes.numpy(), factors.numpy())
    alive = [d for d in range(10) if d != 4]
    assert s.neurons.tolist() == alive
    np.testing.assert_allclose(
        s.normalized_mi.numpy(), ref.mi[alive] / ref.entropy, rtol=0, atol=1e-9
    )


def test_no_alive_neuron():
    s = neuron_semantics(-constructed_codes().abs(), FACTORS)
    assert s.neurons.numel() == 0 and s.normalized_mi.shape == (0, 3)
    assert math.isnan(s.mean_alignment) and math.isnan(s.frac_aligned)
    assert s.factors_covered == 0 and s.uncovered_factors == (0, 1, 2)


def test_single_factor_and_constant_factor():
    codes = constructed_codes()
    single = neuron_semantics(codes, FACTORS[:, 2:])
    assert torch.equal(single.selectivity, single.alignment)
    assert single.alignment.tolist() == pytest.approx([0, 0, 1, 0, 0, PARTIAL], **APPROX)
    factors = FACTORS.clone()
    factors[:, 1] = 7  # zero entropy: nothing can encode it
    s = neuron_semantics(codes, factors)
    assert not s.normalized_mi.isnan().any()
    assert s.normalized_mi[:, 1].abs().max() == 0.0
    assert s.uncovered_factors == (1,)
