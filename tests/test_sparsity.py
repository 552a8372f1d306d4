import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vaesae.models import VAESAE, SparseAutoencoder, l0_norm, l1_norm, sae_mse, vae_sae_loss
from vaesae.sparsity import (
    L1_COEF_INIT,
    L1_COEF_MAX,
    L1_COEF_MIN,
    SCHEDULE_KINDS,
    KSchedule,
    SparsityScheduleCallback,
    k_schedule,
    schedule_end_epoch,
    total_epochs,
    update_l1_coef,
    validate_schedule,
)

DECAYING = ("linear", "cosine", "exponential", "step")


@pytest.fixture(autouse=True)
def _one_thread():
    # The tensors here are tiny: intra-op threads only add synchronisation, which on a busy
    # 2-core machine made the closed-loop test 30x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DECAYING)
def test_schedule_endpoints(kind):
    assert k_schedule(0, kind) == 500
    assert k_schedule(50, kind) == 50
    assert k_schedule(49.999, kind) >= 50
    assert k_schedule(150, kind) == 50
    assert k_schedule(1e6, kind) == 50


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_schedule_monotone_and_in_range(kind):
    epochs = [i / 37 for i in range(37 * 70)]
    ks = [k_schedule(e, kind, warmup_epochs=5) for e in epochs]
    assert all(isinstance(k, int) for k in ks)
    assert all(a >= b for a, b in zip(ks, ks[1:], strict=False))
    assert min(ks) == 50 and max(ks) <= 500


@pytest.mark.parametrize("kind", DECAYING)
def test_schedule_warmup_then_hold(kind):
    params = {"k_start": 400, "k_end": 40, "warmup_epochs": 3, "schedule_epochs": 10}
    assert [k_schedule(e, kind, **params) for e in (0, 1, 2.99, 3)] == [400] * 4
    assert k_schedule(5.5, kind, **params) < 400
    assert k_schedule(13, kind, **params) == 40
    assert k_schedule(20, kind, **params) == 40


def test_schedule_mid_points():
    # half-way through the decay 500 -> 50
    assert k_schedule(25, "linear") == 275
    assert k_schedule(25, "cosine") == 275
    assert k_schedule(25, "exponential") == round(500 * 0.1**0.5)  # 158.1
    # a quarter of the way
    assert k_schedule(12.5, "linear") == 388  # 387.5 rounds half up
    assert k_schedule(12.5, "cosine") == round(50 + 450 * (1 + math.cos(math.pi / 4)) / 2)  # 434
    assert k_schedule(12.5, "exponential") == round(500 * 0.1**0.25)  # 281


def test_step_schedule_is_piecewise_constant():
    ks = [k_schedule(e, "step") for e in range(52)]
    assert ks == [500] * 10 + [410] * 10 + [320] * 10 + [230] * 10 + [140] * 10 + [50] * 2
    three = [k_schedule(e / 2, "step", 100, 10, schedule_epochs=6, n_steps=3) for e in range(14)]
    assert three == [100] * 4 + [70] * 4 + [40] * 4 + [10] * 2


def test_constant_schedule_is_k_end_from_the_start():
    assert {k_schedule(e, "constant", warmup_epochs=2) for e in (0, 1, 2.5, 30, 200)} == {50}


def test_schedule_lengths():
    assert schedule_end_epoch(warmup_epochs=2, schedule_epochs=50) == 52
    assert total_epochs(warmup_epochs=2, schedule_epochs=50, hold_epochs=100) == 152
    s = KSchedule(kind="cosine", warmup_epochs=1, schedule_epochs=4, hold_epochs=3)
    assert (s.end_epoch, s.total_epochs) == (5, 8)
    assert s.k(s.end_epoch) == 50 and s.k(s.end_epoch - 0.5) > 50


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kind": "sigmoid"}, "kind='sigmoid'.*linear, cosine, exponential, step, constant"),
        ({"k_end": 600, "k_start": 600}, "k_end=600 must be <= the SAE width=500"),
        ({"k_start": 40}, "k_start=40 must be >= k_end=50"),
        ({"k_end": 0}, "k_end=0 must be >= 1"),
        ({"schedule_epochs": 0}, "schedule_epochs=0 must be > 0"),
        ({"warmup_epochs": -1}, "warmup_epochs=-1 must be >= 0"),
        ({"hold_epochs": -2}, "hold_epochs=-2 must be >= 0"),
        ({"n_steps": 0}, "n_steps=0 must be >= 1"),
    ],
)
def test_validate_schedule_errors(overrides, message):
    params = {"kind": "linear", "k_start": 500, "k_end": 50, "width": 500} | overrides
    with pytest.raises(ValueError, match=message) as info:
        validate_schedule(**params)
    assert "\n" not in str(info.value)


def test_schedule_object_validates():
    with pytest.raises(ValueError, match="k_start=10 must be >= k_end=50"):
        KSchedule(k_start=10)
    with pytest.raises(ValueError, match="k_start=500 must be <= the SAE width=300"):
        KSchedule().validate(width=300)
    KSchedule().validate(width=500)


# --- L1 controller ---------------------------------------------------------------------------


def test_controller_direction_and_formula():
    assert update_l1_coef(0.1, l0=80, k_target=50) > 0.1
    assert update_l1_coef(0.1, l0=20, k_target=50) < 0.1
    assert update_l1_coef(0.1, l0=50, k_target=50) == 0.1
    assert update_l1_coef(0.1, 75, 50, eta=0.2) == pytest.approx(0.1 * math.exp(0.2 * 0.5))


def test_controller_clamps():
    assert update_l1_coef(L1_COEF_MAX, 500, 50) == L1_COEF_MAX
    assert update_l1_coef(L1_COEF_MIN, 0, 50) == L1_COEF_MIN
    assert update_l1_coef(0.5, 500, 50, eta=10.0, lo=0.1, hi=1.0) == 1.0
    assert update_l1_coef(0.5, 0, 50, eta=10.0, lo=0.1, hi=1.0) == 0.1


def test_controller_tensor_path_matches_float_path():
    got = update_l1_coef(torch.tensor(0.3), torch.tensor(70.0), 50)
    assert isinstance(got, torch.Tensor)
    assert got.item() == pytest.approx(update_l1_coef(0.3, 70.0, 50), rel=1e-6)


def test_controller_brings_l0_to_target_in_closed_loop():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    dictionary = torch.randn(64, 16, generator=g)
    sae = SparseAutoencoder(d_in=16, width=64, method="l1")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    k_target, coef, l0s = 8, L1_COEF_INIT, []
    for _ in range(400):
        sources = torch.relu(torch.randn(256, 64, generator=g))
        x = (sources * (torch.rand(256, 64, generator=g) < 0.2)) @ dictionary
        s, x_hat = sae(x)
        loss = sae_mse(x, x_hat) + coef * l1_norm(s)
        opt.zero_grad()
        loss.backward()
        opt.step()
        l0s.append(l0_norm(s).item())
        coef = update_l1_coef(coef, l0s[-1], k_target)
    assert l0s[0] > 2 * k_target  # starts far from the target
    assert sum(l0s[-50:]) / 50 == pytest.approx(k_target, rel=0.2)


# --- callback --------------------------------------------------------------------------------

WIDTH = 20


class TinyModule(pl.LightningModule):
    """The callback's protocol: ``model`` (a VAESAE), ``l1_coef``, step outputs with ``l0``."""

    def __init__(self, method: str):
        super().__init__()
        self.model = VAESAE(1, width=WIDTH, method=method)
        self.l1_coef = 0.0
        self.seen_k: list[int] = []
        self.seen_coef: list[float] = []
        self.seen_l0: list[float] = []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        self.seen_k.append(getattr(self.model.sae.activation, "k", None))
        self.seen_coef.append(float(self.l1_coef))
        terms = vae_sae_loss(self.model(x), x, l1_coef=self.l1_coef)
        self.seen_l0.append(terms["l0"].item())
        return {"loss": terms["loss"], "l0": terms["l0"]}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.rand(16, 1, 64, 64)), batch_size=4)


def _fit(module, callback, max_epochs=2, ckpt_path=None):
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[callback],
    )
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


LINEAR = {"kind": "linear", "k_start": WIDTH, "k_end": 4, "schedule_epochs": 2, "hold_epochs": 0}


@pytest.mark.parametrize(
    "granularity, expected",
    [("step", [20, 18, 16, 14, 12, 10, 8, 6]), ("epoch", [20] * 4 + [12] * 4)],
)
def test_callback_sets_topk_k_as_scheduled(granularity, expected):
    torch.manual_seed(0)
    module = TinyModule("topk")
    callback = SparsityScheduleCallback(LINEAR, granularity=granularity)
    trainer = _fit(module, callback)
    assert module.seen_k == expected
    assert module.seen_coef == [0.0] * 8  # k-controlled: lambda is left to the module
    metrics = trainer.callback_metrics
    assert metrics["sparsity/k"].item() == pytest.approx(sum(expected[4:]) / 4)
    assert metrics["sparsity/l0"].item() == pytest.approx(sum(module.seen_l0[4:]) / 4, rel=1e-5)
    assert metrics["sparsity/l1_coef"].item() == 0.0
    assert callback.state_dict() == {
        "k": 6 if granularity == "step" else 12,
        "l1_coef": L1_COEF_INIT,
    }


def test_callback_drives_l1_coef_by_the_controller():
    torch.manual_seed(0)
    module = TinyModule("l1")
    callback = SparsityScheduleCallback(LINEAR, l1_coef_init=0.05, l1_eta=0.5)
    trainer = _fit(module, callback)
    assert module.seen_k == [None] * 8
    ks = [20, 18, 16, 14, 12, 10, 8, 6]
    coef = 0.05
    for step in range(8):
        assert module.seen_coef[step] == pytest.approx(coef, rel=1e-5)
        coef = update_l1_coef(coef, module.seen_l0[step], ks[step], eta=0.5)
    assert callback.state_dict()["l1_coef"] == pytest.approx(coef, rel=1e-5)
    assert float(module.l1_coef) == pytest.approx(coef, rel=1e-5)
    assert trainer.callback_metrics["sparsity/k"].item() == pytest.approx(9.0)
    logged_coef = trainer.callback_metrics["sparsity/l1_coef"].item()
    assert logged_coef == pytest.approx(sum(module.seen_coef[5:] + [coef]) / 4, rel=1e-5)


def test_callback_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    schedule = LINEAR | {"schedule_epochs": 4}
    first = SparsityScheduleCallback(schedule, l1_coef_init=0.05, l1_eta=0.5)
    trainer = _fit(TinyModule("l1"), first)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    state = first.state_dict()

    fresh = SparsityScheduleCallback(schedule)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state

    resumed = SparsityScheduleCallback(schedule, l1_coef_init=0.05, l1_eta=0.5)
    module = TinyModule("l1")
    _fit(module, resumed, max_epochs=3, ckpt_path=path)
    assert module.seen_coef[0] == pytest.approx(state["l1_coef"], rel=1e-6)
    assert len(module.seen_coef) == 4  # only the third epoch ran
    assert resumed.k == KSchedule(**schedule).k(2.75)


def test_callback_rejects_bad_settings():
    with pytest.raises(ValueError, match="granularity='batch'.*step, epoch"):
        SparsityScheduleCallback(LINEAR, granularity="batch")
    with pytest.raises(ValueError, match="l1_coef_min"):
        SparsityScheduleCallback(LINEAR, l1_coef_init=0.0)
    with pytest.raises(ValueError, match="l1_eta"):
        SparsityScheduleCallback(LINEAR, l1_eta=0.0)
    too_wide = SparsityScheduleCallback(LINEAR | {"k_start": 50, "k_end": 30})
    with pytest.raises(ValueError, match="k_end=30 must be <= the SAE width=20"):
        _fit(TinyModule("topk"), too_wide)


def test_callback_needs_l0_in_step_outputs():
    class NoL0(TinyModule):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    with pytest.raises(KeyError, match="'l0'"):
        _fit(NoL0("topk"), SparsityScheduleCallback(LINEAR))
