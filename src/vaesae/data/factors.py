"""Factor spaces of the ground-truth datasets and the official flat-index order.

Both datasets enumerate every combination of their factors exactly once, in row-major
("mixed radix") order with the last factor varying fastest:

    index = sum_k  f_k * prod_{j>k} size_j

so `index_of` and `factors_of` are exact inverses on the grid, and code written against the
official files (which store images in this order) works unchanged on the procedural renderers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FactorSpace", "DSPRITES", "SHAPES3D", "FACTOR_SPACES"]


@dataclass(frozen=True)
class FactorSpace:
    """A finite grid of generative factors with their official float values."""

    name: str
    factor_names: tuple[str, ...]
    factor_values: tuple[np.ndarray, ...]

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.factor_values)

    @property
    def num_factors(self) -> int:
        return len(self.factor_values)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes))

    def strides(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Mixed-radix strides: stride_k = prod_{j>k} size_j (last factor fastest)."""
        sizes = self.factor_sizes
        out = [int(np.prod(sizes[k + 1 :])) for k in range(len(sizes))]
        return torch.tensor(out, dtype=torch.long, device=device)

    def check_factors(self, factors: torch.Tensor) -> torch.Tensor:
        """Validate a LongTensor[N, K] of factor classes; return it as long."""
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(
                f"{self.name}: factors must have shape [N, {self.num_factors}] "
                f"({', '.join(self.factor_names)}), got {tuple(factors.shape)}"
            )
        if factors.dtype.is_floating_point:
            raise TypeError(
                f"{self.name}: factors must be integer class indices, got {factors.dtype}"
            )
        factors = factors.long()
        sizes = torch.tensor(self.factor_sizes, device=factors.device)
        if len(factors) and (bool((factors < 0).any()) or bool((factors >= sizes).any())):
            bad = ((factors < 0) | (factors >= sizes)).any(0).nonzero().flatten().tolist()
            names = [f"{self.factor_names[k]} (0..{self.factor_sizes[k] - 1})" for k in bad]
            raise ValueError(f"{self.name}: factor classes out of range for {', '.join(names)}")
        return factors

    def index_of(self, factors: torch.Tensor) -> torch.Tensor:
        """Official flat index of each factor tuple: LongTensor[N, K] -> LongTensor[N]."""
        factors = self.check_factors(factors)
        return (factors * self.strides(factors.device)).sum(1)

    def factors_of(self, index: torch.Tensor) -> torch.Tensor:
        """Inverse of `index_of`: LongTensor[N] -> LongTensor[N, K]."""
        index = torch.as_tensor(index).long()
        if len(index) and (bool((index < 0).any()) or bool((index >= len(self)).any())):
            raise ValueError(f"{self.name}: flat index out of range 0..{len(self) - 1}")
        sizes = torch.tensor(self.factor_sizes, device=index.device)
        return (index[:, None] // self.strides(index.device)) % sizes

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n factor tuples drawn uniformly and independently over the grid -> LongTensor[n, K]."""
        device = generator.device if generator is not None else torch.device("cpu")
        cols = [
            torch.randint(size, (n,), generator=generator, device=device)
            for size in self.factor_sizes
        ]
        return torch.stack(cols, 1)

    def values_of(self, factors: torch.Tensor | np.ndarray) -> np.ndarray:
        """Official float values of factor tuples: [N, K] classes -> float64 [N, K]."""
        factors = self.check_factors(torch.as_tensor(factors)).cpu().numpy()
        cols = [self.factor_values[k][factors[:, k]] for k in range(self.num_factors)]
        return np.stack(cols, 1).astype(np.float64).reshape(len(factors), self.num_factors)


DSPRITES = FactorSpace(
    name="dsprites",
    factor_names=("shape", "scale", "orientation", "pos_x", "pos_y"),
    factor_values=(
        np.array([1.0, 2.0, 3.0]),  # square, ellipse, heart (the official file stores 1, 2, 3)
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ),
)

SHAPES3D = FactorSpace(
    name="shapes3d",
    factor_names=("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    factor_values=(
        np.linspace(0.0, 0.9, 10),
        np.linspace(0.0, 0.9, 10),
        np.linspace(0.0, 0.9, 10),
        np.linspace(0.75, 1.25, 8),
        np.arange(4, dtype=np.float64),  # cube, cylinder, sphere, capsule
        np.linspace(-30.0, 30.0, 15),
    ),
)

FACTOR_SPACES: dict[str, FactorSpace] = {"dsprites": DSPRITES, "shapes3d": SHAPES3D}
