"""The wall-time estimate's arithmetic and wording (pure functions; nothing is timed)."""

from __future__ import annotations

import pytest

from vaesae.walltime import LONG_CPU_RUN_S, format_duration, seconds_left, smaller_sizes_hint


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
