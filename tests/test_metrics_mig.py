"""MIG against the numpy + scikit-learn reference, invariances, known answers."""

import numpy as np
import pytest
import torch

import vaesae.metrics.mutual_info as mutual_info_module
from vaesae.metrics import (
    histogram_discretize,
    mig,
    mutual_information,
)
from vaesae.metrics.reference import reference_discretize, reference_mig

N = 2000
TOL = 1e-9  # the issue asks for 1e-6; the implementations agree to ~1e-15


def make_factors(g: torch.Generator, n: int = N) -> torch.Tensor:
    """Four factors; two use values that neither start at 0 nor are contiguous."""
    f = torch.stack([torch.randint(0, s, (n,), generator=g) for s in (3, 6, 10, 8)], 1)
    f[:, 1] = f[:, 1] * 7 + 100
    f[:, 3] = torch.tensor([-5, 0, 2, 3, 11, 12, 40, 41])[f[:, 3]]
    return f


def scaled(f: torch.Tensor) -> torch.Tensor:
    f = f.double()
    return (f - f.mean(0)) / f.std(0)


def gaussian(g, f):
    return torch.randn(N, 12, generator=g)


def noisy_copies(g, f):
    noise = torch.tensor([0.05, 0.3, 1.0]).repeat_interleave(4)
    return (scaled(f).repeat(1, 3) + noise * torch.randn(N, 12, generator=g).double()).float()


def constant_dims(g, f):
    z = torch.randn(N, 12, generator=g)
    z[:, 0] = 0.0
    z[:, 1] = 3.7
    z[:, 2] = -1e6
    z[:, 3] = scaled(f)[:, 2].float()
    return z


def sparse_nonnegative(g, f):
    z = torch.relu(torch.randn(N, 12, generator=g) + 0.5 * scaled(f).repeat(1, 3).float() - 1.2)
    z[:, 0] = 0.0
    z[5, 0] = 0.25
    assert (z == 0).double().mean() > 0.75
    return z


def skewed(g, f):
    return torch.exp(3.0 * torch.randn(N, 12, generator=g) + scaled(f).repeat(1, 3).float())


def skewed_float64(g, f):
    return torch.exp(3.0 * torch.randn(N, 12, generator=g, dtype=torch.float64))


CASES = [gaussian, noisy_copies, constant_dims, sparse_nonnegative, skewed, skewed_float64]


def assert_matches_reference(codes: torch.Tensor, factors: torch.Tensor, num_bins: int = 20):
    ours = mig(codes, factors, num_bins)
    ref = reference_mig(codes.numpy(), factors.numpy(), num_bins)
    assert abs(ours.score - ref.score) < TOL
    np.testing.assert_allclose(ours.per_factor.numpy(), ref.per_factor, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.mi.numpy(), ref.mi, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.entropy.numpy(), ref.entropy, rtol=0, atol=TOL)
    return ours, ref


@pytest.mark.parametrize("make_codes", CASES, ids=lambda c: c.__name__)
def test_mig_matches_reference(make_codes):
    g = torch.Generator().manual_seed(7)
    factors = make_factors(g)
    codes = make_codes(g, factors)
    binned = histogram_discretize(codes)
    assert np.array_equal(binned.numpy() + 1, reference_discretize(codes.numpy()))
    ours, _ = assert_matches_reference(codes, factors)
    assert ours.mi.shape == (12, 4) and ours.per_factor.shape == (4,)
    assert ours.mi.dtype == torch.float64


def test_informative_codes_score_high_and_noise_low():
    g = torch.Generator().manual_seed(7)
    factors = make_factors(g)
    assert mig(noisy_copies(g, factors)[:, :4], factors).score > 0.5
    assert mig(gaussian(g, factors), factors).score < 0.05


def test_constant_and_maximum_values_bin_like_numpy():
    codes = torch.tensor([[0.0, 2.0, 5.0], [1.0, 2.0, 5.0], [0.5, 2.0, 6.0], [0.95, 2.0, 5.0]])
    binned = histogram_discretize(codes, 10)
    assert binned[:, 0].tolist() == [0, 9, 5, 9]  # the maximum lands in the last bin
    assert binned[:, 1].unique().numel() == 1  # a constant code lands in one bin
    assert np.array_equal(binned.numpy() + 1, reference_discretize(codes.numpy(), 10))
    factors = torch.tensor([[0], [1], [0], [1]])
    assert mutual_information(codes, factors, 10)[0][1, 0] == 0.0


@pytest.mark.parametrize("num_bins", [1, 2, 7, 50])
def test_other_bin_counts_match_reference(num_bins):
    g = torch.Generator().manual_seed(3)
    factors = make_factors(g, 500)
    codes = torch.randn(500, 6, generator=g)
    codes[:, 0] = 1.0
    binned = histogram_discretize(codes, num_bins)
    assert np.array_equal(binned.numpy() + 1, reference_discretize(codes.numpy(), num_bins))
    ours, ref = (
        mig(codes, factors, num_bins),
        reference_mig(codes.numpy(), factors.numpy(), num_bins),
    )
    np.testing.assert_allclose(ours.mi.numpy(), ref.mi, rtol=0, atol=TOL)


def test_wide_codes_and_block_boundaries(monkeypatch):
    g = torch.Generator().manual_seed(11)
    factors = make_factors(g, 1500)[:, :3]
    codes = torch.relu(torch.randn(1500, 300, generator=g) - 1.0)
    codes[:, ::7] += factors[:, :1].float()
    ours, _ = assert_matches_reference(codes, factors)
    monkeypatch.setattr(mutual_info_module, "_BLOCK_ELEMENTS", 1)  # one code dimension per block
    assert torch.equal(mig(codes, factors).mi, ours.mi)


def test_factor_values_are_relabelled():
    g = torch.Generator().manual_seed(5)
    factors = make_factors(g)
    codes = noisy_copies(g, factors)
    relabelled = torch.stack([torch.unique(c, return_inverse=True)[1] for c in factors.T], 1)
    assert not torch.equal(relabelled, factors)
    assert torch.equal(mig(codes, factors).mi, mig(codes, relabelled).mi)


def test_permuting_code_dimensions():
    g = torch.Generator().manual_seed(2)
    factors = make_factors(g)
    codes = noisy_copies(g, factors)
    perm = torch.randperm(12, generator=g)
    base, permuted = mig(codes, factors), mig(codes[:, perm], factors)
    assert torch.equal(permuted.mi, base.mi[perm])
    assert torch.equal(permuted.per_factor, base.per_factor)
    assert permuted.score == base.score


def bin_centred_codes(g: torch.Generator, factors: torch.Tensor) -> torch.Tensor:
    """Codes whose every value lies >= 0.2 bin widths from any of the 20 bin edges.

    Each code is j + 0.5 + u with j in 0..19 depending on a factor plus noise and |u| <= 0.3,
    with one sample pinned at 0 and one at 20 so the range, hence the edges, are the integers.
    Rounding in an affine map cannot move such a value across an edge.
    """
    n, k = factors.shape
    level = scaled(factors).repeat(1, 2) + torch.randn(n, 2 * k, generator=g, dtype=torch.float64)
    j = torch.clamp(torch.floor(level * 4 + 10), 0, 19)
    u = (torch.rand(n, 2 * k, generator=g, dtype=torch.float64) - 0.5) * 0.6
    z = j + 0.5 + u
    z[0], z[1] = 0.0, 20.0
    return z


def test_positive_affine_map_of_a_code_changes_nothing():
    g = torch.Generator().manual_seed(4)
    factors = make_factors(g)
    codes = bin_centred_codes(g, factors)
    slopes = torch.tensor([3.0, 0.1, 1e3, 7.25, 1.0, 0.5, 2.0, 1e-2])
    shifts = torch.tensor([-7.0, 0.3, 1e4, 0.0, -123.4, 5.0, -1e3, 1e2])
    mapped = codes * slopes.double() + shifts.double()
    assert torch.equal(histogram_discretize(mapped), histogram_discretize(codes))
    base, moved = mig(codes, factors), mig(mapped, factors)
    assert torch.equal(moved.mi, base.mi)
    assert moved.score == base.score
    assert base.mi.max() > 0.1
    assert_matches_reference(mapped, factors)


def test_increasing_map_that_keeps_values_in_separate_bins_changes_nothing():
    g = torch.Generator().manual_seed(6)
    factors = make_factors(g)
    noise = torch.randint(0, 4, (N, 3), generator=g)
    codes = torch.cat([factors[:, 2:3].double(), (factors[:, :3] % 4 + noise).double()], 1)
    mapped = codes + 0.05 * codes**2  # strictly increasing for codes >= 0, not affine
    for column in (codes, mapped):
        binned = histogram_discretize(column)
        for d in range(4):
            assert binned[:, d].unique().numel() == column[:, d].unique().numel()
    # same partition of the samples; only the order of float sums over bins differs
    torch.testing.assert_close(mig(mapped, factors).mi, mig(codes, factors).mi, rtol=0, atol=1e-12)


def test_nonlinear_map_of_continuous_codes_moves_equal_width_bins_as_the_reference_does():
    # Equal-width binning is not invariant under every increasing map: exp squeezes most
    # values into the low bins. The reference agrees, so this is the defined behaviour.
    g = torch.Generator().manual_seed(4)
    factors = make_factors(g)
    codes = bin_centred_codes(g, factors)
    ours, _ = assert_matches_reference(torch.exp(codes / 4), factors)
    assert not torch.allclose(ours.mi, mig(codes, factors).mi)


def test_code_copying_a_factor_gives_per_factor_mig_one():
    # every combination of three factors, 4 times: factors exactly independent in the sample
    factors = torch.cartesian_prod(torch.arange(3), torch.arange(4), torch.arange(5)).repeat(4, 1)
    copy0 = factors[:, 0].double() * 2.5 - 1.0
    copy1 = factors[:, 1].double()
    constant = torch.full_like(copy0, 4.0)
    result = mig(torch.stack([copy0, copy1, constant], 1), factors)
    assert result.per_factor.tolist() == pytest.approx([1.0, 1.0, 0.0], abs=1e-12)
    assert result.score == pytest.approx(2 / 3, abs=1e-12)
    assert torch.equal(result.mi[0, 0], result.entropy[0])
    # a second code carrying the same factor closes the gap
    result = mig(torch.stack([copy0, copy1, copy0.exp()], 1), factors)
    assert result.per_factor[0].item() == pytest.approx(0.0, abs=1e-12)
    assert result.per_factor[1].item() == pytest.approx(1.0, abs=1e-12)


def test_constant_factor_gives_nan_like_the_reference():
    g = torch.Generator().manual_seed(1)
    factors = make_factors(g, 300)
    factors[:, 0] = 2
    codes = torch.randn(300, 4, generator=g)
    ours, ref = mig(codes, factors), reference_mig(codes.numpy(), factors.numpy())
    assert ours.entropy[0] == 0.0 and torch.isnan(ours.per_factor[0]) and np.isnan(ours.score)
    assert np.isnan(ref.per_factor[0])


def test_invalid_inputs():
    codes, factors = torch.randn(10, 3), torch.randint(0, 2, (10, 2))
    with pytest.raises(ValueError, match="at least two code dimensions"):
        mig(codes[:, :1], factors)
    with pytest.raises(ValueError, match="same number of samples"):
        mig(codes[:9], factors)
    with pytest.raises(ValueError, match="integer"):
        mig(codes, factors.float())
    bad = codes.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        mig(bad, factors)
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        mig(bad, factors)
    tight = torch.tensor([[1e16, 0.0], [1e16 + 2, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="too many bins"):
        mig(tight, factors[:2])
    with pytest.raises(ValueError, match="Too many bins"):
        reference_mig(tight.numpy(), factors[:2].numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(7)
    factors = make_factors(g)
    codes = sparse_nonnegative(g, factors)
    cpu, gpu = mig(codes, factors), mig(codes.cuda(), factors.cuda())
    assert gpu.mi.is_cuda
    torch.testing.assert_close(gpu.mi.cpu(), cpu.mi, rtol=0, atol=1e-12)
