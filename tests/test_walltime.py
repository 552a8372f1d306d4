"""The wall-time estimate's arithmetic and wording (pure functions; nothing is timed)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from vaesae.walltime import (
    LONG_CPU_RUN_S,
    WallTimeEstimate,
    format_duration,
    seconds_left,
    smaller_sizes_hint,
)


def test_seconds_left_is_steps_at_the_rate_plus_the_evaluations():
    assert seconds_left(0.5, 100) == 50.0
    assert seconds_left(0.5, 100, eval_s=4.0, evals_left=3) == 62.0
    # No evaluation timed yet: the steps alone.
    assert seconds_left(0.5, 100, eval_s=None, evals_left=3) == 50.0
    assert seconds_left(0.5, 0, eval_s=4.0, evals_left=0) == 0.0


def test_seconds_left_refuses_negative_inputs():
    with pytest.raises(ValueError):
        seconds_left(-1.0, 10)
    with pytest.raises(ValueError):
        seconds_left(1.0, -10)


def test_the_paper_protocol_on_a_cpu_takes_days():
    # 150 dSprites epochs of 737,280 images at batch 64 and 846 images/s (docs: Benchmarks).
    steps = 150 * (737_280 // 64)
    hours = seconds_left(64 / 846, steps) / 3600
    assert 36 < hours < 37


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0 s"),
        (45.9, "45 s"),
        (450, "7 min 30 s"),
        (3600, "1 h 00 min"),
        (7500, "2 h 05 min"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 04 h"),
        (-5, "0 s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_a_long_cpu_run_names_the_smaller_sizes():
    hint = smaller_sizes_hint(LONG_CPU_RUN_S + 1, "cpu")
    assert hint is not None
    assert "experiment=demo" in hint and "experiment=smoke" in hint and "trainer=gpu" in hint
    assert smaller_sizes_hint(LONG_CPU_RUN_S, "cpu") is None
    assert smaller_sizes_hint(10 * LONG_CPU_RUN_S, "gpu") is None


def _one_epoch(estimate: WallTimeEstimate, steps: int) -> None:
    trainer = SimpleNamespace(global_step=0, current_epoch=0)
    for b in range(steps):
        trainer.global_step += 1
        estimate.on_train_batch_end(trainer, None, None, None, b)  # pyright: ignore[reportArgumentType]
    estimate.on_train_epoch_end(trainer, None)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("log_progress", [True, False])
def test_each_epoch_logs_the_time_left_unless_a_pack_logs_it(caplog, log_progress):
    estimate = WallTimeEstimate(3 * 30, 3, "cpu", name="run-a", log_progress=log_progress)
    with caplog.at_level(logging.INFO, logger="vaesae"):
        _one_epoch(estimate, 30)
    lines = [r.getMessage() for r in caplog.records]
    # The time left is known from the timed steps either way (the progress bar reads it).
    assert estimate.left(30, 1) is not None
    if log_progress:
        assert any(line.startswith("expected wall time:") for line in lines)
        assert any(line.startswith("run-a: 1 of 3 epochs done, about ") for line in lines)
    else:
        assert lines == []
