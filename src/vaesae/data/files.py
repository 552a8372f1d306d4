"""Official dSprites and Shapes3D files: read with validation, write in the same formats.

Formats (DeepMind releases, Apache-2.0):

* dSprites ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``: ``imgs`` uint8 (N, 64, 64) in {0, 1},
  ``latents_values`` float64 (N, 6), ``latents_classes`` int64 (N, 6), ``metadata`` (a pickled
  dict). The six latents are color (constant, size 1), shape, scale, orientation, posX, posY. The
  ``.hdf5`` twin holds the same arrays (``latents/values``, ``latents/classes`` in the release;
  flat ``latents_values`` / ``latents_classes`` are accepted too).
* Shapes3D ``3dshapes.h5``: ``images`` uint8 (N, 64, 64, 3), ``labels`` float64 (N, 6) holding the
  factor values (floor, wall, object hue, scale, shape, orientation).

A full file stores every factor combination once, in the official flat-index order; a smaller file
(a subset exported for tests or quick experiments) must hold distinct grid points. Anything else is
a `DataFileError` that names the file, what was expected and what was found.
"""

from __future__ import annotations

import datetime
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from vaesae.atomic import atomic_path
from vaesae.data.factors import DSPRITES, SHAPES3D, FactorSpace

__all__ = [
    "DataFileError",
    "OFFICIAL_FILES",
    "FileData",
    "find_official_file",
    "read_file",
    "write_dsprites",
    "write_shapes3d",
]

OFFICIAL_FILES: dict[str, tuple[str, ...]] = {
    "dsprites": (
        "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
        "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5",
    ),
    "shapes3d": ("3dshapes.h5",),
}
CHUNK = 10_000  # rows per read: bounds the temporary memory of a Shapes3D load (~120 MB)
VALUE_TOL = 1e-4


class DataFileError(ValueError):
    """A dataset file is missing, truncated or does not follow the official format."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


@dataclass
class FileData:
    """The validated content of an official file.

    images: uint8 (N, C, 64, 64), 0..255 (dSprites pixels are scaled from {0, 1} to {0, 255}).
    classes: int64 (N, K) factor classes of each row (dSprites without the constant color).
    complete: True when the file holds the whole grid in the official order (row == flat index).
    """

    name: str
    path: Path
    images: np.ndarray
    classes: np.ndarray
    complete: bool


def find_official_file(name: str, root: str | os.PathLike) -> Path | None:
    """First official file of dataset `name` present in `root`, else None."""
    for fname in OFFICIAL_FILES[name]:
        path = Path(root) / fname
        if path.exists():
            return path
    return None


def _expect(path: Path, cond: bool, problem: str) -> None:
    if not cond:
        raise DataFileError(path, problem)


def _describe(arr: np.ndarray | h5py.Dataset) -> str:
    return f"shape {tuple(arr.shape)} dtype {arr.dtype}"


def _classes_from_values(path: Path, space: FactorSpace, values: np.ndarray) -> np.ndarray:
    """Map factor values (N, K) to grid classes; every value must be a grid point."""
    classes = np.empty(values.shape, dtype=np.int64)
    for k, grid in enumerate(space.factor_values):
        dist = np.abs(values[:, k, None] - grid[None, :])
        classes[:, k] = dist.argmin(1)
        worst = dist.min(1).max() if len(values) else 0.0
        _expect(
            path,
            worst <= VALUE_TOL,
            f"factor '{space.factor_names[k]}' has values off the official grid "
            f"(largest distance {worst:.3g}; expected one of {np.round(grid, 4).tolist()})",
        )
    return classes


def _check_order(path: Path, space: FactorSpace, classes: np.ndarray) -> bool:
    """True for a complete file in official order; accepts a subset of distinct grid points."""
    sizes = np.array(space.factor_sizes)
    bad = (classes < 0) | (classes >= sizes)
    _expect(
        path, not bad.any(), f"factor classes out of range; expected 0..size-1 for {sizes.tolist()}"
    )
    strides = np.array([int(np.prod(sizes[k + 1 :])) for k in range(len(sizes))])
    index = classes @ strides
    if len(index) == len(space):
        misplaced = np.flatnonzero(index != np.arange(len(space)))
        if len(misplaced):
            row = int(misplaced[0])
            raise DataFileError(
                path,
                f"rows are not in the official index order (last factor fastest): row {row} "
                f"holds the factors of index {index[row]}",
            )
        return True
    _expect(
        path, len(index) < len(space), f"{len(index)} rows, more than the {len(space)} grid points"
    )
    _expect(path, len(np.unique(index)) == len(index), "the same factor combination appears twice")
    return False


def _read_dsprites_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """imgs, latents_values, latents_classes from the .npz or .hdf5 dSprites format."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = {"imgs", "latents_values", "latents_classes"} - set(f.files)
                _expect(
                    path,
                    not missing,
                    f"missing keys {sorted(missing)}; expected imgs, latents_values, "
                    f"latents_classes, metadata; found {sorted(f.files)}",
                )
                return f["imgs"], f["latents_values"], f["latents_classes"]
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
            if isinstance(err, DataFileError):
                raise
            raise DataFileError(path, f"not a readable .npz archive (truncated?): {err}") from err
    try:
        with h5py.File(path, "r") as f:

            def get(flat: str, nested: str) -> np.ndarray:
                for key in (flat, nested):
                    if key in f:
                        return np.asarray(_h5_array(path, f, key)[()])
                raise DataFileError(
                    path, f"missing '{flat}' (or '{nested}'); found keys {sorted(f.keys())}"
                )

            return (
                get("imgs", "imgs"),
                get("latents_values", "latents/values"),
                get("latents_classes", "latents/classes"),
            )
    except OSError as err:
        raise DataFileError(path, f"not a readable HDF5 file (truncated?): {err}") from err


def _h5_array(path: Path, f: h5py.File, key: str) -> h5py.Dataset:
    """``f[key]``, which must be an array: a group of that name is a malformed file."""
    item = f[key]
    if not isinstance(item, h5py.Dataset):
        raise DataFileError(path, f"'{key}' must be an array; found a {type(item).__name__}")
    return item


def read_dsprites(path: str | os.PathLike) -> FileData:
    """Read and validate a dSprites file (.npz or .hdf5)."""
    path = Path(path)
    imgs, values, classes = _read_dsprites_arrays(path)
    n = len(imgs)
    _expect(
        path,
        imgs.ndim == 3 and imgs.shape[1:] == (64, 64) and imgs.dtype == np.uint8,
        f"imgs must be uint8 (N, 64, 64); found {_describe(imgs)}",
    )
    for key, arr in (("latents_values", values), ("latents_classes", classes)):
        _expect(
            path,
            arr.ndim == 2 and arr.shape == (n, 6),
            f"{key} must have shape ({n}, 6) (color, shape, scale, orientation, posX, posY); "
            f"found {_describe(arr)}",
        )
    _expect(path, values.dtype.kind == "f", f"latents_values must be float; found {values.dtype}")
    _expect(
        path, classes.dtype.kind in "iu", f"latents_classes must be integer; found {classes.dtype}"
    )
    _expect(path, imgs.max(initial=0) <= 1, "imgs must be binary (0/1)")
    _expect(path, bool((classes[:, 0] == 0).all()), "color class must be 0 (a single white colour)")
    classes = classes[:, 1:].astype(np.int64)
    from_values = _classes_from_values(path, DSPRITES, values[:, 1:])
    mismatch = (from_values != classes).any(1)
    _expect(
        path,
        not mismatch.any(),
        f"latents_values and latents_classes disagree on row {int(np.argmax(mismatch))}",
    )
    complete = _check_order(path, DSPRITES, classes)
    return FileData("dsprites", path, (imgs[:, None] * np.uint8(255)), classes, complete)


def read_shapes3d(path: str | os.PathLike, progress: bool = True) -> FileData:
    """Read and validate `3dshapes.h5` in chunks (never converting the images to float)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = {"images", "labels"} - set(f.keys())
            _expect(path, not missing, f"missing keys {sorted(missing)}; found {sorted(f.keys())}")
            images, labels = _h5_array(path, f, "images"), _h5_array(path, f, "labels")
            n = images.shape[0]
            _expect(
                path,
                images.ndim == 4 and images.shape[1:] == (64, 64, 3) and images.dtype == np.uint8,
                f"images must be uint8 (N, 64, 64, 3); found {_describe(images)}",
            )
            _expect(
                path,
                labels.shape == (n, 6) and labels.dtype.kind == "f",
                f"labels must be float (N={n}, 6); found {_describe(labels)}",
            )
            values = labels[()]
            out = np.empty((n, 3, 64, 64), dtype=np.uint8)
            chunks = range(0, n, CHUNK)
            for start in tqdm(
                chunks, desc=f"reading {path.name}", disable=not progress or n <= CHUNK
            ):
                out[start : start + CHUNK] = images[start : start + CHUNK].transpose(0, 3, 1, 2)
    except OSError as err:
        raise DataFileError(path, f"not a readable HDF5 file (truncated?): {err}") from err
    classes = _classes_from_values(path, SHAPES3D, values)
    complete = _check_order(path, SHAPES3D, classes)
    return FileData("shapes3d", path, out, classes, complete)


def read_file(path: str | os.PathLike, progress: bool = True) -> FileData:
    """Read any official file, recognised by its name or, failing that, its suffix/keys."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(path, "file not found")
    if path.suffix == ".npz" or path.name in OFFICIAL_FILES["dsprites"]:
        return read_dsprites(path)
    if path.suffix in (".h5", ".hdf5"):
        try:
            with h5py.File(path, "r") as f:
                is_shapes = "images" in f
        except OSError as err:
            raise DataFileError(path, f"not a readable HDF5 file (truncated?): {err}") from err
        return read_shapes3d(path, progress) if is_shapes else read_dsprites(path)
    raise DataFileError(path, "unknown format; expected .npz (dSprites) or .h5/.hdf5")


def _dsprites_metadata() -> dict:
    names = ("color", "shape", "scale", "orientation", "posX", "posY")
    values = (np.array([1.0]),) + DSPRITES.factor_values
    return {
        "date": datetime.date.today().isoformat(),
        "description": "Procedural dSprites written by vaesae in the official format",
        "version": 1,
        "latents_names": names,
        "latents_possible_values": dict(zip(names, values, strict=True)),
        "latents_sizes": np.array([1, *DSPRITES.factor_sizes]),
        "author": "vaesae (renderer calibrated on DeepMind dSprites, Apache-2.0)",
        "title": "dSprites (procedural)",
    }


ImageFn = Callable[[np.ndarray], np.ndarray]


def _chunks(n: int, desc: str, progress: bool) -> tqdm:
    return tqdm(range(0, n, CHUNK), desc=desc, disable=not progress or n <= CHUNK)


def write_dsprites(
    path: str | os.PathLike, classes: np.ndarray, image_fn: ImageFn, progress: bool = True
) -> Path:
    """Write dSprites rows in the official format (.npz, or .hdf5 by suffix), atomically.

    classes: int (N, 5) factor classes without color; image_fn maps a chunk of classes to uint8
    images (n, 1, 64, 64) or (n, 64, 64), 0/255 or 0/1. Stored pixels are 0/1 as in the release.
    """
    path = Path(path)
    classes = np.asarray(classes, np.int64)
    n = len(classes)
    cls = np.concatenate([np.zeros((n, 1), np.int64), classes], 1)
    vals = np.concatenate([np.ones((n, 1)), DSPRITES.values_of(classes)], 1)
    imgs = np.empty((n, 64, 64), dtype=np.uint8)
    for start in _chunks(n, f"rendering {path.name}", progress):
        chunk = np.asarray(image_fn(classes[start : start + CHUNK]))
        imgs[start : start + CHUNK] = (chunk.reshape(-1, 64, 64) > 0).astype(np.uint8)
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            meta = np.array(_dsprites_metadata(), dtype=object)
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh, imgs=imgs, latents_values=vals, latents_classes=cls, metadata=meta
                )
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("imgs", data=imgs, compression="gzip")
                f.create_dataset("latents/classes", data=cls)
                f.create_dataset("latents/values", data=vals)
                f.create_dataset("metadata", data=np.void(pickle.dumps(_dsprites_metadata())))
    return path


def write_shapes3d(
    path: str | os.PathLike, classes: np.ndarray, image_fn: ImageFn, progress: bool = True
) -> Path:
    """Write Shapes3D rows in the official format (`images` (N, 64, 64, 3), `labels`), atomically.

    classes: int (N, 6); image_fn maps a chunk of classes to uint8 images (n, 3, 64, 64). The
    images are streamed to disk chunk by chunk, so the full 5.9 GB never sits in memory twice.
    """
    path = Path(path)
    classes = np.asarray(classes, np.int64)
    n = len(classes)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        images = f.create_dataset(
            "images",
            shape=(n, 64, 64, 3),
            dtype=np.uint8,
            chunks=(min(max(n, 1), 1000), 64, 64, 3),
        )
        for start in _chunks(n, f"rendering {path.name}", progress):
            chunk = np.asarray(image_fn(classes[start : start + CHUNK]), dtype=np.uint8)
            images[start : start + len(chunk)] = chunk.transpose(0, 2, 3, 1)
        f.create_dataset("labels", data=SHAPES3D.values_of(classes))
    return path
