import dataclasses
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, TensorDataset

from vaesae.models import VAESAE, SparseAutoencoder, l0_norm, l1_norm, sae_mse, vae_sae_loss
from vaesae.sparsity import (
    L1_COEF_INIT,
    SCHEDULE_KINDS,
    KSchedule,
    L1Gains,
    L1State,
    SparsityScheduleCallback,
    k_schedule,
    l1_advance,
    l1_control_step,
    l1_initial_state,
    l1_inputs,
    l1_state_of,
    l1_state_to,
    schedule_end_epoch,
    stack_l1_inputs,
    stack_l1_states,
    total_epochs,
    validate_schedule,
)
from vaesae.train import CONF_DIR

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


def _steps(gains, pairs, k_end=50, state=None, k_ahead=None):
    """Run the controller over (l0, k) pairs; returns the states after each step."""
    state = l1_initial_state(gains) if state is None else state
    states = []
    for l0, k in pairs:
        state = l1_control_step(state, l0, k, k_end, gains, k_ahead)
        states.append(state)
    return states


def test_controller_formula_once_engaged():
    g = L1Gains(coef_init=0.1, ki=0.2, kp=0.5, kff=2.0, smoothing=0.5, near=1.0)
    first, second = _steps(g, [(150.0, 100), (300.0, 98)])
    e1 = math.log(151 / 101)
    assert first.engaged and first.error == pytest.approx(e1)
    assert first.integral == pytest.approx(math.log(0.1) + min(0.2 * e1, g.max_rise))
    assert first.coef == pytest.approx(math.exp(first.integral + 0.5 * e1))
    e2 = e1 + 0.5 * (math.log(301 / 99) - e1)
    step = min(0.2 * e2 + 2.0 * math.log(100 / 98), g.max_rise)
    assert second.error == pytest.approx(e2)
    assert second.integral == pytest.approx(first.integral + step)
    assert second.coef == pytest.approx(math.exp(second.integral + 0.5 * e2))
    # denser than the target raises lambda, sparser lowers it
    (low,) = _steps(g, [(40.0, 100)], k_end=10, state=first)
    assert low.coef < first.coef < second.coef


def test_integral_gain_is_slow_just_above_k_and_fast_elsewhere():
    fixed = {"coef_init": 0.1, "ki": 0.2, "ki_near": 0.02, "kp": 0.0, "kff": 0.0, "smoothing": 1.0}
    g = L1Gains(near=1.5, max_rise=1.0, **fixed)
    start = L1State(math.log(0.1), 0.1, 0.0, 100.0, True)

    def rise(l0):
        return l1_control_step(start, l0, 100, 50, g).integral - math.log(0.1)

    below, inside, edge = math.log(81 / 101), math.log(131 / 101), math.log(1.5)
    beyond = math.log(181 / 101)
    assert rise(80.0) == pytest.approx(0.2 * below)  # sparser than k: the fast gain
    assert rise(130.0) == pytest.approx(0.02 * inside)  # k <= L0 <= 1.5 k: the slow one
    # beyond the band the fast gain acts on the excess only, so the term is continuous
    assert rise(180.0) == pytest.approx(0.02 * edge + 0.2 * (beyond - edge))
    assert rise(1.5 * 101 - 1) == pytest.approx(0.02 * edge)
    # near = 1 is one gain everywhere
    single = L1Gains(near=1.0, max_rise=1.0, **fixed)
    assert l1_control_step(start, 130.0, 100, 50, single).integral == pytest.approx(
        math.log(0.1) + 0.2 * inside
    )


def test_controller_holds_lambda_while_k_is_out_of_reach():
    g = L1Gains(coef_init=0.01)
    # k falls from 500 towards a natural L0 of 150: lambda must neither sink nor move at all
    states = _steps(g, [(150.0, k) for k in range(500, 150, -10)])
    assert [s.coef for s in states] == pytest.approx([0.01] * len(states), rel=1e-12)
    assert not any(s.engaged for s in states)
    # once the smoothed L0 reaches k the loop closes and lambda rises
    engaged = _steps(g, [(150.0, 140)] * 10, state=states[-1])
    assert engaged[-1].engaged and engaged[-1].coef > 0.01


def test_lead_climb_raises_lambda_once_l0_reaches_the_target_ahead():
    g = L1Gains(coef_init=0.01, smoothing=1.0, near=1.0)
    # L0 = 150 below k = 300; the target ahead is 200, then 140: no climb, then max_rise per step
    far = _steps(g, [(150.0, 300)] * 5, k_ahead=200)
    assert [s.coef for s in far] == pytest.approx([0.01] * 5, rel=1e-12)
    near = _steps(g, [(150.0, 300)] * 5, state=far[-1], k_ahead=140)
    assert not any(s.engaged for s in near)
    assert [s.integral for s in near] == pytest.approx(
        math.log(0.01) + g.max_rise * np.arange(1, 6)
    )
    assert [s.coef for s in near] == pytest.approx([math.exp(s.integral) for s in near])
    # once the loop closes only the closed-loop law moves lambda
    (closed,) = _steps(g, [(150.0, 140)], state=near[-1], k_ahead=50)
    assert closed.engaged
    e = math.log(151 / 141)
    assert closed.integral == pytest.approx(
        near[-1].integral + min(g.ki * e + g.kff * math.log(300 / 140), g.max_rise)
    )


def test_lead_climb_stops_where_l0_answers():
    # The climb starts at L0 = 150 (the target ahead is 140); once L0 has fallen below
    # knee * 150 = 135 the climb stops and lambda holds while the loop is open; it climbs again
    # if L0 rises back above. With knee = 0 it climbs on.
    g = L1Gains(coef_init=0.01, smoothing=1.0, near=1.0, knee=0.9)
    pairs = [(150.0, 300)] * 3 + [(140.0, 300)] * 2 + [(130.0, 300)] * 3 + [(140.0, 300)] * 2
    states = _steps(g, pairs, k_ahead=100)
    rises = np.diff([math.log(g.coef_init), *(s.integral for s in states)])
    assert rises == pytest.approx([g.max_rise] * 5 + [0.0] * 3 + [g.max_rise] * 2)
    assert states[0].climb_from == pytest.approx(math.log(151))  # set once, at the first step
    assert states[-1].climb_from == pytest.approx(math.log(151))
    assert not any(s.engaged for s in states)
    off = _steps(L1Gains(coef_init=0.01, smoothing=1.0, near=1.0, knee=0.0), pairs, k_ahead=100)
    assert off[-1].integral == pytest.approx(math.log(0.01) + 10 * g.max_rise)


def test_feed_forward_acts_only_while_l0_is_at_or_above_k():
    g = L1Gains(coef_init=0.01, smoothing=1.0, kp=0.0, max_rise=1.0, near=1.0)
    start = L1State(math.log(0.01), 0.01, 0.0, 110.0, True)
    slope = math.log(101 / 100)  # the target d steps on falls by 1 %
    below = l1_control_step(start, 90.0, 100, 50, g, 100, slope)
    assert below.integral == pytest.approx(math.log(0.01) + g.ki * math.log(91 / 101))
    above = l1_control_step(start, 120.0, 100, 50, g, 100, slope)
    e = math.log(121 / 101)
    assert above.integral == pytest.approx(math.log(0.01) + g.ki * e + g.kff * slope)
    # without a slope from the caller the current one, log(k_prev / k), is fed forward
    current = l1_control_step(start, 120.0, 100, 50, g)
    assert current.integral == pytest.approx(math.log(0.01) + g.ki * e + g.kff * math.log(1.1))


def test_controller_engages_at_k_end_even_below_target():
    g = L1Gains(coef_init=0.01)
    (state,) = _steps(g, [(20.0, 50)], k_end=50)
    assert state.engaged and state.coef < 0.01


def test_controller_rate_bounds_and_clamps():
    bounds = {"coef_min": 0.5, "coef_max": 2.0, "max_rise": 0.1, "max_fall": 0.05}
    g = L1Gains(coef_init=1.0, ki=10.0, kp=0.0, smoothing=1.0, **bounds)
    up = _steps(g, [(500.0, 50)] * 20, k_end=50)
    assert up[0].integral == pytest.approx(0.1)  # bounded rise per step
    assert up[-1].coef == pytest.approx(2.0)  # and the clamp
    assert up[-1].integral == pytest.approx(math.log(2.0))  # no windup beyond it
    down = _steps(g, [(1.0, 50)] * 3, state=up[-1])
    assert [d.integral for d in down] == pytest.approx(math.log(2.0) - 0.05 * np.arange(1, 4))


def test_controller_tensor_path_matches_float_path():
    g = L1Gains()
    pairs = [(180.0, 500), (150.0, 200), (160.0, 150), (90.0, 120), (40.0, 60), (45.0, 50)]
    floats = _steps(g, pairs)
    on_cpu = l1_initial_state(g, torch.device("cpu"))
    tensors = _steps(g, [(torch.tensor(l0), k) for l0, k in pairs], state=on_cpu)
    for f, t in zip(floats, tensors, strict=True):
        assert isinstance(t.coef, torch.Tensor) and t.coef.dtype == torch.float32
        assert t.coef.item() == pytest.approx(f.coef, rel=1e-5)
        assert bool(t.engaged) == f.engaged


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"coef_init": 0.0}, "l1_coef_min=.* <= l1_coef_init=0.0"),
        ({"coef_min": 2.0, "coef_max": 1.0}, "l1_coef_min=2.0"),
        ({"ki": 0.0}, "l1_ki=0.0 must be > 0"),
        ({"ki_near": -0.01}, "l1_ki_near=-0.01 must be > 0"),
        ({"near": 0.9}, r"l1_near=0.9 must be >= 1 \(a ratio L0 / k\)"),
        ({"max_rise": -1.0}, "l1_max_rise=-1.0 must be > 0"),
        ({"max_fall": 0.0}, "l1_max_fall=0.0 must be > 0"),
        ({"kp": -0.1}, "l1_kp=-0.1 must be >= 0"),
        ({"kff": -1.0}, "l1_kff=-1.0 must be >= 0"),
        ({"smoothing": 1.5}, r"l1_smoothing=1.5 must be in \(0, 1\]"),
        ({"lead": -1}, r"l1_lead=-1 must be an integer >= 0 \(steps\)"),
        ({"track_lead": 1.5}, r"l1_track_lead=1.5 must be an integer >= 0 \(steps\)"),
        ({"knee": 1.0}, r"l1_knee=1.0 must be in \[0, 1\)"),
        ({"ff_lead": 2.5}, r"l1_ff_lead=2.5 must be an integer >= 0 \(steps\)"),
    ],
)
def test_controller_settings_are_validated(overrides, message):
    with pytest.raises(ValueError, match=message):
        L1Gains(**overrides)


# A synthetic plant: L0 relaxes with a lag of tau steps towards width * sigmoid(-a (log lambda - c))
# (natural L0 = width when lambda -> 0), c drifts slowly, and each measurement has 3 % noise. The
# knee (lambda = 3) sits ~3.4 nats above coef_init, as on the demo's trained models (lambda ~ 5-35
# holds k = 50). TAU is a fast plant; on the demo's VAE-SAE, L0 turned 40-60 steps after lambda
# did, as on a plant with DEMO_TAU.
PLANT_WIDTH, TAU, DEMO_TAU = 200.0, 8.0, 30.0


PLANT_C = math.log(3.0)  # log lambda at which the plant's L0 is half its natural value


def _plant(targets, k_end, gains, seed=0, a=1.5, c=PLANT_C, drift=0.5, tau=TAU):
    """Closed loop on the plant; returns (k, true L0, lambda, engaged) per step."""
    rng = np.random.default_rng(seed)
    noise = 1 + 0.03 * rng.standard_normal(len(targets))
    state, l0, rows = l1_initial_state(gains), PLANT_WIDTH, []
    for t, k in enumerate(targets):
        c_t = c + drift * t / len(targets)
        l0 += (PLANT_WIDTH / (1 + math.exp(a * (math.log(state.coef) - c_t))) - l0) / tau
        rows.append((k, l0, state.coef, state.engaged))
        tracked = targets[min(t + gains.track_lead, len(targets) - 1)]  # as the callback does
        state = l1_control_step(
            state, l0 * noise[t], tracked, k_end, gains, *_ahead(targets, t, gains)
        )
    return rows


def _ahead(targets, t, gains):
    """(target lead steps on, log slope ff_lead steps on) as the callback computes them."""
    at = lambda steps: targets[min(t + steps, len(targets) - 1)]  # noqa: E731
    d = gains.ff_lead
    return at(gains.lead), (math.log(at(d - 1) / at(d)) if d else None)


def _ramp(n_ramp, n_hold, k_start=500, k_end=50):
    ramp = [k_schedule(t, "linear", k_start, k_end, schedule_epochs=n_ramp) for t in range(n_ramp)]
    return ramp + [k_end] * n_hold


def _ratios(rows):
    return np.array([l0 / k for k, l0, _, _ in rows])


def _engaged_at(rows):
    return next(t for t, row in enumerate(rows) if row[3])


@pytest.mark.parametrize("seed", [0, 1])
def test_controller_tracks_a_ramp_on_a_synthetic_plant(seed):
    # 500 -> 50 over 2000 steps, then 1000 held, on the fast plant. Settling time: 400 steps after
    # engaging.
    gains = L1Gains()
    rows = _plant(_ramp(2000, 1000), 50, gains, seed)
    ratio = _ratios(rows)
    engaged_at = _engaged_at(rows)
    climb_at = next(t for t, row in enumerate(rows) if row[2] > gains.coef_init * (1 + 1e-9))
    # no windup: lambda holds coef_init until L0 meets the target `lead` steps on, then rises by
    # exactly max_rise per step or holds (noise, or L0 answering: the knee) until the loop closes
    assert climb_at < engaged_at
    rises = np.diff(np.log([row[2] for row in rows[climb_at - 1 : engaged_at]]))
    climbing = np.isclose(rises, gains.max_rise, rtol=1e-6)
    assert (climbing | np.isclose(rises, 0.0, atol=1e-9)).all()
    # the climb stops below the plant's knee (lambda = 3 halves L0), where L0 starts to answer
    assert math.log(rows[engaged_at][2]) < PLANT_C
    # the loop closed where k met L0, which the climb had lowered from its natural value to about
    # knee times it
    assert 0.85 * PLANT_WIDTH <= rows[engaged_at][0] <= 1.05 * PLANT_WIDTH
    assert np.abs(ratio[engaged_at + 400 :] - 1).max() <= 0.1
    assert ratio[engaged_at:].min() >= 0.88  # no deep undershoot
    # no sustained oscillation: the last 500 held steps stay within the noise's reach
    assert np.abs(ratio[-500:] - 1).max() <= 0.04


@pytest.mark.parametrize("seed", [0, 1])
def test_controller_short_schedule_is_at_k_at_k_end(seed):
    # The demo's length (a 320-step ramp, 160 held, 32 steps per epoch) on a plant as slow as the
    # demo's. With the set point track_lead steps on, L0 is within 10 % of k at the end of the
    # first epoch at k_end (the report's reference epoch) and in the last epoch, and never falls
    # far below k; with the current k as set point it arrives an epoch late (~0.82 k).
    rows = _plant(_ramp(320, 160), 50, L1Gains(), seed, tau=DEMO_TAU)
    ratio = _ratios(rows)
    assert abs(ratio[351] - 1) <= 0.1
    assert np.abs(ratio[-32:] - 1).max() <= 0.1
    assert ratio[320:].min() >= 0.7
    current = _ratios(_plant(_ramp(320, 160), 50, L1Gains(track_lead=0), seed, tau=DEMO_TAU))
    assert abs(current[351] - 1) > 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_feed_forward_looks_ahead_on_a_short_ramp(seed):
    # The feed-forward alone (no knee stop, no tracked lead, one gain everywhere, the climb from
    # far below the knee), a 20-step lag: the slope ff_lead steps on keeps L0 above 0.85 k after
    # the loop closes; the current slope lets lambda rise for the whole lag after the ramp stops
    # and L0 falls to ~0.75 k.
    alone = {"coef_init": 1e-3, "lead": 100, "knee": 0.0, "track_lead": 0, "near": 1.0}
    ahead = _plant(_ramp(320, 160), 50, L1Gains(**alone), seed, tau=20.0)
    assert _ratios(ahead)[_engaged_at(ahead) :].min() >= 0.85
    current = _ratios(_plant(_ramp(320, 160), 50, L1Gains(**alone, ff_lead=0), seed, tau=20.0))
    assert current[_engaged_at(ahead) :].min() < 0.8


def _step_drop(gains):
    # k held at 80 (engaged from the start, natural L0 200), then dropped to 40.
    return _ratios(_plant([80] * 600 + [40] * 900, 40, gains, drift=0.0))


def test_controller_follows_a_step_drop_without_undershoot():
    # Settling time: 500 steps for the first target (the climb, then the slow band), 200 after
    # the drop.
    ratio = _step_drop(L1Gains())
    # (from step 584 the set point, track_lead steps on, is already the dropped target)
    assert np.abs(ratio[500:584] - 1).max() <= 0.1
    assert np.abs(ratio[800:] - 1).max() <= 0.1
    assert ratio[600:].min() >= 0.8
    early, late = np.abs(ratio[800:1100] - 1).max(), np.abs(ratio[1200:] - 1).max()
    assert late <= max(early, 0.03)  # the error does not grow back: no sustained oscillation


def test_synthetic_plant_checks_catch_an_aggressive_controller():
    # The same checks fail for gains that overshoot: the tests above can fail.
    fast = L1Gains(ki=1.0, ki_near=1.0, kp=1.0, max_rise=1.0, max_fall=1.0)
    ratio = _step_drop(fast)
    assert ratio[600:].min() < 0.8
    assert np.abs(_ratios(_plant(_ramp(2000, 1000), 50, fast))[-500:] - 1).max() > 0.04


def test_controller_brings_l0_to_target_in_closed_loop():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    dictionary = torch.randn(64, 16, generator=g)
    sae = SparseAutoencoder(d_in=16, width=64, method="l1")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    gains = L1Gains()
    k_target, state, l0s = 8, l1_initial_state(gains), []
    for _ in range(400):
        sources = torch.relu(torch.randn(256, 64, generator=g))
        x = (sources * (torch.rand(256, 64, generator=g) < 0.2)) @ dictionary
        out = sae(x)
        loss = sae_mse(out.x, out.x_hat) + state.coef * l1_norm(out.codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        l0s.append(l0_norm(out.codes).item())
        state = l1_control_step(state, l0s[-1], k_target, k_target, gains)
    assert l0s[0] > 2 * k_target  # starts far from the target
    assert sum(l0s[-50:]) / 50 == pytest.approx(k_target, rel=0.2)


def test_one_stacked_step_of_n_runs_is_their_own_steps_bitwise():
    """N runs' controllers stepped as one stack of (N,) tensors (a pack's members: different
    gains, schedules and L0s) give, step for step, the float32 state each run's own step gives."""
    jump = L1Gains(coef_init=0.01, kp=7.0, kff=0.0, smoothing=0.5, engage_at_knee=True)
    runs = [  # (gains, k_end, ramp length)
        (L1Gains(), 50, 120),
        (jump, 50, 120),
        (L1Gains(knee=0.0, lead=0, ff_lead=0), 20, 80),
    ]
    cpu = torch.device("cpu")
    rng = np.random.default_rng(0)
    own = [l1_initial_state(g, cpu) for g, _, _ in runs]
    stacked = stack_l1_states([l1_initial_state(g, cpu) for g, _, _ in runs])
    k_prev = [0.0] * len(runs)
    for t in range(200):
        l0 = torch.tensor(rng.uniform(10, 400, len(runs)), dtype=torch.float32)
        inputs = []
        for i, (gains, k_end, n) in enumerate(runs):
            targets = _ramp(n, 200 - n, k_end=k_end)
            k, ahead, slope = targets[min(t + gains.track_lead, 199)], *_ahead(targets, t, gains)
            own[i] = l1_control_step(own[i], l0[i], k, k_end, gains, ahead, slope)
            inputs.append(l1_inputs(k_prev[i], k, k_end, gains, ahead, slope))
            k_prev[i] = float(k)
        stacked = l1_advance(stacked, l0, stack_l1_inputs(inputs, cpu))
        for i in range(len(runs)):
            mine = l1_state_of(stacked, i, k_prev[i])
            for name, a, b in zip(L1State._fields, own[i], mine, strict=True):
                assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), (t, i, name)
    assert bool(stacked.engaged.all())  # every loop closed: the comparison covered both phases


# A threshold plant, JumpReLU's: L0 answers lambda through the threshold theta, which Adam moves
# by about the learning rate per step while lambda outweighs the reconstruction's pull at the
# threshold (the balance, which rises as L0 falls). So lambda sets how fast L0 falls (up to
# THRESHOLD_RATE per step, with Adam's momentum), not where it settles, and L0 never comes back up:
# once theta has passed the codes no lambda raises L0 again. Balances 5x apart, as between
# dSprites and Shapes3D on the demo.
THRESHOLD_RATE, THRESHOLD_BALANCES = 0.015, (0.2, 1.0)


def _threshold_plant(targets, k_end, gains, balance, seed=0, natural=100.0, momentum=0.9):
    """Closed loop on the threshold plant; returns (k, true L0, lambda, engaged) per step."""
    rng = np.random.default_rng(seed)
    noise = 1 + 0.03 * rng.standard_normal(len(targets))
    state, l0, speed, rows = l1_initial_state(gains), natural, 0.0, []
    for t, k in enumerate(targets):
        push = math.log(state.coef / (balance * natural / l0))  # nats above the balance
        speed = momentum * speed + (1 - momentum) * THRESHOLD_RATE * min(max(push, 0.0), 1.0)
        l0 *= 1 - speed
        rows.append((k, l0, state.coef, state.engaged))
        tracked = targets[min(t + gains.track_lead, len(targets) - 1)]
        state = l1_control_step(
            state, l0 * noise[t], tracked, k_end, gains, *_ahead(targets, t, gains)
        )
    return rows


def _composed_gains(*overrides):
    """The controller's settings that a training run composes (``method.l1_*``)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["method=l1", *overrides])
    return L1Gains(**{k.removeprefix("l1_"): v for k, v in cfg.method.items() if k != "name"})


def test_only_the_jumprelu_arm_changes_the_controllers_settings():
    # The L1 rule keeps the module's defaults; JumpReLU changes its start, kp, kff, smoothing and
    # where its loop closes.
    assert _composed_gains() == L1Gains()
    jump = _composed_gains("arm=jumprelu")
    changed = {
        f.name
        for f in dataclasses.fields(jump)
        if getattr(jump, f.name) != getattr(L1Gains(), f.name)
    }
    assert changed == {"coef_init", "kp", "kff", "smoothing", "engage_at_knee"}


def _at_k_at_k_end(gains, balance, seed=0):
    """Whether L0 on the threshold plant is within 10 % of k at the end of the first epoch at
    k_end (the demo's length: a 320-step ramp, 160 held, 32 steps per epoch) and never falls
    below 0.85 k."""
    ratio = _ratios(_threshold_plant(_ramp(320, 160), 50, gains, balance, seed))
    return abs(ratio[351] - 1) <= 0.1 and ratio[320:].min() >= 0.85


@pytest.mark.parametrize("balance", THRESHOLD_BALANCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_jumprelu_gains_bring_a_threshold_plant_to_k_at_k_end(balance, seed):
    assert _at_k_at_k_end(_composed_gains("arm=jumprelu"), balance, seed)


# At the arms table's length (256 steps per epoch, 8x the demo's) the model's L0 falls by itself
# at JumpReLU's starting lambda: a balance below it. The lead climb then stops with L0 already
# under k, and an open loop would hold the climbed lambda until k reaches k_end, pushing L0 on
# down; closing the loop where the climb stops lets lambda fall back instead.
LONG_EPOCH, LOW_BALANCE = 256, 0.006


def _long_run_at_k(gains, seed):
    """On the long run's threshold plant with L0 falling by itself: L0 never below 0.85 k from
    the end of the ramp on, and within 10 % of k at the end of the first held epoch."""
    n_ramp = 10 * LONG_EPOCH
    rows = _threshold_plant(
        _ramp(n_ramp, 5 * LONG_EPOCH), 50, gains, LOW_BALANCE, seed, natural=120.0
    )
    ratio = _ratios(rows)
    held = ratio[n_ramp + LONG_EPOCH - 1]
    return abs(held - 1) <= 0.1 and ratio[n_ramp - 1 :].min() >= 0.85


@pytest.mark.parametrize("seed", [0, 1])
def test_jumprelu_closes_its_loop_where_the_climb_stops_on_a_long_run(seed):
    gains = _composed_gains("arm=jumprelu")
    assert gains.engage_at_knee
    assert _long_run_at_k(gains, seed)
    # Left open until k reaches k_end, the climbed lambda drives L0 far below k.
    assert not _long_run_at_k(dataclasses.replace(gains, engage_at_knee=False), seed)


@pytest.mark.parametrize(
    "departure",
    [
        # the L1 rule's gains from the arm's start: the feed-forward and the integral, wound up
        # over the ramp, hold lambda above the balance after L0 meets k, and L0 ends far below k
        {"kp": L1Gains().kp, "kff": L1Gains().kff, "smoothing": L1Gains().smoothing},
        {"kff": L1Gains().kff},  # the feed-forward alone: L0 passes k on the low balance
        {"kp": L1Gains().kp},  # the integral alone: late on the high balance, low on the low one
    ],
)
def test_threshold_plant_checks_catch_the_l1_rules_gains(departure):
    gains = dataclasses.replace(_composed_gains("arm=jumprelu"), **departure)
    assert not all(_at_k_at_k_end(gains, balance) for balance in THRESHOLD_BALANCES)


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


def _fit(module, callback, max_epochs=2, ckpt_path=None, extra_callbacks=()):
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[callback, *extra_callbacks],
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
    assert metrics["sparsity/k_last"].item() == expected[-1]
    assert metrics["sparsity/l0"].item() == pytest.approx(sum(module.seen_l0[4:]) / 4, rel=1e-5)
    assert metrics["sparsity/l1_coef"].item() == 0.0
    state = callback.state_dict()
    assert state["k"] == expected[-1]
    assert state["l1"]["coef"] == L1_COEF_INIT and not state["l1"]["engaged"]


class EpochMetrics(pl.Callback):
    """Copies the logged epoch metrics at each epoch's end."""

    def __init__(self):
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append({k: v.item() for k, v in trainer.callback_metrics.items()})


def test_callback_logs_k_of_the_epochs_last_step():
    # 20 -> 17 over 2 epochs of 4 steps: the last step of the schedule's last epoch (t = 1.75)
    # has k = round(17.375) = k_end, while that epoch's mean k is 18.
    schedule = {"kind": "linear", "k_start": WIDTH, "k_end": 17, "schedule_epochs": 2}
    epochs = EpochMetrics()
    callback = SparsityScheduleCallback(schedule | {"hold_epochs": 1})
    _fit(TinyModule("topk"), callback, max_epochs=3, extra_callbacks=[epochs])
    assert [e["sparsity/k_last"] for e in epochs.epochs] == [19, 17, 17]
    assert [e["sparsity/k"] for e in epochs.epochs] == [19.5, 18.0, 17.0]
    last_step = KSchedule(**schedule).k(1.75)
    assert last_step == 17  # k_end reached within the schedule's last epoch


def test_callback_drives_l1_coef_by_the_controller():
    torch.manual_seed(0)
    module = TinyModule("l1")
    settings = {"l1_coef_init": 0.05, "l1_ki": 0.5, "l1_kp": 0.5}
    callback = SparsityScheduleCallback(LINEAR, **settings)
    trainer = _fit(module, callback)
    assert module.seen_k == [None] * 8
    # the schedule per step, past its end: the set point at t + track_lead, the target at
    # t + lead and the slope at t + ff_lead
    ks = [20, 18, 16, 14, 12, 10, 8, 6] + [4] * 200
    gains = L1Gains(coef_init=0.05, ki=0.5, kp=0.5)
    state = l1_initial_state(gains)
    for step in range(8):
        assert module.seen_coef[step] == pytest.approx(state.coef, rel=1e-5)
        ahead, slope = _ahead(ks, step, gains)
        tracked = ks[step + gains.track_lead]
        state = l1_control_step(state, module.seen_l0[step], tracked, 4, gains, ahead, slope)
    assert callback.state_dict()["l1"]["coef"] == pytest.approx(state.coef, rel=1e-5)
    assert float(module.l1_coef) == pytest.approx(state.coef, rel=1e-5)
    assert trainer.callback_metrics["sparsity/k"].item() == pytest.approx(9.0)
    logged_coef = trainer.callback_metrics["sparsity/l1_coef"].item()
    assert logged_coef == pytest.approx(sum(module.seen_coef[5:] + [state.coef]) / 4, rel=1e-5)


def test_callback_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    schedule = LINEAR | {"schedule_epochs": 4}
    settings = {"l1_coef_init": 0.05, "l1_ki": 0.5}
    first = SparsityScheduleCallback(schedule, **settings)
    trainer = _fit(TinyModule("l1"), first)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    state = first.state_dict()

    fresh = SparsityScheduleCallback(schedule)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state

    resumed = SparsityScheduleCallback(schedule, **settings)
    module = TinyModule("l1")
    _fit(module, resumed, max_epochs=3, ckpt_path=path)
    assert module.seen_coef[0] == state["l1"]["coef"]  # exactly: float32 saved as a float
    assert len(module.seen_coef) == 4  # only the third epoch ran
    assert resumed.k == KSchedule(**schedule).k(2.75)
    with pytest.raises(ValueError, match="earlier L1 controller"):
        fresh.load_state_dict({"k": 20, "l1_coef": 0.1})


def test_callback_resume_continues_the_controller_bit_identically():
    # Drive the callback's controller directly with one L0 sequence: once straight through,
    # once through state_dict / load_state_dict half-way; lambda must match bit for bit.
    l0s = torch.linspace(180.0, 30.0, 40)
    schedule = {"kind": "linear", "k_start": 200, "k_end": 50, "schedule_epochs": 1}

    def run(callback, steps):
        coefs = []
        for step in steps:
            callback.k = KSchedule(**schedule).k(step / 40)
            callback.l1 = l1_state_to(callback.l1, torch.device("cpu"))
            callback.l1 = l1_control_step(callback.l1, l0s[step], callback.k, 50, callback.gains)
            coefs.append(callback.l1.coef.item())
        return coefs

    straight = run(SparsityScheduleCallback(schedule), range(40))
    first = SparsityScheduleCallback(schedule)
    head = run(first, range(20))
    second = SparsityScheduleCallback(schedule)
    second.load_state_dict(first.state_dict())
    assert head + run(second, range(20, 40)) == straight


def test_callback_rejects_bad_settings():
    with pytest.raises(ValueError, match="granularity='batch'.*step, epoch"):
        SparsityScheduleCallback(LINEAR, granularity="batch")
    with pytest.raises(ValueError, match="l1_coef_min"):
        SparsityScheduleCallback(LINEAR, l1_coef_init=0.0)
    with pytest.raises(ValueError, match="l1_ki"):
        SparsityScheduleCallback(LINEAR, l1_ki=0.0)
    too_wide = SparsityScheduleCallback(LINEAR | {"k_start": 50, "k_end": 30})
    with pytest.raises(ValueError, match="k_end=30 must be <= the SAE width=20"):
        _fit(TinyModule("topk"), too_wide)


def test_callback_needs_l0_in_step_outputs():
    class NoL0(TinyModule):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    with pytest.raises(KeyError, match="'l0'"):
        _fit(NoL0("topk"), SparsityScheduleCallback(LINEAR))
