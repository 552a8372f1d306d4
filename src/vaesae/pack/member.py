"""One job of a pack: its assembled run (`vaesae.assembly`), its optimizer and generators, and the
part of Lightning's Trainer that its callbacks read.

A member is the run it would be alone: it is built from the same config by the same code, with
the same seeding, and its callbacks (schedule, controller, evaluation, recorder, pictures, W&B,
checkpoint) are the single engine's own objects, called in the order Lightning calls them. Only
the loop differs: the pack engine (`vaesae.pack.engine`) steps every member in one process.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import lightning
import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from vaesae.assembly import RunParts
from vaesae.module import VAESAEModule
from vaesae.pack.deferred import CallbackCopies, EpochEndWorker, ThreadFilter
from vaesae.sparsity import SparsityScheduleCallback
from vaesae.walltime import RunProgressBar, WallTimeEstimate

__all__ = [
    "Generators",
    "EpochMeans",
    "StackedMeans",
    "MemberTrainer",
    "EpochEndView",
    "Member",
]

# Hydra's job-log format (hydra/job_logging/default), so a member's train.log reads as a run's.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

log = logging.getLogger("vaesae")

# The instance attributes that route a module's log calls (Lightning's log and log_dict).
LOG_HOOKS = ("log", "log_dict")


@contextmanager
def copied_to(handler: logging.Handler) -> Iterator[None]:
    """While the body runs, the project's log lines also go to ``handler``."""
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


@dataclass
class Generators:
    """A member's copy of the process-wide generators (torch CPU and CUDA, NumPy, Python), so
    every random draw of a member (posterior noise, resampling, anything in its callbacks)
    comes from its own stream exactly as in a run alone; swapped in around each of its calls."""

    torch_cpu: Tensor
    torch_cuda: list[Tensor] = field(default_factory=list)
    numpy: Any = None
    python: Any = None

    @classmethod
    def capture(cls) -> Generators:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return cls(torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())

    def install(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


class EpochMeans:
    """Lightning's ``on_epoch=True`` logging for one member: the epoch value of a name is
    sum_steps(value * batch_size) / sum_steps(batch_size) in float32 (a value logged once, as at
    an epoch's end, is itself), kept on the device until the epoch ends."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, float] = {}

    def log(
        self, name: str, value: float | Tensor, batch_size: int | None = None, **_: Any
    ) -> None:
        value = torch.as_tensor(value).detach().float().mean()
        weight = 1 if batch_size is None else int(batch_size)
        total = value * weight
        self.sums[name] = total if name not in self.sums else self.sums[name] + total
        self.counts[name] = self.counts.get(name, 0.0) + weight

    def log_dict(self, values: dict[str, float | Tensor], **kw: Any) -> None:
        for name, value in values.items():
            self.log(name, value, **kw)

    def compute(self) -> dict[str, Tensor]:
        return {name: total / self.counts[name] for name, total in self.sums.items()}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


class StackedMeans:
    """:class:`EpochMeans` for N members at once: each name's values (N,) accumulate as N
    members' own logs would, element for element (so the epoch values are bitwise theirs), and
    :meth:`hand_over` writes them into the members' own accumulators at the epoch's end."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, float] = {}

    def log(self, name: str, values: Tensor, batch_size: int = 1) -> None:
        total = values.detach().float() * int(batch_size)
        if name in self.sums:
            # In place: a captured step's replays add into the same buffer.
            self.sums[name].add_(total)
        else:
            self.sums[name] = total
        self.counts[name] = self.counts.get(name, 0.0) + int(batch_size)

    def compute(self, i: int) -> dict[str, Tensor]:
        """Member ``i``'s epoch values so far (what its own :meth:`EpochMeans.compute` gives)."""
        return {name: total[i] / self.counts[name] for name, total in self.sums.items()}

    def hand_over(self, logs: list[EpochMeans]) -> None:
        """Member i's sums into ``logs[i]`` (which must hold none of these names yet); resets."""
        for name, total in self.sums.items():
            for i, member_logs in enumerate(logs):
                if name in member_logs.sums:
                    raise RuntimeError(f"{name} was logged both by the stack and by a member")
                member_logs.sums[name] = total[i]
                member_logs.counts[name] = self.counts[name]
        self.sums.clear()
        self.counts.clear()


class MemberTrainer:
    """What the run's callbacks and module read from ``lightning.pytorch.Trainer``, for a member
    that the pack engine drives: epoch and step counters, the data module, the epoch's logged
    figures, the loggers, the optimizer, and checkpoint writing."""

    is_global_zero = True

    def __init__(self, member: Member) -> None:
        self.member = member
        self.datamodule = member.parts.datamodule
        self.num_training_batches = member.parts.plan.steps_per_epoch
        self.max_epochs = member.parts.plan.total_epochs
        self.current_epoch = 0
        self.global_step = 0
        self.callback_metrics: dict[str, Tensor] = {}
        self.loggers: list[Any] = member.loggers
        self.optimizers = [member.optimizer]
        # What `save_checkpoint` writes: the member's state now, or an epoch end's frozen one.
        self.checkpoint = member.checkpoint
        # perf_counter() at an epoch end handed to the worker: when the epoch's training ended.
        self.epoch_ended_at: float | None = None

    def save_checkpoint(self, path: str | Path, weights_only: bool = False) -> None:
        torch.save(self.checkpoint(), path)


@contextmanager
def logging_into(module: VAESAEModule, metrics: dict[str, Tensor]) -> Iterator[None]:
    """While the body runs, what ``module`` logs is written into ``metrics`` at once (an epoch
    end's figures, which the later hooks read), instead of into its epoch accumulator."""

    def log_now(name: str, value: float | Tensor, **_: Any) -> None:
        metrics[name] = torch.as_tensor(value).detach().float()

    def log_dict_now(values: dict[str, float | Tensor], **_: Any) -> None:
        for name, value in values.items():
            log_now(name, value)

    saved = {name: module.__dict__[name] for name in LOG_HOOKS if name in module.__dict__}
    module.log = log_now  # pyright: ignore[reportAttributeAccessIssue]
    module.log_dict = log_dict_now  # pyright: ignore[reportAttributeAccessIssue]
    try:
        yield
    finally:
        for name in LOG_HOOKS:
            module.__dict__.pop(name, None)
        module.__dict__.update(saved)


class EpochEndView:
    """A member's measuring hooks of one epoch end, with what they read frozen at the hand-off:
    a copy of the module (weights, firing window, k), the trainer's counters and logged
    figures, the checkpoint's content (optimizer and the other callbacks' states, the
    generators), and copies of the measuring callbacks (`vaesae.pack.deferred`). :meth:`run`
    takes no random draw and touches nothing the pack's next epoch trains with."""

    def __init__(self, member: Member, measuring: list[pl.Callback]) -> None:
        self.member = member
        self.module = member.module_copy()
        base = member.checkpoint()
        base["state_dict"] = self.module.state_dict()
        base["optimizer_states"] = copy.deepcopy(base["optimizer_states"])
        base["callbacks"] = copy.deepcopy(base["callbacks"])
        self.base = base
        self.callbacks = CallbackCopies(measuring)
        trainer = copy.copy(member.trainer)
        trainer.callback_metrics = dict(member.trainer.callback_metrics)
        trainer.checkpoint = self.checkpoint
        trainer.epoch_ended_at = time.perf_counter()
        self.trainer = trainer
        self.module.trainer = trainer  # pyright: ignore[reportAttributeAccessIssue]

    def checkpoint(self) -> dict[str, Any]:
        """The member's ``last.ckpt`` of this epoch: the frozen content, with the measuring
        callbacks' states as their hooks left them."""
        states = {cb.state_key: cb.state_dict() for cb in self.callbacks.copies}
        return {**self.base, "callbacks": {**self.base["callbacks"], **states}}

    def run(self) -> None:
        """The measuring hooks, then the epoch's row to the member's loggers (worker thread)."""
        with copied_to(self.member.worker_log):
            with logging_into(self.module, self.trainer.callback_metrics):
                hook_trainer = cast(pl.Trainer, self.trainer)
                for cb in self.callbacks.copies:
                    cb.on_train_epoch_end(hook_trainer, self.module)
            self.member.log_epoch(self.trainer)

    def done(self, error: BaseException | None) -> None:
        """On the pack's thread, after :meth:`run`: the callbacks' results back to the member,
        or the member failed with ``error``."""
        if error is None:
            self.callbacks.merge()
            return
        name = self.member.parts.meta["run_name"]
        with self.member.scope():
            log.error(
                "%s: epoch end %d failed:\n%s",
                name,
                self.trainer.current_epoch,
                "".join(traceback.format_exception(error)),
            )
            self.member.fail(f"{type(error).__name__}: {error}")


class Member:
    """A pack member: an assembled run, its Adam, generators, counters and status.

    ``index`` is its place in the pack (summary.json: ``pack_member``); ``status`` is
    ``running`` until it completes or fails (a non-finite training loss freezes it: its last
    checkpoint stays that of its last finite epoch).
    """

    def __init__(
        self,
        parts: RunParts,
        run_dir: Path,
        device: torch.device,
        index: int,
        loggers: list[Any] | None = None,
    ) -> None:
        self.parts = parts
        self.run_dir = run_dir
        self.index = index
        self.device = device
        self.loggers = loggers or []
        self.module = parts.module
        # Lightning's progress bar needs a real Trainer; a pack logs one line per member epoch.
        self.callbacks = [cb for cb in parts.callbacks if not isinstance(cb, RunProgressBar)]
        for cb in self.callbacks:
            if isinstance(cb, WallTimeEstimate):
                # The members share the process: the pack logs the time left for all of them.
                cb.log_progress = False
        # What the project logs while this member runs goes to its own train.log too, as a
        # job's does under Hydra (opened at the first line, appended to on resume): from the
        # pack's thread (`scope`) and from an epoch end run on the worker (`EpochEndView`).
        owner = threading.get_ident()
        self.log_file = logging.FileHandler(run_dir / "train.log", delay=True)
        self.worker_log = logging.FileHandler(run_dir / "train.log", delay=True)
        for handler, inside in ((self.log_file, True), (self.worker_log, False)):
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            handler.addFilter(ThreadFilter(owner, inside))
        self.module.to(device)
        self.module.setup("fit")
        self.optimizer = self.module.configure_optimizers()
        self.trainer = MemberTrainer(self)
        # What the callbacks' hooks are handed: the subset of a Trainer they read.
        self.hook_trainer = cast(pl.Trainer, self.trainer)
        self.module.trainer = self.trainer  # pyright: ignore[reportAttributeAccessIssue]
        # The hooks an epoch end may run on the worker: from the evaluation on (`assemble`
        # orders them after the schedule and the remedies, whose state the next epoch uses).
        self.measuring_from = self.callbacks.index(parts.evaluation)
        self.logs = EpochMeans()
        # Lightning's log and log_dict need its loop; a member's go to its epoch accumulator.
        self.module.log = self.logs.log  # pyright: ignore[reportAttributeAccessIssue]
        self.module.log_dict = self.logs.log_dict  # pyright: ignore[reportAttributeAccessIssue]
        self.generators = Generators.capture()
        self.status = "running"
        self.error = ""
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        bf16 = parts.plan.precision == "bf16-mixed"
        # Without the weight-cast cache, which CUDA graph capture cannot hold; the values are
        # the same (the cache only saves casting a weight twice within one region).
        self._autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False))
            if bf16
            else nullcontext
        )

    @property
    def epoch(self) -> int:
        return self.trainer.current_epoch

    @property
    def done(self) -> bool:
        return self.status != "running" or self.epoch >= self.parts.plan.total_epochs

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Run the body with this member's generators installed (and keep what it drew), and
        with the project's log lines copied to the member's train.log."""
        outside = Generators.capture()
        self.generators.install()
        try:
            with copied_to(self.log_file):
                yield
        finally:
            self.generators = Generators.capture()
            outside.install()

    def autocast(self):
        return self._autocast()

    def call(self, hook: str, *args: Any, callbacks: list[pl.Callback] | None = None) -> None:
        """Call ``hook`` on every callback (or on ``callbacks``), then on the module, as
        Lightning does."""
        for cb in self.callbacks if callbacks is None else callbacks:
            getattr(cb, hook)(self.hook_trainer, self.module, *args)
        module_hook = getattr(self.module, hook, None)
        if module_hook is not None:
            module_hook(*args)

    # --- the run's course ------------------------------------------------------------------

    def restore(self, path: Path) -> None:
        """Continue from a ``last.ckpt`` (this engine's or Lightning's): weights, optimizer,
        callbacks, counters and generators; the next epoch is the one after the saved one."""
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        self.module.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer_states"][0])
        states = ckpt.get("callbacks", {})
        for cb in self.callbacks:
            if cb.state_key in states:
                cb.load_state_dict(states[cb.state_key])
        self.module.on_load_checkpoint(ckpt)  # the global generators, as saved
        self.trainer.current_epoch = int(ckpt["epoch"]) + 1
        self.trainer.global_step = int(ckpt["global_step"])

    def checkpoint(self) -> dict[str, Any]:
        """A ``last.ckpt`` in Lightning's layout (loads with ``load_from_checkpoint``), plus the
        pack's id and this member's index."""
        ckpt: dict[str, Any] = {
            "epoch": self.trainer.current_epoch,
            "global_step": self.trainer.global_step,
            "pytorch-lightning_version": lightning.__version__,
            "state_dict": self.module.state_dict(),
            "hyper_parameters": dict(self.module.hparams),
            "optimizer_states": [self.optimizer.state_dict()],
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks},
            "engine": "pack",
            "pack_member": self.index,
        }
        self.module.on_save_checkpoint(ckpt)
        return ckpt

    def start(self) -> None:
        """Lightning's start of fit: data, data-dependent init, the callbacks' start hooks."""
        self.parts.datamodule.setup("fit")
        # The module's own setup (its memory layout) ran before its optimizer was built.
        for cb in self.callbacks:
            cb.setup(self.hook_trainer, self.module, "fit")
        self.call("on_fit_start")
        self.call("on_train_start")

    def epoch_start(self) -> None:
        self.module.train()
        self.logs.reset()
        self.factors = self.parts.datamodule.epoch_factors(self.epoch).to(self.device)
        self.call("on_train_epoch_start")

    def batch(self, batch_idx: int) -> tuple[Tensor, Tensor]:
        """Training batch ``batch_idx`` of the current epoch: (images uint8, factors)."""
        size = self.parts.datamodule.batch_size
        factors = self.factors[batch_idx * size : (batch_idx + 1) * size]
        return self.parts.datamodule.images(factors), factors

    def step(self, batch_idx: int) -> None:
        """One training step, as Lightning's automatic optimisation takes it."""
        batch = self.batch(batch_idx)
        for cb in self.callbacks:
            cb.on_train_batch_start(self.hook_trainer, self.module, batch, batch_idx)
        with self.autocast():
            out = self.module.training_step(batch, batch_idx)
        self.optimizer.zero_grad()
        out["loss"].backward()
        self.optimizer.step()
        self.finish_step({**out, "loss": out["loss"].detach()}, batch, batch_idx)

    def steps(self, count: int) -> None:
        """Steps 0 .. count - 1 of the current epoch, one after another."""
        for b in range(count):
            self.step(b)

    def finish_step(
        self,
        outputs: dict[str, Tensor],
        batch: Any,
        batch_idx: int,
        module_hook: bool = True,
        stacked: bool = False,
    ) -> None:
        """After the optimizer: the step counter, the finiteness flag, the batch-end hooks (the
        module's renormalises the dictionary). ``stacked``: a stacked step took the finiteness
        flag, the module's and the schedule callback's parts (window, logs, L1 controller) for
        all its members at once (`vaesae.pack.stacked`), so only the other callbacks run."""
        self.trainer.global_step += 1
        if not stacked:
            self.nonfinite |= ~torch.isfinite(outputs["loss"])
        for cb in self.callbacks:
            if not (stacked and isinstance(cb, SparsityScheduleCallback)):
                cb.on_train_batch_end(self.hook_trainer, self.module, outputs, batch, batch_idx)
        if module_hook:
            self.module.on_train_batch_end(outputs, batch, batch_idx)

    @property
    def schedule(self) -> SparsityScheduleCallback:
        """The run's schedule callback: its k schedule and L1 controller."""
        return next(cb for cb in self.callbacks if isinstance(cb, SparsityScheduleCallback))

    def epoch_end(self, worker: EpochEndWorker | None = None) -> None:
        """Freeze the member if a loss of the epoch was not finite; else the epoch-end hooks
        (schedule, remedies, then evaluation, recorder, pictures, W&B, checkpoint) and the next
        epoch. With ``worker``, the hooks from the evaluation on run there, on an
        :class:`EpochEndView` of this epoch, while the pack trains the next one."""
        if bool(self.nonfinite):
            self.fail(f"non-finite training loss in epoch {self.epoch}")
            return
        self.trainer.callback_metrics = self.logs.compute()
        now = self.callbacks if worker is None else self.callbacks[: self.measuring_from]
        # Figures logged from here on (the evaluation's) are read by the later hooks at once.
        with logging_into(self.module, self.trainer.callback_metrics):
            self.call("on_train_epoch_end", callbacks=now)
        if worker is None:
            self.log_epoch(self.trainer)
        else:
            view = EpochEndView(self, self.callbacks[self.measuring_from :])
            # The view's copy of the evaluation owns the batched outputs now.
            self.parts.evaluation.collected = None
            worker.submit(view.run, view.done)
        self.trainer.current_epoch += 1

    def log_epoch(self, trainer: MemberTrainer) -> None:
        """The epoch's figures (``trainer.callback_metrics``) to the member's loggers."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        for lg in self.loggers:
            row = {**metrics, "epoch": trainer.current_epoch}
            lg.log_metrics(row, step=trainer.global_step - 1)

    def module_copy(self) -> VAESAEModule:
        """A copy of the module that shares no tensor with it: weights, buffers (the firing
        window) and attributes (k) as they stand, without the trainer and the log hooks (an
        epoch end gives it its own)."""
        module = self.module
        hooks = {name: module.__dict__.pop(name) for name in LOG_HOOKS}
        trainer, module._trainer = module._trainer, None
        try:
            return copy.deepcopy(module)
        finally:
            module._trainer = trainer
            module.__dict__.update(hooks)

    def fail(self, error: str) -> None:
        self.status, self.error = "failed", error
        self.parts.recorder.finish("failed", error=error)

    def finish(self, status: str = "completed") -> None:
        if self.status == "running":
            self.status = status
            self.parts.recorder.finish(status)
        self.log_file.close()
        self.worker_log.close()
        for lg in self.loggers:
            lg.finalize("success" if self.status == "completed" else "failed")
            experiment = getattr(lg, "experiment", None)
            if experiment is not None and hasattr(experiment, "finish"):
                experiment.finish()
