"""LightningDataModule that serves factor-sampled batches gathered on the model's device.

There is no per-item `__getitem__` and no worker process: a loader yields small LongTensors of
factor tuples, Lightning moves them to the model's device, and `on_after_batch_transfer` turns
them into images with one gather there (the dataset's images or templates follow the batch to
its device once). A training "epoch" is `epoch_size` samples drawn uniformly over the grid with a
generator seeded by (seed, epoch), so a resumed run sees the same batches. The evaluation set is
`eval_size` factor tuples drawn once from `eval_seed`: the same for every epoch and every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import cast

import lightning as L
import torch

from vaesae.data.dataset import GroundTruthDataset, get_dataset

__all__ = ["FactorBatches", "GroundTruthDataModule"]


class FactorBatches:
    """An iterable of factor batches (LongTensor[B, K]) with a length, usable as a dataloader.

    `factors_fn` draws the `num_samples` factor tuples of one pass when iteration starts, so
    asking for the length draws nothing.
    """

    def __init__(
        self,
        factors_fn: Callable[[], torch.Tensor],
        num_samples: int,
        batch_size: int,
        drop_last: bool,
    ):
        self.factors_fn = factors_fn
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        div = self.num_samples / self.batch_size
        return int(div) if self.drop_last else math.ceil(div)

    def __iter__(self) -> Iterator[torch.Tensor]:
        factors = self.factors_fn()
        for i in range(len(self)):
            yield factors[i * self.batch_size : (i + 1) * self.batch_size]


def attached_datamodule(trainer: L.Trainer) -> GroundTruthDataModule:
    """The data module that ``trainer.fit(..., datamodule=...)`` attached to ``trainer``.

    Lightning sets ``trainer.datamodule`` at fit time, so a static checker cannot see it; the
    callbacks read it through here.
    """
    return cast(GroundTruthDataModule, trainer.datamodule)  # pyright: ignore[reportAttributeAccessIssue]


class GroundTruthDataModule(L.LightningDataModule):
    """Batches `(images uint8 [B,C,64,64], factors long [B,K])` of dSprites or Shapes3D."""

    def __init__(
        self,
        dataset: str = "dsprites",
        source: str = "auto",
        root: str | None = None,
        batch_size: int = 256,
        epoch_size: int | None = None,
        eval_size: int = 10_000,
        seed: int = 0,
        eval_seed: int = 12345,
        eval_batch_size: int = 1024,
    ):
        super().__init__()
        for key, value in (
            ("batch_size", batch_size),
            ("eval_size", eval_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if value < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {value}")
        if epoch_size is not None and epoch_size < batch_size:
            raise ValueError(
                f"data.epoch_size ({epoch_size}) must be at least data.batch_size ({batch_size})"
            )
        self.dataset_name, self.source, self.root = dataset, source, root
        self.batch_size, self.epoch_size = batch_size, epoch_size
        self.eval_size, self.eval_batch_size = eval_size, eval_batch_size
        self.seed, self.eval_seed = seed, eval_seed
        self.ds: GroundTruthDataset | None = None
        self._eval_factors: torch.Tensor | None = None
        self._epoch = 0

    def setup(self, stage: str | None = None) -> None:
        if self.ds is None:
            self.ds = get_dataset(self.dataset_name, self.source, self.root)

    @property
    def dataset(self) -> GroundTruthDataset:
        self.setup()
        assert self.ds is not None
        return self.ds

    @property
    def samples_per_epoch(self) -> int:
        return self.epoch_size if self.epoch_size is not None else len(self.dataset)

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.current_epoch if trainer is not None else self._epoch

    def epoch_factors(self, epoch: int) -> torch.Tensor:
        """The training factor tuples of `epoch`: a pure function of (seed, epoch)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return self.dataset.sample_factors(self.samples_per_epoch, gen)

    @property
    def eval_factors(self) -> torch.Tensor:
        """The fixed evaluation factor tuples (LongTensor[eval_size, K]), drawn once."""
        if self._eval_factors is None:
            gen = torch.Generator().manual_seed(self.eval_seed)
            self._eval_factors = self.dataset.sample_factors(self.eval_size, gen)
        return self._eval_factors

    def train_dataloader(self) -> FactorBatches:
        def factors() -> torch.Tensor:
            f = self.epoch_factors(self._current_epoch())
            self._epoch += 1
            return f

        return FactorBatches(factors, self.samples_per_epoch, self.batch_size, drop_last=True)

    def images(self, factors: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Images of `factors`, gathered on the device of `factors` (``check``: as
        `GroundTruthDataset.images`)."""
        ds = self.dataset
        if ds.device != factors.device:
            ds.to(factors.device)
        return ds.images(factors, check=check)

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int):
        return self.images(batch), batch

    def eval_batches(
        self, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, factors) over the evaluation set, on `device`, in `eval_batch_size` chunks."""
        factors = self.eval_factors.to(device)
        for start in range(0, len(factors), self.eval_batch_size):
            f = factors[start : start + self.eval_batch_size]
            yield self.images(f), f
