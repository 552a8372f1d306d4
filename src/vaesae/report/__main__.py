"""python -m vaesae.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaesae.report.document import write_report
from vaesae.report.loading import load_sweep


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m vaesae.report",
        description="Aggregate a sweep's run directories into report.md, summary.csv and figures.",
    )
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep (or run) directories")
    parser.add_argument("--out", type=Path, help="output folder (default: FIRST_SWEEP/report)")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(*args.sweeps)
    except FileNotFoundError as err:
        parser.exit(2, f"error: {err}\n")
    path = write_report(sweep, args.out or args.sweeps[0] / "report")
    print(
        f"{len(sweep.included)} complete runs, {len(sweep.excluded)} excluded; report: {path}",
        file=sys.stderr,
    )
    print(path)
    return path


if __name__ == "__main__":
    main()
