"""Procedural dSprites: 720 sprite templates placed on a 64x64 canvas by a gather.

Geometry (continuous pixel coordinates, x right, y down, pixel j covering [j, j+1)), calibrated
against the real frames in `reference_frames/dsprites.gif` (shipped with the package):

* sprite centre  c = 16 + 32 * i / 31  for position class i in 0..31, on both axes, so centres span
  16..48 px (0.25..0.75 of the canvas) in steps of 32/31 px;
* size  = scale * base size, with scale in linspace(0.5, 1, 6):
  square side 20 px; ellipse semi-axes 13 x 7 px; heart 20 px wide, 17 px tall;
* orientation  theta in linspace(0, 2 pi, 40) turns the sprite counter-clockwise on screen about
  its centre (so classes 0 and 39 draw the same image, as in the official file);
* a pixel is white when at least `COVERAGE` of its area lies inside the shape (measured on a
  supersampled grid).

Sub-pixel positions matter (a 0.5 px shift costs ~5 % IoU on a small heart), so every template is
stored at `PHASES` x `PHASES` sub-pixel phases in a `WINDOW` x `WINDOW` window; an image is the
window of its (shape, scale, orientation, phase) written at the integer offset of its position.
"""

from __future__ import annotations

import numpy as np
import torch

from vaesae.data.factors import DSPRITES

__all__ = [
    "RENDER_VERSION",
    "WINDOW",
    "PHASES",
    "sprite_inside",
    "sprite_windows",
    "build_templates",
    "placement",
    "DSpritesRenderer",
]

RENDER_VERSION = "dsprites-v1"
WINDOW = 32
PHASES = 4
SUPERSAMPLE = 8  # must be a multiple of PHASES
COVERAGE = 0.5
CANVAS = 64
POS_FIRST, POS_SPAN = 16.0, 32.0  # centre of position class 0, distance to the last class (px)

SQUARE_HALF = 9.6
ELLIPSE_AXES = (12.75, 7.25)
# Heart: two lobe disks and the tip, hulled below the lobes (px at scale 1, y down).
HEART_LOBE_R = 5.1
HEART_LOBE_X = 4.7
HEART_TOP = -9.1
HEART_TIP = 8.75


def _heart_inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Heart = union of two lobe disks and the convex hull of the disks with the tip."""
    r, cx, cy = HEART_LOBE_R, HEART_LOBE_X, HEART_TOP + HEART_LOBE_R
    lobes = ((np.abs(x) - cx) ** 2 + (y - cy) ** 2) <= r**2
    # Lower body: for |x| on the tip side of the lobe tangent line, bounded by that tangent.
    # Tangent from the tip (0, HEART_TIP) to the lobe disk centred at (cx, cy), outer side.
    dx, dy = cx, cy - HEART_TIP
    dist = np.hypot(dx, dy)
    ang = np.arctan2(dy, dx) + np.arcsin(r / dist)
    ux, uy = np.cos(ang), np.sin(ang)  # direction of the tangent line from the tip
    # The wedge between the two tangents (mirrored in x) below the lobe centres; outside the
    # lobe centres only below the tangent points, where the lobes stop forming the outline.
    touch_y = HEART_TIP + (dx * ux + dy * uy) * uy
    side = (np.abs(x) * uy - (y - HEART_TIP) * ux) >= 0
    body = side & (y >= cy) & (y <= HEART_TIP) & ((np.abs(x) <= cx) | (y >= touch_y))
    return lobes | body


def sprite_inside(shape: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Point-in-sprite test at scale 1, orientation 0, centred at the origin (px, y down)."""
    if shape == 0:
        return (np.abs(x) <= SQUARE_HALF) & (np.abs(y) <= SQUARE_HALF)
    if shape == 1:
        a, b = ELLIPSE_AXES
        return (x / a) ** 2 + (y / b) ** 2 <= 1.0
    if shape == 2:
        return _heart_inside(x, y)
    raise ValueError(
        f"dSprites shape class must be 0 (square), 1 (ellipse) or 2 (heart), got {shape}"
    )


def sprite_windows(shape: int, scale: float, theta: float) -> np.ndarray:
    """Binary masks bool [PHASES, PHASES, WINDOW, WINDOW] (phase_y, phase_x, row, col) of one
    sprite whose centre sits at WINDOW/2 + phase/PHASES px in its window.

    The sprite is sampled once on a SUPERSAMPLE-times finer grid one pixel larger than the
    window; a phase shift of 1/PHASES px is then SUPERSAMPLE/PHASES fine samples, so every phase
    is a slice of the same grid.
    """
    n = (WINDOW + 1) * SUPERSAMPLE
    u = (np.arange(n) + 0.5) / SUPERSAMPLE - WINDOW / 2 - 1
    qy, qx = np.meshgrid(u, u, indexing="ij")
    # Screen counter-clockwise rotation with y down: undo it to test in the sprite's own frame.
    c, s = np.cos(theta), np.sin(theta)
    inside = sprite_inside(shape, (c * qx - s * qy) / scale, (s * qx + c * qy) / scale)
    step = SUPERSAMPLE // PHASES
    out = np.empty((PHASES, PHASES, WINDOW, WINDOW), dtype=bool)
    for py in range(PHASES):
        for px in range(PHASES):
            y0, x0 = SUPERSAMPLE - py * step, SUPERSAMPLE - px * step
            fine = inside[y0 : y0 + WINDOW * SUPERSAMPLE, x0 : x0 + WINDOW * SUPERSAMPLE]
            cover = fine.reshape(WINDOW, SUPERSAMPLE, WINDOW, SUPERSAMPLE).mean((1, 3))
            out[py, px] = cover >= COVERAGE
    return out


def build_templates() -> np.ndarray:
    """All sprite windows: bool [3, 6, 40, PHASES, PHASES, WINDOW, WINDOW] (shape, scale, orient,
    phase_y, phase_x, row, col). Raises if a sprite would be clipped by its window."""
    scales, thetas = DSPRITES.factor_values[1], DSPRITES.factor_values[2]
    out = np.zeros((3, len(scales), len(thetas), PHASES, PHASES, WINDOW, WINDOW), dtype=bool)
    for shape in range(3):
        for si, scale in enumerate(scales):
            for oi, theta in enumerate(thetas):
                out[shape, si, oi] = sprite_windows(shape, scale, theta)
    edge = out[..., 0, :].any() | out[..., -1, :].any() | out[..., 0].any() | out[..., -1].any()
    if edge:
        raise RuntimeError("dSprites template touches its window border: enlarge WINDOW")
    return out


def placement(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer window offset and sub-pixel phase class of position classes (one axis).

    centre = POS_FIRST + POS_SPAN * pos / 31; the window's top-left corner goes to
    floor(centre - WINDOW/2) after rounding the fractional part to the nearest 1/PHASES.
    """
    steps = DSPRITES.factor_sizes[3] - 1
    centre = POS_FIRST + POS_SPAN * pos.double() / steps
    quant = torch.round(centre * PHASES).long()  # centre in units of 1/PHASES px
    offset = quant // PHASES - WINDOW // 2
    phase = quant % PHASES
    return offset, phase


class DSpritesRenderer:
    """Turns dSprites factor tuples into images by gathering precomputed sprite windows."""

    def __init__(self, templates: np.ndarray | torch.Tensor, device: torch.device | str = "cpu"):
        t = torch.as_tensor(
            np.asarray(templates) if isinstance(templates, np.ndarray) else templates
        )
        expected = (3, 6, 40, PHASES, PHASES, WINDOW, WINDOW)
        if tuple(t.shape) != expected:
            raise ValueError(f"dSprites templates must have shape {expected}, got {tuple(t.shape)}")
        # uint8 0/255 so that a gather directly yields the official pixel convention (white=255).
        self.windows = (t.reshape(-1, WINDOW, WINDOW).to(torch.uint8) * 255).to(device)
        # Flat canvas offsets of a window's pixels relative to its top-left corner.
        rows, cols = torch.meshgrid(torch.arange(WINDOW), torch.arange(WINDOW), indexing="ij")
        self._pattern = (rows * CANVAS + cols).reshape(-1).to(device)

    @property
    def device(self) -> torch.device:
        return self.windows.device

    def to(self, device: torch.device | str) -> DSpritesRenderer:
        self.windows = self.windows.to(device)
        self._pattern = self._pattern.to(device)
        return self

    def __call__(self, factors: torch.Tensor) -> torch.Tensor:
        """LongTensor[N, 5] (shape, scale, orientation, pos_x, pos_y) -> uint8 [N, 1, 64, 64]."""
        f = factors.to(self.device)
        ox, phx = placement(f[:, 3])
        oy, phy = placement(f[:, 4])
        ids = (((f[:, 0] * 6 + f[:, 1]) * 40 + f[:, 2]) * PHASES + phy) * PHASES + phx
        n = len(f)
        # One flat scatter of each window to its place: much cheaper than 2-D advanced indexing.
        start = torch.arange(n, device=self.device) * CANVAS * CANVAS + oy * CANVAS + ox
        dest = (start[:, None] + self._pattern).view(-1)
        canvas = torch.zeros(n * CANVAS * CANVAS, dtype=torch.uint8, device=self.device)
        canvas.scatter_(0, dest, self.windows.index_select(0, ids).view(-1))
        return canvas.view(n, 1, CANVAS, CANVAS)
