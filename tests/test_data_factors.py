import numpy as np
import pytest
import torch

from vaesae.data import DSPRITES, SHAPES3D, FactorSpace

SPACES = [DSPRITES, SHAPES3D]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_official_sizes_and_values(space):
    expected = {"dsprites": (3, 6, 40, 32, 32), "shapes3d": (10, 10, 10, 8, 4, 15)}[space.name]
    assert space.factor_sizes == expected
    assert len(space) == {"dsprites": 737_280, "shapes3d": 480_000}[space.name]
    for values, size in zip(space.factor_values, space.factor_sizes, strict=True):
        assert len(values) == size


def test_value_grids_match_the_releases():
    np.testing.assert_allclose(DSPRITES.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert DSPRITES.factor_values[2][-1] == pytest.approx(2 * np.pi)
    np.testing.assert_allclose(SHAPES3D.factor_values[0], np.arange(10) / 10)
    np.testing.assert_allclose(SHAPES3D.factor_values[3][[0, -1]], [0.75, 1.25])
    np.testing.assert_allclose(SHAPES3D.factor_values[5][[0, 7, -1]], [-30, 0, 30])


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_last_factor_is_fastest(space):
    f = space.factors_of(torch.tensor([0, 1, space.factor_sizes[-1]]))
    assert f[0].tolist() == [0] * space.num_factors
    assert f[1].tolist() == [0] * (space.num_factors - 1) + [1]
    assert f[2].tolist() == [0] * (space.num_factors - 2) + [1, 0]
    last = space.factors_of(torch.tensor([len(space) - 1]))[0]
    assert last.tolist() == [s - 1 for s in space.factor_sizes]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_index_round_trips(space):
    index = torch.arange(len(space))
    assert torch.equal(space.index_of(space.factors_of(index)), index)
    f = space.sample_factors(5000, torch.Generator().manual_seed(0))
    assert torch.equal(space.factors_of(space.index_of(f)), f)


def test_index_matches_numpy_ravel():
    f = SHAPES3D.sample_factors(1000, torch.Generator().manual_seed(1))
    expected = np.ravel_multi_index(tuple(f.T.numpy()), SHAPES3D.factor_sizes)
    assert SHAPES3D.index_of(f).numpy().tolist() == expected.tolist()


def test_sampling_is_uniform_and_seeded():
    a = DSPRITES.sample_factors(60_000, torch.Generator().manual_seed(3))
    b = DSPRITES.sample_factors(60_000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    counts = torch.bincount(a[:, 0], minlength=3).double() / len(a)
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.double), atol=0.01)
    assert int(a[:, 3].max()) == 31 and int(a[:, 3].min()) == 0


def test_bad_factors_are_refused_with_the_valid_ranges():
    with pytest.raises(ValueError, match="pos_x"):
        DSPRITES.index_of(torch.tensor([[0, 0, 0, 32, 0]]))
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        DSPRITES.index_of(torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        DSPRITES.index_of(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="out of range"):
        DSPRITES.factors_of(torch.tensor([len(DSPRITES)]))


def test_values_of():
    tiny = FactorSpace("tiny", ("a", "b"), (np.array([1.0, 2.0]), np.array([0.0, 0.5, 1.0])))
    assert tiny.values_of(np.array([[1, 2], [0, 1]])).tolist() == [[2.0, 1.0], [1.0, 0.5]]
