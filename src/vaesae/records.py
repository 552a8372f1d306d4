"""What a run leaves on disk: metrics.csv, summary.json, checkpoints/last.ckpt, figures.

Every file is written atomically (`vaesae.atomic`): a run killed at any moment leaves the previous
complete version, and `last.ckpt` always belongs to a finished epoch whose metrics row exists.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch

from vaesae.atomic import atomic_path, write_json, write_text
from vaesae.data.datamodule import attached_datamodule
from vaesae.evaluation import EvalResult, EvaluationCallback
from vaesae.imageio import save_grid

if TYPE_CHECKING:
    # Type-only: the callbacks are built before, and without, the training module.
    from vaesae.module import VAESAEModule

__all__ = ["RunRecorder", "LastCheckpoint", "read_metrics_csv", "SUMMARY_KEYS"]

log = logging.getLogger("vaesae")

# Final figures copied from the last metrics row into summary.json.
SUMMARY_KEYS = (
    "sparsity/k",
    "sparsity/l0",
    "dead/primary",
    "mig/latent",
    "mig/sae",
    "semantics/mean_alignment",
    "neurons/revived",
    "eval/recon",
    "eval/gap_closed",
    "eval/fvu",
)


def _number(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as dicts of floats (empty cells -> NaN)."""
    with open(path, newline="") as fh:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


class RunRecorder(pl.Callback):
    """Writes metrics.csv (one row per epoch), summary.json and sample reconstructions.

    The row of an epoch holds every figure logged during it (epoch means of the training terms,
    the schedule's k / L0 / lambda, the evaluation callback's figures). On resume, rows of epochs
    that are about to be re-run are dropped, so the file never holds an epoch twice.
    """

    def __init__(
        self,
        run_dir: str | Path,
        meta: dict[str, Any],
        evaluation: EvaluationCallback | None = None,
        recon_images: int = 16,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.evaluation = evaluation
        self.recon_images = recon_images
        self.rows: list[dict[str, float]] = []
        self.started = time.time()
        self.train_seconds = 0.0
        self.samples_seen = 0
        # Wall time and training figures of the earlier processes of a resumed run, as of its
        # checkpoint (restored by load_state_dict), so summary.json covers the whole run.
        self.previous_wall_s = 0.0
        self._epoch_start = 0.0

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    def write_summary(self, status: str, **extra: Any) -> None:
        final = self.rows[-1] if self.rows else {}
        levels = self.evaluation.levels if self.evaluation is not None else None
        if levels is not None:
            extra = {"recon_levels": levels.to_dict(), **extra}
        summary = {
            **self.meta,
            "status": status,
            "epochs_completed": len(self.rows),
            "wall_time_s": self.wall_time_s(),
            "train_seconds": self.train_seconds,
            "train_samples": self.samples_seen,
            "train_images_per_s": self.samples_seen / self.train_seconds
            if self.train_seconds > 0
            else None,
            "final": {k: final[k] for k in SUMMARY_KEYS if k in final},
            **extra,
        }
        write_json(self.run_dir / "summary.json", summary)

    def wall_time_s(self) -> float:
        """Seconds of wall time over every process of the run (up to the checkpoint a resumed
        process started from, then this process)."""
        return self.previous_wall_s + time.time() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {
            "wall_time_s": self.wall_time_s(),
            "train_seconds": self.train_seconds,
            "samples_seen": self.samples_seen,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_wall_s = float(state_dict["wall_time_s"])
        self.train_seconds = float(state_dict["train_seconds"])
        self.samples_seen = int(state_dict["samples_seen"])
        self.started = time.time()

    def on_train_start(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        # Called after a checkpoint is restored, so current_epoch is the epoch about to run.
        if self.metrics_path.exists():
            # Resuming: keep the rows of the epochs the checkpoint has completed.
            self.rows = [
                r for r in read_metrics_csv(self.metrics_path) if r["epoch"] < trainer.current_epoch
            ]
        self.write_summary("running")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.samples_seen += len(batch[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        # A pack's epoch end measured off its thread (`vaesae.pack.deferred`) carries the time
        # its training stopped: the measuring that overlaps the next epoch is not training.
        ended = getattr(trainer, "epoch_ended_at", None)
        self.train_seconds += (time.perf_counter() if ended is None else ended) - self._epoch_start
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: _number(v) for k, v in sorted(trainer.callback_metrics.items())})
        if self.evaluation is not None and self.evaluation.last is not None:
            row.update(self.evaluation.last.scalars)  # exact values, not float32 log copies
        self.rows.append(row)
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.metrics_path, buf.getvalue())
        if self.evaluation is not None and self.evaluation.last is not None:
            self.write_neurons(trainer.current_epoch, self.evaluation.last, trainer)
        self.write_summary("running")
        log.info(
            "%s epoch %d  k %s  L0 %.1f  dead %.3f  MIG latent %.3f  sae %.3f",
            self.meta.get("run_name", ""),
            trainer.current_epoch,
            *(
                row.get(k, math.nan)
                for k in ("sparsity/k", "sparsity/l0", "dead/primary", "mig/latent", "mig/sae")
            ),
        )

    def write_neurons(self, epoch: int, result: EvalResult, trainer: pl.Trainer) -> None:
        """Per-neuron arrays of one epoch: neurons/epoch_XXX.npz with `frequency` [M],
        `alignment` [M] (`vaesae.metrics.neuron_semantics`; NaN for the units it does not
        describe: dead under the primary rule, or firing on too few samples), `normalized_mi`
        [M, K] (0 for those units), `dead_<rule>` [M] and `factor_names` [K]. Unit d is the same
        neuron in every epoch's file, so the units described at two epochs can be compared."""
        arrays = {
            "frequency": result.frequency.cpu().numpy(),
            "alignment": result.alignment.cpu().numpy(),
            "normalized_mi": result.normalized_mi.cpu().numpy(),
            "factor_names": np.array(attached_datamodule(trainer).dataset.factor_names),
            **{f"dead_{rule}": mask.cpu().numpy() for rule, mask in result.dead.items()},
        }
        with atomic_path(self.run_dir / "neurons" / f"epoch_{epoch:03d}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, allow_pickle=False, **arrays)

    def finish(self, status: str, **extra: Any) -> None:
        """Final summary (and, after training, the reconstructions of the last evaluation)."""
        samples = self.evaluation.samples if self.evaluation is not None else None
        if status == "completed" and samples is not None and self.recon_images > 0:
            x, recon = (t[: self.recon_images] for t in samples)
            grid = torch.cat([x, recon]).float().cpu()
            save_grid(grid, self.run_dir / "reconstructions.png", ncols=len(x))
        self.write_summary(status, **extra)


class LastCheckpoint(pl.Callback):
    """Saves `checkpoints/last.ckpt` atomically at the end of every training epoch.

    Keep it after the other callbacks so their end-of-epoch state is in the checkpoint.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "checkpoints" / "last.ckpt"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        with atomic_path(self.path) as tmp:
            trainer.save_checkpoint(tmp, weights_only=False)
