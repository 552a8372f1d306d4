"""Sweep reports: `python -m vaesae.report SWEEP_DIR [--out DIR]` -> report.md, summary.csv,
figures.

- `loading`: run directories, their status and the conditions seeds are averaged over;
- `stats`: mean/std, Student-t, paired-t and Fieller intervals, Welch and paired t-tests (pure
  functions);
- `claims`: the paper's claims with explicit verdict rules;
- `tables`, `figures`, `document`: the report's parts and the writer.
"""

from vaesae.report.claims import Claim, evaluate_claims
from vaesae.report.document import write_report
from vaesae.report.loading import Condition, Run, Sweep, group_runs, load_run, load_sweep, values

__all__ = [
    "Claim",
    "Condition",
    "Run",
    "Sweep",
    "evaluate_claims",
    "group_runs",
    "load_run",
    "load_sweep",
    "values",
    "write_report",
]
