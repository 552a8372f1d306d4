"""Known answers for the training-progress measures: the no-information gap and FVU."""

import math

import pytest
import torch

from vaesae.metrics import ReconStats, binary_entropy, fvu, gap_closed, recon_levels
from vaesae.models import bernoulli_recon


def _images(binary: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g)
    return (x > 0.7).float() if binary else x


def test_binary_entropy_known_values():
    p = torch.tensor([0.0, 0.5, 1.0, 0.1], dtype=torch.float64)
    expected = [0.0, math.log(2), 0.0, -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))]
    assert binary_entropy(p).tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("binary", [True, False])
def test_gap_closed_is_0_for_the_mean_image_and_1_for_the_targets(binary):
    x = _images(binary)
    levels = recon_levels(x.split(10))  # streamed in uneven batches
    mean = x.mean(0, keepdim=True).expand_as(x)
    mean_recon = float(bernoulli_recon(torch.logit(mean.double()), x.double()))
    assert levels.mean_image == pytest.approx(mean_recon, rel=1e-9)
    assert gap_closed(mean_recon, levels) == pytest.approx(0.0, abs=1e-9)
    # The targets' own logits (clamped for binary targets, whose logits are infinite).
    eps = 1e-12
    target_recon = float(bernoulli_recon(torch.logit(x.double().clamp(eps, 1 - eps)), x.double()))
    assert gap_closed(target_recon, levels) == pytest.approx(1.0, abs=1e-6)
    if binary:
        assert levels.floor == 0.0
    else:
        assert levels.floor > 0.0


def test_gap_closed_of_a_degenerate_gap_is_nan():
    x = torch.ones(4, 1, 2, 2)  # constant images: the mean image is the targets
    assert math.isnan(gap_closed(0.0, recon_levels([x])))


def test_fvu_known_answers_and_the_energy_fraction_differs_on_a_large_mean():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 16, generator=g) + 5.0  # a large common mean, like ReLU features
    mean = x.mean(0, keepdim=True).expand_as(x)
    assert float(fvu(x, mean)) == pytest.approx(1.0, abs=1e-6)
    assert float(fvu(x, x)) == 0.0
    noisy = x + 0.5 * torch.randn(x.shape, generator=g)
    energy = float((x - noisy).pow(2).sum() / x.pow(2).sum())
    assert float(fvu(x, noisy)) == pytest.approx(0.25, rel=0.1)
    assert energy < float(fvu(x, noisy)) / 10


def test_recon_stats_streams_what_the_whole_set_gives():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(90, 8, generator=g) + 3.0
    x_hat = x + 0.3 * torch.randn(x.shape, generator=g)
    recon = torch.rand(90, generator=g) * 100
    stats = ReconStats()
    for i in range(0, 90, 40):
        stats.update(recon[i : i + 40], x[i : i + 40], x_hat[i : i + 40])
    out = stats.compute()
    assert out["eval/recon"] == pytest.approx(float(recon.double().mean()), rel=1e-9)
    assert out["eval/fvu"] == pytest.approx(float(fvu(x.double(), x_hat.double())), rel=1e-5)
    energy = float((x - x_hat).double().pow(2).sum() / x.double().pow(2).sum())
    assert out["eval/sae_energy_fraction"] == pytest.approx(energy, rel=1e-9)
