import numpy as np
import pytest
import torch

from vaesae.data import DSPRITES, get_dataset
from vaesae.data import dsprites_render as R
from vaesae.data.__main__ import DEFAULT_REFERENCE
from vaesae.data.reference import load_dsprites_reference, match_dsprites


@pytest.fixture(scope="module")
def ds():
    return get_dataset("dsprites", source="procedural")


def grid(**fixed):
    """All factor tuples with the given classes fixed, the others at 0."""
    base = dict(shape=0, scale=5, orientation=0, pos_x=0, pos_y=0) | fixed
    return torch.tensor([[base[n] for n in DSPRITES.factor_names]])


def centroid(img: torch.Tensor) -> tuple[float, float]:
    m = img[0].double() / 255
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    return float((m * xs).sum() / m.sum()), float((m * ys).sum() / m.sum())


def test_contract(ds):
    f = ds.sample_factors(256, torch.Generator().manual_seed(0))
    imgs = ds.images(f)
    assert imgs.dtype == torch.uint8 and imgs.shape == (256, 1, 64, 64)
    assert set(imgs.unique().tolist()) <= {0, 255}
    assert ds.image_shape == (1, 64, 64) and len(ds) == 737_280
    assert ds.source == "procedural"


def test_deterministic_and_cached(ds, data_root):
    f = ds.sample_factors(512, torch.Generator().manual_seed(1))
    fresh = R.DSpritesRenderer(R.build_templates())
    assert torch.equal(ds.images(f), fresh(f))
    assert (data_root / ".vaesae-templates" / f"{R.RENDER_VERSION}.npy").exists()


def test_position_moves_the_sprite(ds):
    for axis, name in ((0, "pos_x"), (1, "pos_y")):
        cs = [centroid(ds.images(grid(**{name: i}))[0])[axis] for i in range(32)]
        steps = np.diff(cs)
        # Centres advance 32/31 px per class; pixel snapping keeps each step within 1/2 px.
        assert np.all(steps > 0.5) and np.all(steps < 1.6)
        assert cs[-1] - cs[0] == pytest.approx(32.0, abs=0.3)
    other = centroid(ds.images(grid(pos_x=20))[0])
    assert other[1] == pytest.approx(centroid(ds.images(grid())[0])[1], abs=1e-6)


def test_scale_grows_the_sprite(ds):
    for shape in range(3):
        areas = [int((ds.images(grid(shape=shape, scale=s)) > 0).sum()) for s in range(6)]
        assert areas == sorted(areas) and len(set(areas)) == 6
        assert areas[-1] / areas[0] == pytest.approx(4.0, rel=0.15)  # area ~ scale^2


def test_square_size_matches_the_real_dataset(ds):
    img = ds.images(grid(shape=0, scale=5))[0, 0] > 0
    rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
    # Real frames: a scale-1 square at position (0, 0) covers pixels 6..25 on both axes.
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (6, 25, 6, 25)


def test_orientation_turns_the_sprite(ds):
    upright = ds.images(grid(shape=2, pos_x=16, pos_y=16))
    quarter = ds.images(grid(shape=2, orientation=10, pos_x=16, pos_y=16))  # 10/39 of a turn
    half = ds.images(grid(shape=2, orientation=19, pos_x=16, pos_y=16))
    full = ds.images(grid(shape=2, orientation=39, pos_x=16, pos_y=16))
    assert torch.equal(upright, full)  # 0 and 2*pi are the same orientation
    (ux, uy), (qx, _), (hx, hy) = (centroid(i[0]) for i in (upright, quarter, half))
    assert uy < 31.5 < hy  # the heart's heavy lobes move from top to bottom
    assert qx < ux  # counter-clockwise on screen: the lobes swing left first
    assert abs(hx - ux) < 1.0


def test_square_has_fourfold_symmetry(ds):
    a = ds.images(grid(shape=0, orientation=0, pos_x=15, pos_y=15))
    b = ds.images(grid(shape=0, orientation=4, pos_x=15, pos_y=15))
    assert not torch.equal(a, b)
    assert (a > 0).sum() == pytest.approx(int((b > 0).sum()), rel=0.12)


def test_no_sprite_touches_the_border(ds):
    n = 3 * 6 * 40
    body = DSPRITES.factors_of(torch.arange(0, len(DSPRITES), 32 * 32))[:, :3]
    assert len(body) == n
    for px in (0, 31):
        for py in (0, 31):
            pos = torch.tensor([[px, py]]).expand(n, 2)
            imgs = ds.images(torch.cat([body, pos], 1))[:, 0]
            edges = (imgs[:, 0], imgs[:, -1], imgs[:, :, 0], imgs[:, :, -1])
            assert not any(bool(e.any()) for e in edges), (px, py)


def test_shapes_differ(ds):
    imgs = [ds.images(grid(shape=s, pos_x=10, pos_y=10)) for s in range(3)]
    assert not torch.equal(imgs[0], imgs[1]) and not torch.equal(imgs[1], imgs[2])


def test_templates_refuse_a_wrong_shape():
    with pytest.raises(ValueError, match="templates must have shape"):
        R.DSpritesRenderer(np.zeros((3, 6, 40, 32, 32), dtype=bool))


REFERENCE = DEFAULT_REFERENCE  # the real frames shipped with the package


def test_matching_recovers_procedural_images(ds):
    f = ds.sample_factors(12, torch.Generator().manual_seed(5))
    imgs = ds.images(f)
    iou, found = match_dsprites(imgs[:, 0] > 0, ds.backend)
    assert torch.all(iou == 1.0)
    assert torch.equal(ds.images(found), imgs)  # symmetric sprites may match another orientation


def test_fidelity_to_the_real_frames(ds):
    real = load_dsprites_reference(REFERENCE / "dsprites.gif")
    assert real.shape == (320, 64, 64)
    iou, _ = match_dsprites(real, ds.backend)
    assert float(iou.mean()) >= 0.95 and float(iou.min()) >= 0.85
