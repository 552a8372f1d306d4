import math

import pytest
import torch
import torch.nn.functional as F
from smoke_config import make_cfg
from torch import nn

from vaesae.models import (
    ACTIVATIONS,
    LOSS_TERMS,
    VAESAE,
    ConvDecoder,
    ConvEncoder,
    L1ReLU,
    SparseActivation,
    SparseAutoencoder,
    TopK,
    bernoulli_recon,
    gaussian_kl,
    l0_norm,
    l1_norm,
    make_activation,
    register_activation,
    sae_mse,
    vae_sae_loss,
)
from vaesae.models import activations as activations_module

pytestmark = pytest.mark.usefixtures("seeded_one_thread")


@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_decoder_shapes(channels):
    x = torch.rand(5, channels, 64, 64)
    h = ConvEncoder(channels)(x)
    assert h.shape == (5, 256)
    assert (h >= 0).all()
    assert ConvDecoder(channels, d_z=10)(torch.randn(5, 10)).shape == (5, channels, 64, 64)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("site", ["hidden", "latent"])
def test_vaesae_output_shapes(channels, site):
    model = VAESAE(channels, d_z=10, width=40, k=7, site=site)
    out = model(torch.rand(3, channels, 64, 64))
    d_in = 256 if site == "hidden" else 10
    assert out.logits.shape == (3, channels, 64, 64)
    for t in (out.mu, out.logvar, out.z):
        assert t.shape == (3, 10)
    assert out.h.shape == out.h_hat.shape == (3, d_in)
    assert out.codes.shape == (3, 40)
    assert ((out.codes != 0).sum(1) <= 7).all()


def test_z_is_a_sample_in_train_mode_and_mu_in_eval_mode():
    model = VAESAE(1, width=20)
    x = torch.rand(4, 1, 64, 64)
    assert not torch.equal(model.train()(x).z, model(x).mu)
    out = model.eval()(x)
    assert torch.equal(out.z, out.mu)


def test_hidden_site_latent_head_reads_sae_reconstruction():
    model = VAESAE(1, width=20, site="hidden").eval()
    x = torch.rand(2, 1, 64, 64)
    out = model(x)
    assert torch.allclose(out.mu, model.latent_head(out.h_hat * out.scale)[0])
    with torch.no_grad():
        model.sae.decoder.weight.mul_(2.0)
    assert not torch.allclose(model(x).mu, out.mu)


def test_latent_site_keeps_the_plain_vae_path():
    model = VAESAE(1, width=20, site="latent").eval()
    x = torch.rand(2, 1, 64, 64)
    out = model(x)
    assert torch.equal(out.h, out.mu)
    with torch.no_grad():
        model.sae.decoder.weight.mul_(2.0)
    assert torch.equal(model(x).mu, out.mu)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_latent_site_stop_gradient(stop_gradient):
    model = VAESAE(1, width=20, site="latent", stop_gradient=stop_gradient)
    out = model(torch.rand(2, 1, 64, 64))
    sae_mse(out.h, out.h_hat).backward()
    grad = model.latent_head.linear.weight.grad
    assert (grad is None or not grad.any()) == stop_gradient
    assert model.sae.encoder.weight.grad.any()


def test_unknown_site_and_method_name_the_valid_choices():
    with pytest.raises(ValueError, match="sae.site='middle'.*hidden, latent"):
        VAESAE(1, site="middle")
    with pytest.raises(ValueError, match="method='relu'.*l1.*topk"):
        VAESAE(1, method="relu")
    with pytest.raises(ValueError, match="method='relu'.*l1.*topk"):
        make_activation("relu", 10)


def test_topk_keeps_exactly_the_k_largest():
    act = TopK(width=30, k=6)
    pre = torch.rand(8, 30) + 0.1  # all positive, distinct almost surely
    s = act(pre)
    assert ((s != 0).sum(1) == 6).all()
    top_idx = pre.topk(6, dim=1).indices
    expected = torch.zeros_like(pre).scatter(1, top_idx, pre.gather(1, top_idx))
    assert torch.equal(s, expected)


def test_topk_drops_negative_preactivations():
    pre = torch.tensor([[3.0, -1.0, -2.0, 0.5, -0.5]])
    assert torch.equal(TopK(5, k=3)(pre), torch.tensor([[3.0, 0.0, 0.0, 0.5, 0.0]]))


def test_topk_gradient_only_through_kept_units():
    pre = (torch.rand(4, 12) + 0.1).requires_grad_()
    s = TopK(12, k=3)(pre)
    s.sum().backward()
    kept = s != 0
    assert torch.equal(pre.grad, kept.float())


def test_topk_at_full_width_is_relu():
    pre = torch.randn(4, 10)
    assert torch.equal(TopK(10)(pre), torch.relu(pre))


@pytest.mark.parametrize("bad", [0, 11, -3, 2.5, True])
def test_topk_k_validation(bad):
    act = TopK(10, k=5)
    with pytest.raises(ValueError, match="1 <= k <= width=10"):
        act.k = bad
    assert act.k == 5
    with pytest.raises(ValueError, match="1 <= k <= width=10"):
        TopK(10, k=bad)


def test_topk_k_is_mutable():
    act = TopK(10, k=5)
    act.k = 2
    assert ((act(torch.rand(3, 10) + 0.1) != 0).sum(1) == 2).all()


def test_l1_activation_is_relu():
    pre = torch.randn(6, 9)
    assert torch.equal(L1ReLU(9)(pre), torch.relu(pre))
    assert make_activation("l1", 9).control == "penalty"
    assert make_activation("topk", 9, k=3).control == "k"


def test_new_rule_is_one_registered_class(monkeypatch):
    monkeypatch.setattr(activations_module, "ACTIVATIONS", dict(ACTIVATIONS))

    @register_activation("abs")
    class Abs(SparseActivation):
        control = "penalty"

        def forward(self, pre):
            return pre.abs()

    sae = SparseAutoencoder(d_in=4, width=6, method="abs")
    assert isinstance(sae.activation, Abs) and sae.method == "abs"
    with pytest.raises(ValueError, match="already registered"):
        register_activation("abs")(Abs)
    assert "abs" not in ACTIVATIONS


def test_sae_formula_and_init():
    sae = SparseAutoencoder(d_in=8, width=16, method="l1", input_norm="batch")
    assert torch.allclose(sae.decoder.weight.norm(dim=0), torch.ones(16))
    assert torch.equal(sae.encoder.weight, sae.decoder.weight.T)
    with torch.no_grad():
        sae.b_pre.normal_()
        sae.encoder.bias.normal_()
    h = torch.randn(5, 8) * 3.0
    out = sae(h)
    s, x, r = out.codes, out.x, out.scale
    assert r.item() == pytest.approx(h.pow(2).mean().sqrt().item())  # the batch RMS feature
    assert torch.allclose(x, h / r)
    w_e, b_e, w_d = sae.encoder.weight, sae.encoder.bias, sae.decoder.weight
    assert torch.allclose(out.pre, (x - sae.b_pre) @ w_e.T + b_e, atol=1e-6)
    assert torch.equal(s, torch.relu(out.pre))
    assert torch.allclose(out.x_hat, s @ w_d.T + sae.b_pre, atol=1e-6)
    assert torch.allclose(out.recon, out.x_hat * r)  # the reconstruction of h itself


def test_sae_norm_input_has_unit_mean_square_norm():
    """input_norm="norm": r = sqrt(mean_batch ||h||^2), so mean ||x||^2 = 1 and the SAE error is
    the fraction of the input's energy left unexplained."""
    h = torch.randn(6, 8) * 3.0 + 1.0
    out = SparseAutoencoder(d_in=8, width=16, input_norm="norm")(h)
    assert out.scale.item() == pytest.approx(h.pow(2).sum(1).mean().sqrt().item(), rel=1e-6)
    assert out.x.pow(2).sum(1).mean().item() == pytest.approx(1.0, rel=1e-5)
    batch = SparseAutoencoder(d_in=8, width=16, input_norm="batch")(h)
    assert out.scale.item() == pytest.approx(batch.scale.item() * math.sqrt(8), rel=1e-6)


@pytest.mark.parametrize("input_norm", ["batch", "norm"])
def test_sae_objective_is_scale_free(input_norm):
    """Scaling the input by c leaves codes, the SAE error and the L1 term unchanged."""
    torch.manual_seed(0)
    sae = SparseAutoencoder(d_in=8, width=16, method="l1", input_norm=input_norm)
    h = torch.randn(32, 8)
    s, x, x_hat, *_ = sae(h)
    s_c, x_c, x_hat_c, *_ = sae(h * 7.0)
    assert torch.allclose(s_c, s, atol=1e-5)
    assert sae_mse(x_c, x_hat_c).item() == pytest.approx(sae_mse(x, x_hat).item(), rel=1e-5)
    assert l1_norm(s_c).item() == pytest.approx(l1_norm(s).item(), rel=1e-5)
    # With the normalisation off the same scaling multiplies the L1 term by c.
    plain = SparseAutoencoder(d_in=8, width=16, method="l1", input_norm="none")
    assert l1_norm(plain(h * 7.0)[0]).item() == pytest.approx(
        7.0 * l1_norm(plain(h)[0]).item(), rel=1e-4
    )


def _detach_pair(method: str) -> tuple[SparseAutoencoder, SparseAutoencoder]:
    torch.manual_seed(3)
    kw = {"k": 4} if method == "topk" else {}
    plain = SparseAutoencoder(d_in=8, width=16, method=method, input_norm="norm", **kw)
    with torch.no_grad():
        plain.b_pre.normal_()
        plain.encoder.bias.normal_()
    detached = SparseAutoencoder(
        d_in=8, width=16, method=method, input_norm="norm", detach_loss=True, **kw
    )
    detached.load_state_dict(plain.state_dict())
    return plain, detached


@pytest.mark.parametrize("method", ["topk", "l1"])
def test_detach_loss_keeps_values_and_the_path_gradient(method):
    """detach_loss: same outputs; the SAE's losses give h no gradient; the forward path gives h
    and the SAE's parameters exactly the gradient of the undetached SAE."""
    plain, detached = _detach_pair(method)
    h = torch.randn(12, 8) * 2.0 + 0.5
    outs = []
    for sae in (plain, detached):
        h_in = h.clone().requires_grad_(True)
        out = sae(h_in)
        path = out.recon.pow(3).sum()  # any function of the forward path
        (path_grad,) = torch.autograd.grad(path, h_in, retain_graph=True)
        own = sae_mse(out.x, out.x_hat) + 0.3 * l1_norm(out.codes)
        (own_grad,) = torch.autograd.grad(own, h_in, retain_graph=True, allow_unused=True)
        params = torch.autograd.grad(path, list(sae.parameters()), allow_unused=True)
        outs.append((out, path_grad, own_grad, params))
    (p_out, p_path, p_own, p_params), (d_out, d_path, d_own, d_params) = outs
    for a, b in zip(p_out, d_out, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(d_path, p_path, atol=1e-5) and p_path.abs().sum() > 0
    assert p_own.abs().sum() > 0  # the undetached SAE error moves h ...
    assert d_own is None or not d_own.any()  # ... the detached one does not
    for a, b in zip(p_params, d_params, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)


def test_sae_running_rms_is_used_in_evaluation_and_saved():
    sae = SparseAutoencoder(d_in=4, width=8, input_norm="batch", norm_momentum=0.5)
    assert sae.eval()(torch.ones(2, 4))[3].item() == 1.0  # before any training batch
    sae.train()
    sae(torch.full((3, 4), 2.0))  # first batch copied: 2
    sae(torch.full((3, 4), 4.0))  # 2 + 0.5 * (4 - 2) = 3
    assert sae.input_rms.item() == pytest.approx(3.0)
    assert sae.eval()(torch.full((1, 4), 100.0))[3].item() == pytest.approx(3.0)
    clone = SparseAutoencoder(d_in=4, width=8, input_norm="batch")
    clone.load_state_dict(sae.state_dict())
    assert clone.input_rms.item() == pytest.approx(3.0)


def test_normalize_decoder_makes_columns_unit_norm():
    sae = SparseAutoencoder(d_in=8, width=16, normalize_decoder=True)
    with torch.no_grad():
        sae.decoder.weight.mul_(torch.rand(1, 16) * 5)
    direction = sae.decoder.weight[:, 3] / sae.decoder.weight[:, 3].norm()
    sae.normalize_decoder_()
    assert torch.allclose(sae.decoder.weight.norm(dim=0), torch.ones(16))
    assert torch.allclose(sae.decoder.weight[:, 3], direction)


def test_bernoulli_recon_known_value():
    x = torch.rand(3, 3, 64, 64)
    ln2_per_pixel = 3 * 64 * 64 * math.log(2)
    assert bernoulli_recon(torch.zeros_like(x), x).item() == pytest.approx(ln2_per_pixel)
    logits = torch.randn_like(x)
    per_image = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum") / 3
    assert bernoulli_recon(logits, x).item() == pytest.approx(per_image.item(), rel=1e-5)


def test_gaussian_kl_known_values():
    zeros = torch.zeros(4, 10)
    assert gaussian_kl(zeros, zeros).item() == 0.0
    assert gaussian_kl(torch.ones(4, 10), zeros).item() == pytest.approx(5.0)
    # sigma^2 = e: 1/2 (e - 1 - 1) per dim
    assert gaussian_kl(zeros, torch.ones(4, 10)).item() == pytest.approx(5 * (math.e - 2), rel=1e-6)


def test_sae_norms_known_values():
    h = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    h_hat = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert sae_mse(h, h_hat).item() == pytest.approx((5.0 + 9.0) / 2)
    codes = torch.tensor([[0.0, 2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert l1_norm(codes).item() == pytest.approx(3.5 / 2)
    assert l0_norm(codes).item() == pytest.approx(1.5)


def test_vae_sae_loss_combines_the_terms():
    model = VAESAE(1, width=20, method="l1")
    x = torch.rand(4, 1, 64, 64)
    out = model(x)
    terms = vae_sae_loss(out, x, beta=4.0, alpha=0.5, l1_coef=torch.tensor(0.3))
    assert tuple(terms) == LOSS_TERMS
    assert torch.equal(terms["penalty"], terms["l1"])  # the default penalty is ||s||_1
    expected = terms["recon"] + 4.0 * terms["kl"] + 0.5 * terms["sae_mse"] + 0.3 * terms["l1"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["l0"].item() == pytest.approx((out.codes != 0).float().sum(1).mean().item())
    assert not terms["l0"].requires_grad
    terms["loss"].backward()
    assert model.encoder.net[0].weight.grad.any()


def test_vae_sae_loss_uses_the_rules_penalty():
    model = VAESAE(1, width=20, method="l1")
    x = torch.rand(4, 1, 64, 64)
    out = model(x)
    penalty = torch.tensor(7.0)
    terms = vae_sae_loss(out, x, l1_coef=0.5, penalty=penalty)
    assert terms["penalty"] == penalty
    assert terms["l1"].item() == pytest.approx(l1_norm(out.codes).item())  # still reported
    plain = terms["recon"] + terms["kl"] + terms["sae_mse"]
    assert terms["loss"].item() == pytest.approx((plain + 0.5 * 7.0).item(), rel=1e-6)


def test_output_carries_the_pre_activations():
    model = VAESAE(1, width=20, method="l1").eval()
    out = model(torch.rand(3, 1, 64, 64))
    assert torch.allclose(out.pre, model.sae.pre_activations(out.h))
    assert torch.equal(out.codes, torch.relu(out.pre))


def _rescaled_terms(input_norm: str, normalize_decoder: bool, alpha: float, c: float) -> tuple:
    """Loss terms of one batch before and after the trunk's features are scaled by c (its last
    linear layer, before the ReLU) and the latent head's weights by 1/c."""
    torch.manual_seed(0)
    model = VAESAE(
        1, width=40, method="l1", input_norm=input_norm, normalize_decoder=normalize_decoder
    )
    x = torch.rand(16, 1, 64, 64)

    def terms() -> dict:
        torch.manual_seed(1)  # the same posterior noise
        return vae_sae_loss(model(x), x, alpha=alpha, l1_coef=0.3)

    before = terms()
    fc = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        fc.weight.mul_(c)
        fc.bias.mul_(c)
        model.latent_head.linear.weight.div_(c)
    return before, terms()


def test_default_objective_is_scale_free():
    """The configured objective does not depend on the trunk's arbitrary scale; the raw one does
    (its SAE error scales by c^2 and its L1 term by c)."""
    cfg = make_cfg()
    before, after = _rescaled_terms(
        cfg.model.input_norm, cfg.model.normalize_decoder, cfg.loss.alpha, 3.0
    )
    for name in ("loss", "recon", "kl", "sae_mse", "l1"):
        assert after[name].item() == pytest.approx(before[name].item(), rel=1e-4), name
    raw_before, raw_after = _rescaled_terms("none", False, 1.0, 3.0)
    raw_mse = raw_before["sae_mse"].item()
    assert raw_after["sae_mse"].item() == pytest.approx(9.0 * raw_mse, rel=1e-3)
    assert raw_after["l1"].item() == pytest.approx(3.0 * raw_before["l1"].item(), rel=1e-3)
