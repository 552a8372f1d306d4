"""The benchmark's training section runs end to end and writes the contract's keys (no timing is
asserted: speed is measured by `make bench`, not by tests)."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch

from vaesae import bench


def test_training_section_writes_the_contract_keys(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(bench, "EVAL_SIZE", 500)
    out = tmp_path / "bench.json"
    monkeypatch.setattr(bench, "SECTIONS", {"training": lambda: bench.training_section(6, 2, 16)})
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_bench_without_cuda_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--accelerator", "gpu"])
    assert "needs a CUDA device" in capsys.readouterr().err
