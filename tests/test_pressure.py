"""Sparsity pressure of the schedule callback: the no-squeeze control and the fixed-k rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vaesae.models import make_activation
from vaesae.sparsity import KSchedule, SparsityScheduleCallback


class FakeModule(SimpleNamespace):
    """What the callback touches of the LightningModule: the SAE's rule, l1_coef, log."""

    def __init__(self, method: str) -> None:
        kw = {"k": 500} if method == "topk" else {}
        activation = make_activation(method, 500, **kw)
        super().__init__(
            model=SimpleNamespace(sae=SimpleNamespace(activation=activation)),
            l1_coef=0.0,
            device=torch.device("cpu"),
            logged={},
        )

    def log(self, name, value, **kwargs):
        self.logged.setdefault(name, []).append(float(value))


def drive(pressure: str, method: str, epochs: int = 4, steps: int = 5, l0: float = 200.0):
    """Run the callback over a few epochs of fake steps whose codes have L0 = ``l0``."""
    callback = SparsityScheduleCallback(KSchedule("linear", 500, 50, 0, 3, 1), pressure=pressure)
    module = FakeModule(method)
    ks, coefs = [], []
    for epoch in range(epochs):
        trainer = SimpleNamespace(current_epoch=epoch, num_training_batches=steps)
        for step in range(steps):
            callback.on_train_batch_start(trainer, module, None, step)
            ks.append(callback.k)
            coefs.append(float(module.l1_coef))
            if method == "topk":
                assert module.model.sae.activation.k == callback.k
            out = {"loss": torch.tensor(0.0), "l0": torch.tensor(l0)}
            callback.on_train_batch_end(trainer, module, out, None, step)
    return ks, coefs


@pytest.mark.parametrize("method", ["topk", "l1"])
def test_no_squeeze_keeps_k_at_width_and_lambda_at_zero(method):
    ks, coefs = drive("none", method)
    assert set(ks) == {500}
    if method == "l1":
        assert set(coefs) == {0.0}  # the controller never runs


@pytest.mark.parametrize("method", ["topk", "l1"])
def test_fixed_k_targets_k_end_from_the_first_step(method):
    ks, coefs = drive("fixed", method)
    assert ks[0] == 50 and set(ks) == {50}
    if method == "l1":
        assert coefs[-1] > coefs[0]  # L0 = 200 > 50: the controller raises lambda


def test_schedule_pressure_follows_the_ramp_and_bad_pressure_is_refused():
    ks, _ = drive("schedule", "topk")
    assert ks[0] == 500 and ks[-1] == 50 and ks == sorted(ks, reverse=True)
    with pytest.raises(ValueError, match="pressure='hard'.*schedule, none, fixed"):
        SparsityScheduleCallback(KSchedule(), pressure="hard")
