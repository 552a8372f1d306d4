"""Procedural Shapes3D: 480 geometry templates coloured per batch by a gather and a product.

Each template (scale, shape, orientation) holds, per pixel, the weight of the floor, wall and
object colours (coverage x shading, shadow included) and the sky coverage (see `shapes3d_scene`).
An image is `compose(weights, hues)`: the three hues of the batch turned into RGB and mixed by
the weights, plus the fixed sky colour. No image is ever re-rendered.
"""

from __future__ import annotations

import numpy as np
import torch

from vaesae.data.factors import SHAPES3D
from vaesae.data.shapes3d_scene import compose

__all__ = ["Shapes3DRenderer", "CHUNK"]

CHUNK = 256  # images composed at once: keeps the float32 temporaries (16 MB) in cache


class Shapes3DRenderer:
    """Turns Shapes3D factor tuples into uint8 RGB images from precomputed geometry templates."""

    def __init__(self, templates: np.ndarray | torch.Tensor, device: torch.device | str = "cpu"):
        t = torch.as_tensor(
            np.asarray(templates) if isinstance(templates, np.ndarray) else templates
        )
        expected = (8, 4, 15, 4, 64, 64)
        if tuple(t.shape) != expected:
            raise ValueError(f"Shapes3D templates must have shape {expected}, got {tuple(t.shape)}")
        self.weights = t.reshape(-1, 4, 64, 64).float().to(device)
        self.hues = torch.as_tensor(SHAPES3D.factor_values[0], dtype=torch.float32, device=device)

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def to(self, device: torch.device | str) -> Shapes3DRenderer:
        self.weights = self.weights.to(device)
        self.hues = self.hues.to(device)
        return self

    def __call__(self, factors: torch.Tensor) -> torch.Tensor:
        """LongTensor[N, 6] factor classes (official order) -> uint8 [N, 3, 64, 64]."""
        f = factors.to(self.device)
        out = torch.empty(len(f), 3, 64, 64, dtype=torch.uint8, device=self.device)
        for start in range(0, len(f), CHUNK):
            c = f[start : start + CHUNK]
            ids = (c[:, 3] * 4 + c[:, 4]) * 15 + c[:, 5]
            rgb = compose(self.weights[ids], self.hues[c[:, :3]])
            out[start : start + CHUNK] = (rgb * 255).round_().to(torch.uint8)
        return out
