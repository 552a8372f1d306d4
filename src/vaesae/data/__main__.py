"""Command line of the data package.

python -m vaesae.data export {dsprites,shapes3d} --out DIR [--format npz|hdf5] [--limit N]
python -m vaesae.data check FILE
python -m vaesae.data show {dsprites,shapes3d} --out grid.png [--n 64] [--source auto]
python -m vaesae.data compare-reference [--reference DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from vaesae.data.dataset import DATASETS, SOURCES, get_dataset
from vaesae.data.factors import FACTOR_SPACES
from vaesae.data.files import (
    OFFICIAL_FILES,
    DataFileError,
    read_file,
    write_dsprites,
    write_shapes3d,
)
from vaesae.imageio import save_grid

# Real frames shipped with the package (NOTICE there: (c) DeepMind, Apache-2.0).
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "reference_frames"


def export(args: argparse.Namespace) -> int:
    ds = get_dataset(args.dataset, "procedural", args.root)
    if args.limit is not None and args.limit < 1:
        raise SystemExit("--limit must be a positive number of rows")
    if args.limit is None or args.limit >= len(ds):
        index = torch.arange(len(ds))
    else:
        gen = torch.Generator().manual_seed(args.seed)
        index = torch.randperm(len(ds), generator=gen)[: args.limit].sort().values
    classes = ds.factors_of(index).numpy()

    def image_fn(chunk: np.ndarray) -> np.ndarray:
        return ds.images(torch.from_numpy(chunk)).numpy()

    names = OFFICIAL_FILES[args.dataset]
    if args.dataset == "dsprites":
        fname = names[0] if args.format == "npz" else names[1]
        path = write_dsprites(Path(args.out) / fname, classes, image_fn)
    else:
        path = write_shapes3d(Path(args.out) / names[0], classes, image_fn)
    print(f"wrote {len(classes)} {args.dataset} images to {path}")
    return 0


def check(args: argparse.Namespace) -> int:
    data = read_file(args.file)
    n = len(data.classes)
    kind = "complete grid in official order" if data.complete else "subset of the grid"
    print(f"{data.path}: valid {data.name} file, {n} images ({kind})")
    print(f"  images uint8 {tuple(data.images.shape)}, mean pixel {data.images.mean():.2f}/255")
    space = FACTOR_SPACES[data.name]
    for k, name in enumerate(space.factor_names):
        used = len(np.unique(data.classes[:, k]))
        print(f"  {name:<12} {used}/{space.factor_sizes[k]} classes present")
    return 0


def show(args: argparse.Namespace) -> int:
    ds = get_dataset(args.dataset, args.source, args.root)
    factors = ds.sample_factors(args.n, torch.Generator().manual_seed(args.seed))
    path = save_grid(ds.images(factors), args.out, ncols=int(np.ceil(np.sqrt(args.n))))
    print(f"wrote a grid of {args.n} {args.dataset} images ({ds.source}) to {path}")
    return 0


def compare_reference(args: argparse.Namespace) -> int:
    from vaesae.data.reference import compare_reference as run

    summary = run(Path(args.reference), Path(args.out), root=args.root)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vaesae.data", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write the procedural dataset in the official file format")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=("npz", "hdf5"), default="npz", help="dSprites only")
    p.add_argument("--limit", type=int, default=None, help="write N random grid points only")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    p.add_argument("--root", default=None, help="data directory (template cache)")
    p.set_defaults(run=export)
    p = sub.add_parser("check", help="validate an official-format file and summarise it")
    p.add_argument("file")
    p.set_defaults(run=check)
    p = sub.add_parser("show", help="write a PNG grid of random samples")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", choices=SOURCES, default="auto")
    p.add_argument("--root", default=None)
    p.set_defaults(run=show)
    p = sub.add_parser("compare-reference", help="measure the renderers against real frames")
    p.add_argument("--reference", default=str(DEFAULT_REFERENCE))
    p.add_argument("--out", default="outputs/reference")
    p.add_argument("--root", default=None)
    p.set_defaults(run=compare_reference)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except (DataFileError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
