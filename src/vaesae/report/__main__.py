"""python -m vaesae.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--rule NAME]
[--low-dead F] [--quality-margin F] [--compression-margin F] [--min-gap-closed F]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaesae.report.document import write_report
from vaesae.report.falsify import COMPRESSION_MARGIN, LOW_DEAD, QUALITY_MARGIN, Settings
from vaesae.report.loading import MIN_GAP_CLOSED, RuleError, load_sweep


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
    parser.add_argument(
        "--low-dead",
        type=float,
        default=LOW_DEAD,
        metavar="F",
        help="falsification verdict (sweeps with arms): an arm's dead rate at k_end is low when "
        f"its 95 %% CI lies below F (a fraction; default {LOW_DEAD})",
    )
    parser.add_argument(
        "--quality-margin",
        type=float,
        default=QUALITY_MARGIN,
        metavar="F",
        help="falsification verdict: an arm's model is as good when the CI of its reconstruction "
        f"loss / the baseline's lies below 1 + F (default {QUALITY_MARGIN})",
    )
    parser.add_argument(
        "--compression-margin",
        type=float,
        default=COMPRESSION_MARGIN,
        metavar="F",
        help="falsification, compression criterion: the squeeze adds no deaths when the CI of "
        "dead(arm) − dead(its no-pressure control) at k_end lies below F (a fraction of the "
        f"width; default {COMPRESSION_MARGIN})",
    )
    parser.add_argument(
        "--min-gap-closed",
        type=float,
        default=MIN_GAP_CLOSED,
        metavar="F",
        help="the 'trained' guard: a run whose evaluation reconstruction has closed less than F "
        "of the no-information gap at k_end is marked untrained and left out of every verdict "
        f"(F < 1; default {MIN_GAP_CLOSED}; 0: only runs worse than the mean image)",
    )
    args = parser.parse_args(argv)
    for flag, value, ok, valid in (
        ("--low-dead", args.low_dead, 0 < args.low_dead < 1, "in (0, 1)"),
        ("--quality-margin", args.quality_margin, args.quality_margin >= 0, ">= 0"),
        (
            "--compression-margin",
            args.compression_margin,
            0 < args.compression_margin < 1,
            "in (0, 1)",
        ),
    ):
        if not ok:
            parser.error(f"{flag} must be {valid}, got {value}")
    if not args.min_gap_closed < 1:
        parser.error(
            f"--min-gap-closed must be < 1 (1 is a perfect model), got {args.min_gap_closed}"
        )
    try:
        sweep = load_sweep(*args.sweeps, rule=args.rule, min_gap_closed=args.min_gap_closed)
    except (FileNotFoundError, RuleError) as err:
        parser.exit(2, f"error: {err}\n")
    settings = Settings(args.low_dead, args.quality_margin, args.compression_margin)
    path = write_report(sweep, args.out or args.sweeps[0] / "report", settings)
    print(
        f"{len(sweep.included)} complete runs, {len(sweep.excluded)} excluded; report: {path}",
        file=sys.stderr,
    )
    print(path)
    return path


def cli() -> None:
    """`vaesae-report`: `main` without its return value, which a console script would take for
    an exit status."""
    main()


if __name__ == "__main__":
    cli()
