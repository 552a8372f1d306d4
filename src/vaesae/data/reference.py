"""Fidelity of the procedural renderers, measured against real frames in ``reference/``.

Shapes3D: real frames come from ``3dshapes.gif`` (53 upscaled frames with a thin grey frame) and two
5 x 5 sample grids (``3dshapes_random_samples.png``, ``3dshapes_floor_hue0_samples.png``), each
brought back to 64 x 64 with an area (box) filter. Every real frame is matched to its nearest
procedural image over the whole factor grid, and the error of that match is the fidelity figure.

dSprites: the 320 binary frames of ``dsprites.gif``; each is matched to the procedural image of
largest intersection over union, which is the fidelity figure.

`compare_reference` runs both and writes the side-by-side figures (``python -m vaesae.data
compare-reference``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageSequence

from vaesae.atomic import write_json
from vaesae.data import dsprites_render
from vaesae.data.dataset import default_root, get_dataset
from vaesae.data.dsprites_render import DSpritesRenderer
from vaesae.data.factors import DSPRITES
from vaesae.data.shapes3d_scene import compose
from vaesae.data.templates import load_templates
from vaesae.imageio import save_grid

SHAPES3D_GIF = "3dshapes.gif"
SHAPES3D_GRIDS = ("3dshapes_random_samples.png", "3dshapes_floor_hue0_samples.png")
N_HUES = 10


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the True runs of a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def _gif_content_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) inside the frame's border of grey/white lines.

    A border line is one whose pixels are nearly all one neutral grey (its ends may belong to the
    crossing border lines); no line of a Shapes3D image is neutral grey.
    """

    def is_border(line: np.ndarray) -> bool:
        values, counts = np.unique(line, axis=0, return_counts=True)
        top = values[np.argmax(counts)]
        return bool(counts.max() >= 0.9 * len(line) and top[0] == top[1] == top[2])

    top, bottom, left, right = 0, frame.shape[0], 0, frame.shape[1]
    while top < bottom and is_border(frame[top]):
        top += 1
    while bottom > top and is_border(frame[bottom - 1]):
        bottom -= 1
    while left < right and is_border(frame[:, left]):
        left += 1
    while right > left and is_border(frame[:, right - 1]):
        right -= 1
    return left, top, right, bottom


def _grid_cells(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """Boxes of the sample images in a grid on a white page, row-major."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    ink = rgb.sum(axis=-1) < 3 * 250
    rows = _runs(ink.any(axis=1))
    cols = _runs(ink.any(axis=0))
    return [(c0, r0, c1, r1) for r0, r1 in rows for c0, c1 in cols]


def load_shapes3d_reference(path_dir: str | Path) -> np.ndarray:
    """Real Shapes3D frames, uint8 [N, 64, 64, 3]: the GIF's frames, then both grids row-major.

    Each frame is cropped to its image (the GIF's grey frame and the grids' white margins
    removed) and area-downsampled to 64 x 64.
    """
    path_dir = Path(path_dir)
    frames = []
    with Image.open(path_dir / SHAPES3D_GIF) as gif:
        for frame in ImageSequence.Iterator(gif):
            rgb = frame.convert("RGB")
            box = _gif_content_box(np.asarray(rgb))
            frames.append(np.asarray(rgb.crop(box).resize((64, 64), Image.Resampling.BOX)))
    for name in SHAPES3D_GRIDS:
        with Image.open(path_dir / name) as grid:
            rgb = grid.convert("RGB")
            for box in _grid_cells(rgb):
                frames.append(np.asarray(rgb.crop(box).resize((64, 64), Image.Resampling.BOX)))
    return np.stack(frames).astype(np.uint8)


def _hue_index(pixels: np.ndarray) -> int:
    """Nearest of the 10 factor hues to the circular mean hue of RGB pixels [..., 3] in [0, 1]."""
    rgb = pixels.reshape(-1, 3)
    hi, lo = rgb.max(axis=1), rgb.min(axis=1)
    span = np.maximum(hi - lo, 1e-6)
    r, g, b = rgb.T
    sector = np.where(
        hi == r, ((g - b) / span) % 6, np.where(hi == g, (b - r) / span + 2, (r - g) / span + 4)
    )
    angle = np.angle(np.exp(1j * np.pi * sector / 3).mean())
    return int(np.round(angle / (2 * np.pi) * N_HUES)) % N_HUES


def _guess_hues(frame: np.ndarray) -> list[int]:
    """Floor, wall and object hue indices read off regions each surface covers in every frame.

    Bottom-left corner: floor; the wall band at the left and right edges: wall; the image centre
    just above the object's base: object.
    """
    walls = np.concatenate([frame[22:30, :3], frame[22:30, -3:]], axis=1)
    return [_hue_index(frame[58:, :6]), _hue_index(walls), _hue_index(frame[44:48, 30:34])]


class Shapes3DMatch(NamedTuple):
    """Nearest procedural image of each real frame and its error.

    factors: int64 [N, 6] factor indices (floor hue, wall hue, object hue, scale, shape,
    orientation); images: uint8 [N, 64, 64, 3]; mae: [N] mean absolute error on the 0..255 scale;
    psnr: [N] in dB, peak 255.
    """

    factors: torch.Tensor
    images: np.ndarray
    mae: np.ndarray
    psnr: np.ndarray


def match_shapes3d(frames: np.ndarray, templates: np.ndarray, top_k: int = 4) -> Shapes3DMatch:
    """For each real frame, the procedural image of least squared error, and its fidelity.

    frames: uint8 [N, 64, 64, 3]; templates: float [n_scale, 4, n_orientation, 4, 64, 64] from
    :func:`~vaesae.data.shapes3d_scene.build_templates`. Search: the three hues are first read off
    fixed image regions; all geometries are scored with those hues; for the ``top_k`` best, each
    surface's hue is then re-chosen among all 10 in turn (two passes), and the best combination
    wins. MAE and PSNR compare the frame with the uint8 procedural image.
    """
    n_scale, n_shape, n_ori = templates.shape[:3]
    bank = torch.as_tensor(templates, dtype=torch.float32).reshape(-1, *templates.shape[3:])
    every_hue = torch.arange(N_HUES)
    factors, images = [], []
    for frame in frames:
        real = torch.as_tensor(frame, dtype=torch.float32).permute(2, 0, 1) / 255.0
        guess = torch.tensor(_guess_hues(frame / 255.0))
        err = (compose(bank, (guess / N_HUES).expand(len(bank), 3)) - real).square().mean((1, 2, 3))
        candidates = torch.topk(err, min(top_k, len(bank)), largest=False).indices
        k = len(candidates)
        hues = guess.repeat(k, 1)
        # Coordinate descent over the surfaces' hues, all candidate geometries at once.
        for _ in range(2):
            for s in range(3):
                trial = hues.repeat_interleave(N_HUES, dim=0)
                trial[:, s] = every_hue.repeat(k)
                geometry = bank[candidates.repeat_interleave(N_HUES)]
                err = (compose(geometry, trial / N_HUES) - real).square().mean((1, 2, 3))
                hues[:, s] = err.view(k, N_HUES).argmin(dim=1)
        final = compose(bank[candidates], hues / N_HUES)
        best = int((final - real).square().mean((1, 2, 3)).argmin())
        images.append((final[best].permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy())
        geometry = np.unravel_index(int(candidates[best]), (n_scale, n_shape, n_ori))
        factors.append(hues[best].tolist() + [int(i) for i in geometry])
    images_np = np.stack(images)
    diff = images_np.astype(np.float64) - frames.astype(np.float64)
    mae = np.abs(diff).mean(axis=(1, 2, 3))
    mse = np.maximum(np.square(diff).mean(axis=(1, 2, 3)), 1e-12)
    psnr = 10.0 * np.log10(255.0**2 / mse)
    return Shapes3DMatch(torch.tensor(factors, dtype=torch.long), images_np, mae, psnr)


def shapes3d_side_by_side(
    real: np.ndarray, procedural: np.ndarray, out_png: str | Path, ncols: int = 6
) -> Path:
    """Write a PNG of (real | procedural) pairs, `ncols` pairs a row; uint8 [N, H, W, 3] each."""
    pairs = np.stack([real, procedural], 1).transpose(0, 1, 4, 2, 3)  # [N, 2, 3, H, W]
    return save_grid(pairs.reshape(-1, *pairs.shape[2:]), out_png, ncols=2 * ncols, group=2)


# --- dSprites ---------------------------------------------------------------------------------

DSPRITES_GIF = "dsprites.gif"


def load_dsprites_reference(path: str | Path) -> torch.Tensor:
    """Real dSprites frames from an animated GIF -> bool [N, 64, 64] (white = True)."""
    with Image.open(path) as gif:
        frames = [np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(gif)]
    return torch.from_numpy(np.stack(frames))


def match_dsprites(
    frames: torch.Tensor, renderer: DSpritesRenderer, radius: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-matching procedural image of each real frame, by intersection over union.

    IoU = |A and B| / |A or B| over white pixels. The search covers every (shape, scale,
    orientation) and the positions within `radius` classes of the frame's bounding-box centre on
    each axis (sprite centres lie within a few px of it). The intersection of a frame with the 720
    sprites at one position is one product of the frame's window crop with the windows of that
    position's sub-pixel phase; sprites never touch their window's border, so |B| is the window's.

    Returns (iou float [N], factors long [N, 5] of the best match).
    """
    p, w = dsprites_render.PHASES, dsprites_render.WINDOW
    windows = (renderer.windows.float().cpu() / 255).reshape(720, p, p, w * w)
    sizes = windows.sum(-1)
    classes = torch.arange(DSPRITES.factor_sizes[3])
    offset, phase = dsprites_render.placement(classes)
    centres = dsprites_render.POS_FIRST + dsprites_render.POS_SPAN * classes.double() / 31
    ious, found = [], []
    for frame in frames.float():
        rows, cols = frame.any(1).nonzero().flatten(), frame.any(0).nonzero().flatten()
        iy = int((centres - (rows.min() + rows.max() + 1) / 2).abs().argmin())
        ix = int((centres - (cols.min() + cols.max() + 1) / 2).abs().argmin())
        best, arg = -1.0, (0, 0, 0)
        for y in range(max(0, iy - radius), min(len(classes), iy + radius + 1)):
            for x in range(max(0, ix - radius), min(len(classes), ix + radius + 1)):
                crop = frame[offset[y] : offset[y] + w, offset[x] : offset[x] + w].reshape(-1)
                inter = windows[:, phase[y], phase[x]] @ crop
                iou = inter / (sizes[:, phase[y], phase[x]] + frame.sum() - inter)
                value, sprite = iou.max(0)
                if float(value) > best:
                    best, arg = float(value), (int(sprite), x, y)
        sprite, x, y = arg
        found.append([sprite // 240, sprite // 40 % 6, sprite % 40, x, y])
        ious.append(best)
    return torch.tensor(ious), torch.tensor(found)


# --- both datasets ----------------------------------------------------------------------------


def compare_reference(
    reference_dir: str | Path, out_dir: str | Path, root: str | Path | None = None
) -> dict:
    """Measure both renderers against the real frames in `reference_dir` and write figures.

    Writes to `out_dir`: `dsprites_side_by_side.png` (the 24 worst-matched real frames, each
    followed by its best procedural match), `shapes3d_side_by_side.png` (every real frame next to
    its match) and `reference.json` (the returned summary: dSprites IoU, Shapes3D MAE / PSNR).
    """
    reference_dir, out_dir = Path(reference_dir), Path(out_dir)
    for name in (DSPRITES_GIF, SHAPES3D_GIF, *SHAPES3D_GRIDS):
        if not (reference_dir / name).exists():
            raise FileNotFoundError(f"reference file {reference_dir / name} not found")
    root = Path(root) if root is not None else default_root()

    dsprites = get_dataset("dsprites", "procedural", root)
    real = load_dsprites_reference(reference_dir / DSPRITES_GIF)
    iou, factors = match_dsprites(real, dsprites.backend)
    worst = iou.argsort()[:24]
    pairs = torch.stack(
        [real[worst].to(torch.uint8) * 255, dsprites.images(factors[worst])[:, 0]], 1
    )
    save_grid(pairs.reshape(-1, 1, 64, 64), out_dir / "dsprites_side_by_side.png", 12, group=2)

    frames = load_shapes3d_reference(reference_dir)
    match = match_shapes3d(frames, load_templates("shapes3d", root))
    shapes3d_side_by_side(frames, match.images, out_dir / "shapes3d_side_by_side.png")

    per_shape = {
        name: float(iou[factors[:, 0] == s].mean())
        for s, name in enumerate(("square", "ellipse", "heart"))
        if bool((factors[:, 0] == s).any())
    }
    summary = {
        "dsprites": {
            "frames": len(real),
            "mean_iou": float(iou.mean()),
            "min_iou": float(iou.min()),
            "fraction_iou_ge_0.95": float((iou >= 0.95).double().mean()),
            "mean_iou_by_matched_shape": per_shape,
        },
        "shapes3d": {
            "frames": len(frames),
            "mean_abs_error_255": float(match.mae.mean()),
            "median_abs_error_255": float(np.median(match.mae)),
            "mean_psnr_db": float(match.psnr.mean()),
        },
    }
    write_json(out_dir / "reference.json", summary)
    return summary
