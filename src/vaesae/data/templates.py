"""Renderer templates, built once and cached on disk next to the data, keyed by a version.

The dSprites windows (~12 MB as bits) and the Shapes3D geometry maps (~16 MB as float16) take
seconds to build; the cache makes every later run start instantly. A cache file whose version or
content does not match is rebuilt, never trusted. An unwritable data directory only costs the
rebuild: the templates are then kept in memory for the process.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import numpy as np

from vaesae.atomic import atomic_path
from vaesae.data import dsprites_render, shapes3d_scene
from vaesae.data.factors import SHAPES3D

__all__ = ["template_version", "load_templates", "cache_path"]

log = logging.getLogger("vaesae.data")


def template_version(name: str) -> str:
    """Version string of a dataset's renderer: part of the cache file name."""
    if name == "dsprites":
        return dsprites_render.RENDER_VERSION
    return shapes3d_scene.SCENE_VERSION


def _build(name: str) -> np.ndarray:
    if name == "dsprites":
        return np.packbits(dsprites_render.build_templates(), axis=-1)
    scales, orientations = SHAPES3D.factor_values[3], SHAPES3D.factor_values[5]
    return shapes3d_scene.build_templates(scales, orientations).astype(np.float16)


def _stored_shape(name: str) -> tuple[int, ...]:
    if name == "dsprites":
        p, w = dsprites_render.PHASES, dsprites_render.WINDOW
        return (3, 6, 40, p, p, w, w // 8)
    return (8, 4, 15, 4, 64, 64)


def _unpack(name: str, stored: np.ndarray) -> np.ndarray:
    if name == "dsprites":
        return np.unpackbits(stored, axis=-1).astype(bool)
    return stored.astype(np.float32)


def cache_path(name: str, root: str | os.PathLike) -> Path:
    return Path(root) / ".vaesae-templates" / f"{template_version(name)}.npy"


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str) -> np.ndarray:
    path = cache_path(name, root)
    if path.exists():
        try:
            stored = np.load(path, allow_pickle=False)
            if stored.shape == _stored_shape(name):
                return _unpack(name, stored)
            log.warning("template cache %s has shape %s: rebuilding", path, stored.shape)
        except (OSError, ValueError) as err:
            log.warning("template cache %s unreadable (%s): rebuilding", path, err)
    t0 = time.perf_counter()
    stored = _build(name)
    log.info("built %s templates in %.1f s", name, time.perf_counter() - t0)
    try:
        with atomic_path(path) as tmp:
            np.save(tmp, stored)
    except OSError as err:
        log.warning("could not cache templates at %s (%s): keeping them in memory", path, err)
    return _unpack(name, stored)


def load_templates(name: str, root: str | os.PathLike) -> np.ndarray:
    """Templates of `name` ("dsprites" | "shapes3d"), from the cache under `root` or built."""
    return _load(name, str(Path(root).resolve()))
