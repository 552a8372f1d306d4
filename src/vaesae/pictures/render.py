"""Drawing the per-neuron pictures: image rows as PNG pages (Pillow), response curves as
matplotlib figures (object API, Agg; no pyplot state), both saved atomically.

An image page has a caption strip of `HEADER` px on top, a label strip of `LABEL_WIDTH` px on
the left (one label per unit) and, right of it, `vaesae.imageio.image_grid` of the images (one
row per unit, `PAD` px apart on a grey page) enlarged `SCALE` times. A missing image (e.g. a
sample on which the unit does not fire) is left as the grey page.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw, ImageFont

from vaesae.atomic import atomic_path
from vaesae.imageio import image_grid

__all__ = [
    "HEADER",
    "LABEL_WIDTH",
    "PAD",
    "SCALE",
    "page_size",
    "image_page",
    "response_figure",
    "save_image",
    "save_figure",
]

HEADER = 36  # px: two caption lines
LABEL_WIDTH = 90  # px: "unit 123", "freq 0.0123", "align 0.42", ...
PAD = 2  # px between images (before enlarging), as in the run's other grids
SCALE = 2  # nearest-neighbour enlargement of the image grid
_GREY = 128  # the page colour of `image_grid`


def page_size(rows: int, cols: int, height: int = 64, width: int = 64) -> tuple[int, int]:
    """(width, height) in px of an `image_page` of rows x cols images of height x width (the
    page is widened, white on the right, where its caption is longer)."""
    grid_w = SCALE * (cols * (width + PAD) + PAD)
    grid_h = SCALE * (rows * (height + PAD) + PAD)
    return LABEL_WIDTH + grid_w, HEADER + grid_h


def image_page(
    images: torch.Tensor,
    labels: Sequence[str],
    caption: Sequence[str],
    present: torch.Tensor | None = None,
    cols: int | None = None,
) -> Image.Image:
    """One page: images [U, n, C, H, W] (float in [0, 1]) as U rows of n, `labels[u]` (lines
    joined by newlines) left of row u, `caption` lines on top. ``present`` (BoolTensor[U, n]):
    False leaves that cell grey. With U = 0 the page holds only the caption and is as wide as
    `cols` images (default 8). A caption wider than the grid widens the page on the right."""
    font = ImageFont.load_default()
    rows, n = images.shape[:2]
    if rows == 0:
        w, h = page_size(0, cols or 8)
        page = Image.new("RGB", (w, h), (_GREY,) * 3)
    else:
        flat = images.detach().float().cpu().clamp(0, 1).reshape(rows * n, *images.shape[2:])
        if present is not None:
            flat[~present.cpu().reshape(-1)] = _GREY / 255
        grid = Image.fromarray(image_grid(flat, ncols=n, pad=PAD))
        grid = grid.resize((grid.width * SCALE, grid.height * SCALE), Image.Resampling.NEAREST)
        page = Image.new("RGB", (LABEL_WIDTH + grid.width, HEADER + grid.height), (255,) * 3)
        page.paste(grid, (LABEL_WIDTH, HEADER))
    needed = 8 + max((int(math.ceil(font.getlength(line))) for line in caption), default=0)
    if needed > page.width:
        wider = Image.new("RGB", (needed, page.height), (255,) * 3)
        wider.paste(page, (0, 0))
        page = wider
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, page.width, HEADER - 1), fill=(255,) * 3)
    draw.multiline_text((4, 4), "\n".join(caption), fill=(0,) * 3, font=font, spacing=4)
    row_h = SCALE * (images.shape[3] + PAD) if rows else 0
    for u, label in enumerate(labels[:rows]):
        y = HEADER + SCALE * PAD + u * row_h
        draw.multiline_text((4, y), label, fill=(0,) * 3, font=font, spacing=3)
    return page


def response_figure(
    curves: Sequence[torch.Tensor | np.ndarray],
    factor_values: Sequence[np.ndarray],
    factor_names: Sequence[str],
    labels: Sequence[str],
    title: str,
) -> Figure:
    """Rows = units, columns = factors: cell (u, k) plots unit u's mean activation (`curves[k][u]`,
    one value per class of factor k) against factor k's values. A cell's bottom edge is
    activation 0 and its top the row's largest mean (printed with the row's label), so the
    cells of a row share one scale; its x axis spans the factor's range (printed under the
    factor's name). With no unit the figure holds only the title."""
    rows, cols = len(labels), len(factor_names)
    width = 1.6 * cols + 1.2
    if rows == 0:
        fig = Figure(figsize=(width, 0.8))
        fig.suptitle(title, fontsize=8)
        return fig
    height = 0.85 * rows + 0.9
    fig = Figure(figsize=(width, height))
    # One axes drawn as a grid of cells: a matplotlib axes per panel cost ~0.1 s each to build
    # and draw, seconds per figure on a busy CPU.
    ax = fig.add_axes((1.1 / width, 0.15 / height, 1 - 1.2 / width, 1 - 0.95 / height))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_axis_off()
    stacked = [np.asarray(c, dtype=float).reshape(rows, -1) for c in curves]
    for u in range(rows):
        finite = [c[u][np.isfinite(c[u])] for c in stacked]
        top = max((float(f.max()) for f in finite if f.size), default=0.0)
        scale = top if top > 0 else 1.0
        ax.text(-0.08, u + 0.5, f"{labels[u]}\nmax {top:.3g}", ha="right", va="center", fontsize=7)
        for k, values in enumerate(factor_values):
            values = np.asarray(values, dtype=float)
            span = values.max() - values.min() or 1.0
            x0, y0 = k + 0.06, u + 0.9
            ax.add_patch(
                Rectangle((x0, u + 0.1), 0.88, 0.8, fill=False, linewidth=0.5, edgecolor="0.6")
            )
            x = x0 + 0.88 * (values - values.min()) / span
            y = y0 - 0.8 * stacked[k][u] / scale
            ax.plot(x, y, marker=".", markersize=2.5, linewidth=1, color=f"C{k}")
    for k, (name, values) in enumerate(zip(factor_names, factor_values, strict=True)):
        lo, hi = float(np.min(values)), float(np.max(values))
        ax.text(
            k + 0.5, -0.05, f"{name}\n{lo:.3g} .. {hi:.3g}", ha="center", va="bottom", fontsize=7
        )
    fig.suptitle(title, fontsize=8)
    return fig


def save_image(page: Image.Image, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        page.save(tmp, format="PNG")
    return Path(path)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 90) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)
