"""Dead-neuron rules, FiringStats, the training-window counter and transitions (known answers)."""

import pytest
import torch

from vaesae.metrics import (
    DEAD_KINDS,
    FiringStats,
    SamplesSinceFired,
    advance_since_fired,
    dead_mask,
    dead_transitions,
    min_samples_for_frequency,
)

N = 2000
EPS = 2.0**-10  # magnitude threshold, exact in float32 and float64


def constructed_acts() -> torch.Tensor:
    """2000 samples, 7 neurons whose fate under every rule is known by construction.

    0: all zero; 1: negative only; 2: fires once at EPS/2; 3: fires 3 times at 1.0 (frequency
    1.5e-3); 4: fires exactly twice at 1.0 (frequency 1e-3, on the threshold); 5: fires on every
    sample at exactly EPS (magnitude on the threshold); 6: dense, up to 4.0.
    """
    acts = torch.zeros(N, 7)
    acts[:, 1] = -1.0
    acts[17, 2] = EPS / 2
    acts[[3, 500, 1999], 3] = 1.0
    acts[[0, 1000], 4] = 1.0
    acts[:, 5] = EPS
    acts[:, 6] = torch.linspace(0.5, 4.0, N)
    return acts


EXPECTED = {
    ("never", 0.0): [True, True, False, False, False, False, False],
    ("magnitude", 0.0): [True, True, False, False, False, False, False],
    ("magnitude", EPS): [True, True, True, False, False, True, False],
    ("frequency", 1e-3): [True, True, True, False, False, False, False],
    ("frequency", 1.4e-3): [True, True, True, False, True, False, False],
    ("frequency", 2e-3): [True, True, True, True, True, False, False],
    ("frequency", 1.0): [True, True, True, True, True, False, False],
}


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_dead_mask_known_answers(rule):
    kind, value = rule
    mask = dead_mask(constructed_acts(), kind, value)
    assert mask.dtype == torch.bool
    assert mask.tolist() == EXPECTED[rule]


def test_dead_mask_unknown_kind_names_valid_kinds():
    with pytest.raises(ValueError, match="never, magnitude, frequency"):
        dead_mask(constructed_acts(), "window")
    assert DEAD_KINDS == ("never", "magnitude", "frequency")


def test_frequency_rule_refused_when_too_few_samples():
    acts = constructed_acts()
    with pytest.raises(ValueError, match=r"at least 1001 samples, got 1000.*'never'"):
        dead_mask(acts[:1000], "frequency", 1e-3)
    dead_mask(acts[:1001], "frequency", 1e-3)
    with pytest.raises(ValueError, match="at least 100001 samples, got 2000"):
        dead_mask(acts, "frequency", 1e-5)
    with pytest.raises(ValueError, match=r"threshold in \(0, 1\]"):
        dead_mask(acts, "frequency")


@pytest.mark.parametrize(
    ("value", "minimum"), [(1e-3, 1001), (1e-4, 10001), (1e-5, 100001), (0.3, 4), (0.25, 5)]
)
def test_min_samples_for_frequency(value, minimum):
    assert min_samples_for_frequency(value) == minimum
    assert minimum * value > 1.0 >= (minimum - 1) * value


@pytest.mark.parametrize("tau", [1e-3, 1e-4, 0.25])
def test_frequency_rule_differs_from_never_at_its_minimum(tau):
    """At the smallest accepted N a unit that fires once is dead under the frequency rule but
    alive under ``never``: the rule is never a copy of ``never``."""
    n = min_samples_for_frequency(tau)
    acts = torch.zeros(n, 3)
    acts[0, 1] = 1.0  # fires once
    acts[:, 2] = 1.0  # always fires
    assert dead_mask(acts, "never").tolist() == [True, False, False]
    assert dead_mask(acts, "frequency", tau).tolist() == [True, True, False]


def random_acts(n: int = 3001, width: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(n, width, generator=g) - 2.5)
    acts[:, :5] = 0.0
    acts[:, 5] = -torch.rand(n, generator=g)
    acts[:, 6] = 0.0
    acts[11, 6] = 3.0
    return acts


@pytest.mark.parametrize(
    "rule",
    [
        ("never", 0.0),
        ("magnitude", 0.0),
        ("magnitude", 0.5),
        ("frequency", 1e-3),
        ("frequency", 5e-3),
    ],
)
def test_firing_stats_uneven_batches_equal_dead_mask_on_whole(rule):
    acts = random_acts()
    stats = FiringStats(acts.shape[1])
    start = 0
    for size in (1, 7, 0, 993, 2000):
        stats.update(acts[start : start + size])
        start += size
    assert start == acts.shape[0]
    expected = dead_mask(acts, *rule)
    assert 0 < int(expected.sum()) < acts.shape[1]
    assert torch.equal(stats.dead_mask(*rule), expected)
    summary = stats.compute()
    assert summary.num_samples == acts.shape[0]
    assert torch.equal(summary.fire_count, (acts > 0).sum(0))
    assert torch.equal(summary.max_activation, acts.amax(0).double())
    assert torch.equal(stats.frequency(), (acts > 0).double().mean(0))


def test_firing_stats_reset_and_low_precision_input():
    acts = random_acts(500, 8)
    stats = FiringStats(8)
    stats.update(torch.full((3, 8), 9.0))
    stats.reset()
    stats.update(acts.to(torch.bfloat16))
    assert torch.equal(stats.dead_mask("never"), dead_mask(acts.to(torch.bfloat16), "never"))
    assert stats.compute().max_activation.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\[batch, 8\]"):
        stats.update(torch.zeros(4, 9))


def test_samples_since_fired_hand_built_sequence():
    tracker = SamplesSinceFired(3)
    # batch 1: neuron 0 fires on its first sample, neuron 1 on its last, neuron 2 never
    tracker.update(torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 2.0, 0.0]]))
    assert tracker.samples_since_fired.tolist() == [2, 0, 3]
    # batch 2: only neuron 1 fires, on the first of two samples
    tracker.update(torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, -3.0]]))
    assert tracker.samples_since_fired.tolist() == [4, 1, 5]
    assert tracker.dead_mask(4).tolist() == [True, False, True]
    assert tracker.dead_mask(5).tolist() == [False, False, True]
    assert tracker.dead_mask(6).tolist() == [False, False, False]
    # batch 3: neuron 0 fires on both samples, neuron 2 on the first
    tracker.update(torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert tracker.samples_since_fired.tolist() == [0, 3, 1]
    tracker.update(torch.zeros(0, 3))
    assert tracker.samples_since_fired.tolist() == [0, 3, 1]

    restored = SamplesSinceFired(3)
    restored.load_state_dict(tracker.state_dict())
    assert restored.samples_since_fired.tolist() == [0, 3, 1]
    with pytest.raises(ValueError, match="positive"):
        tracker.dead_mask(0)


def test_samples_since_fired_matches_brute_force():
    acts = random_acts(257, 12)
    tracker = SamplesSinceFired(12)
    for start in range(0, 257, 50):
        tracker.update(acts[start : start + 50])
    fired = acts > 0
    for m in range(12):
        hits = fired[:, m].nonzero().flatten()
        expected = 257 - 1 - int(hits[-1]) if hits.numel() else 257
        assert int(tracker.samples_since_fired[m]) == expected


def test_dead_transitions():
    before = torch.tensor([True, True, False, False, True])
    now = torch.tensor([True, False, True, False, False])
    t = dead_transitions(before, now)
    assert t.revived.tolist() == [False, True, False, False, True]
    assert t.newly_dead.tolist() == [False, False, True, False, False]
    assert (t.num_revived, t.num_newly_dead) == (2, 1)
    with pytest.raises(ValueError, match="equal shape"):
        dead_transitions(before, now[:4])


def test_window_counters_of_stacked_runs_advance_as_their_own():
    # A pack's members: (N, B, M) activations advance (N, M) counters as N trackers would.
    gen = torch.Generator().manual_seed(0)
    trackers = [SamplesSinceFired(7) for _ in range(3)]
    stacked = torch.zeros(3, 7, dtype=torch.long)
    for _ in range(5):
        acts = torch.relu(torch.randn(3, 4, 7, generator=gen) - 1.0)
        for tracker, a in zip(trackers, acts, strict=True):
            tracker.update(a)
        stacked = advance_since_fired(stacked, acts)
        assert torch.equal(stacked, torch.stack([t.samples_since_fired for t in trackers]))
    assert stacked.max() > 4  # some unit went a whole batch without firing
