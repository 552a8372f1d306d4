"""The "k_end" epoch: its end-of-epoch evaluation runs at k = k_end for every schedule."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from vaesae.config import ConfigError, reference_epoch, validate_config
from vaesae.sparsity import SCHEDULE_KINDS, KSchedule
from vaesae.train import CONF_DIR


def last_step_k(schedule: KSchedule, epoch: int, granularity: str, steps: int) -> int:
    """k of an epoch's last training step, computed as the schedule callback does."""
    t = epoch + ((steps - 1) / steps if granularity == "step" else 0.0)
    return schedule.k(t)


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
@pytest.mark.parametrize("granularity", ["step", "epoch"])
@pytest.mark.parametrize("steps", [1, 4, 32, 2880])
@pytest.mark.parametrize("schedule_epochs", [3, 10, 50])
def test_reference_evaluation_runs_at_k_end(kind, granularity, steps, schedule_epochs):
    schedule = KSchedule(kind, 500, 50, 1, schedule_epochs, 2)
    ref = schedule.reference_epoch(granularity, steps)
    assert ref is not None
    assert last_step_k(schedule, ref, granularity, steps) == 50
    # It is the first such epoch at or after the schedule's last one: never a later hold epoch.
    assert ref in (schedule.end_epoch - 1, schedule.end_epoch)
    if ref == schedule.end_epoch:
        assert last_step_k(schedule, ref - 1, granularity, steps) > 50 or kind == "constant"


def test_step_kind_reference_is_the_first_hold_epoch():
    # The step kind's last drop (140 -> 50 with 5 drops) comes at the end of the decay, so the
    # schedule's last epoch is still evaluated at k = 140.
    schedule = KSchedule("step", 500, 50, 0, 50, 100, n_steps=5)
    assert schedule.k(49.999) == 140
    assert schedule.reference_epoch("step", 2880) == 50
    linear = KSchedule("linear", 500, 50, 0, 50, 100)
    assert linear.reference_epoch("step", 2880) == 49  # the paper's epoch 50, at k = 50
    assert linear.reference_epoch("step", 4) == 50  # 4 steps: the last one is still at k = 59
    assert linear.reference_epoch("epoch", 2880) == 50


@pytest.mark.parametrize(
    ("kind", "granularity"), [("step", "step"), ("linear", "epoch"), ("cosine", "epoch")]
)
def test_config_without_a_k_end_evaluation_is_refused(kind, granularity):
    assert KSchedule(kind, 500, 50, 0, 3, 0).reference_epoch(granularity, 8) is None
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=smoke",
                f"schedule={kind}",
                f"schedule.granularity={granularity}",
                "schedule.hold_epochs=0",
            ],
        )
    with pytest.raises(
        ConfigError, match="never evaluates the model at k_end=50.*hold_epochs >= 1"
    ):
        validate_config(cfg)


def test_reference_epoch_of_a_config_uses_its_steps_per_epoch():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        smoke = compose("train", overrides=["experiment=smoke"])  # 512 / 64 = 8 steps
        paper = compose("train", overrides=["experiment=paper"])  # 737,280 / 256 = 2880 steps
    assert reference_epoch(smoke) == 3  # the linear 3-epoch ramp's last step is at k = 69
    assert reference_epoch(paper) == 49
