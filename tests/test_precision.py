"""The fast path: precision / layout selection, and that it computes the same model."""

from __future__ import annotations

import json

import pytest
import torch

from vaesae import precision
from vaesae.models import VAESAE
from vaesae.precision import resolve_channels_last, resolve_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    # An explicit choice is kept whatever the hardware.
    assert resolve_precision("32", "gpu") == "32-true"
    assert resolve_precision(32, "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_channels_last_selection_and_bad_values():
    assert resolve_channels_last("auto", "cpu") is True
    assert resolve_channels_last(False, "gpu") is False
    with pytest.raises(ValueError, match="trainer.precision='16-mixed'.*auto, 32, bf16-mixed"):
        resolve_precision("16-mixed", "cpu")
    with pytest.raises(ValueError, match="trainer.channels_last='yes'.*auto, true, false"):
        resolve_channels_last("yes", "cpu")


@pytest.mark.parametrize("channels", [1, 3])
def test_fast_path_forward_equals_fp32_within_bf16_tolerance(channels):
    torch.manual_seed(0)
    # k = width: Top-k's selection is discontinuous, and a near-tie that rounding flips would move
    # a code to another unit, a change of selection rather than of precision.
    model = VAESAE(channels, width=64, k=64).eval()
    x = torch.rand(4, channels, 64, 64)
    reference = model(x)
    fast = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(x.contiguous(memory_format=torch.channels_last))
    assert out.logits.dtype == torch.bfloat16
    for name in ("logits", "mu", "h"):
        ref, got = getattr(reference, name), getattr(out, name).float()
        scale = ref.abs().max()
        # bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4 %); errors compound over ~10 layers.
        assert (got - ref).abs().max() <= 0.05 * scale, name
    # The same layout in fp32 is the same computation up to summation order.
    with torch.no_grad():
        nhwc = fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(nhwc.logits, reference.logits, atol=1e-4, rtol=1e-4)


def test_run_records_the_path_it_trained_on(tmp_path):
    from hydra import compose, initialize_config_dir

    from vaesae.train import CONF_DIR, train

    overrides = [
        "experiment=smoke",
        "schedule=constant",
        "schedule.schedule_epochs=1",
        "schedule.hold_epochs=0",
        "data.epoch_size=128",
        "data.eval_size=200",
        "trainer.threads=1",
        "trainer.precision=32",
        "trainer.channels_last=true",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        train(compose("train", overrides=overrides), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["precision"] == "32-true" and summary["channels_last"] is True
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    conv = ckpt["state_dict"]["model.encoder.net.0.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last)
