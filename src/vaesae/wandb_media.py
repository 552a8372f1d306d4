"""What a W&B run holds beyond the per-epoch scalars.

- The epoch is every chart's x-axis (``define_metric``), so runs of different epoch sizes line up.
- At chosen epochs (those that get neuron pictures): the evaluation images and their
  reconstructions and the run's neuron pictures as ``wandb.Image``; the log10 firing frequency of
  the units that fire as a ``wandb.Histogram``; one row per unit as a ``wandb.Table``
  (:func:`neuron_table`).
- Summary values: the primary rule's dead rate at the reference epoch (k = k_end) and at the
  last epoch, and MIG at the reference epoch.

Everything is read from :class:`vaesae.evaluation.EvaluationCallback`'s last result, so W&B shows
the figures of metrics.csv and neurons/epoch_XXX.npz, not a second computation.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch

from vaesae.data.datamodule import attached_datamodule
from vaesae.evaluation import EvalResult, EvaluationCallback
from vaesae.imageio import image_grid

if TYPE_CHECKING:
    # Type-only: the callbacks are built before, and without, the training module.
    from vaesae.module import VAESAEModule

__all__ = ["NEURON_COLUMNS", "neuron_table", "firing_log10", "WandbMedia"]

NEURON_COLUMNS: list[Any] = ["unit", "firing_frequency", "alignment", "best_factor", "dead"]


def neuron_table(
    result: EvalResult, factor_names: tuple[str, ...] | list[str], primary: str
) -> list[list[Any]]:
    """One row per SAE unit: [unit, firing frequency (fraction of evaluation samples with
    activation > 0), alignment (``vaesae.metrics.neuron_semantics``; None where the unit is not
    described), best factor (the factor of largest normalised MI; None where not described),
    dead under the ``primary`` rule]."""
    dead = result.dead[primary].cpu().numpy()
    frequency = result.frequency.cpu().numpy()
    alignment = result.alignment.cpu().numpy()
    best = result.normalized_mi.argmax(dim=1).cpu().numpy()
    rows = []
    for unit in range(len(frequency)):
        described = not math.isnan(alignment[unit])
        rows.append(
            [
                unit,
                float(frequency[unit]),
                float(alignment[unit]) if described else None,
                str(factor_names[best[unit]]) if described else None,
                bool(dead[unit]),
            ]
        )
    return rows


def firing_log10(frequency: torch.Tensor) -> np.ndarray:
    """log10 of the firing frequencies of the units that fire at least once (those that never
    fire have no logarithm; their count is ``dead/never``)."""
    f = frequency.detach().double().cpu()
    return f[f > 0].log10().numpy()


class WandbMedia(pl.Callback):
    """Sets the epoch as W&B's x-axis and logs media and summary values (module docstring).

    ``epochs``: the epochs whose end gets media; ``reference_epoch``: the epoch evaluated at
    k = k_end; ``run_dir``: where the neuron pictures (``neurons/epoch_XXX_*.png``) are found.
    Keep it after the evaluation and picture callbacks, whose end-of-epoch output it reads. Does
    nothing without a W&B logger.
    """

    def __init__(
        self,
        evaluation: EvaluationCallback,
        epochs: Collection[int],
        reference_epoch: int | None,
        run_dir: str | Path,
        primary: str,
    ) -> None:
        self.evaluation = evaluation
        self.epochs = set(epochs)
        self.reference_epoch = reference_epoch
        self.run_dir = Path(run_dir)
        self.primary = primary

    @staticmethod
    def _runs(trainer: pl.Trainer) -> list[Any]:
        from lightning.pytorch.loggers import WandbLogger

        return [lg.experiment for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        for run in self._runs(trainer):
            # Lightning made trainer/global_step the axis of "*"; the later definition wins.
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        runs, result = self._runs(trainer), self.evaluation.last
        if not runs or result is None:
            return
        epoch = trainer.current_epoch
        summary = {}
        if epoch == self.reference_epoch:
            summary = {
                "dead_at_k_end": result.scalars["dead/primary"],
                "mig_latent_at_k_end": result.scalars["mig/latent"],
                "mig_sae_at_k_end": result.scalars["mig/sae"],
            }
        if epoch == (trainer.max_epochs or 0) - 1:
            summary["dead_final"] = result.scalars["dead/primary"]
        media = self._media(trainer, result, epoch) if epoch in self.epochs else {}
        for run in runs:
            run.summary.update(summary)
            if media:
                run.log({**media, "epoch": epoch})

    def _media(self, trainer: pl.Trainer, result: EvalResult, epoch: int) -> dict[str, Any]:
        import wandb

        names = attached_datamodule(trainer).dataset.factor_names
        media: dict[str, Any] = {
            "media/firing_log10_frequency": wandb.Histogram(
                firing_log10(result.frequency).tolist()
            ),
            "media/neurons": wandb.Table(
                columns=NEURON_COLUMNS, data=neuron_table(result, names, self.primary)
            ),
        }
        if self.evaluation.samples is not None:
            x, recon = self.evaluation.samples
            grid = image_grid(torch.cat([x[:8], recon[:8]]).float().cpu(), ncols=min(8, len(x)))
            media["media/reconstructions"] = wandb.Image(grid, caption="top: input, bottom: output")
        for png in sorted(self.run_dir.glob(f"neurons/epoch_{epoch:03d}_*.png")):
            view = png.stem.split("_", 2)[2]
            media[f"media/neurons_{view}"] = wandb.Image(str(png))
        return media
