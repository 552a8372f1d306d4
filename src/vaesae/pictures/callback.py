"""Per-neuron pictures at chosen epochs: `write_pictures` (tensors in, PNG files out) and the
Lightning callback that calls it after the evaluation callback.

For each view (`vaesae.pictures.compute.VIEWS`) the files of epoch e are, in `<run>/neurons/`:

- ``epoch_XXX_<view>_top.png``: the top-activating evaluation images, one row per unit;
- ``epoch_XXX_<view>_traversal.png``: the unit's dictionary direction decoded at growing
  amplitude, one row per unit;
- ``epoch_XXX_<view>_response.png``: mean activation against each factor's value (rows = units,
  columns = factors);

and ``epoch_XXX_pictures.json`` records the units drawn, their figures and the dead count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch import Tensor

from vaesae.atomic import write_json
from vaesae.data.datamodule import attached_datamodule
from vaesae.data.factors import FactorSpace
from vaesae.evaluation import EvaluationCallback, collect_codes
from vaesae.models import VAESAE
from vaesae.pictures.compute import (
    VIEWS,
    amplitude_grid,
    rank_units,
    resolve_epochs,
    response_curves,
    top_activating,
    traversal_images,
)
from vaesae.pictures.render import image_page, response_figure, save_figure, save_image

if TYPE_CHECKING:
    # Type-only: the callbacks are built before, and without, the training module.
    from vaesae.module import VAESAEModule

__all__ = ["PictureSettings", "write_pictures", "picture_name", "NeuronPicturesCallback", "KINDS"]

log = logging.getLogger("vaesae")

KINDS = ("top", "traversal", "response")
_VIEW_WORDS = {"frequency": "firing frequency", "alignment": "alignment"}


@dataclass(frozen=True)
class PictureSettings:
    """`pictures.*` of conf/train.yaml, with the epochs resolved to numbers."""

    epochs: tuple[int, ...] = ()
    num_units: int = 8
    images_per_unit: int = 8
    traversal_steps: int = 8
    views: tuple[str, ...] = field(default=VIEWS)

    @classmethod
    def from_config(
        cls, p: DictConfig, reference_epoch: int | None, total_epochs: int
    ) -> PictureSettings:
        """From the `pictures` node, with the run's reference epoch and epoch count (the run's
        plan, derived once by the caller)."""
        return cls(
            epochs=resolve_epochs(list(p.epochs), reference_epoch, total_epochs),
            num_units=int(p.num_units),
            images_per_unit=int(p.images_per_unit),
            traversal_steps=int(p.traversal_steps),
            views=tuple(str(v) for v in p.views),
        )


def picture_name(epoch: int, view: str, kind: str) -> str:
    """File name of one picture inside `<run>/neurons/`."""
    return f"epoch_{epoch:03d}_{view}_{kind}.png"


def _labels(units: Tensor, frequency: Tensor, alignment: Tensor) -> list[str]:
    out = []
    for i in units.tolist():
        a = float(alignment[i])
        align = f"align {a:.2f}" if a == a else "align n/a"  # NaN: not described
        out.append(f"unit {i}\nfreq {float(frequency[i]):.3g}\n{align}")
    return out


def write_pictures(
    out_dir: str | Path,
    epoch: int,
    model: VAESAE,
    codes: Tensor,
    factors: Tensor,
    images_of: Callable[[Tensor], Tensor],
    frequency: Tensor,
    alignment: Tensor,
    dead: Tensor,
    rule: str,
    space: FactorSpace,
    settings: PictureSettings,
) -> dict[str, Any]:
    """Write one epoch's pictures into `out_dir` and return what the JSON record holds.

    codes: [N, M] evaluation codes (any device); factors: LongTensor[N, K] their factor classes;
    images_of: factor classes [n, K] -> uint8 images [n, C, 64, 64]; frequency, alignment, dead
    (under `rule`): the evaluation's per-unit arrays [M]. Dead units are counted in every
    caption and never drawn.
    """
    out_dir = Path(out_dir)
    frequency, alignment = frequency.detach().double().cpu(), alignment.detach().double().cpu()
    dead = dead.detach().bool().cpu()
    width, num_dead = int(dead.numel()), int(dead.sum())
    dead_text = f"{num_dead} of {width} units dead ({rule}), not drawn"
    arrow = "latent head -> decoder" if model.site == "hidden" else "decoder"
    record: dict[str, Any] = {
        "epoch": epoch,
        "rule": rule,
        "width": width,
        "dead": num_dead,
        "alive": width - num_dead,
        "described": int((~dead & alignment.isfinite()).sum()),
        "views": {},
    }
    for view in settings.views:
        units = rank_units(view, frequency, alignment, dead, settings.num_units)
        title = f"epoch {epoch}: top {len(units)} alive units by {_VIEW_WORDS[view]}; {dead_text}"
        picked = codes[:, units.to(codes.device)]
        idx, values = top_activating(codes, units, settings.images_per_unit)
        n = idx.shape[1]
        if len(units):
            flat = factors.to(codes.device)[idx.reshape(-1)]
            images = images_of(flat).float().cpu().div(255)
            images = images.reshape(len(units), n, *images.shape[1:])
            peak = picked.max(0).values.float()
            amplitudes = amplitude_grid(peak, settings.traversal_steps)
            traversal = traversal_images(model, units.to(codes.device), amplitudes).cpu()
        else:
            images = torch.zeros(0, n, 1, 64, 64)
            peak = torch.zeros(0)
            traversal = torch.zeros(0, settings.traversal_steps, 1, 64, 64)
        top_caption = (
            f"columns: the {n} evaluation images with the largest activation, largest first "
            "(grey: the unit is silent there)"
        )
        walk_caption = (
            f"columns: b_pre + a W_d[:, i] -> {arrow}, a from 0 to the unit's largest "
            f"evaluation activation in {settings.traversal_steps} steps"
        )
        walk_labels = [
            f"unit {i}\na = 0 .. {m:.3g}"
            for i, m in zip(units.tolist(), peak.tolist(), strict=True)
        ]
        top = image_page(
            images,
            _labels(units, frequency, alignment),
            [title, top_caption],
            present=(values > 0).cpu(),
            cols=n,
        )
        walk = image_page(
            traversal, walk_labels, [title, walk_caption], cols=settings.traversal_steps
        )
        curves = response_curves(picked, factors, space.factor_sizes)
        fig = response_figure(
            curves,
            space.factor_values,
            space.factor_names,
            [f"unit {i}" for i in units.tolist()],
            f"{title}\nmean activation per factor value",
        )
        files = {
            "top": save_image(top, out_dir / picture_name(epoch, view, "top")),
            "traversal": save_image(walk, out_dir / picture_name(epoch, view, "traversal")),
            "response": save_figure(fig, out_dir / picture_name(epoch, view, "response")),
        }
        record["views"][view] = {
            "units": units.tolist(),
            "frequency": frequency[units].tolist(),
            "alignment": alignment[units].tolist(),
            "max_activation": peak.cpu().tolist(),
            "files": {kind: path.name for kind, path in files.items()},
        }
    return record


class NeuronPicturesCallback(pl.Callback):
    """At the end of the epochs in `settings.epochs`, after the evaluation callback (keep it
    later in the callback list), runs the model over the evaluation set once more for the codes
    (the evaluation callback keeps only its per-unit figures) and writes `write_pictures` into
    `<run_dir>/neurons/`, with `epoch_XXX_pictures.json` (units drawn, dead count, seconds).

    A failure is logged and the run goes on: the pictures are a by-product of training.
    """

    def __init__(
        self, run_dir: str | Path, evaluation: EvaluationCallback, settings: PictureSettings
    ) -> None:
        self.out_dir = Path(run_dir) / "neurons"
        self.evaluation = evaluation
        self.settings = settings

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        epoch = trainer.current_epoch
        result = self.evaluation.last
        if epoch not in self.settings.epochs or result is None or not trainer.is_global_zero:
            return
        start = time.perf_counter()
        try:
            dm = attached_datamodule(trainer)
            device = pl_module.device
            _, codes, factors, _, _ = collect_codes(pl_module, dm.eval_batches(device))
            rule = self.evaluation.settings.primary_name

            def images_of(f: Tensor) -> Tensor:
                # On the training device: the data module moves its whole dataset to the device
                # of the factors it is asked for, and training reads it there.
                return dm.images(f.to(device))

            record = write_pictures(
                self.out_dir,
                epoch,
                pl_module.model,
                codes,
                factors,
                images_of,
                result.frequency,
                result.alignment,
                result.dead[rule],
                rule,
                dm.dataset.space,
                self.settings,
            )
        except Exception:
            log.exception("neuron pictures of epoch %d failed; training goes on", epoch)
            return
        record["seconds"] = time.perf_counter() - start
        write_json(self.out_dir / f"epoch_{epoch:03d}_pictures.json", record)
        log.info("neuron pictures of epoch %d: %.1f s", epoch, record["seconds"])
