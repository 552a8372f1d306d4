"""Benchmarks: ``python -m vaesae.bench [--json PATH] [--only SECTION ...] [--accelerator gpu]``.

Each section is a function returning flat figures ``{name: value}``. A timing ``X_s`` (seconds,
median of several runs after one warm-up run) may come with ``X_ref_s``, the same work done by a
reference implementation in the same process, and ``X_speedup = X_ref_s / X_s``; the table prints
those three side by side and any other figure (e.g. agreement with the reference) below them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from vaesae.console import quiet_lightning_notes, silence_lightning_pytree_warning
from vaesae.metrics import FiringStats, dci, dead_mask, mig, modularity, sap
from vaesae.metrics.reference import (
    reference_dci,
    reference_mig,
    reference_modularity,
    reference_sap,
)
from vaesae.precision import TrainPrecision

# dSprites factor sizes (shape, scale, orientation, pos_x, pos_y) and the evaluation-set size.
FACTOR_SIZES = (3, 6, 40, 32, 32)
EVAL_SIZE = 10_000


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare(figures: dict[str, float], name: str, ours: float, ref: float) -> None:
    figures[f"{name}_s"] = ours
    figures[f"{name}_ref_s"] = ref
    figures[f"{name}_speedup"] = ref / ours


# DCI's gradient-boosted trees cost about a second per factor class at this size (see
# vaesae.metrics.dci), so it is timed on a subsample, on the two coarse dSprites factors.
DCI_TRAIN, DCI_TEST, DCI_FACTORS = 1000, 500, 2


def _single_time(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call (for work too slow to repeat and with nothing to warm up)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def metrics_section() -> dict[str, float]:
    """MIG, modularity and continuous SAP on latent-like (10-d) and SAE-like (500-d, sparse) codes,
    discrete SAP (linear SVMs, half the set to train and half to test) on the latent-like codes,
    DCI (gradient-boosted trees, one timed call each) on a subsample of the latent-like codes, and
    FiringStats on 500 neurons, each against the numpy + scikit-learn reference
    (disentanglement_lib semantics)."""
    g = torch.Generator().manual_seed(0)
    n = EVAL_SIZE
    factors = torch.stack([torch.randint(0, s, (n,), generator=g) for s in FACTOR_SIZES], 1)
    scaled = (factors / torch.tensor(FACTOR_SIZES)).repeat(1, 100)
    latent = scaled[:, :10] + 0.2 * torch.randn(n, 10, generator=g)
    sae = torch.relu(scaled + torch.randn(n, 500, generator=g) - 1.5)
    factors_np = factors.numpy()
    figures: dict[str, float] = {}
    for codes in (latent, sae):
        name = f"mig_{n}x{codes.shape[1]}"
        codes_np = codes.numpy()
        ours = mig(codes, factors)
        ref = reference_mig(codes_np, factors_np)
        _compare(
            figures,
            name,
            median_time(lambda c=codes: mig(c, factors), 7),
            median_time(lambda c=codes_np: reference_mig(c, factors_np), 3),
        )
        figures[f"{name}_max_abs_diff"] = max(
            abs(ours.score - ref.score),
            float(np.abs(ours.per_factor.numpy() - ref.per_factor).max()),
            float(np.abs(ours.mi.numpy() - ref.mi).max()),
        )

    for codes in (latent, sae):
        shape = f"{n}x{codes.shape[1]}"
        codes_np = codes.numpy()
        ours_m = modularity(codes, factors)
        ref_m = reference_modularity(codes_np, factors_np)
        _compare(
            figures,
            f"modularity_{shape}",
            median_time(lambda c=codes: modularity(c, factors), 7),
            median_time(lambda c=codes_np: reference_modularity(c, factors_np), 3),
        )
        figures[f"modularity_{shape}_max_abs_diff"] = max(
            abs(ours_m.score - ref_m[0]), float(np.abs(ours_m.per_code.numpy() - ref_m[1]).max())
        )
        ours_s = sap(codes, factors)
        ref_s = reference_sap(codes_np, factors_np)
        _compare(
            figures,
            f"sap_{shape}",
            median_time(lambda c=codes: sap(c, factors), 7),
            median_time(lambda c=codes_np: reference_sap(c, factors_np), 3),
        )
        figures[f"sap_{shape}_max_abs_diff"] = max(
            abs(ours_s.score - ref_s[0]), float(np.abs(ours_s.matrix.numpy() - ref_s[1]).max())
        )

    half = n // 2
    train, test = slice(0, half), slice(half, None)
    split = (latent[train], factors[train], latent[test], factors[test])
    split_np = tuple(t.numpy() for t in split)

    def sap_discrete():
        return sap(split[0], split[1], False, test_codes=split[2], test_factors=split[3])

    name = f"sap_discrete_{half}x{latent.shape[1]}"
    ours_s, ref_s = sap_discrete(), reference_sap(split_np[0], split_np[1], False, *split_np[2:])
    _compare(
        figures,
        name,
        median_time(sap_discrete, 1),
        median_time(lambda: reference_sap(split_np[0], split_np[1], False, *split_np[2:]), 1),
    )
    figures[f"{name}_max_abs_diff"] = max(
        abs(ours_s.score - ref_s[0]), float(np.abs(ours_s.matrix.numpy() - ref_s[1]).max())
    )

    n_train, n_test = min(DCI_TRAIN, n // 2), min(DCI_TEST, n // 4)
    sub = factors[:, :DCI_FACTORS]
    split = (latent[:n_train], sub[:n_train], latent[-n_test:], sub[-n_test:])
    split_np = (split[0].numpy(), split[1].numpy(), split[2].numpy(), split[3].numpy())
    name = f"dci_{n_train}x{latent.shape[1]}"
    ours_d, ref_d = dci(*split), reference_dci(*split_np)
    _compare(
        figures,
        name,
        _single_time(lambda: dci(*split)),
        _single_time(lambda: reference_dci(*split_np)),
    )
    figures[f"{name}_max_abs_diff"] = max(
        abs(ours_d.disentanglement - ref_d.disentanglement),
        abs(ours_d.completeness - ref_d.completeness),
        abs(ours_d.informativeness - ref_d.informativeness),
        float(np.abs(ours_d.importance.numpy() - ref_d.importance).max()),
    )

    acts = torch.relu(torch.randn(n, 500, generator=g) - 2.5)
    acts[:, :100] = 0.0
    acts_np = acts.numpy()
    rules = (("never", 0.0), ("magnitude", 1e-3), ("frequency", 1e-3))

    def streamed() -> list[torch.Tensor]:
        stats = FiringStats(acts.shape[1])
        for batch in acts.split(1000):
            stats.update(batch)
        summary = stats.compute()
        return [summary.frequency()] + [summary.dead_mask(kind, value) for kind, value in rules]

    def numpy_reference() -> list[np.ndarray]:
        frequency = (acts_np > 0).sum(0) / acts_np.shape[0]
        peak = acts_np.max(0)
        return [frequency, frequency == 0, peak <= 1e-3, frequency < 1e-3]

    name = f"firing_{n}x{acts.shape[1]}"
    _compare(figures, name, median_time(streamed, 7), median_time(numpy_reference, 7))
    masks = zip(streamed()[1:], numpy_reference()[1:], rules, strict=True)
    figures[f"{name}_masks_agree"] = float(
        all(
            torch.equal(ours, dead_mask(acts, kind, value)) and np.array_equal(ours.numpy(), ref)
            for ours, ref, (kind, value) in masks
        )
    )
    return figures


def data_section() -> dict[str, float]:
    """Template build time and `images()` for 256 and 65,536 factor tuples, both renderers."""
    import tempfile

    from vaesae.data import get_dataset
    from vaesae.data.templates import load_templates

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        for name in ("dsprites", "shapes3d"):
            start = time.perf_counter()
            load_templates(name, root)
            figures[f"{name}_template_build_s"] = time.perf_counter() - start
            ds = get_dataset(name, "procedural", root)
            g = torch.Generator().manual_seed(0)
            for n, repeats in ((256, 20), (65_536, 3)):
                f = ds.sample_factors(n, g)
                figures[f"{name}_images_{n}_s"] = median_time(
                    lambda f=f, ds=ds: ds.images(f), repeats
                )
    return figures


BENCH_K = 250  # a mid-schedule k, the same in both training paths


def _bench_module(channels_last: bool = False):
    from vaesae.module import VAESAEModule

    torch.manual_seed(0)
    return VAESAEModule(in_channels=1, method="topk", k_start=BENCH_K, channels_last=channels_last)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop_img_per_s(
    dm, steps: int, warmup: int, precision: str, channels_last: bool, accelerator: str = "cpu"
) -> tuple[float, float]:
    """A hand-written training loop (sample, gather, forward, loss, backward, step) on a given
    path and accelerator (``"gpu"``: the first CUDA device): images/s over the timed steps, and
    data assembly's share of their time (on a GPU the share of host time spent queuing it, since
    nothing waits in between)."""
    from vaesae.models import vae_sae_loss

    dev = torch.device("cuda" if accelerator == "gpu" else "cpu")
    module = _bench_module(channels_last).to(dev)
    module.setup("fit")
    model, opt = module.model, torch.optim.Adam(module.parameters(), lr=1e-3)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    factors = dm.epoch_factors(0).to(dev).split(dm.batch_size)
    data_time = 0.0
    for i, f in enumerate(factors):
        if i == warmup:
            _sync(dev)
            start, data_time = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        x = module.to_input(dm.images(f))
        data_time += time.perf_counter() - t0
        with autocast:
            out = model(x)
        loss = vae_sae_loss(out, x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(dev)
    elapsed = time.perf_counter() - start
    return (steps - warmup) * dm.batch_size / elapsed, data_time / elapsed


def lightning_img_per_s(
    dm,
    steps: int,
    warmup: int,
    precision: TrainPrecision,
    channels_last: bool,
    accelerator: str = "cpu",
):
    """The steps of :func:`plain_loop_img_per_s` through ``Trainer.fit`` with the schedule
    callback of real runs: images/s over the timed steps, and the trained module."""
    import lightning.pytorch as pl

    from vaesae.sparsity import KSchedule, SparsityScheduleCallback

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                _sync(pl_module.device)
                self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            _sync(pl_module.device)
            self.end = time.perf_counter()

    timer = StepTimer()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=[SparsityScheduleCallback(KSchedule("constant", 500, BENCH_K)), timer],
    )
    module = _bench_module(channels_last)
    trainer.fit(module, datamodule=dm)
    return (steps - warmup) * dm.batch_size / (timer.end - timer.start), module


def eval_epoch_s(module, dm) -> float:
    """Median seconds of one epoch-end evaluation of ``dm``'s evaluation set by ``module``: the
    forward pass and every per-epoch metric."""
    from vaesae.evaluation import EvalSettings, collect_codes, evaluate_codes

    def evaluate() -> None:
        mu, codes, f, _, _ = collect_codes(module, dm.eval_batches(module.device))
        evaluate_codes(mu, codes, f, dm.dataset.factor_names, EvalSettings(), None, None)
        _sync(module.device)

    return median_time(evaluate, 3)


def training_section(
    steps: int = 40,
    warmup: int = 5,
    batch_size: int = 256,
    accelerator: str = "cpu",
    pack_size: int = 4,
    pack_steps: int = 24,
) -> dict[str, float]:
    """Training images/s: a naive fp32 loop (contiguous NCHW, the anchor), the same loop on the
    default fast path (``trainer.precision=auto``, ``trainer.channels_last=auto``), and the real
    Lightning path on the fast path; data assembly's share of a step; the per-epoch evaluation
    cost relative to a paper-scale epoch (737,280 dSprites images); then a pack's figures beside
    them (:func:`pack_figures` with ``pack_size`` members of ``pack_steps`` steps per epoch).
    ``accelerator="gpu"`` runs all of it on the first CUDA device (data, templates and model
    there, as ``trainer=gpu``).

    ``plain_img_per_s`` and ``fast_img_per_s`` are one measurement under two names: the plain
    loop on the path Lightning trains with, so Lightning / plain compares like with like.
    """
    from vaesae.data.datamodule import GroundTruthDataModule
    from vaesae.precision import resolve_channels_last, resolve_precision

    dm = GroundTruthDataModule(
        "dsprites",
        "procedural",
        batch_size=batch_size,
        epoch_size=batch_size * steps,
        eval_size=EVAL_SIZE,
    )
    dm.setup()
    precision = resolve_precision("auto", accelerator)
    channels_last = resolve_channels_last("auto", accelerator)
    figures: dict[str, float] = {"fast_path_bf16": float(precision == "bf16-mixed")}
    figures["fast_path_channels_last"] = float(channels_last)

    figures["naive_fp32_img_per_s"], _ = plain_loop_img_per_s(
        dm, steps, warmup, "32-true", False, accelerator
    )
    fast, data_fraction = plain_loop_img_per_s(
        dm, steps, warmup, precision, channels_last, accelerator
    )
    figures["fast_img_per_s"] = figures["plain_img_per_s"] = fast
    figures["data_fraction_of_step"] = data_fraction

    # Lightning: the same steps through Trainer.fit with the schedule callback of real runs.
    figures["train_img_per_s"], module = lightning_img_per_s(
        dm, steps, warmup, precision, channels_last, accelerator
    )
    figures["lightning_vs_plain"] = figures["train_img_per_s"] / figures["plain_img_per_s"]
    figures["train_vs_naive_fp32"] = figures["train_img_per_s"] / figures["naive_fp32_img_per_s"]

    # One evaluation of the fixed 10,000-sample set (forward + every per-epoch metric).
    figures["eval_epoch_s"] = eval_epoch_s(module, dm)
    paper_epoch_s = len(dm.dataset) / figures["train_img_per_s"]
    figures["eval_fraction_of_paper_epoch"] = figures["eval_epoch_s"] / paper_epoch_s
    figures.update(pack_figures(accelerator, pack_size, pack_steps))
    return figures


# The protocol's batch, at which a pack's step is timed.
PACK_BATCH = 64
# Pack sizes timed on a GPU; the paper protocol's packs hold 6 (per dataset: 2 methods x 3 seeds).
GPU_PACK_SIZES = (1, 3, 6, 12, 24, 48)
# Pack sizes whose stacked step is also timed replayed from a CUDA graph (capture=true).
GPU_CAPTURE_SIZES = (6, 12)
# Paper protocol: dSprites' 737,280 images per epoch, 150 epochs, 2 packs of 6 (one per dataset).
PAPER_EPOCH_IMAGES, PAPER_EPOCHS, PAPER_PACKS = 737_280, 150, 2


def pack_configs(
    n: int, steps: int, accelerator: str, epochs: int = 3, eval_size: int | None = None
) -> list:
    """``n`` smoke-sized job configs at the protocol's batch (Top-k and L1 alternating, seeds
    0, 1, ...) with ``steps`` steps per epoch, ``epochs`` epochs and ``eval_size`` evaluation
    samples (500 when None)."""
    from hydra import compose, initialize_config_dir

    from vaesae.train import CONF_DIR

    overrides = [
        "experiment=smoke",
        f"data.batch_size={PACK_BATCH}",
        f"data.epoch_size={PACK_BATCH * steps}",
        f"data.eval_size={eval_size or 500}",
        "data.eval_batch_size=500",
        f"schedule.schedule_epochs={epochs - 1}",
        "schedule.hold_epochs=1",
        "logger=none",
        *(["trainer=gpu"] if accelerator == "gpu" else []),
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return [
            compose(
                "train", overrides=[*overrides, f"method={('topk', 'l1')[i % 2]}", f"seed={i // 2}"]
            )
            for i in range(n)
        ]


def pack_members(
    n: int, steps: int, accelerator: str, root: Path, eval_size: int | None = None
) -> list:
    """The members of :func:`pack_configs` (with ``eval_size`` evaluation samples when
    given), started and at their first step."""
    from vaesae.pack.engine import PackJob, build_member

    members = []
    for i, cfg in enumerate(pack_configs(n, steps, accelerator, eval_size=eval_size)):
        member = build_member(PackJob(cfg, root / f"member{i}"), i)
        assert member is not None
        with member.scope():
            member.start()
            member.epoch_start()
        members.append(member)
    return members


def _timed(steps: Callable[[int], object], count: int, warmup: int, device) -> float:
    """Seconds taken by steps ``warmup .. count - 1`` (the first ``warmup`` untimed)."""
    for b in range(warmup):
        steps(b)
    _sync(device)
    start = time.perf_counter()
    for b in range(warmup, count):
        steps(b)
    _sync(device)
    return time.perf_counter() - start


def step_img_per_s(n: int, mode: str, steps: int, warmup: int, root: Path) -> float:
    """Training images/s of a GPU pack of ``n`` members over ``steps`` steps: ``loop`` (member
    after member at each step) or ``vmap`` (one stacked step)."""
    from vaesae.pack.stacked import StackedStep

    members = pack_members(n, steps, "gpu", root / f"{mode}{n}")
    device = members[0].device
    if mode == "loop":

        def loop(b: int) -> None:
            for m in members:
                with m.scope():
                    m.step(b)

        elapsed = _timed(loop, steps, warmup, device)
    else:
        stacked = StackedStep(members)
        stacked.sync_from_members(members, members)
        elapsed = _timed(functools.partial(stacked.step, members), steps, warmup, device)
    return n * (steps - warmup) * PACK_BATCH / elapsed


def runs_img_per_s(n: int, engine: str, steps: int, root: Path, epochs: int = 3) -> float:
    """Training images per wall-clock second of ``n`` whole CPU runs (epoch ends included):
    ``sequential`` (each through `vaesae.train.train`, one after another, as the basic launcher
    runs them) or a pack (`train_pack` in mode ``loop`` or ``vmap``)."""
    from vaesae.pack import PackJob, train_pack
    from vaesae.train import train

    cfgs = pack_configs(n, steps, "cpu", epochs)
    start = time.perf_counter()
    if engine == "sequential":
        for i, cfg in enumerate(cfgs):
            train(cfg, root / f"{engine}{i}")
    else:
        train_pack([PackJob(c, root / f"{engine}{i}") for i, c in enumerate(cfgs)], mode=engine)
    return n * epochs * steps * PACK_BATCH / (time.perf_counter() - start)


def pack_figures(accelerator: str = "cpu", members: int = 4, steps: int = 24) -> dict[str, float]:
    """A pack's training images/s at the protocol's batch (64).

    CPU: ``members`` smoke-sized runs (3 epochs of ``steps`` steps, evaluation included) as one
    pack against the same runs one after another through the single engine (medians of three
    alternating measurements each):
    ``pack_img_per_s`` (the default mode here, loop), ``pack_vs_sequential``, and the stacked
    mode's ``pack_vmap_img_per_s``. GPU: for each pack size N in GPU_PACK_SIZES the stacked
    step's ms, images/s and peak memory, the loop's ms for N <= 6, the step captured in a CUDA
    graph for N in GPU_CAPTURE_SIZES, a profile's top kernels at N = 12 (printed), and the paper
    protocol's hours extrapolated from the N = 6 step (eager and captured) plus one evaluation
    per member and epoch, with the evaluations' share of that epoch.
    """
    import tempfile

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if accelerator == "cpu":
            figures["pack_members"] = members
            # A shared machine's speed drifts by tens of % over minutes: the engines alternate,
            # three times each, and each figure is a median.
            rates: dict[str, list[float]] = {"sequential": [], "loop": []}
            for rep in range(3):
                for engine in ("sequential", "loop")[:: 1 if rep % 2 == 0 else -1]:
                    rate = runs_img_per_s(members, engine, steps, root / f"{engine}{rep}")
                    rates[engine].append(rate)
            seq = statistics.median(rates["sequential"])
            figures["pack_sequential_img_per_s"] = seq
            figures["pack_img_per_s"] = statistics.median(rates["loop"])
            figures["pack_vs_sequential"] = figures["pack_img_per_s"] / seq
            figures["pack_vmap_img_per_s"] = runs_img_per_s(members, "vmap", steps, root / "vmap")
            figures["pack_vmap_vs_sequential"] = figures["pack_vmap_img_per_s"] / seq
            return figures
        warmup = 4
        for n in GPU_PACK_SIZES:
            torch.cuda.reset_peak_memory_stats()
            rate = step_img_per_s(n, "vmap", steps, warmup, root)
            figures[f"pack{n}_vmap_img_per_s"] = rate
            figures[f"pack{n}_vmap_ms_per_step"] = 1e3 * n * PACK_BATCH / rate
            figures[f"pack{n}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if n <= 6:
                loop = step_img_per_s(n, "loop", steps, warmup, root)
                figures[f"pack{n}_loop_ms_per_step"] = 1e3 * n * PACK_BATCH / loop
        for n in GPU_CAPTURE_SIZES:
            figures[f"pack{n}_captured_ms_per_step"] = captured_ms_per_step(n, steps, root)
        # The 6-member step while a thread measures paper-sized epoch ends beside it, as with
        # overlap: what the worker's host time and kernels cost the steps.
        with measuring_alongside(torch.device("cuda")) as done:
            rate = step_img_per_s(6, "vmap", steps, warmup, root / "alongside")
            figures["pack6_vmap_ms_per_step_measuring"] = 1e3 * 6 * PACK_BATCH / rate
            figures["pack6_captured_ms_per_step_measuring"] = captured_ms_per_step(
                6, steps, root / "alongside"
            )
        figures["measuring_alongside_evaluations"] = len(done)
        _print_top_kernels(root, 12, steps)
        eval_s = _member_eval_s(root)
        figures["member_eval_s"] = eval_s
        # The six members' epoch ends at the paper's evaluation size: what the pack's thread
        # spends on them in place, and with overlap (hand-off only; the worker's share after).
        for tag, overlap in (("", False), ("_overlapped", True)):
            stall, behind = epoch_end_s(6, "gpu", root / f"end{tag}", overlap)
            figures[f"pack6_epoch_end_s{tag}"] = stall
            if overlap:
                figures["pack6_epoch_end_worker_s"] = behind
        # The paper protocol's pack (per dataset: 2 methods x 3 seeds) is the headline figure.
        figures["pack_members"] = 6
        figures["pack_img_per_s"] = figures["pack6_vmap_img_per_s"]
        stall = figures["pack6_epoch_end_s_overlapped"]
        for tag, mode in (("", "vmap"), ("_captured", "captured")):
            step_s = figures[f"pack6_{mode}_ms_per_step"] / 1e3
            epoch_s = PAPER_EPOCH_IMAGES / PACK_BATCH * step_s + 6 * eval_s
            hours = PAPER_PACKS * PAPER_EPOCHS * epoch_s / 3600
            figures[f"paper_reproduce_h_extrapolated{tag}"] = hours
            # The members' epoch-end metrics, run between epochs: their share of a paper epoch
            # (the bar for leaving them on the GPU's critical path is 5 %), in place
            # and overlapped with the next epoch (only the hand-off stalls the steps).
            figures[f"pack6_eval_fraction_of_epoch{tag}"] = 6 * eval_s / epoch_s
            figures[f"pack6_epoch_end_fraction_overlapped{tag}"] = stall / (
                epoch_s - 6 * eval_s + stall
            )
    return figures


@contextlib.contextmanager
def measuring_alongside(
    device: torch.device, eval_size: int = EVAL_SIZE, width: int = 500
) -> Iterator[list[float]]:
    """While the body runs, a background thread evaluates one member's paper-sized epoch end
    over and over (`evaluate_codes` on ``eval_size`` random codes of ``width`` units and a
    10-d latent, dSprites' factors), on ``device`` and on CUDA on a stream of its own, as an
    overlapped epoch end does. Yields the list of the evaluations' seconds, filled as they
    finish (complete once the body has run)."""
    import threading

    from vaesae.data import DSPRITES as space
    from vaesae.evaluation import EvalSettings, evaluate_codes

    gen = torch.Generator().manual_seed(0)
    factors = torch.stack(
        [torch.randint(0, size, (eval_size,), generator=gen) for size in space.factor_sizes], 1
    ).to(device)
    codes = torch.relu(torch.randn(eval_size, width, generator=gen) - 1.5).to(device)
    mu = torch.randn(eval_size, 10, generator=gen).to(device)
    stop, done = threading.Event(), []
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def measure() -> None:
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            while not stop.is_set():
                start = time.perf_counter()
                evaluate_codes(mu, codes, factors, space.factor_names, EvalSettings())
                _sync(device)
                done.append(time.perf_counter() - start)

    thread = threading.Thread(target=measure, name="vaesae-bench-measuring", daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join()


def epoch_end_s(
    n: int, accelerator: str, root: Path, overlap: bool, eval_size: int = EVAL_SIZE
) -> tuple[float, float]:
    """Seconds the pack's thread spends on the epoch ends of ``n`` members (one batched
    evaluation of ``eval_size`` samples, the paper's by default, every per-epoch metric, the
    recorder and the checkpoint), timed at the second epoch's end (the first also measures the
    set's reconstruction levels); with ``overlap``, also the seconds the worker goes on after
    the hand-off (0 without)."""
    from vaesae.pack.deferred import EpochEndWorker
    from vaesae.pack.stacked import evaluate_stacked

    members = pack_members(n, 8, accelerator, root, eval_size=eval_size)
    device = members[0].device
    worker = EpochEndWorker(device) if overlap else None
    stall = behind = 0.0
    for _ in range(2):
        if worker is not None:
            worker.drain()
        for m in members:
            with m.scope():
                m.epoch_start()
        _sync(device)
        start = time.perf_counter()
        evaluate_stacked(members)
        for m in members:
            with m.scope():
                m.epoch_end(worker)
        _sync(device)
        stall = time.perf_counter() - start
        behind = worker.drain() if worker is not None else 0.0
    if worker is not None:
        worker.close()
    return stall, behind


def captured_ms_per_step(n: int, steps: int, root: Path) -> float:
    """Milliseconds per step of a pack of ``n`` members whose stacked step is replayed from a
    CUDA graph (the engine's ``capture``): the epoch's steps after the warm-up and the capture,
    host bookkeeping included. NaN, with the reason printed, when the capture fails."""
    from vaesae.pack.stacked import CAPTURE_WARMUP, StackedStep

    members = pack_members(n, steps, "gpu", root / f"graph{n}")
    stacked = StackedStep(members, capture=True)
    stacked.sync_from_members(members, members)
    try:
        stacked.warm_up(members)
        captured = stacked.capture_step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for b in range(CAPTURE_WARMUP, steps):
            stacked.replay(captured, b)
        torch.cuda.synchronize()
    except Exception as err:  # a probe: report why and go on with the other figures
        print(f"capture of a {n}-member stacked step failed: {type(err).__name__}: {err}")
        return math.nan
    return 1e3 * (time.perf_counter() - start) / (steps - CAPTURE_WARMUP)


def _print_top_kernels(root: Path, n: int, steps: int) -> None:
    """The ten CUDA kernels with the most device time over 5 stacked steps of ``n`` members."""
    from torch.profiler import ProfilerActivity, profile

    from vaesae.pack.stacked import StackedStep

    members = pack_members(n, steps, "gpu", root / "profile")
    stacked = StackedStep(members)
    stacked.sync_from_members(members, members)
    for b in range(3):
        stacked.step(members, b)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for b in range(3, 8):
            stacked.step(members, b)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=10), flush=True)


def _member_eval_s(root: Path) -> float:
    """Seconds of one member's epoch-end evaluation of the 10,000-sample set on the GPU."""
    member = pack_members(1, 8, "gpu", root / "eval", eval_size=EVAL_SIZE)[0]
    return eval_epoch_s(member.module, member.parts.datamodule)


def bench_mlp(device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The Fabric section's model (Linear 64 -> 64, ReLU, Linear 64 -> 64, seed 0) and its Adam."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64)
    ).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def mlp_steps(model, opt, x: torch.Tensor, steps: int, backward, autocast) -> None:
    """``steps`` Adam steps of ``model`` on ``x`` (mean squared output), ``backward(loss)``."""
    for _ in range(steps):
        with autocast:
            loss = model(x).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        backward(loss)
        opt.step()
    _sync(x.device)


def fabric_section(
    accelerator: str = "cpu", steps: int = 2000, repeats: int = 3
) -> dict[str, float]:
    """Host time per optimizer step that Lightning Fabric adds to a hand-written loop: the same
    two-layer MLP (64 -> 64 -> 64, batch 64, Adam) stepped plainly and through
    ``Fabric.setup`` + ``fabric.backward``, fp32 and bf16-mixed (plain: ``torch.autocast``;
    Fabric: its precision plugin). The model is tiny so that a step is almost all host time;
    ``fabric_overhead_us`` is the difference per step (medians of ``repeats`` runs of ``steps``
    steps)."""
    from contextlib import nullcontext

    from lightning.fabric import Fabric

    dev = torch.device("cuda" if accelerator == "gpu" else "cpu")
    x = torch.randn(64, 64, device=dev)

    figures: dict[str, float] = {}
    for precision, tag in (("32-true", "fp32"), ("bf16-mixed", "bf16")):
        model, opt = bench_mlp(dev)
        autocast = torch.autocast(dev.type, torch.bfloat16, enabled=tag == "bf16")
        plain = functools.partial(
            mlp_steps, model, opt, x, steps, lambda loss: loss.backward(), autocast
        )
        fabric = Fabric(accelerator=accelerator, devices=1, precision=precision)  # pyright: ignore[reportArgumentType]
        fmodel, fopt = fabric.setup(*bench_mlp(dev))
        through = functools.partial(
            mlp_steps, fmodel, fopt, x, steps, fabric.backward, nullcontext()
        )
        plain_s = median_time(plain, repeats) / steps
        fabric_s = median_time(through, repeats) / steps
        figures[f"plain_step_us_{tag}"] = plain_s * 1e6
        figures[f"fabric_step_us_{tag}"] = fabric_s * 1e6
        figures[f"fabric_overhead_us_{tag}"] = (fabric_s - plain_s) * 1e6
    return figures


SECTIONS: dict[str, Callable[[], dict[str, float]]] = {
    "metrics": metrics_section,
    "data": data_section,
    "training": training_section,
    "fabric": fabric_section,
}


def format_section(name: str, figures: dict[str, float]) -> str:
    """A table of ``X_s`` / ``X_ref_s`` / ``X_speedup`` rows, then the other figures."""
    timed = [
        key[:-2] for key in figures if key.endswith("_s") and not key.endswith(("_ref_s", "_per_s"))
    ]
    shown = {f"{base}{suffix}" for base in timed for suffix in ("_s", "_ref_s", "_speedup")}
    width = max([len(key) for key in figures] + [6])
    lines = [
        f"== {name} ==",
        f"{'figure':<{width}}  {'ours (s)':>10}  {'ref (s)':>10}  {'speedup':>8}",
    ]
    for base in timed:
        ref = figures.get(f"{base}_ref_s")
        speedup = figures.get(f"{base}_speedup")
        lines.append(
            f"{base:<{width}}  {figures[f'{base}_s']:>10.4f}  "
            f"{'' if ref is None else f'{ref:>10.4f}':>10}  "
            f"{'' if speedup is None else f'{speedup:>7.1f}x':>8}"
        )
    lines += [f"{key:<{width}}  {value:.3g}" for key, value in figures.items() if key not in shown]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m vaesae.bench", description=__doc__)
    parser.add_argument("--json", type=Path, help="write all figures to this JSON file")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(SECTIONS),
        metavar="SECTION",
        help=f"run only these sections (choices: {', '.join(sorted(SECTIONS))})",
    )
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--accelerator",
        choices=("cpu", "gpu"),
        default="cpu",
        help="where the training section runs (gpu: the first CUDA device, as trainer=gpu)",
    )
    args = parser.parse_args(argv)
    silence_lightning_pytree_warning()
    quiet_lightning_notes()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu needs a CUDA device; torch sees none")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.2f}"
        + (f", GPU {torch.cuda.get_device_name()}" if args.accelerator == "gpu" else "")
    )
    sections = dict(SECTIONS)
    if args.accelerator == "gpu":
        sections["training"] = functools.partial(training_section, accelerator="gpu")
        sections["fabric"] = functools.partial(fabric_section, accelerator="gpu")
    figures: dict[str, float] = {}
    for name in args.only or list(SECTIONS):
        section = sections[name]()
        print(format_section(name, section), flush=True)
        figures.update(section)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return figures


def cli() -> None:
    """`vaesae-bench`: `main` without its figures, which a console script would take for an exit
    status."""
    main()


if __name__ == "__main__":
    cli()
