"""Arms (conf/arm/): configs and refusals, each mechanism's rule, and every arm end to end."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from vaesae.arms import (
    arm_callbacks,
    arm_module_kw,
    default_remedy_window,
    remedy_start_epoch,
    resample_epochs,
)
from vaesae.config import ConfigError, schedule_of, validate_config
from vaesae.data.datamodule import GroundTruthDataModule
from vaesae.metrics import SamplesSinceFired
from vaesae.models import VAESAE, BatchTopK, ConvEncoder, JumpReLU, SparseAutoencoder
from vaesae.models.jumprelu import jump_relu
from vaesae.module import VAESAEModule
from vaesae.records import RunRecorder, read_metrics_csv
from vaesae.remedies import (
    ENCODER_SCALE,
    AuxKSettings,
    ResampleCallback,
    apply_resample,
    auxk_loss,
    resample_dead,
    sae_auxk_loss,
)
from vaesae.train import CONF_DIR, train

ARMS = sorted(p.stem for p in (CONF_DIR / "arm").glob("*.yaml"))
# The no-pressure controls run under Top-k only: with k = width and lambda = 0 the L1 run would be
# the same model.
CONTROLS = {"no_squeeze", "center_no_squeeze", "signed_trunk_no_squeeze"}
# (arm, method, extra overrides): every arm with every method it applies to.
COMBINATIONS = [
    *(
        (arm, method, ())
        for arm in ARMS
        if arm not in {"auxk", "batchtopk", "jumprelu", "recover", *CONTROLS}
        for method in ("topk", "l1")
    ),
    *((arm, "topk", ()) for arm in sorted(CONTROLS)),
    ("auxk", "topk", ()),
    ("batchtopk", "topk", ()),
    ("jumprelu", "l1", ()),
    ("recover", "topk", ("arm.recovery=auxk",)),
    ("recover", "l1", ("arm.recovery=resample",)),
]
# Smoke size with 2 schedule epochs and 1 hold epoch (4 steps each); short windows and a small
# resampling pool so that the remedies act within it.
SMALL = [
    "experiment=smoke",
    "data.epoch_size=256",
    "data.eval_size=300",
    "data.eval_batch_size=300",
    "trainer.threads=1",
    "schedule.schedule_epochs=2",
    "schedule.hold_epochs=1",
    "arm.auxk_window=64",
    "arm.resample_window=64",
    "arm.resample_pool=128",
]


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def make_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


# --- configs -------------------------------------------------------------------------------


def test_every_arm_is_tested():
    assert {arm for arm, _, _ in COMBINATIONS} == set(ARMS)
    assert "baseline" in ARMS and len(ARMS) == 12


@pytest.mark.parametrize("arm, method, extra", COMBINATIONS)
def test_arm_composes_into_the_run_name(arm, method, extra):
    cfg = make_cfg(f"arm={arm}", f"method={method}", *extra)
    validate_config(cfg)
    assert cfg.run_name == f"{method}-{arm}-dsprites-s0-never"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("arm=auxk", "method=l1"),
            "arm=auxk (remedy auxk) does not apply to method=l1; valid "
            "combinations: arm=auxk method=topk",
        ),
        (
            ("arm=jumprelu", "method=topk"),
            "arm=jumprelu does not apply to method=topk; valid "
            "combinations: arm=jumprelu method=l1",
        ),
        (("arm=batchtopk", "method=l1"), "valid combinations: arm=batchtopk method=topk"),
        (("arm=no_squeeze", "method=l1"), "valid combinations: arm=no_squeeze method=topk"),
        (
            ("arm=recover", "method=l1"),
            "arm=recover (remedy auxk) does not apply to method=l1; "
            "valid combinations: arm=recover method=topk",
        ),
    ],
)
def test_arm_method_mismatch_is_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_arm_is_refused_by_hydra_with_the_options():
    with pytest.raises(MissingConfigException, match="Available options in 'arm'") as err:
        make_cfg("arm=nope")
    assert all(arm in str(err.value) for arm in ARMS)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("arm.remedy=magic", "arm.remedy='magic' is not valid"),
        ("arm.resample_at=[0.5,2]", "must be fractions in [0, 1]"),
        ("model.center=median", "model.center='median' is not valid"),
        ("arm.pressure=soft", "arm.pressure='soft' is not valid"),
    ],
)
def test_bad_arm_settings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate_config(make_cfg("arm=resample", bad))


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "arm, pressure, method",
    [
        *(
            (arm, pressure, m)
            for arm, pressure in (("baseline", "schedule"), ("fixed_k", "fixed"))
            for m in ("topk", "l1")
        ),
        ("no_squeeze", "none", "topk"),
    ],
)
def test_pressure_reaches_the_schedule_callback(tmp_path, monkeypatch, arm, pressure, method):
    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr("vaesae.assembly.SparsityScheduleCallback", capture)
    with pytest.raises(_Stop):
        train(make_cfg(f"arm={arm}", f"method={method}"), tmp_path)
    assert seen["pressure"] == pressure


# --- center --------------------------------------------------------------------------------


def test_running_center_converges_and_is_used_in_evaluation_and_saved():
    sae = SparseAutoencoder(d_in=4, width=8, center="ema", norm_momentum=0.05, input_norm="none")
    mean = torch.tensor([3.0, -1.0, 0.5, 2.0])
    first = mean + torch.randn(32, 4)
    sae(first)
    assert torch.allclose(sae.input_mean, first.mean(0))  # the first batch is copied
    for _ in range(300):
        sae(mean + torch.randn(32, 4))
    assert torch.allclose(sae.input_mean, mean, atol=0.1)
    sae.eval()
    c = sae.input_mean.clone()
    h = torch.randn(5, 4) * 10
    out = sae(h)  # evaluation neither updates the centre nor depends on the batch's mean
    assert torch.equal(sae.input_mean, c)
    assert torch.allclose(out.x, h - c)
    w_e, b_e = sae.encoder.weight, sae.encoder.bias
    assert torch.allclose(out.pre, (h - c - sae.b_pre) @ w_e.T + b_e, atol=1e-4)
    assert torch.allclose(out.recon, out.x_hat + c)  # added back after decoding
    clone = SparseAutoencoder(d_in=4, width=8, center="ema", input_norm="none").eval()
    clone.load_state_dict(sae.state_dict())
    assert torch.equal(clone.input_mean, c)
    assert torch.allclose(clone(h).recon, out.recon)


def test_centred_input_is_normalised_by_its_own_rms():
    sae = SparseAutoencoder(d_in=4, width=8, center="ema", input_norm="batch")
    h = torch.randn(64, 4) + 100.0  # a large common mean, a unit variation
    out = sae(h)
    c = h.mean(0)
    assert out.scale.item() == pytest.approx((h - c).pow(2).mean().sqrt().item(), rel=1e-5)
    assert out.x.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(out.recon, out.x_hat * out.scale + c, atol=1e-4)


def test_center_is_added_back_after_decoding():
    sae = SparseAutoencoder(d_in=4, width=8, center="ema", input_norm="none")
    with torch.no_grad():
        sae.encoder.bias.fill_(-1e6)  # no unit fires: the reconstruction is the centre alone
    h = torch.randn(16, 4) + 5.0
    assert torch.allclose(sae(h).recon, h.mean(0).expand(16, 4), atol=1e-5)


def test_init_center_sets_b_pre_to_the_first_batch_mean_once():
    sae = SparseAutoencoder(d_in=4, width=8, center="init", input_norm="none")
    first = torch.randn(16, 4) + 2.0
    assert torch.equal(sae(first).x, first)  # no running centre: b_pre does the centring
    assert torch.allclose(sae.b_pre, first.mean(0))
    sae(torch.randn(16, 4) - 7.0)
    assert torch.allclose(sae.b_pre, first.mean(0))


def test_uncentred_sae_keeps_its_checkpoint_keys():
    assert "input_mean" not in SparseAutoencoder(d_in=4, width=8).state_dict()


# --- signed trunk --------------------------------------------------------------------------


def test_signed_trunk_feeds_the_sae_negative_values():
    x = torch.rand(8, 1, 64, 64)
    assert (VAESAE(1, width=20)(x).h >= 0).all()
    out = VAESAE(1, width=20, signed_trunk=True)(x)
    assert (out.h < 0).any() and (out.h > 0).any()
    assert not isinstance(ConvEncoder(1, signed=True).net[-1], torch.nn.ReLU)


# --- AuxK ----------------------------------------------------------------------------------


def test_auxk_loss_is_zero_without_dead_units():
    pre, residual = torch.randn(6, 10), torch.randn(6, 4)
    w_d = torch.randn(4, 10)
    assert auxk_loss(pre, residual, w_d, torch.zeros(10, dtype=torch.bool), 3).item() == 0.0


def test_auxk_loss_formula():
    pre = torch.tensor([[2.0, -1.0, 3.0, 0.5], [1.0, 4.0, -2.0, 0.2]])
    dead = torch.tensor([True, True, False, True])
    w_d = torch.eye(4)
    residual = torch.tensor([[1.0, 0.0, 1.0, 2.0], [0.0, 3.0, 1.0, 0.0]])
    # k_aux = 2 of the dead units 0, 1, 3: sample 0 keeps 2 and 0.5, sample 1 keeps 4 and 1.
    e_hat = torch.tensor([[2.0, 0.0, 0.0, 0.5], [1.0, 4.0, 0.0, 0.0]])
    # The normalised MSE of the residual: its squared error over its spread about the batch mean
    # (0.5^2 + 1.5^2 + 0 + 1^2 summed over both samples = 2 * 3.5 = 7).
    expected = (residual - e_hat).pow(2).sum() / 7.0
    assert auxk_loss(pre, residual, w_d, dead, 2).item() == pytest.approx(expected.item())
    assert auxk_loss(pre, residual, w_d, torch.zeros(4, dtype=torch.bool), 2).item() == 0.0


def test_auxk_gradient_reaches_only_the_dead_units_and_b_pre():
    model = VAESAE(1, width=40, k=5)
    out = model(torch.rand(8, 1, 64, 64))
    dead = torch.zeros(40, dtype=torch.bool)
    dead[[3, 7, 11, 20, 33]] = True
    with torch.no_grad():
        model.sae.encoder.bias[dead] = 5.0  # the dead units have positive pre-activations
    loss = sae_auxk_loss(model.sae, out.h, out.h_hat, dead, k_aux=3)
    assert loss.item() > 0
    loss.backward()
    sae = model.sae
    assert sae.encoder.weight.grad[~dead].eq(0).all() and sae.encoder.weight.grad[dead].ne(0).any()
    assert sae.encoder.bias.grad[~dead].eq(0).all() and sae.encoder.bias.grad[dead].ne(0).any()
    assert sae.decoder.weight.grad[:, ~dead].eq(0).all()
    assert sae.decoder.weight.grad[:, dead].ne(0).any()
    assert sae.b_pre.grad.ne(0).any()  # as in Gao et al.'s and SAELens' AuxK
    for p in (*model.encoder.parameters(), *model.latent_head.parameters()):
        assert p.grad is None or not p.grad.any()


# --- resampling ----------------------------------------------------------------------------


def _trained_sae_and_adam() -> tuple[SparseAutoencoder, torch.optim.Adam]:
    sae = SparseAutoencoder(d_in=8, width=12, method="topk", k=4)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(3):
        out = sae(torch.rand(16, 8))
        opt.zero_grad()
        (out.x - out.x_hat).pow(2).sum(1).mean().backward()
        opt.step()
    return sae, opt


def test_resampling_rewrites_dead_units_and_their_optimizer_state_only():
    sae, opt = _trained_sae_and_adam()
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[1, 5, 6]] = True
    params = (sae.encoder.weight, sae.encoder.bias, sae.decoder.weight)
    before = [p.detach().clone() for p in params]
    state_before = [{k: opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")} for p in params]
    inputs, sq_error = torch.rand(32, 8), torch.rand(32)
    new = resample_dead(
        inputs, sq_error, dead, sae.encoder.weight, sae.b_pre, torch.Generator().manual_seed(0)
    )
    apply_resample(sae, new, opt)
    w_e, b_e, w_d = (p.detach() for p in params)
    assert not torch.isclose(w_e[dead], before[0][dead]).all(dim=1).any()
    assert torch.equal(w_e[~dead], before[0][~dead])
    assert torch.equal(b_e[~dead], before[1][~dead])
    assert torch.equal(w_d[:, ~dead], before[2][:, ~dead])
    for p, old, dim in zip(params, state_before, (0, 0, 1), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            now = opt.state[p][key]
            assert not now.index_select(dim, new.index).any()
            keep = (~dead).nonzero().squeeze(1)
            assert torch.equal(now.index_select(dim, keep), old[key].index_select(dim, keep))
    # The rule: unit-norm dictionary directions, encoder rows 0.2 x the mean live row norm.
    assert torch.allclose(w_d[:, dead].norm(dim=0), torch.ones(3))
    live_norm = before[0][~dead].norm(dim=1).mean()
    assert torch.allclose(w_e[dead].norm(dim=1), ENCODER_SCALE * live_norm.expand(3))
    assert torch.allclose(w_e[dead], ENCODER_SCALE * live_norm * w_d[:, dead].T)


def test_resampling_draws_inputs_by_their_error_and_zeroes_at_the_data_mean():
    sae, _ = _trained_sae_and_adam()
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[0, 2]] = True
    inputs = torch.rand(20, 8)
    sq_error = torch.zeros(20)
    sq_error[7] = 1.0  # the only badly reconstructed input is drawn for every dead unit
    new = resample_dead(
        inputs, sq_error, dead, sae.encoder.weight, sae.b_pre, torch.Generator().manual_seed(0)
    )
    mu = inputs.mean(0)
    u = (inputs[7] - mu) / (inputs[7] - mu).norm()
    assert torch.allclose(new.decoder_columns, u[:, None].expand(8, 2))
    # The resampled units' pre-activation a u . (x - mu) vanishes at the pool's mean input.
    pre_at_mean = new.encoder_rows @ (mu - sae.b_pre.detach()) + new.encoder_bias
    assert torch.allclose(pre_at_mean, torch.zeros(2), atol=1e-6)


# --- BatchTopK -----------------------------------------------------------------------------


def test_batchtopk_keeps_k_times_batch_over_the_whole_batch():
    act = BatchTopK(width=30, k=3)
    pre = torch.rand(8, 30) + 0.1
    s = act(pre)
    assert int((s != 0).sum()) == 3 * 8
    kept = pre.flatten().topk(24).values
    assert torch.equal(s[s != 0].sort().values, kept.sort().values)
    assert (s != 0).sum(1).unique().numel() > 1  # per-sample counts vary
    assert act.threshold.item() == pytest.approx(kept.min().item())


def test_batchtopk_threshold_is_a_moving_average_used_in_evaluation_and_saved():
    act = BatchTopK(width=10, k=2, threshold_momentum=0.5)
    act(torch.arange(10.0).repeat(4, 1))  # kept: the 8 largest of 4 x 0..9 -> cut at 8
    assert act.threshold.item() == 8.0
    act(torch.arange(10.0).repeat(4, 1) + 2.0)  # cut at 10: 8 + 0.5 * (10 - 8)
    assert act.threshold.item() == 9.0
    act.eval()
    pre = torch.tensor([[8.5, 9.5, 10.0, -1.0]])
    act_wide = BatchTopK(width=4, k=1)
    act_wide.load_state_dict(act.state_dict())
    act_wide.eval()
    assert torch.equal(act_wide(pre), torch.tensor([[0.0, 9.5, 10.0, 0.0]]))
    assert act_wide.threshold.item() == 9.0  # evaluation does not move it


def test_batchtopk_is_relu_before_any_training_batch_in_evaluation():
    pre = torch.randn(5, 10)
    assert torch.equal(BatchTopK(10, k=2).eval()(pre), torch.relu(pre))


# --- JumpReLU ------------------------------------------------------------------------------


def test_jumprelu_forward_is_pre_times_step():
    act = JumpReLU(6, theta_init=0.5)
    with torch.no_grad():
        act.threshold.copy_(torch.tensor([0.1, 0.5, 1.0, 2.0, 0.3, 0.7]))
    pre = torch.randn(9, 6) * 2
    assert torch.equal(act(pre), pre * (pre > act.theta))


def test_jumprelu_threshold_learns_from_the_l0_penalty():
    eps = 0.1
    act = JumpReLU(3, theta_init=1.0, bandwidth=eps)
    # Unit 0 has one sample inside the kernel window |pre - theta| < eps / 2, unit 1 two, unit 2
    # none; the pre-activations get no gradient from the L0 term.
    pre = torch.tensor([[1.02, 0.97, 3.0], [0.5, 1.04, 0.0]], requires_grad=True)
    penalty = act.penalty(pre, act(pre))
    assert penalty.item() == pytest.approx(((pre > 1.0).sum() / 2).item())
    penalty.backward()
    # d penalty / d theta = mean_b sum ( -(1/eps) K ) = -(count / 2) / eps (theta = 1)
    expected = torch.tensor([-1 / 2 / eps, -2 / 2 / eps, 0.0])
    assert torch.allclose(act.threshold.grad, expected)
    assert pre.grad is None or not pre.grad.any()


def test_jumprelu_jump_pseudo_derivative():
    eps = 0.1
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    pre = torch.tensor([[1.03, 5.0], [0.2, 1.97]], requires_grad=True)
    jump_relu(pre, theta, eps).sum().backward()
    assert torch.equal(pre.grad, (pre > theta).float())
    # -(theta / eps) K((pre - theta) / eps), summed over the batch
    assert torch.allclose(theta.grad, torch.tensor([-1.0 / eps, -2.0 / eps]))


# --- recover -------------------------------------------------------------------------------


def test_recover_switches_its_remedy_on_only_in_the_hold():
    cfg = make_cfg("arm=recover", "schedule.schedule_epochs=5", "schedule.hold_epochs=4")
    schedule = schedule_of(cfg)
    auxk = AuxKSettings(**arm_module_kw(cfg, schedule, 256)["auxk"])
    assert [auxk.active(e) for e in range(9)] == [False] * 5 + [True] * 4
    cfg = make_cfg(
        "arm=recover",
        "arm.recovery=resample",
        "schedule.schedule_epochs=5",
        "schedule.hold_epochs=4",
        "method=l1",
    )
    assert resample_epochs(cfg.arm, schedule_of(cfg)) == [5.0, 6.0, 7.0, 8.0]
    assert remedy_start_epoch(cfg.arm, schedule_of(cfg)) == 5
    plain = make_cfg("arm=resample", "schedule.schedule_epochs=4")
    assert resample_epochs(plain.arm, schedule_of(plain)) == [1.0, 2.0, 3.0, 4.0]


# --- end to end ----------------------------------------------------------------------------


class _Kill(Exception):
    pass


@pytest.mark.parametrize("arm, method, extra", COMBINATIONS)
def test_arm_trains_and_resumes(tmp_path, monkeypatch, arm, method, extra):
    overrides = (f"arm={arm}", f"method={method}", *extra)
    original = RunRecorder.on_train_epoch_end

    def die_after_two(self, trainer, pl_module):
        original(self, trainer, pl_module)
        if trainer.current_epoch == 1:
            raise _Kill

    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", die_after_two)
    with pytest.raises(_Kill):
        train(make_cfg(*overrides), tmp_path)
    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", original)
    assert train(make_cfg(*overrides, "resume=true"), tmp_path)["status"] == "completed"
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["dead/never"]) for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["arm"], summary["method"]) == ("completed", arm, method)
    if arm == "recover":  # the hold is epoch 2
        column = "train/auxk" if method == "topk" else "remedy/resampled"
        assert [r[column] == 0 for r in rows] == [True, True, False]
    if arm in ("auxk", "batchtopk", "resample", "recover"):
        # The units the remedy treats are logged in every epoch's own row, epoch 0 included.
        assert all(0 <= r["remedy/dead"] <= 500 for r in rows), [r.get("remedy/dead") for r in rows]


# --- remedies sized to the protocol (windows, scale) ----------------------------------------


def test_default_remedy_window_is_one_epoch_or_a_tenth_of_the_squeeze():
    assert default_remedy_window(2048, 10) == 2048  # the demo: one epoch
    assert default_remedy_window(737_280, 50) == 737_280  # the paper: one epoch
    assert default_remedy_window(16_384, 5) == 8_192  # a short squeeze: a tenth of it


def test_auxk_sees_a_unit_silenced_one_epoch_before_k_end():
    # The demo's protocol: 2,048-image epochs of batch 64, k_end read at the end of epoch 9.
    cfg = compose_demo("arm=auxk")
    window = AuxKSettings(**arm_module_kw(cfg, schedule_of(cfg), 2048)["auxk"]).window
    counter = SamplesSinceFired(2)
    fires = torch.tensor([[1.0, 1.0]])
    silent = torch.tensor([[1.0, 0.0]])  # unit 1 stops firing at the start of epoch 9
    for epoch in range(10):
        for _ in range(32):
            counter.update((silent if epoch == 9 else fires).expand(64, 2))
    assert counter.dead_mask(window).tolist() == [False, True]


def compose_demo(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["experiment=falsify_cpu", *overrides])


@pytest.mark.parametrize("arm", ["resample", "recover"])
def test_every_resampling_point_of_the_cpu_study_comes_after_one_window(arm):
    extra = ("arm.recovery=resample", "method=l1") if arm == "recover" else ()
    cfg = compose_demo(f"arm={arm}", *extra)
    validate_config(cfg)
    schedule = schedule_of(cfg)
    (callback,) = arm_callbacks(cfg, schedule, 2048)
    assert all(t * 2048 >= callback.window for t in callback.at)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["arm=auxk", "arm.auxk_window=30000"],
            "arm.auxk_window=30,000 training samples is longer",
        ),
        (["arm=resample", "arm.resample_window=6000"], "arm.resample_at point 0.25 (epoch 2.5"),
    ],
)
def test_a_remedy_that_cannot_act_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(compose_demo(*overrides))


def test_a_resampled_unit_restarts_its_window():
    cfg = make_cfg("arm=resample", "method=topk")
    callback = ResampleCallback([0.5], window=4, pool_size=32, seed=0)
    module = VAESAEModule(1, width=12, k_start=12)
    module.window.samples_since_fired[:] = torch.tensor([10] * 6 + [0] * 6)

    class _Trainer:
        optimizers = [torch.optim.Adam(module.parameters())]
        current_epoch = 0
        datamodule = GroundTruthDataModule(
            "dsprites", source="procedural", batch_size=16, epoch_size=32, eval_size=32,
            eval_batch_size=32,
        )  # fmt: skip

    assert cfg.arm.remedy == "resample"
    assert callback.resample(_Trainer(), module, 0) == 6
    assert module.window.samples_since_fired.tolist() == [0] * 12


def test_batchtopk_threshold_is_positive_when_few_pre_activations_are():
    act = BatchTopK(10, k=4)
    pre = -torch.rand(8, 10)
    pre[0, 0], pre[3, 5] = 0.3, 0.7  # 2 positive entries against k * B = 32 kept
    act(pre)
    assert float(act.threshold) == pytest.approx(0.3)
    act(-torch.rand(8, 10))  # a batch with no positive entry leaves the threshold as it was
    assert float(act.threshold) == pytest.approx(0.3)


def test_jumprelu_threshold_moves_at_the_protocols_length():
    # Pre-activations of the scale the normalised SAE input gives (~0.1): the L0 term alone, at
    # the demo's learning rate, must be able to raise theta through them within a few hundred
    # steps (a log-parameterised theta starting at 1e-3 would move by ~1e-6 per step).
    torch.manual_seed(0)
    act = JumpReLU(64)
    opt = torch.optim.Adam(act.parameters(), lr=1e-3)
    pre = torch.randn(256, 64).abs() * 0.1
    start = float(act.penalty(pre, act(pre)))
    for _ in range(300):
        opt.zero_grad()
        act.penalty(pre, act(pre)).backward()
        opt.step()
    assert start == pytest.approx(64, abs=1)
    assert float(act.penalty(pre, act(pre))) < 0.3 * start


def test_jumprelu_threshold_below_its_floor_still_learns_from_the_l0_penalty():
    act = JumpReLU(3, bandwidth=0.1)
    with torch.no_grad():
        act.threshold.copy_(torch.tensor([-0.2, 0.5, -0.01]))  # pushed below the floor
    pre = torch.tensor([[0.02, 0.51, 0.03], [-0.5, 3.0, 0.0]])
    assert torch.equal(act(pre), pre * (pre > 1e-6 * torch.tensor([1.0, 5e5, 1.0])))
    act.penalty(pre, act(pre)).backward()
    # Units 0 and 2 sit at the floor with samples inside the kernel: the penalty pulls them up.
    assert act.threshold.grad[0] < 0 and act.threshold.grad[2] < 0
