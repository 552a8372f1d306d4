"""Procedural Shapes3D scene: templates, composition and the reference matcher."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaesae.data import reference, shapes3d_scene
from vaesae.data.__main__ import DEFAULT_REFERENCE
from vaesae.data.shapes3d_scene import (
    CAPSULE,
    CUBE,
    FLOOR,
    OBJECT,
    SKY,
    SKY_RGB,
    WALL,
    build_templates,
    compose,
    hue_to_rgb,
    render_geometry,
)

SCALES = np.linspace(0.75, 1.25, 8)
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)
REFERENCE_DIR = DEFAULT_REFERENCE


def _compose_one(weights: np.ndarray, hues: tuple[float, float, float]) -> np.ndarray:
    return compose(torch.from_numpy(weights)[None], torch.tensor([hues]))[0].numpy()


@pytest.mark.parametrize("shape", range(4))
def test_coverage_sums_to_one(shape: int) -> None:
    for orientation in (-30.0, 4.0, 30.0):
        cover = render_geometry(1.25, shape, orientation, shaded=False)
        assert cover.shape == (4, 64, 64) and cover.dtype == np.float32
        assert (cover >= 0).all()
        np.testing.assert_allclose(cover.sum(axis=0), 1.0, atol=1e-6)


def test_shaded_weights_keep_coverage_of_sky() -> None:
    cover = render_geometry(1.0, CUBE, 0.0, shaded=False)
    shaded = render_geometry(1.0, CUBE, 0.0)
    np.testing.assert_array_equal(shaded[SKY], cover[SKY])
    for s in (FLOOR, WALL, OBJECT):
        assert ((shaded[s] > 0) == (cover[s] > 0)).all()


def test_render_is_deterministic() -> None:
    a = render_geometry(0.9, CAPSULE, -12.857, supersample=3)
    b = render_geometry(0.9, CAPSULE, -12.857, supersample=3)
    np.testing.assert_array_equal(a, b)


def test_sky_on_top_floor_at_bottom() -> None:
    for shape in range(4):
        for orientation in (-30.0, 0.0, 30.0):
            cover = render_geometry(1.25, shape, orientation, shaded=False)
            assert cover[SKY, :4].min() == 1.0, "top rows are sky"
            assert cover[FLOOR, -2:].min() == 1.0, "bottom rows are floor"
            assert cover[OBJECT, 32, 32] == 1.0, "the object covers the image centre"
            # Walls fill the band between sky and floor at the image's sides.
            assert cover[WALL, 28, :3].min() == 1.0 and cover[WALL, 28, -3:].min() == 1.0


def _corner_column(orientation: float) -> int | None:
    """Column of the walls' corner: the lowest point of the sky's lower edge, if it has a kink."""
    sky_rows = render_geometry(1.0, CUBE, orientation, shaded=False)[SKY].sum(axis=0)
    col = int(np.argmax(sky_rows))
    if sky_rows[col] - max(sky_rows[0], sky_rows[-1]) < 1.0 or col in (0, 63):
        return None
    return col


def test_orientation_swings_the_wall_corner() -> None:
    corners = [_corner_column(o) for o in ORIENTATIONS]
    assert corners[0] is not None and corners[0] > 32, "at -30 degrees the corner is on the right"
    assert corners[-1] is not None and corners[-1] < 32, "at +30 degrees the corner is on the left"
    assert corners[7] is None, "at 0 degrees the back wall faces the camera"
    # The scene pans one way: the right corner leaves on the right, the left enters on the left.
    right = [c for c in corners[:7] if c is not None]
    left = [c for c in corners[8:] if c is not None]
    assert len(right) >= 3 and len(left) >= 3
    assert all(np.diff(right) > 0) and all(np.diff(left) > 0)


@pytest.mark.parametrize("shape", range(4))
def test_scale_grows_the_object(shape: int) -> None:
    areas = [render_geometry(s, shape, 8.57, shaded=False)[OBJECT].sum() for s in SCALES]
    assert all(np.diff(areas) > 0)
    assert areas[-1] / areas[0] > 1.5


def test_capsule_is_taller_than_wide_and_sphere_is_round() -> None:
    def extent(shape: int) -> tuple[int, int]:
        obj = render_geometry(1.0, shape, 0.0, shaded=False)[OBJECT] > 0.5
        rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
        return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1

    height, width = extent(CAPSULE)
    assert height > 1.5 * width
    height, width = extent(shapes3d_scene.SPHERE)
    assert abs(height - width) <= 1


def test_shadow_darkens_floor_next_to_object() -> None:
    cover = render_geometry(1.0, shapes3d_scene.SPHERE, 0.0, shaded=False)
    shaded = render_geometry(1.0, shapes3d_scene.SPHERE, 0.0)
    pure = cover[FLOOR] == 1.0
    shade = np.where(pure, shaded[FLOOR], np.nan)
    rows, cols = np.nonzero(cover[OBJECT] > 0)
    near = np.zeros_like(pure)
    near[rows.min() : rows.max() + 6, max(cols.min() - 6, 0) : cols.max() + 7] = True
    dark = pure & near & (shade < 0.5 * np.nanmedian(shade))
    assert dark.sum() >= 10, "the object casts a shadow on the floor beside it"
    assert not (pure & ~near & (shade < 0.5 * np.nanmedian(shade))).any(), "and nowhere else"


def test_hue_to_rgb_matches_colorsys() -> None:
    hues = torch.linspace(0.0, 0.9, 10)
    expected = torch.tensor([colorsys.hsv_to_rgb(float(h), 1.0, 1.0) for h in hues])
    torch.testing.assert_close(hue_to_rgb(hues), expected)


def test_compose_matches_hand_computed_pixel() -> None:
    weights = torch.zeros(2, 4, 2, 2)
    weights[0, :, 0, 0] = torch.tensor([0.5, 0.25, 0.0, 0.25])
    weights[0, :, 1, 1] = torch.tensor([0.0, 0.0, 1.5, 0.0])
    hues = torch.tensor([[0.1, 0.6, 0.0], [0.0, 0.0, 0.0]])
    out = compose(weights, hues)
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.float32
    # floor hue 0.1 = (1, 0.6, 0), wall hue 0.6 = (0, 0.4, 1), sky (153, 226, 249) / 255.
    expected = [
        0.5 * 1.0 + 0.25 * 0.0 + 0.25 * 153 / 255,
        0.5 * 0.6 + 0.25 * 0.4 + 0.25 * 226 / 255,
        0.5 * 0.0 + 0.25 * 1.0 + 0.25 * 249 / 255,
    ]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))
    # Object hue 0 (red) lit at 1.5 clips to pure red.
    torch.testing.assert_close(out[0, :, 1, 1], torch.tensor([1.0, 0.0, 0.0]))
    assert out[1].abs().max() == 0.0


@pytest.mark.parametrize("surface", [FLOOR, WALL, OBJECT])
def test_each_hue_recolours_only_its_surface(surface: int) -> None:
    weights = render_geometry(1.0, CUBE, -21.43)
    base = (0.0, 0.6, 0.3)
    changed = list(base)
    changed[surface] = 0.8
    delta = np.abs(_compose_one(weights, base) - _compose_one(weights, tuple(changed))).max(axis=0)
    assert (delta[weights[surface] == 0] == 0).all(), "no other surface changes"
    assert (delta[weights[surface] > 0.05] > 0).all(), "all of this surface changes"


def test_build_templates_layout() -> None:
    scales, orientations = SCALES[[0, -1]], ORIENTATIONS[[0, 7, 14]]
    templates = build_templates(scales, orientations, size=16, supersample=1)
    assert templates.shape == (2, 4, 3, 4, 16, 16) and templates.dtype == np.float32
    expected = render_geometry(scales[1], CAPSULE, orientations[2], size=16, supersample=1)
    np.testing.assert_array_equal(templates[1, CAPSULE, 2], expected)


def test_match_recovers_procedural_factors() -> None:
    scales, orientations = SCALES[[0, 7]], ORIENTATIONS[[0, 14]]
    templates = build_templates(scales, orientations, supersample=1)
    truth = torch.tensor([[0, 6, 3, 1, CAPSULE, 0], [7, 2, 9, 0, CUBE, 1], [4, 4, 1, 1, 2, 1]])
    weights = torch.from_numpy(templates[truth[:, 3], truth[:, 4], truth[:, 5]])
    frames = compose(weights, truth[:, :3].float() / 10).permute(0, 2, 3, 1)
    frames = (frames * 255).round().to(torch.uint8).numpy()
    match = reference.match_shapes3d(frames, templates)
    torch.testing.assert_close(match.factors, truth)
    np.testing.assert_array_equal(match.images, frames)
    assert match.mae.max() == 0.0 and np.isfinite(match.psnr).all()


def test_side_by_side_png(tmp_path: Path) -> None:
    real = np.zeros((3, 64, 64, 3), np.uint8)
    procedural = np.full((3, 64, 64, 3), 200, np.uint8)
    out = reference.shapes3d_side_by_side(real, procedural, tmp_path / "sbs.png", ncols=2)
    from PIL import Image

    page = np.asarray(Image.open(out))
    assert page.shape[2] == 3 and page.shape[1] > 4 * 64 and page.shape[0] > 2 * 64
    assert (page == 0).any() and (page == 200).any()


def test_load_reference_frames() -> None:
    frames = reference.load_shapes3d_reference(REFERENCE_DIR)
    assert frames.shape == (103, 64, 64, 3) and frames.dtype == np.uint8
    # Every frame's top rows are sky right up to the image's edges: no border or margin is left.
    top = frames[:, :8].astype(float)
    assert np.abs(np.median(top.reshape(-1, 3), axis=0) - SKY_RGB * 255).max() < 3
    edges = np.concatenate([top[:, 0], top[:, :, 0], top[:, :, -1]], axis=1)
    assert np.abs(edges - SKY_RGB * 255).max() < 20
