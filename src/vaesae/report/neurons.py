"""The report's per-neuron pictures: one run per condition (its lowest seed), at its reference
epoch (k = k_end), copied from `<run>/neurons/` (`vaesae.pictures.callback`) into the report's
`figures/neurons/<condition>/`, and the section that shows them."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from vaesae.atomic import atomic_path
from vaesae.pictures.callback import KINDS, picture_name
from vaesae.pictures.compute import VIEWS
from vaesae.report.loading import Condition, Run

__all__ = ["copy_neuron_pictures", "neuron_section", "pictures_dir"]

_KIND_TEXT = {
    "top": "top-activating evaluation images",
    "traversal": "decoder-direction traversal",
    "response": "response curves",
}


def pictures_dir(out_dir: Path, cond: Condition) -> Path:
    """Where a condition's pictures go inside the report folder `out_dir`."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", cond.label).strip("_")
    return out_dir / "figures" / "neurons" / slug


def _sources(run: Run) -> list[Path]:
    """The run's pictures at its reference epoch that exist, view by view, kind by kind."""
    folder = run.path / "neurons"
    names = [picture_name(run.reference_epoch, v, k) for v in VIEWS for k in KINDS]
    return [folder / n for n in names if (folder / n).exists()]


def copy_neuron_pictures(groups: dict[Condition, list[Run]], out_dir: Path) -> dict[str, Path]:
    """Copy each condition's pictures (first run = lowest seed, reference epoch) into
    `pictures_dir(out_dir, condition)`, atomically; returns the copies by report-relative name."""
    copied = {}
    for cond, runs in groups.items():
        if not runs:
            continue
        for source in _sources(runs[0]):
            target = pictures_dir(out_dir, cond) / source.name
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            copied[str(target.relative_to(out_dir))] = target
    return copied


def _caption(run: Run) -> str:
    record = run.path / "neurons" / f"epoch_{run.reference_epoch:03d}_pictures.json"
    if not record.exists():
        return ""
    info = json.loads(record.read_text())
    return (
        f" {info['dead']} of {info['width']} units dead under the run's rule "
        f"(`{info['rule']}`), counted and not drawn; {info['alive']} alive, "
        f"{info['described']} described (alignment defined)."
    )


def neuron_section(groups: dict[Condition, list[Run]], out_dir: Path) -> str:
    """Markdown: per condition, the pictures `copy_neuron_pictures` placed in `out_dir`."""
    parts = [
        "For each condition, the lowest-seed run at its reference epoch (k = k_end). Per view "
        "(the alive units ranked by firing frequency, then by alignment; `pictures.num_units` "
        "rows): the evaluation images with the largest activation of each unit (grey: the unit "
        "is silent there); its dictionary direction decoded, b_pre + a·W_d[:, i] → latent head "
        "→ decoder (at `model.site=latent` straight to the decoder), for a from 0 to its "
        "largest evaluation activation; and its mean activation "
        "per value of each factor (bottom edge of a cell: 0; top: the row's largest mean)."
    ]
    missing = []
    for cond, runs in groups.items():
        if not runs:
            continue
        run = runs[0]
        head = f"### {cond.label}: seed {run.seed}, epoch {run.reference_epoch}"
        folder = pictures_dir(out_dir, cond)
        links = []
        for view in VIEWS:
            for kind in KINDS:
                path = folder / picture_name(run.reference_epoch, view, kind)
                if path.exists():
                    rel = os.path.relpath(path, out_dir)
                    links.append(f"![{cond.label}, by {view}: {_KIND_TEXT[kind]}]({rel})")
        if not links:
            missing.append(f"{cond.label} (seed {run.seed}, epoch {run.reference_epoch})")
            continue
        parts.append(f"{head}\n\n{_caption(run).strip()}\n\n" + "\n\n".join(links))
    if missing:
        # One line, not a heading per condition: a sweep trained before pictures existed (or
        # without `reference` in `pictures.epochs`) would otherwise fill the section with them.
        parts.append(
            f"_No pictures at the reference epoch (trained before they existed, or without "
            f"`reference` in `pictures.epochs`): {'; '.join(missing)}._"
        )
    return "\n\n".join(parts)
