"""Shapes3D through the dataset contract (the scene geometry itself: test_shapes3d_scene.py)."""

import pytest
import torch

from vaesae.data import SHAPES3D, get_dataset


@pytest.fixture(scope="module")
def ds():
    return get_dataset("shapes3d", source="procedural")


def one(**fixed):
    base = dict(floor_hue=0, wall_hue=3, object_hue=6, scale=4, shape=0, orientation=7) | fixed
    return torch.tensor([[base[n] for n in SHAPES3D.factor_names]])


def test_contract(ds):
    f = ds.sample_factors(256, torch.Generator().manual_seed(0))
    imgs = ds.images(f)
    assert imgs.dtype == torch.uint8 and imgs.shape == (256, 3, 64, 64)
    assert ds.image_shape == (3, 64, 64) and len(ds) == 480_000
    assert torch.equal(imgs, ds.images(f))


@pytest.mark.parametrize(
    "factor, rows, cols",
    [
        ("floor_hue", slice(36, 64), slice(0, 64)),  # below the horizon
        ("wall_hue", slice(8, 44), slice(0, 64)),  # between the sky and the floor
        ("object_hue", slice(14, 60), slice(12, 52)),  # the centre, where the object stands
    ],
)
def test_each_hue_recolours_only_its_surface(ds, factor, rows, cols):
    a, b = ds.images(one()), ds.images(one(**{factor: 8}))
    changed = (a != b).any(1)[0]
    assert changed.sum() > 300
    outside = changed.clone()
    outside[rows, cols] = False
    assert not outside.any(), f"{factor} changed pixels outside rows {rows}, cols {cols}"
    others = [n for n in ("floor_hue", "wall_hue", "object_hue") if n != factor]
    for other in others:
        both = (ds.images(one(**{other: 8})) != a).any(1)[0]
        assert not (both & changed).all()


def test_sky_is_fixed_and_on_top(ds):
    imgs = ds.images(ds.sample_factors(64, torch.Generator().manual_seed(1)))
    top = imgs[:, :, :3].float()
    assert torch.equal(top.amax(0), top.amin(0))  # the same sky in every image
    assert top[0, 2].mean() > top[0, 0].mean()  # light blue: more blue than red


def test_scale_and_orientation_change_the_geometry(ds):
    base = ds.images(one())
    assert not torch.equal(base, ds.images(one(scale=7)))
    assert not torch.equal(base, ds.images(one(orientation=0)))
    assert not torch.equal(base, ds.images(one(shape=2)))
