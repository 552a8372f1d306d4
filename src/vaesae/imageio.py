"""Image grids as PNG files (sample grids, reconstructions, reference comparisons)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaesae.atomic import atomic_path

__all__ = ["image_grid", "save_grid"]


def image_grid(
    images: torch.Tensor | np.ndarray, ncols: int = 8, pad: int = 2, group: int = 1
) -> np.ndarray:
    """Tile images [N, C, H, W] (C = 1 or 3; uint8, or float in [0, 1]) into one uint8 RGB array.

    Images fill rows of `ncols` on a grey page with `pad` px between them; with `group` > 1 a wider
    gap follows every `group` columns, so that e.g. (real, rendered) pairs read as pairs.
    """
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C in (1, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, 1)
    n, _, h, w = arr.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    gap = 4 * pad if group > 1 else 0
    width = ncols * (w + pad) + pad + (ncols - 1) // group * gap
    grid = np.full((nrows * (h + pad) + pad, width, 3), 128, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad) + c // group * gap
        grid[y : y + h, x : x + w] = arr[i].transpose(1, 2, 0)
    return grid


def save_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    ncols: int = 8,
    scale: int = 2,
    group: int = 1,
) -> Path:
    """Write `image_grid(images, ncols, group=group)` as a PNG, enlarged `scale` times (nearest),
    atomically."""
    grid = Image.fromarray(image_grid(images, ncols, group=group))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return Path(path)
