"""Controller of the L1 coefficient lambda, so that the achieved L0 tracks the schedule's k(t).

The control variable is u = log(lambda) and the error is a log ratio, so one set of gains serves
k = 500 and k = 50 and any scale of lambda. After training step t, with L0_t the batch's mean
number of active codes under lambda_t, k_t the step's target, a_t the target ``lead`` steps
later and k(t + d) the target ``ff_lead`` = d steps later (the caller's schedule; a_t = k_t and
d = 0 where it has none ahead):

    r_t = log((L0_t + 1) / (k_t + 1))                        raw error (> 0: denser than k)
    e_t = e_{t-1} + smoothing * (r_t - e_{t-1})              smoothed error (e_0 = r_0)
    f_t = log(k(t + d - 1) / k(t + d))                       target slope d steps on (f_0 = 0)
    engaged_t = engaged_{t-1} or e_t >= 0 or k_t <= k_end
    leading_t = not engaged_t and e_t + log((k_t + 1) / (a_t + 1)) >= 0
    i_t = ki * e_t - (ki - ki_near) * clip(e_t, 0, log near)    integral term
    I_t = I_{t-1} + engaged_t * clip(i_t + kff * f_t * [e_t >= 0], -max_fall, max_rise)
                  + leading_t * max_rise
    I_t = clip(I_t, log coef_min, log coef_max)
    lambda_{t+1} = exp(clip(I_t + engaged_t * kp * e_t, log coef_min, log coef_max))

with I_0 = log(coef_init). Units: e, f and I are in nats (natural-log units), the gains are per
training step. The state is (I, lambda, e, k_{t-1}, engaged). The +1 keeps r finite when every
code is zero and leaves the fixed point L0 = k unchanged.

- ``ki``: integral gain; removes the steady error. ``ki_near`` (< ``ki``, normally) and
  ``near``: the gain is ``ki_near`` on the part of e between 0 and log ``near``, i.e. while
  k <= L0 <= near * k, and ``ki`` elsewhere; i_t is continuous in e_t, and near = 1 gives one gain
  everywhere. The slow band is where L0 is about to meet k while the codes still answer the
  lambda of 40-60 steps ago (below); a fast gain there winds lambda far past the value that holds
  k, and L0 then falls through k and stays below it. Far above k (a constant target from the first
  step, the start-up) and below k the gain stays fast. ``kp``: proportional gain on the same error,
  acting at once without being accumulated. ``smoothing`` in (0, 1]: weight of the newest error
  in its average, so that a single noisy batch does not jolt lambda (1 = no smoothing).
- ``kff``: feed-forward on the target's slope. While k falls by a factor q, I rises by
  kff * log q besides the feedback, kff standing for 1 / (-d log L0 / d log lambda), the inverse
  slope of the codes' response.
  It acts only while L0 is at or above its target (e_t >= 0): below it a falling k needs no
  push, and one deepens the undershoot. On the synthetic plant the lowest L0 after the loop
  closed on the 2,000-step ramp rose from 0.90 k to 0.96 k with this gate; on the demo, L0 sat
  below k through the ramp's last epoch while the feed-forward alone kept lambda rising.
- ``ff_lead`` (d steps): the slope fed forward is the target's d steps later, because L0
  follows lambda only after the weights have moved (a lag of ~10-20 steps). With the slope of
  the current step, lambda keeps rising for that lag after a ramp stops and L0 then falls below
  k: on a synthetic plant with a 8-15-step lag (tests/test_sparsity.py) the demo's 320-step
  ramp ended at 0.75 k; with d = 16 the lowest L0 after the loop closed was 0.93-0.96 k. On the
  VAE-SAE that undershoot does not heal: units that the excess lambda silenced stay silent when
  lambda falls again.
- ``max_rise`` / ``max_fall``: bounds on I's change per step (lambda may rise at most by
  exp(max_rise) per step and fall by exp(max_fall) without the proportional term). The rise bound
  is what keeps a large error (e.g. L0 = 250 against k = 50 at the first step of a constant
  schedule) from winding lambda far past the value needed before the codes have responded.
- ``coef_min`` / ``coef_max``: clamp of lambda and of I (anti-windup at the bounds).
- Engagement (integral anti-windup). While k is above the codes' natural L0 (what they reach with
  lambda -> 0, the first part of a 500 -> 50 schedule) no lambda can reach k; integrating that
  error would sink lambda to ``coef_min`` and it would then have to climb back orders of
  magnitude while k falls past L0. So the loop stays open, lambda = ``coef_init`` (chosen just
  below where the L1 term starts to bite), until the smoothed L0 first reaches k, or until k
  reaches k_end (so a ``coef_init`` that already holds L0 below k_end is still corrected).
- Lead climb (``lead`` steps, the caller's setting; 0 switches it off). L0 hardly responds to
  lambda over decades above ``coef_init`` and then falls steeply at a knee; on the raw objective
  the knee is at lambda ~1-5 on dSprites and ~5-30 on Shapes3D, 7-10 nats above ``coef_init``,
  and at ``max_rise`` per step the closed loop would spend 150-200 steps climbing to it after it
  closes. So once the smoothed L0
  reaches the target that k will have ``lead`` steps later (the loop will close within ~lead
  steps), lambda climbs at ``max_rise`` per step through that insensitive range while the loop
  is still open. If the climb reaches the knee first, L0 falls, meets k sooner and the loop
  closes; the climb itself never continues below k, though L0's lag can carry it there (the
  table at the end). Starting it earlier than the loop needs was
  worse: an open-loop lambda that followed the code scale (||h||, or SAE-MSE / ||s||_1) from the
  first step bit during the first epochs, while the codes are small and the model still sits
  at the no-information reconstruction, and kept a demo run there with 88 % of units dead.

Why a cautious loop. Units that an L1 penalty pushes below zero on every input receive no
gradient and stay dead when lambda relaxes, so a controller that drives L0 far below k would
itself create the dead neurons the tool measures. On the VAE-SAE the response of L0 to lambda is
also slow and one-sided: it lags lambda by ~5-20 steps, and codes that a too-large lambda has
silenced come back slowly or not at all once lambda falls again.

Defaults, from closed-loop runs of the CPU demo (dSprites and Shapes3D 64x64, batch 64, 32 steps
per epoch, a 500 -> 50 linear ramp over 320 steps then 160 held; the figures in this list were
taken with the SAE on RMS-normalised trunk features, the last paragraph on the raw default):
- ``coef_init = 1e-3``: held there, L0 stays within ~3 % of its natural value (~110-170 during
  the ramp); 1e-2 already lowers it by ~15 % over 300 steps.
- Holding L0 = 50 needs lambda ~ 2-3 (dSprites) or ~ 0.5 (Shapes3D). On both, L0 hardly moves
  while lambda climbs from 1e-2 to ~0.1-0.5 (-d log L0 / d log lambda ~ 0.1), then falls steeply.
- ``max_rise = 0.05``: when lambda climbed at 0.1-0.3 nats per step, Shapes3D's codes collapsed
  as lambda passed ~0.25 (L0 ~ 60 -> 10 within 10 steps, recovering over ~100 steps and only at
  a 100x smaller lambda); at 0.05 nats per step it reached L0 = 50 without collapsing. The price
  is speed: from coef_init to lambda ~ 2 takes ~150 steps.
- ``ki = 0.1``, ``kp = 1``, ``smoothing = 0.25``, ``kff = 3``, ``max_fall = 0.05``: with
  ki = 0.2, kp = 2 or a 20-step look-ahead on the target, dSprites' L0 overshot to 0.4-0.9 k
  and stayed there while lambda fell tenfold. With a fall bound of 0.2, lambda dived to
  ``coef_min`` after Shapes3D's collapse and L0 then stayed low or swung back above k.
- ``coef_min = 1e-4``, ``coef_max = 1e3``: outside the values used.
With 256 steps per epoch (dSprites, same schedule, normalised SAE input, before the lead climb)
L0 was 1.15 k in the ramp's last epoch, 1.09 k in the first held one and 0.96-0.98 k after, never
below 0.88 k at any step.

On the raw objective (the default until the scale-free one) the demo does not reach the 10 %
band. Training L0 per epoch at k_end (epoch 10) and in the last held epoch (14), ``experiment=demo
method=l1``:

    controller                                  dSprites k_end / last   Shapes3D k_end / last
    without lead climb and look-ahead            138 / 42               126 / 78
    + lead climb                                  38 / 37                85 / 43
    + look-ahead ff_lead = 16                     43 / 39                85 / 42
    + feed-forward only while L0 >= k (now)       50 / 40                85 / 42

The climb brings lambda to the knee in time, but L0 keeps falling for 2-3 epochs after lambda
has stopped rising, and does not come back when lambda falls: on dSprites lambda fell from 6.0
to 0.43 over the hold while L0 went 50 -> 42 -> 40, and the trunk's ||h|| shrank from 2.7 to
2.0 (on Shapes3D from 3.4 to 1.45), i.e. part of the penalty is met by shrinking h, which the
raw objective allows. A lambda that undershoots cannot be taken back on this plant.

On the scale-free default (``input_norm=norm``, unit-norm dictionary, alpha = 10) h can no longer
shrink, and the demo's L1 runs end closer to k: evaluation L0 in the last held epoch 42, 46, 45
(dSprites, seeds 0-2) and 47, 45, 57 (Shapes3D), 3 of 6 within 10 %, against ~40 on the raw
objective (48 demo-sized runs on an H200, bf16). The same 6 runs under 7 other settings
(ki = 0.3; kp = 3; kff = 1.5; lead = 50; max_rise = 0.03; ki = 0.3 with kff = 1.5 or lead = 50)
reached 1-5 of 6, and none tracked better over the hold: mean |L0 / k - 1| over epochs 10-14 was
0.22 with the defaults, 0.17 (kp = 3) to 0.40 (max_rise = 0.03) otherwise, within the seeds'
spread, so the defaults stay. What is left is the plant, not the gains: dSprites drifts to
~0.85-0.9 k in the hold with lambda falling (the one-sided response above); Shapes3D comes down
from 1.2-1.5 k at k_end and meets k only in the last held epochs, its L0 falling ~5 % per epoch
while lambda climbs at the integral's pace; and one dSprites seed swung 22 -> 87 -> 53 after an
overshoot at k_end. At 256 steps per epoch (245,760 images, dSprites) the baseline's evaluation
L0 was 1.32 k at k_end and 0.99 k after the hold.

The band (``ki_near`` = 0.05, ``near`` = 1.5; every figure above was taken with one gain,
near = 1). Per-step traces of the demo (the callback's L0 and lambda at every step, fp32) showed
where the hold's undershoot came from. At k_end L0 first rises again (63 -> 79 on dSprites, a
change in the codes at epochs 9-11 that happens with lambda = 0 too), the integral at ki = 0.1
takes lambda from 1.1 to 3.6 within 40 steps, and L0 turns only 40-60 steps later, falls to
0.75 k and stays there while lambda falls 14-fold. Without pressure (``arm=no_squeeze``) L0 at
the last epoch is 100 (dSprites) and 71 (Shapes3D), so k = 50 is reachable. A slow integral just
above k lets L0 come down to k at the pace at which the codes answer; the gain stays fast below
k (to release lambda) and beyond 1.5 k (a constant target from the first step, where lambda must
climb ~8 nats: a slow gain everywhere left ``arm=fixed_k`` at 75 on dSprites; with the band it
ends at 42.1 on dSprites and 50.0 on Shapes3D, seed 0, on the bf16 path). Evaluation L0
(``eval/l0``, the report's) at the last epoch of ``experiment=demo method=l1 logger=csv
metrics.dci_epochs=[] pictures.epochs=[]``, seeds 0, 1, 2, on a 2-core CPU with native bf16
(default path bf16-mixed + channels_last); "hold" is the mean |L0 / k - 1| over epochs 12-14:

    integral gain                 dSprites            Shapes3D            within 10 %   hold
    ki = 0.1 everywhere           45.4  48.9  42.4    48.0  49.4  47.6    5 / 6         0.064
    ki_near = 0.03                50.4  52.5  44.8    55.6  57.5  53.3    3 / 6         0.088
    ki_near = 0.05 (default)      45.3  52.4  43.7    46.7  53.8  53.6    5 / 6         0.082
    ki_near = 0.03, ki = 0.2      46.4  54.7  45.2    54.6  57.5  53.3    5 / 6         0.106

The same CPU on the fp32 NCHW path, dSprites: 52.1, 29.5, 42.2 with one gain (hold 0.33), 53.4,
34.5, 43.2 with the default (0.25). So on the demo the band is not measurably better than one
gain: the differences are within the seeds' spread, which single events dominate. dSprites seed
1 collapses in the ramp whatever the gains (L0 82 -> 33 at k_end under lambda <= 0.45, its knee
~10x lower than seed 0's, while the open-loop climb is still rising) and comes back only once
lambda has fallen ~20-fold; in fp32, seed 0 swings 28 -> 97 -> 65 (training L0) through the
hold. The band stays for what the traces and the synthetic plant of tests/test_sparsity.py show:
on a plant as slow as the demo's (lag of 30 steps) it keeps the lowest L0 at 0.86 k where one
gain falls to 0.75 k, at the price of settling ~1.4x slower on a fast plant (lag of 8 steps).
The training-batch L0 (``sparsity/l0``, the epoch log line) can differ from the evaluation L0 by
several units at the last epoch (seed 0 with the default: 45.8 and 44.9 against 45.3 and 46.7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

L1_COEF_INIT = 0.1
L1_COEF_MIN = 1e-4
L1_COEF_MAX = 1e3
L1_KI = 0.1
L1_KI_NEAR = 0.05
L1_NEAR = 1.5
L1_KP = 1.0
L1_KFF = 3.0
L1_SMOOTHING = 0.25
L1_MAX_RISE = 0.05
L1_MAX_FALL = 0.05
L1_LEAD = 75
L1_FF_LEAD = 16
L1_KNEE = 0.9
L1_TRACK_LEAD = 16
NOT_CLIMBED = -1.0  # climb_from before the lead climb's first step


@dataclass(frozen=True)
class L1Gains:
    """Settings of the controller (see the module docstring); ValueError names a bad one."""

    coef_init: float = L1_COEF_INIT
    coef_min: float = L1_COEF_MIN
    coef_max: float = L1_COEF_MAX
    ki: float = L1_KI
    ki_near: float = L1_KI_NEAR
    near: float = L1_NEAR
    kp: float = L1_KP
    kff: float = L1_KFF
    smoothing: float = L1_SMOOTHING
    max_rise: float = L1_MAX_RISE
    max_fall: float = L1_MAX_FALL
    lead: int = L1_LEAD
    ff_lead: int = L1_FF_LEAD
    knee: float = L1_KNEE
    track_lead: int = L1_TRACK_LEAD

    def __post_init__(self) -> None:
        if not 0 < self.coef_min <= self.coef_init <= self.coef_max:
            raise ValueError(
                f"need 0 < l1_coef_min={self.coef_min} <= l1_coef_init={self.coef_init}"
                f" <= l1_coef_max={self.coef_max}"
            )
        for name in ("ki", "ki_near", "max_rise", "max_fall"):
            if not getattr(self, name) > 0:
                raise ValueError(f"l1_{name}={getattr(self, name)} must be > 0")
        for name in ("kp", "kff"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"l1_{name}={getattr(self, name)} must be >= 0")
        for name in ("lead", "ff_lead", "track_lead"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ValueError(f"l1_{name}={value} must be an integer >= 0 (steps)")
        if not self.near >= 1:
            raise ValueError(f"l1_near={self.near} must be >= 1 (a ratio L0 / k)")
        if not 0 <= self.knee < 1:
            raise ValueError(f"l1_knee={self.knee} must be in [0, 1) (a ratio of L0s; 0: off)")
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"l1_smoothing={self.smoothing} must be in (0, 1]")


class L1State(NamedTuple):
    """The controller's memory: 0-d tensors on the training device, or floats on the host.

    ``integral`` is I (log lambda), ``coef`` the lambda of the next step, ``error`` the smoothed
    log error e, ``k_prev`` the previous step's target (0 before the first step; a host float,
    as k is), ``engaged`` whether the loop is closed, ``level`` the smoothed log(L0 + 1) and
    ``climb_from`` its value at the lead climb's first step (``NOT_CLIMBED`` before).
    """

    integral: float | Tensor
    coef: float | Tensor
    error: float | Tensor
    k_prev: float
    engaged: bool | Tensor
    level: float | Tensor = 0.0
    climb_from: float | Tensor = -1.0


def l1_initial_state(gains: L1Gains, device: torch.device | None = None) -> L1State:
    """State before the first step: lambda = coef_init; tensors on ``device`` when it is given."""
    state = L1State(math.log(gains.coef_init), gains.coef_init, 0.0, 0.0, False, 0.0, NOT_CLIMBED)
    return state if device is None else l1_state_to(state, device)


def l1_state_to(state: L1State, device: torch.device) -> L1State:
    """The state with its values as float32 (``engaged``: bool) 0-d tensors on ``device``."""

    def f32(x: float | Tensor) -> Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=device)

    return L1State(
        f32(state.integral),
        f32(state.coef),
        f32(state.error),
        state.k_prev,
        torch.as_tensor(state.engaged, dtype=torch.bool, device=device),
        f32(state.level),
        f32(state.climb_from),
    )


def l1_control_step(
    state: L1State,
    l0: float | Tensor,
    k: float,
    k_end: float,
    gains: L1Gains,
    k_ahead: float | None = None,
    slope: float | None = None,
) -> L1State:
    """One step of the law in the module docstring, after a training step at target ``k``.

    ``l0`` is that step's mean number of active codes per sample; ``k_end`` the schedule's final
    target; ``k_ahead`` the target ``lead`` steps later (None: ``k``, no lead climb); ``slope``
    the target's log slope ``ff_lead`` steps later, log(k(t + d - 1) / k(t + d)) (None: the
    current one, log(k_prev / k)). With a tensor state or ``l0`` everything stays on their device
    (no host synchronisation); with floats the result is floats.
    """
    lo, hi = math.log(gains.coef_min), math.log(gains.coef_max)
    log_l0 = _log(l0 + 1.0)
    raw = log_l0 - math.log(k + 1.0)
    if state.k_prev > 0:
        error = state.error + gains.smoothing * (raw - state.error)
        level = state.level + gains.smoothing * (log_l0 - state.level)
        slope = math.log(state.k_prev / k) if slope is None else slope
    else:
        error, level, slope = raw, log_l0, 0.0
    engaged = state.engaged | (True if k <= k_end else error >= 0)
    gate = _where(engaged, 1.0, 0.0)
    ahead = k if k_ahead is None else k_ahead
    open_loop = ~engaged if isinstance(engaged, Tensor) else not engaged
    wants_climb = open_loop & (error + math.log((k + 1.0) / (ahead + 1.0)) >= 0)
    # level = log(L0 + 1) >= 0, so a negative climb_from means the climb has not started.
    started = state.climb_from >= 0
    climb_from = _where(started, state.climb_from, _where(wants_climb, level, NOT_CLIMBED))
    knee = math.log(gains.knee) if gains.knee > 0 else -math.inf
    leading = wants_climb & (level - climb_from >= knee)
    feed_forward = gains.kff * slope * _where(error >= 0, 1.0, 0.0)
    near = _clamp(error, 0.0, math.log(gains.near))
    integral_term = gains.ki * error - (gains.ki - gains.ki_near) * near
    step = _clamp(integral_term + feed_forward, -gains.max_fall, gains.max_rise)
    step = gate * step + _where(leading, gains.max_rise, 0.0)
    integral = _clamp(state.integral + step, lo, hi)
    u = _clamp(integral + gate * gains.kp * error, lo, hi)
    return L1State(integral, _exp(u), error, float(k), engaged, level, climb_from)


def _log(x: float | Tensor) -> float | Tensor:
    return x.log() if isinstance(x, Tensor) else math.log(x)


def _exp(x: float | Tensor) -> float | Tensor:
    return x.exp() if isinstance(x, Tensor) else math.exp(x)


def _clamp(x: float | Tensor, lo: float, hi: float) -> float | Tensor:
    return x.clamp(lo, hi) if isinstance(x, Tensor) else min(max(x, lo), hi)


def _where(cond: bool | Tensor, a: float | Tensor, b: float | Tensor) -> float | Tensor:
    if isinstance(cond, Tensor):
        return torch.where(cond, a, b)
    return a if cond else b
