"""python -m vaesae.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--rule NAME]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaesae.report.document import write_report
from vaesae.report.loading import RuleError, load_sweep


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m vaesae.report",
        description="Aggregate a sweep's run directories into report.md, summary.csv and figures. "
        "Run directories are found recursively; one reached through several of the folders is "
        "counted once.",
    )
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep (or run) directories")
    parser.add_argument("--out", type=Path, help="output folder (default: FIRST_SWEEP/report)")
    parser.add_argument(
        "--rule",
        metavar="NAME",
        help="dead-neuron rule to make the primary one of every table, claim and figure: a "
        "logged dead/NAME column such as never, magnitude, window, freq1e-3 (every rule is logged "
        "each epoch, so no threshold sweep is needed). Default: each run's own rule "
        "(dead/primary).",
    )
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(*args.sweeps, rule=args.rule)
    except (FileNotFoundError, RuleError) as err:
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
