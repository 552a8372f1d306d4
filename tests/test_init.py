"""The model's initialisation lets images through: a VAE that starts with nearly constant trunk
features and a posterior mean that does not vary starts in the no-information state."""

import math

import pytest
import torch
from torch import nn

from vaesae.data import get_dataset
from vaesae.models import VAESAE, ConvDecoder
from vaesae.models.init import effective_fan_in, he_init_, set_output_bias_

pytestmark = pytest.mark.usefixtures("seeded_one_thread")

# At PyTorch's default init the trunk's variance share is 0.01 (dSprites) to 0.02 (Shapes3D) and
# the posterior mean spreads by ~1e-3 (posterior noise: std 1); He init gives 0.5 / 0.14 and
# 0.14-0.24. The thresholds sit well between, so either regime is told apart on any seed.
MIN_VARIANCE_SHARE = 0.05
MIN_MU_SPREAD = 0.03


def _batch(name: str) -> torch.Tensor:
    ds = get_dataset(name, source="procedural")
    images = ds.images(ds.sample_factors(256, torch.Generator().manual_seed(0)))
    return images.float() / 255.0


def _start_figures(model: VAESAE, x: torch.Tensor) -> tuple[float, float]:
    """(variance share of the trunk features across images, mean std of mu across images)."""
    with torch.no_grad():
        h = model.encoder(x)
        share = float(h.var(0).sum() / h.pow(2).mean(0).sum())
        mu = model.eval()(x).mu
    return share, float(mu.std(0).mean())


@pytest.mark.parametrize("name", ["dsprites", "shapes3d"])
@pytest.mark.parametrize("seed", [0, 1])
def test_he_init_lets_images_through_and_torch_default_does_not(name, seed):
    x = _batch(name)
    torch.manual_seed(seed)
    he = VAESAE(x.shape[1], input_norm="norm", normalize_decoder=True)
    he.init_from_data_(x)
    share, spread = _start_figures(he, x)
    assert share > MIN_VARIANCE_SHARE and spread > MIN_MU_SPREAD, (share, spread)
    torch.manual_seed(seed)
    default = VAESAE(x.shape[1], input_norm="norm", normalize_decoder=True, init="torch")
    share, spread = _start_figures(default, x)
    assert share < MIN_VARIANCE_SHARE and spread < MIN_MU_SPREAD, (share, spread)


def test_effective_fan_in_of_a_stride_2_transposed_conv():
    # Each output pixel of a 4x4 kernel at stride 2 is reached by 2x2 taps of every input channel.
    assert effective_fan_in(nn.ConvTranspose2d(32, 8, 4, stride=2, padding=1)) == 32 * 4
    assert effective_fan_in(nn.Conv2d(3, 8, 4, stride=2, padding=1)) == 3 * 16
    assert effective_fan_in(nn.Linear(256, 20)) == 256


def test_he_init_keeps_the_second_moment_through_relu_layers():
    torch.manual_seed(0)
    net = nn.Sequential(*(m for _ in range(6) for m in (nn.Linear(512, 512), nn.ReLU())))
    net.append(nn.Linear(512, 512))
    he_init_(net)
    with torch.no_grad():
        out = net(torch.randn(4096, 512))
    # He's fixed point: E[y^2] of each pre-activation equals the input's (1), layer after layer.
    assert float(out.pow(2).mean()) == pytest.approx(1.0, rel=0.15)
    assert all(float(m.bias.abs().max()) == 0.0 for m in net if isinstance(m, nn.Linear))


def test_transposed_conv_init_keeps_the_second_moment():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1)
    he_init_(nn.Sequential(layer))
    with torch.no_grad():
        y = layer(torch.randn(64, 64, 8, 8))[:, :, 2:-2, 2:-2]  # away from the padded border
    assert float(y.pow(2).mean()) == pytest.approx(1.0, rel=0.1)


def test_output_bias_is_the_logit_of_the_mean_and_reconstructs_the_mean_colour():
    x = torch.zeros(10, 3, 64, 64)
    x[:, 0] = 0.25
    x[:, 2, :, :32] = 1.0  # channel mean 0.5
    dec = ConvDecoder(3)
    with torch.no_grad():
        dec.net[-1].weight.zero_()
    set_output_bias_(dec.net[-1], x)
    colour = torch.sigmoid(dec(torch.randn(2, 10))).mean(dim=(0, 2, 3))
    assert colour.tolist() == pytest.approx([0.25, 1e-4, 0.5], abs=1e-6)


def test_data_init_sets_b_pre_to_the_normalised_input_mean_without_touching_running_stats():
    x = _batch("dsprites")[:64]
    model = VAESAE(1, input_norm="norm", normalize_decoder=True)
    model.init_from_data_(x)
    with torch.no_grad():
        h = model.encoder(x)
        r = h.pow(2).sum(1).mean().sqrt()
    assert torch.allclose(model.sae.b_pre, (h / r).mean(0), atol=1e-6)
    assert math.isnan(float(model.sae.input_rms))  # the first training batch still sets r
    assert model.training


def test_logvar_bias_sets_the_initial_posterior_variance():
    model = VAESAE(1, logvar_bias=-2.0)
    assert torch.all(model.latent_head.linear.bias[10:] == -2.0)
    assert torch.all(model.latent_head.linear.bias[:10] == 0.0)


def test_unknown_init_names_the_choices():
    with pytest.raises(ValueError, match="model.init='xavier'; valid: he, torch"):
        VAESAE(1, init="xavier")
