"""`get_dataset`: one object per ground-truth dataset, backed by the official file or a renderer.

Whatever the source, the object has one contract: factor metadata (`factor_names`,
`factor_sizes`, `factor_values`, `image_shape`), the official flat-index order (`index_of`,
`factors_of`, `sample_factors`), and `images(factors)`, uint8 images gathered in one batch on the
object's device.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from vaesae.data.dsprites_render import DSpritesRenderer
from vaesae.data.factors import FACTOR_SPACES, FactorSpace
from vaesae.data.files import OFFICIAL_FILES, DataFileError, FileData, find_official_file, read_file
from vaesae.data.shapes3d_render import Shapes3DRenderer
from vaesae.data.templates import load_templates

__all__ = ["GroundTruthDataset", "get_dataset", "default_root", "DATASETS", "SOURCES"]

DATASETS = tuple(FACTOR_SPACES)
SOURCES = ("auto", "file", "procedural")
log = logging.getLogger("vaesae.data")


def default_root() -> Path:
    """Data directory: $VAESAE_DATA, else ./data."""
    return Path(os.environ.get("VAESAE_DATA", "data"))


class FileImages:
    """Images of an official file, looked up by flat index (the file may hold a grid subset).

    The image array stays in host memory whatever the device: the official Shapes3D file is
    5.5 GiB of uint8, too much to copy to every GPU job. A batch is gathered on the host and only
    the batch is moved to ``device`` (the device `images()` returns tensors on).
    """

    def __init__(self, data: FileData, space: FactorSpace, device: torch.device | str = "cpu"):
        self.images = torch.from_numpy(data.images)
        self.space = space
        index = space.index_of(torch.from_numpy(data.classes))
        self.available = index
        self.row_of: torch.Tensor | None = None
        if not data.complete:
            self.row_of = torch.full((len(space),), -1, dtype=torch.long)
            self.row_of[index] = torch.arange(len(index))
        self.output_device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self.output_device

    def to(self, device: torch.device | str) -> FileImages:
        self.output_device = torch.device(device)
        return self

    def __call__(self, factors: torch.Tensor) -> torch.Tensor:
        index = self.space.index_of(factors.cpu())
        if self.row_of is None:
            return self.images[index].to(self.output_device)
        rows = self.row_of[index]
        if len(rows) and bool((rows < 0).any()):
            raise KeyError(
                f"{self.space.name}: {int((rows < 0).sum())} requested factor combinations are "
                "not in this file (it holds a subset of the grid)"
            )
        return self.images[rows].to(self.output_device)


class GroundTruthDataset:
    """A factor grid with its images (the contract in the module docstring)."""

    def __init__(self, space: FactorSpace, backend, source: str, path: Path | None = None):
        self.space = space
        self.backend = backend
        self.source = source
        self.path = path
        self.image_shape: tuple[int, int, int] = (1 if space.name == "dsprites" else 3, 64, 64)

    name = property(lambda self: self.space.name)
    factor_names = property(lambda self: self.space.factor_names)
    factor_sizes = property(lambda self: self.space.factor_sizes)
    factor_values = property(lambda self: self.space.factor_values)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def complete(self) -> bool:
        """False only for a file that holds a subset of the factor grid."""
        return getattr(self.backend, "row_of", None) is None

    def __len__(self) -> int:
        return len(self.space)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return (
            f"GroundTruthDataset({self.name!r}, source={self.source!r}{where}, "
            f"device={self.device})"
        )

    def to(self, device: torch.device | str) -> GroundTruthDataset:
        """Move the images/templates to `device`; `images()` then returns tensors there."""
        self.backend.to(device)
        return self

    def images(self, factors: torch.Tensor, check: bool = True) -> torch.Tensor:
        """LongTensor[N, K] factor classes -> uint8 Tensor[N, C, 64, 64] (0..255) on `device`.
        ``check=False`` skips the range check (a host synchronisation on a GPU) for factors
        already checked, e.g. rows of an epoch's factors checked once."""
        factors = torch.as_tensor(factors)
        return self.backend(self.space.check_factors(factors) if check else factors)

    @property
    def renders_on_device(self) -> bool:
        """Whether `images` is device work only (a renderer's templates on the device), with
        no host gather: what a captured CUDA graph can replay."""
        return not isinstance(self.backend, FileImages)

    def index_of(self, factors: torch.Tensor) -> torch.Tensor:
        return self.space.index_of(torch.as_tensor(factors))

    def factors_of(self, index: torch.Tensor) -> torch.Tensor:
        return self.space.factors_of(torch.as_tensor(index))

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n factor tuples, uniform over the grid (over the rows present, for a subset file)."""
        if self.complete:
            return self.space.sample_factors(n, generator)
        available = self.backend.available
        device = generator.device if generator is not None else torch.device("cpu")
        pick = torch.randint(len(available), (n,), generator=generator, device=device)
        return self.space.factors_of(available.to(device)[pick])


@functools.lru_cache(maxsize=2)
def _read_cached(path: str, mtime: float, size: int) -> FileData:
    # Keyed by mtime and size so that a rewritten file is read again; Shapes3D is 5.9 GB,
    # so a process reads each file once.
    return read_file(path)


def _file_dataset(space: FactorSpace, root: Path) -> GroundTruthDataset:
    path = find_official_file(space.name, root)
    if path is None:
        expected = " or ".join(str(root / f) for f in OFFICIAL_FILES[space.name])
        raise DataFileError(
            expected,
            f"{space.name} file not found (set root= or $VAESAE_DATA, or use "
            "source='procedural' / 'auto')",
        )
    stat = path.stat()
    data = _read_cached(str(path.resolve()), stat.st_mtime, stat.st_size)
    if data.name != space.name:
        raise DataFileError(path, f"holds {data.name}, expected {space.name}")
    return GroundTruthDataset(space, FileImages(data, space), "file", path)


def _procedural_dataset(space: FactorSpace, root: Path) -> GroundTruthDataset:
    templates = load_templates(space.name, root)
    renderer = DSpritesRenderer if space.name == "dsprites" else Shapes3DRenderer
    return GroundTruthDataset(space, renderer(templates), "procedural")


def get_dataset(
    name: str, source: str = "auto", root: str | os.PathLike | None = None
) -> GroundTruthDataset:
    """The dataset `name` ("dsprites" | "shapes3d") from `source`:

    * "file": the official file in `root` (default $VAESAE_DATA, else ./data); error if missing;
    * "procedural": the deterministic renderer (templates cached under `root`);
    * "auto": the file if present, else the renderer; the choice is logged.
    """
    if name not in FACTOR_SPACES:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid choices: {', '.join(SOURCES)}")
    space = FACTOR_SPACES[name]
    root = Path(root) if root is not None else default_root()
    if source == "file" or (source == "auto" and find_official_file(name, root) is not None):
        ds = _file_dataset(space, root)
    else:
        ds = _procedural_dataset(space, root)
    log.info("%s: using %s data%s", name, ds.source, f" from {ds.path}" if ds.path else "")
    return ds
