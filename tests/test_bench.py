"""The benchmark's training section runs end to end and writes the contract's keys (no timing is
asserted: speed is measured by `make bench`, not by tests)."""

from __future__ import annotations

import json
import logging
import time
import warnings

import pytest
import torch

from vaesae import bench
from vaesae.records import read_metrics_csv


def test_training_section_writes_the_contract_keys(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(bench, "EVAL_SIZE", 500)
    out = tmp_path / "bench.json"
    monkeypatch.setattr(
        bench,
        "SECTIONS",
        {"training": lambda: bench.training_section(6, 2, 16, pack_size=2, pack_steps=2)},
    )
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bench.main(["--only", "training", "--json", str(out), "--threads", "1"])
    # quiet like a training run: no pytree deprecation, no Lightning product tip
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    assert not [r for r in caplog.records if "litlogger" in r.getMessage()]
    figures = json.loads(out.read_text())
    for key in ("naive_fp32_img_per_s", "fast_img_per_s", "train_img_per_s", "plain_img_per_s"):
        assert figures[key] > 0, key
    assert figures["plain_img_per_s"] == figures["fast_img_per_s"]
    assert figures["lightning_vs_plain"] == figures["train_img_per_s"] / figures["plain_img_per_s"]
    assert 0 <= figures["data_fraction_of_step"] < 1
    # The pack's figures sit beside the single engine's, with the pack's size.
    assert figures["pack_members"] == 2
    assert figures["pack_img_per_s"] > 0 and figures["pack_sequential_img_per_s"] > 0
    ratio = figures["pack_img_per_s"] / figures["pack_sequential_img_per_s"]
    assert figures["pack_vs_sequential"] == ratio


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_bench_without_cuda_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--accelerator", "gpu"])
    assert "needs a CUDA device" in capsys.readouterr().err


def test_the_fabric_section_times_the_same_steps_both_ways():
    figures = bench.fabric_section(steps=3, repeats=1)
    for tag in ("fp32", "bf16"):
        plain, fabric = figures[f"plain_step_us_{tag}"], figures[f"fabric_step_us_{tag}"]
        assert plain > 0 and fabric > 0
        assert figures[f"fabric_overhead_us_{tag}"] == pytest.approx(fabric - plain)
    # What is compared is the same computation: fp32 steps through Fabric give the same weights.
    from contextlib import nullcontext

    from lightning.fabric import Fabric

    cpu = torch.device("cpu")
    x = torch.randn(64, 64)
    model, opt = bench.bench_mlp(cpu)
    bench.mlp_steps(model, opt, x, 4, lambda loss: loss.backward(), nullcontext())
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    fmodel, fopt = fabric.setup(*bench.bench_mlp(cpu))
    bench.mlp_steps(fmodel, fopt, x, 4, fabric.backward, nullcontext())
    for a, b in zip(model.parameters(), fmodel.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("overlap", [False, True])
def test_epoch_end_timing_runs_the_members_epoch_ends(tmp_path, overlap):
    stall, behind = bench.epoch_end_s(2, "cpu", tmp_path, overlap, eval_size=400)
    assert stall > 0 and behind >= 0 and (overlap or behind == 0)
    # Two whole epoch ends per member reached its files (drained by the time it returns).
    for i in range(2):
        rows = read_metrics_csv(tmp_path / f"member{i}" / "metrics.csv")
        assert [r["epoch"] for r in rows] == [0, 1]
        assert all(r["eval/recon"] > 0 for r in rows)


def test_measuring_alongside_evaluates_while_the_body_runs():
    with bench.measuring_alongside(torch.device("cpu"), eval_size=300, width=40) as done:
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done, "no evaluation finished beside the body"
    count = len(done)
    time.sleep(0.2)
    assert len(done) == count  # stopped with the body
    assert all(seconds > 0 for seconds in done)
