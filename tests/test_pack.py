"""The pack engine: members are the runs they would be alone (bitwise in loop mode, to a stated
tolerance in vmap mode), fail alone, resume bit-identically, and reach disk as single runs do."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from smoke_config import FAST, make_cfg

from vaesae.config import ConfigError
from vaesae.evaluation import collect_codes
from vaesae.models import VAESAE, vae_sae_loss
from vaesae.models.activations import TopK
from vaesae.module import VAESAEModule
from vaesae.pack import PackJob, pack_key, pack_mode_for, train_pack
from vaesae.pack.engine import build_member
from vaesae.pack.launch import group_packs
from vaesae.pack.member import EpochMeans, Member, StackedMeans
from vaesae.pack.stacked import (
    StackedModels,
    StackedStep,
    evaluate_stacked,
    member_k,
    rank_topk,
)
from vaesae.records import RunRecorder, read_metrics_csv
from vaesae.train import train

# Two members that differ in method and seed: the pack's usual variety.
MEMBERS = (("topk", 0), ("l1", 1))


def _cfgs(*extra: str):
    return [make_cfg(f"method={m}", f"seed={s}", "logger=none", *extra) for m, s in MEMBERS]


def _same_rows(a: Path, b: Path) -> None:
    rows_a, rows_b = read_metrics_csv(a), read_metrics_csv(b)
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert ra[key] == rb[key] or (math.isnan(ra[key]) and math.isnan(rb[key])), key


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal values, NaN equal to NaN (running statistics are NaN before a step)."""
    return a.dtype == b.dtype and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def test_loop_pack_members_are_bitwise_the_runs_alone(tmp_path):
    # DCI at epoch 0 only: no later row may repeat it (Lightning keeps a figure logged once).
    cfgs = _cfgs("metrics.dci_epochs=[first]", "metrics.dci_samples=60")
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{i}")
    results = train_pack(
        [PackJob(c, tmp_path / f"pack{i}") for i, c in enumerate(cfgs)], "p7", mode="loop"
    )
    assert [r["status"] for r in results] == ["completed", "completed"]
    for i in range(len(cfgs)):
        alone, packed = _weights(tmp_path / f"alone{i}"), _weights(tmp_path / f"pack{i}")
        assert alone.keys() == packed.keys()
        assert all(_identical(alone[k], packed[k]) for k in alone)
        _same_rows(tmp_path / f"alone{i}" / "metrics.csv", tmp_path / f"pack{i}" / "metrics.csv")
        dci = [
            r["dci/informativeness/latent"]
            for r in read_metrics_csv(tmp_path / f"alone{i}" / "metrics.csv")
        ]
        assert math.isfinite(dci[0]) and all(math.isnan(v) for v in dci[1:])
        summary = json.loads((tmp_path / f"pack{i}" / "summary.json").read_text())
        assert (summary["engine"], summary["pack_id"], summary["pack_member"]) == ("pack", "p7", i)
        assert summary["status"] == "completed"
        # A member's checkpoint is a Lightning checkpoint of the single engine's module.
        ckpt = tmp_path / f"pack{i}" / "checkpoints" / "last.ckpt"
        module = VAESAEModule.load_from_checkpoint(ckpt, map_location="cpu")
        assert all(_identical(v, packed[k]) for k, v in module.state_dict().items())


def _start(members: list[Member]) -> None:
    for m in members:
        with m.scope():
            m.start()
            m.epoch_start()


def test_a_member_does_not_depend_on_the_rest_of_its_pack(tmp_path):
    a, b, c = (make_cfg(f"seed={s}", "logger=none") for s in (3, 4, 5))

    def first_draws(cfgs, index_of_a):
        members = [
            build_member(PackJob(x, tmp_path / f"{id(cfgs)}-{i}")) for i, x in enumerate(cfgs)
        ]
        assert all(m is not None for m in members)
        members = [m for m in members if m is not None]
        _start(members)
        m = members[index_of_a]
        with m.scope():
            noise = torch.randn(8, 10)
        return m.module.state_dict(), m.factors.clone(), noise

    w1, f1, n1 = first_draws([a, b, c], 0)
    w2, f2, n2 = first_draws([c, a], 1)
    assert all(_identical(w1[k], w2[k]) for k in w1)
    assert torch.equal(f1, f2) and torch.equal(n1, n2)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_rank_topk_equals_topk_with_scatter(k):
    pre = torch.randn(16, 50, requires_grad=True)
    ref = TopK(50, k)(pre)
    (ref * torch.arange(50.0)).sum().backward()
    ref_grad, pre.grad = pre.grad, None
    got = rank_topk(pre, torch.tensor(k))
    (got * torch.arange(50.0)).sum().backward()
    assert torch.equal(got, ref)
    assert torch.equal(pre.grad, ref_grad)


def test_rank_topk_breaks_ties_to_the_lower_unit():
    pre = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5]])
    assert rank_topk(pre, torch.tensor(2)).tolist() == [[0.0, 2.0, 2.0, 0.0, 0.0]]


def _models(n: int) -> list[VAESAE]:
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(VAESAE(1, width=64, method="l1", input_norm="norm", center="ema"))
    return models


def test_stacked_forward_and_gradients_equal_three_single_models():
    """fp32: the loss terms agree to 1e-6 (relative) and every gradient to 1e-4 of its tensor's
    largest entry (batched convolutions sum in another order)."""
    models = _models(3)
    stack = StackedModels(models)
    x = torch.rand(3, 16, 1, 64, 64)
    eps = torch.randn(3, 16, 10)
    coef, beta, alpha = torch.tensor([0.0, 0.1, 0.3]), torch.ones(3), torch.full((3,), 10.0)
    k = torch.tensor([64, 64, 20])
    terms, _ = stack.forward_losses(x, eps, k, coef, beta, alpha)
    terms["loss"].sum().backward()
    for i, model in enumerate(models):
        model.sae.activation = TopK(64, int(k[i]))
        out = model(x[i], eps[i])
        alone = vae_sae_loss(out, x[i], 1.0, 10.0, float(coef[i]), None)
        alone["loss"].backward()
        for name in ("loss", "recon", "kl", "sae_mse", "l1"):
            assert terms[name][i].item() == pytest.approx(alone[name].item(), rel=1e-6), name
        for name, p in model.named_parameters():
            assert p.grad is not None
            g = stack.params[name].grad
            assert g is not None
            scale = p.grad.abs().max().clamp_min(1e-30)
            assert (g[i] - p.grad).abs().max() <= 1e-4 * scale, name


def test_one_adam_over_stacked_parameters_is_separate_adams_bitwise():
    torch.manual_seed(0)
    shapes = [(5, 3), (7,)]
    alone = [[torch.randn(s, requires_grad=True) for s in shapes] for _ in range(3)]
    stacked = [torch.stack([a[j].detach() for a in alone]).requires_grad_() for j in range(2)]
    opts = [torch.optim.Adam(a, lr=1e-3) for a in alone]
    opt = torch.optim.Adam(stacked, lr=1e-3)
    for _ in range(6):
        grads = [torch.randn((3, *s)) for s in shapes]
        for i, o in enumerate(opts):
            for j, p in enumerate(alone[i]):
                p.grad = grads[j][i].clone()
            o.step()
        for j, p in enumerate(stacked):
            p.grad = grads[j].clone()
        opt.step()
    for i in range(3):
        assert all(torch.equal(stacked[j][i], alone[i][j]) for j in range(2))


def test_vmap_members_follow_their_runs_alone_for_20_steps(tmp_path):
    """20 steps in one epoch, fp32: k is exact; lambda agrees to 1e-3 and the epoch's mean
    reconstruction and L0 to 1e-2, relative (docs/scaling.md)."""
    extra = ("data.epoch_size=1280", "trainer.precision=32", "trainer.channels_last=false")
    cfgs = _cfgs(*extra)
    loop = [build_member(PackJob(c, tmp_path / f"l{i}"), i) for i, c in enumerate(cfgs)]
    vec = [build_member(PackJob(c, tmp_path / f"v{i}"), i) for i, c in enumerate(cfgs)]
    loop = [m for m in loop if m is not None]
    vec = [m for m in vec if m is not None]
    _start(loop)
    _start(vec)
    step = StackedStep(vec)
    step.sync_from_members(vec, vec)
    for b in range(20):
        for m in loop:
            with m.scope():
                m.step(b)
        step.step(vec, b)
        for j, a in enumerate(loop):
            if b == 0:  # one step: the same data, noise and weights give the same loss
                # A stacked step keeps its members' logs until the epoch's end.
                first_a, first_v = a.logs.compute(), step.means.compute(j)
                # train/loss holds lambda * L1: the L1 member's first lambda is its own.
                names = ("train/loss", "train/recon", "train/kl", "train/sae_mse", "sparsity/l0")
                for name in (*names, "sparsity/l1_coef"):
                    assert float(first_v[name]) == pytest.approx(float(first_a[name]), rel=1e-5)
            # The stacked step reads k from its epoch's table and carries λ itself; the
            # members' schedule callbacks get theirs at the epoch's end.
            sa = a.schedule
            assert float(step.k_logged[b, j]) == sa.k
            activation = a.module.model.sae.activation
            assert int(step.k_table[b, j]) == getattr(activation, "k", activation.width)
            assert step.coef is not None
            assert float(step.coef[j]) == pytest.approx(float(a.module.l1_coef), rel=1e-3)
    step.sync_to_members(vec)
    for a, v in zip(loop, vec, strict=True):
        sa, sv = a.schedule, v.schedule
        assert (sv.k, sv.k_tracked, sv.k_ahead, sv.slope_ahead) == (
            sa.k,
            sa.k_tracked,
            sa.k_ahead,
            sa.slope_ahead,
        )
        assert sv.l1.k_prev == sa.l1.k_prev
        assert float(sv.l1_coef) == pytest.approx(float(sa.l1_coef), rel=1e-3)
        assert float(v.module.l1_coef) == pytest.approx(float(a.module.l1_coef), rel=1e-3)
        ra, rv = a.logs.compute(), v.logs.compute()
        assert ra.keys() == rv.keys()
        assert torch.equal(a.nonfinite, v.nonfinite)
        assert float(rv["train/recon"]) == pytest.approx(float(ra["train/recon"]), rel=1e-2)
        assert float(rv["sparsity/l0"]) == pytest.approx(float(ra["sparsity/l0"]), rel=1e-2)


def test_a_stacked_step_refuses_a_member_whose_callbacks_act_before_each_step(tmp_path):
    import lightning.pytorch as pl

    class Poke(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            pass

    members = [build_member(PackJob(c, tmp_path / f"v{i}"), i) for i, c in enumerate(_cfgs())]
    members = [m for m in members if m is not None]
    _start(members)
    members[-1].callbacks.append(Poke())
    step = StackedStep(members)
    step.sync_from_members(members, members)
    # Its epoch's tables would leave the hook out: refused at the epoch's start, before a step.
    with pytest.raises(RuntimeError, match="Poke acts before each step"):
        step.step(members, 0)
    assert all(m.trainer.global_step == 0 for m in members)


def test_stacked_logs_are_each_members_own_logs_bitwise():
    gen = torch.Generator().manual_seed(0)
    own, stacked = [EpochMeans() for _ in range(3)], StackedMeans()
    for _ in range(7):
        values = torch.randn(3, generator=gen)
        for logs, v in zip(own, values, strict=True):
            logs.log("train/recon", v, batch_size=64)
            logs.log("sparsity/k", v * 3)
        stacked.log("train/recon", values, 64)
        stacked.log("sparsity/k", values * 3)
    handed = [EpochMeans() for _ in range(3)]
    mid = [stacked.compute(i) for i in range(3)]
    stacked.hand_over(handed)
    for logs, got, before in zip(own, handed, mid, strict=True):
        want = logs.compute()
        assert want.keys() == got.compute().keys() == before.keys()
        assert all(torch.equal(want[k], got.compute()[k]) for k in want)
        assert all(torch.equal(want[k], before[k]) for k in want)
    with pytest.raises(RuntimeError, match="logged both"):
        stacked.log("train/recon", torch.zeros(3))
        stacked.hand_over(handed)


def test_one_batched_evaluation_gives_each_member_its_own_figures(tmp_path):
    """The stacked eval-mode forward (one pass for all members) equals each member's own pass:
    codes and means to float32 rounding, the same dead units, recon and FVU to 1e-6 relative."""
    extra = ("trainer.precision=32", "trainer.channels_last=false", "model.width=64")
    extra += ("schedule.k_start=32", "schedule.k_end=8")
    members = [build_member(PackJob(c, tmp_path / f"e{i}"), i) for i, c in enumerate(_cfgs(*extra))]
    members = [m for m in members if m is not None]
    _start(members)
    for m in members:
        with m.scope():
            m.steps(3)
    assert member_k(members[0]) < 64  # Top-k's rank mask is exercised
    assert evaluate_stacked(members) == members
    for m in members:
        batched = m.parts.evaluation.collected
        assert batched is not None
        own = m.parts.evaluation.collector(m.module)
        collect_codes(m.module, m.parts.datamodule.eval_batches(m.device), own)
        for a, b in zip(own.result(), batched.result(), strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(b.float(), a.float(), rtol=1e-5, atol=1e-5)
        assert own.firing is not None and batched.firing is not None
        assert torch.equal(own.firing.compute().fire_count, batched.firing.compute().fire_count)
        assert own.quality is not None and batched.quality is not None
        for name, value in own.quality.compute().items():
            assert batched.quality.compute()[name] == pytest.approx(value, rel=1e-6), name


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_a_member_with_a_non_finite_loss_fails_alone(tmp_path, monkeypatch, mode):
    start = Member.start

    def poisoned(self):
        start(self)
        if self.index == 1:
            with torch.no_grad():
                self.module.model.decoder.net[-1].bias.fill_(math.nan)

    monkeypatch.setattr(Member, "start", poisoned)
    cfgs = _cfgs()
    results = train_pack([PackJob(c, tmp_path / f"m{i}") for i, c in enumerate(cfgs)], mode=mode)
    assert [r["status"] for r in results] == ["completed", "failed"]
    summary = json.loads((tmp_path / "m1" / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["error"]
    assert not (tmp_path / "m1" / "checkpoints" / "last.ckpt").exists()
    assert json.loads((tmp_path / "m0" / "summary.json").read_text())["epochs_completed"] == 4
    # In vmap the failed member rides along in the stack: nothing of it reaches the other.
    rows = read_metrics_csv(tmp_path / "m0" / "metrics.csv")
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["eval/recon"]) for r in rows)


@pytest.mark.parametrize(("mode", "overlap"), [("loop", False), ("vmap", False), ("loop", True)])
def test_kill_and_resume_continues_bit_identically(tmp_path, monkeypatch, mode, overlap):
    cfgs = _cfgs()
    train_pack([PackJob(c, tmp_path / f"whole{i}") for i, c in enumerate(cfgs)], mode=mode)
    epoch_end = Member.epoch_end

    def killed(self, *args):
        # Member 0 has saved epoch 2, member 1 only epoch 1: the pack resumes members that
        # stand at different epochs (with overlap, the epoch ends handed over still save).
        if self.index == 1 and self.epoch == 2:
            raise KeyboardInterrupt
        epoch_end(self, *args)

    monkeypatch.setattr(Member, "epoch_end", killed)
    jobs = [PackJob(c, tmp_path / f"cut{i}") for i, c in enumerate(cfgs)]
    with pytest.raises(KeyboardInterrupt):
        train_pack(jobs, mode=mode, overlap=overlap)
    monkeypatch.setattr(Member, "epoch_end", epoch_end)
    assert json.loads((tmp_path / "cut1" / "summary.json").read_text())["status"] == "interrupted"
    saved = [torch.load(j.run_dir / "checkpoints" / "last.ckpt", weights_only=False) for j in jobs]
    assert [ckpt["epoch"] for ckpt in saved] == [2, 1]
    resumed = [
        PackJob(make_cfg(*_overrides(i), "resume=true"), j.run_dir) for i, j in enumerate(jobs)
    ]
    train_pack(resumed, mode=mode, overlap=overlap)
    for i in range(len(cfgs)):
        whole, cut = _weights(tmp_path / f"whole{i}"), _weights(tmp_path / f"cut{i}")
        assert all(_identical(whole[k], cut[k]) for k in whole)
        _same_rows(tmp_path / f"whole{i}" / "metrics.csv", tmp_path / f"cut{i}" / "metrics.csv")


def _same_state(a: object, b: object, where: str = "") -> None:
    """Nested checkpoint content equal: tensors bitwise (NaN equal to NaN), the rest by ==."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_state(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        assert _identical(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_overlapped_epoch_ends_write_what_epoch_ends_in_place_write(tmp_path, caplog, mode):
    """Measured on the worker while the next epoch trains, the epoch ends leave every member
    the same rows, checkpoint (weights, Adam, callbacks, generators), per-neuron arrays and
    pictures as the epoch ends run in place; only the wall-clock figures differ."""
    caplog.set_level("INFO", logger="vaesae")
    cfgs = _cfgs("schedule.schedule_epochs=1", "pictures.epochs=[reference]")
    for overlap in (False, True):
        jobs = [PackJob(c, tmp_path / f"{overlap}{i}") for i, c in enumerate(cfgs)]
        results = train_pack(jobs, mode=mode, overlap=overlap)
        assert [r["status"] for r in results] == ["completed", "completed"]
    for i in range(len(cfgs)):
        in_place, overlapped = tmp_path / f"False{i}", tmp_path / f"True{i}"
        _same_rows(in_place / "metrics.csv", overlapped / "metrics.csv")
        a, b = (
            torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)
            for d in (in_place, overlapped)
        )
        timed = ("wall_time_s", "train_seconds")
        for ckpt in (a, b):
            ckpt["callbacks"]["RunRecorder"] = {
                k: v for k, v in ckpt["callbacks"]["RunRecorder"].items() if k not in timed
            }
        _same_state(a, b)
        npz = sorted(p.name for p in (in_place / "neurons").glob("*.npz"))
        assert npz == sorted(p.name for p in (overlapped / "neurons").glob("*.npz"))
        assert len(npz) == 2
        for name in npz:
            with (
                np.load(in_place / "neurons" / name) as x,
                np.load(overlapped / "neurons" / name) as y,
            ):
                assert x.files == y.files
                assert all(
                    np.array_equal(x[k], y[k], equal_nan=k != "factor_names") for k in x.files
                )
        (pictures,) = (in_place / "neurons").glob("*_pictures.json")
        views = json.loads(pictures.read_text())["views"]
        assert views == json.loads((overlapped / "neurons" / pictures.name).read_text())["views"]
        summary = json.loads((overlapped / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["train_seconds"] > 0
        # Each member's train.log holds its own epoch lines, from the pack's thread or the
        # worker's, and no other member's.
        name, other = (c.run_name for c in (cfgs[i], cfgs[1 - i]))
        for run_dir in (in_place, overlapped):
            member_log = (run_dir / "train.log").read_text()
            assert f"{name} epoch 1 " in member_log and f"{other} epoch" not in member_log


def test_the_next_epoch_trains_while_an_epoch_end_measures(tmp_path, monkeypatch):
    """A slow recorder (0.5 s) on the worker: the pack's next epoch steps meanwhile, on its own
    thread; and an epoch end that raises there fails its member alone."""
    events: list[tuple[str, int, int, float]] = []
    record = RunRecorder.on_train_epoch_end

    def slow_record(self, trainer, pl_module):
        member, epoch = self.meta["pack_member"], trainer.current_epoch
        events.append(("measure", member, epoch, time.perf_counter()))
        time.sleep(0.5)
        if member == 1 and epoch == 1:
            raise RuntimeError("the recorder broke")
        record(self, trainer, pl_module)
        events.append(("measured", member, epoch, time.perf_counter()))
        assert threading.current_thread() is not threading.main_thread()

    steps = Member.steps

    def timed_steps(self, count):
        events.append(("steps", self.index, self.epoch, time.perf_counter()))
        steps(self, count)

    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", slow_record)
    monkeypatch.setattr(Member, "steps", timed_steps)
    cfgs = _cfgs()
    results = train_pack(
        [PackJob(c, tmp_path / f"m{i}") for i, c in enumerate(cfgs)], mode="loop", overlap=True
    )
    assert [r["status"] for r in results] == ["completed", "failed"]
    assert "RuntimeError: the recorder broke" in results[1]["error"]
    assert json.loads((tmp_path / "m0" / "summary.json").read_text())["epochs_completed"] == 4
    assert json.loads((tmp_path / "m1" / "summary.json").read_text())["status"] == "failed"
    assert len(read_metrics_csv(tmp_path / "m1" / "metrics.csv")) == 1
    at = {(kind, member, epoch): t for kind, member, epoch, t in events}
    # The pack started epoch 1 before member 0's epoch 0 was measured (in place, after).
    assert at[("measure", 0, 0)] < at[("measured", 0, 0)]
    assert at[("steps", 0, 1)] < at[("measured", 0, 0)]
    assert ("steps", 1, 3) not in at  # failed at epoch 1's end, found before epoch 2's end


def _overrides(i: int) -> tuple[str, ...]:
    method, seed = MEMBERS[i]
    return (f"method={method}", f"seed={seed}", "logger=none")


def test_pack_keys_group_what_can_share_a_loop():
    arms = ("baseline", "no_squeeze", "fixed_k", "center", "center_no_squeeze", "jumprelu")
    jobs = [
        PackJob(make_cfg(f"arm={arm}", f"method={method}"), Path(arm + method))
        for arm in arms
        for method in ("topk", "l1")
        if not (arm == "jumprelu" and method == "topk")
        if not (arm.endswith("no_squeeze") and method == "l1")
    ]
    packs = group_packs(jobs, max_members=48)
    names = [sorted(str(j.run_dir) for j in p) for p in packs]
    assert names == [
        ["baselinel1", "baselinetopk", "fixed_kl1", "fixed_ktopk", "no_squeezetopk"],
        ["center_no_squeezetopk", "centerl1", "centertopk"],
        ["jumprelul1"],
    ]
    assert [len(p) for p in group_packs(jobs[:5], max_members=2)] == [2, 2, 1]
    assert pack_key(make_cfg("seed=1")) == pack_key(make_cfg("seed=2", "loss.beta=4"))
    assert pack_key(make_cfg()) != pack_key(make_cfg("data.batch_size=32"))


def test_a_pack_refuses_jobs_that_do_not_share_a_key(tmp_path):
    jobs = [PackJob(make_cfg(), tmp_path / "a"), PackJob(make_cfg("arm=center"), tmp_path / "b")]
    with pytest.raises(ConfigError, match="pack key"):
        train_pack(jobs)
    assert not (tmp_path / "a").exists()  # refused before any work


def test_capture_is_refused_where_it_cannot_run(tmp_path):
    jobs = [PackJob(make_cfg(f"seed={s}"), tmp_path / f"j{s}") for s in (0, 1)]
    for mode in ("loop", "vmap"):  # on a CPU
        with pytest.raises(ConfigError, match="capture=true needs mode=vmap on a GPU"):
            train_pack(jobs, mode=mode, capture=True)
    assert not (tmp_path / "j0").exists()  # refused before any work


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_captured_epoch_follows_the_eager_stacked_epoch(tmp_path):
    """20 steps in one epoch on a GPU, replayed from a CUDA graph after 3 eager ones: k and the
    step count exact, the epoch means to 1e-2 relative of the eager stacked epoch's (Adam's
    capturable arithmetic differs in the last bits)."""
    cfgs = _cfgs("data.epoch_size=1280", "trainer=gpu", "data.source=procedural")
    logs = {}
    for capture in (False, True):
        jobs = [PackJob(c, tmp_path / f"{capture}{i}") for i, c in enumerate(cfgs)]
        built = [build_member(job, i) for i, job in enumerate(jobs)]
        members = [m for m in built if m is not None]
        _start(members)
        step = StackedStep(members, capture=capture)
        step.sync_from_members(members, members)
        step.epoch(members, 20)
        step.sync_to_members(members)
        assert all(m.trainer.global_step == 20 for m in members)
        logs[capture] = [m.logs.compute() for m in members]
    for eager, captured in zip(logs[False], logs[True], strict=True):
        assert eager.keys() == captured.keys()
        assert float(captured["sparsity/k"]) == float(eager["sparsity/k"])
        for name in ("train/recon", "train/kl", "sparsity/l0", "sparsity/l1_coef"):
            assert float(captured[name]) == pytest.approx(float(eager[name]), rel=1e-2), name


def test_vmap_refuses_a_member_it_cannot_stack():
    with pytest.raises(ConfigError, match="remedy auxk"):
        pack_mode_for([make_cfg("arm=auxk")], requested="vmap")
    assert pack_mode_for([make_cfg()], requested="auto") == "loop"  # on a CPU


def test_the_pack_launcher_trains_a_sweep_in_one_pack(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "vaesae.train",
        "-m",
        *FAST,
        "method=topk,l1",
        "logger=none",
        "hydra/launcher=pack",
        "hydra.launcher.overlap=true",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert len(summaries) == 2
    assert {s["status"] for s in summaries} == {"completed"}
    assert {s["pack_id"] for s in summaries} == {"sweep-p0"}
    assert sorted(s["pack_member"] for s in summaries) == [0, 1]
    assert all((sweep / s["run_name"] / ".hydra" / "config.yaml").exists() for s in summaries)
    # Each member's train.log holds its own epoch lines, as a job's log does under Hydra.
    names = [s["run_name"] for s in summaries]
    for name, other in zip(names, reversed(names), strict=True):
        member_log = (sweep / name / "train.log").read_text()
        assert f"{name} epoch 0 " in member_log
        assert other not in member_log
    # The pack says how far it is and how long it has left, once per epoch.
    console = done.stdout + done.stderr
    assert "pack sweep-p0: 1 of " in console and " left" in console


@pytest.mark.parametrize("overlap", [False, True])
def test_each_member_logs_to_its_own_wandb_run(tmp_path, overlap):
    """In place, or from the worker thread (W&B calls never run on two threads at once there:
    the pack's thread makes none while the worker measures)."""
    extra = ("logger=wandb", "schedule.schedule_epochs=1", "pictures.epochs=[final]")
    cfgs = [make_cfg(f"method={m}", f"seed={s}", *extra) for m, s in MEMBERS]
    jobs = [PackJob(c, tmp_path / f"w{i}") for i, c in enumerate(cfgs)]
    train_pack(jobs, mode="loop", overlap=overlap)
    runs = [list((tmp_path / f"w{i}" / "wandb").glob("offline-run-*")) for i in range(2)]
    assert [len(r) for r in runs] == [1, 1]
    assert runs[0][0].name.split("-")[-1] != runs[1][0].name.split("-")[-1]  # two run ids
    for (run,) in runs:
        images = [p.name for p in (run / "files" / "media" / "images").rglob("*.png")]
        assert any(name.startswith("reconstructions") for name in images), images
        assert any(name.startswith("neurons_alignment_top") for name in images), images
