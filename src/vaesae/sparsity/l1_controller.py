"""Controller of the L1 coefficient lambda, so that the achieved L0 tracks the schedule's k(t).

The control variable is u = log(lambda) and the error is a log ratio, so one set of gains serves
k = 500 and k = 50 and any scale of lambda. After training step t, with L0_t the batch's mean
number of active codes under lambda_t, k_t the step's set point (the caller passes the schedule's
k ``track_lead`` steps on), a_t the target ``lead`` steps later and k(t + d) the target
``ff_lead`` = d steps later (a_t = k_t and d = 0 where the caller has none ahead):

    r_t = log((L0_t + 1) / (k_t + 1))                        raw error (> 0: denser than k)
    e_t = e_{t-1} + smoothing * (r_t - e_{t-1})              smoothed error (e_0 = r_0)
    l_t = l_{t-1} + smoothing * (log(L0_t + 1) - l_{t-1})    smoothed level (l_0 = log(L0_0 + 1))
    f_t = log(k(t + d - 1) / k(t + d))                       target slope d steps on (f_0 = 0)
    s = l at the first step with wants (the level where the climb starts)
    engaged_t = engaged_{t-1} or e_t >= 0 or k_t <= k_end
                or (engage_at_knee and s is set and l_t - s < log knee)
    wants_t = not engaged_t and e_t + log((k_t + 1) / (a_t + 1)) >= 0
    leading_t = wants_t and l_t - s >= log knee
    i_t = ki * e_t - (ki - ki_near) * clip(e_t, 0, log near)    integral term
    I_t = I_{t-1} + engaged_t * clip(i_t + kff * f_t * [e_t >= 0], -max_fall, max_rise)
                  + leading_t * max_rise
    I_t = clip(I_t, log coef_min, log coef_max)
    lambda_{t+1} = exp(clip(I_t + engaged_t * kp * e_t, log coef_min, log coef_max))

with I_0 = log(coef_init). Units: e, f, l and I are in nats, the gains are per training step.
The +1 keeps r finite when every code is zero and leaves the fixed point L0 = k unchanged.

- ``ki``, ``kp``, ``smoothing``: integral and proportional gains on the smoothed error, and the
  weight of the newest error in its average. ``ki_near`` on the part of e between 0 and
  log ``near`` (k <= L0 <= near * k): a slower integral where L0 is about to meet k while it
  still answers an older lambda.
- ``kff``, ``ff_lead``: feed-forward on the target's slope d steps on (kff ~ the inverse slope
  of the codes' response, -1 / (d log L0 / d log lambda)), only while L0 >= k.
- ``max_rise`` / ``max_fall``: bounds on I's change per step; ``coef_min`` / ``coef_max``: the
  clamp of lambda and of I (anti-windup at the bounds).
- Engagement (anti-windup): while k is above the codes' natural L0 no lambda can reach k, so the
  loop stays open at ``coef_init`` until the smoothed L0 first reaches the set point.
- Lead climb: L0 hardly answers lambda over decades and then falls steeply at a knee, so once
  L0 reaches the target ``lead`` steps on, lambda climbs at ``max_rise`` per step through that
  range while the loop is still open, and stops once L0 has fallen to ``knee`` times its level
  at the climb's start (L0 answers: the closed loop takes over from there).
- ``engage_at_knee``: the loop also closes where the lead climb stops, even with L0 below k, so
  lambda can fall back at once; for a rule whose L0 does not come back up when lambda falls
  (JumpReLU's thresholds), where an open loop holding the climbed lambda until k reaches k_end
  would drive L0 on below k. Off by default (the L1 rule's codes settle at a level lambda sets).
- ``track_lead`` (the caller's): L0 answers lambda tens of steps late (the SAE's weights move by
  about the learning rate per step under Adam, whatever lambda is), so the loop aims at the
  target that many steps on and meets k_end when the schedule does.

Why a cautious loop: units that an L1 penalty pushes below zero on every input get no gradient
and stay dead when lambda relaxes, so a controller that drove L0 far below k would itself create
the dead neurons the tool measures. How the gains were chosen, with the measurements: docs,
"Sparsity" (the L1 controller's tuning).
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
    engage_at_knee: bool = False

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


class L1Inputs(NamedTuple):
    """What one step of the law reads besides the state and L0, in the form its arithmetic uses:
    host numbers for one run (:func:`l1_inputs`), or the same numbers of N runs as (N,) float32
    and bool tensors (:func:`stack_l1_inputs`), so the two give the same float32 values.

    From the step's targets: ``first`` (the run's first step: no running averages yet),
    ``log_k`` = log(k + 1), ``at_end`` (k <= k_end), ``climb_gap`` = log((k + 1) / (k_ahead + 1)),
    ``ff`` = kff * slope. From the gains: ``smoothing``, ``log_knee`` (-inf without a knee),
    ``engage_at_knee``, ``log_near``, ``ki``, ``ki_gap`` = ki - ki_near, ``max_fall``,
    ``max_rise``, ``kp``, ``lo`` / ``hi`` = log coef_min / log coef_max.
    """

    first: bool | Tensor
    log_k: float | Tensor
    at_end: bool | Tensor
    climb_gap: float | Tensor
    ff: float | Tensor
    smoothing: float | Tensor
    log_knee: float | Tensor
    engage_at_knee: bool | Tensor
    log_near: float | Tensor
    ki: float | Tensor
    ki_gap: float | Tensor
    max_fall: float | Tensor
    max_rise: float | Tensor
    kp: float | Tensor
    lo: float | Tensor
    hi: float | Tensor


def l1_inputs(
    k_prev: float,
    k: float,
    k_end: float,
    gains: L1Gains,
    k_ahead: float | None = None,
    slope: float | None = None,
) -> L1Inputs:
    """The host numbers of one step towards set point ``k`` after a step at ``k_prev`` (0 before
    the first step); ``k_ahead`` and ``slope`` as in :func:`l1_control_step`."""
    first = not k_prev > 0
    if first:
        slope = 0.0
    elif slope is None:
        slope = math.log(k_prev / k)
    ahead = k if k_ahead is None else k_ahead
    return L1Inputs(
        first=first,
        log_k=math.log(k + 1.0),
        at_end=k <= k_end,
        climb_gap=math.log((k + 1.0) / (ahead + 1.0)),
        ff=gains.kff * slope,
        smoothing=gains.smoothing,
        log_knee=math.log(gains.knee) if gains.knee > 0 else -math.inf,
        engage_at_knee=gains.engage_at_knee,
        log_near=math.log(gains.near),
        ki=gains.ki,
        ki_gap=gains.ki - gains.ki_near,
        max_fall=gains.max_fall,
        max_rise=gains.max_rise,
        kp=gains.kp,
        lo=math.log(gains.coef_min),
        hi=math.log(gains.coef_max),
    )


# The flags of L1Inputs (bool tensors when stacked); the other fields are numbers (float32).
_FLAGS = ("first", "at_end", "engage_at_knee")
_FLAG_FIELDS = tuple(name for name in L1Inputs._fields if name in _FLAGS)
_NUMBER_FIELDS = tuple(name for name in L1Inputs._fields if name not in _FLAGS)


def l1_input_columns(
    inputs: list[L1Inputs], device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """M sets of :class:`L1Inputs` as two matrices on ``device``: their flags (M, 3) bool and
    their numbers (M, 13) float32 (two host-to-device copies in all)."""
    as_bool = torch.tensor(
        [[getattr(x, n) for n in _FLAG_FIELDS] for x in inputs], dtype=torch.bool
    )
    as_f32 = torch.tensor(
        [[getattr(x, n) for n in _NUMBER_FIELDS] for x in inputs], dtype=torch.float32
    )
    return as_bool.to(device), as_f32.to(device)


def l1_inputs_of_columns(flags: Tensor, numbers: Tensor) -> L1Inputs:
    """:class:`L1Inputs` whose fields are the last-axis columns (views) of ``flags`` (..., 3)
    and ``numbers`` (..., 13), as :func:`l1_input_columns` lays them out."""
    return L1Inputs(
        **dict(zip(_FLAG_FIELDS, flags.unbind(-1), strict=True)),
        **dict(zip(_NUMBER_FIELDS, numbers.unbind(-1), strict=True)),
    )


def stack_l1_inputs(inputs: list[L1Inputs], device: torch.device | None = None) -> L1Inputs:
    """N runs' :class:`L1Inputs` as (N,) tensors on ``device``: float32 for numbers, bool for
    flags (two host-to-device copies in all)."""
    return l1_inputs_of_columns(*l1_input_columns(inputs, device))


def l1_advance(state: L1State, l0: float | Tensor, c: L1Inputs) -> L1State:
    """The law's arithmetic (module docstring) from ``state`` and this step's ``l0``; the
    returned state's ``k_prev`` is the caller's to set. Works elementwise on floats, on 0-d
    tensors, and on (N,) tensors of N runs (state, ``l0`` and ``c`` all stacked)."""
    log_l0 = _log(l0 + 1.0)
    raw = log_l0 - c.log_k
    if isinstance(c.first, bool):
        # One run: a host branch, as the first step has no running averages to blend.
        if c.first:
            error, level = raw, log_l0
        else:
            error = state.error + c.smoothing * (raw - state.error)
            level = state.level + c.smoothing * (log_l0 - state.level)
    else:
        error = torch.where(c.first, raw, state.error + c.smoothing * (raw - state.error))
        level = torch.where(c.first, log_l0, state.level + c.smoothing * (log_l0 - state.level))
    # level = log(L0 + 1) >= 0, so a negative climb_from means the climb has not started.
    started = state.climb_from >= 0
    if isinstance(c.at_end, Tensor):
        engaged = state.engaged | c.at_end | (error >= 0)
    else:
        engaged = state.engaged | (True if c.at_end else error >= 0)
    at_knee = started & (level - state.climb_from < c.log_knee)
    if isinstance(c.engage_at_knee, Tensor):
        engaged = engaged | (c.engage_at_knee & at_knee)
    elif c.engage_at_knee:
        engaged = engaged | at_knee
    gate = _where(engaged, 1.0, 0.0)
    open_loop = ~engaged if isinstance(engaged, Tensor) else not engaged
    wants_climb = open_loop & (error + c.climb_gap >= 0)
    climb_from = _where(started, state.climb_from, _where(wants_climb, level, NOT_CLIMBED))
    leading = wants_climb & (level - climb_from >= c.log_knee)
    feed_forward = c.ff * _where(error >= 0, 1.0, 0.0)
    near = _clamp(error, 0.0, c.log_near)
    integral_term = c.ki * error - c.ki_gap * near
    step = _clamp(integral_term + feed_forward, -c.max_fall, c.max_rise)
    step = gate * step + _where(leading, c.max_rise, 0.0)
    integral = _clamp(state.integral + step, c.lo, c.hi)
    u = _clamp(integral + gate * c.kp * error, c.lo, c.hi)
    return L1State(integral, _exp(u), error, state.k_prev, engaged, level, climb_from)


# The state's fields that N runs stack; k_prev stays with each run (a host float).
L1_STACKED_FIELDS = tuple(name for name in L1State._fields if name != "k_prev")


def stack_l1_states(states: list[L1State]) -> L1State:
    """N runs' states (0-d tensors on one device, :func:`l1_state_to`) as one state of (N,)
    tensors; ``k_prev`` stays with each run (NaN here)."""
    stacked = {name: torch.stack([getattr(s, name) for s in states]) for name in L1_STACKED_FIELDS}
    return L1State(k_prev=math.nan, **stacked)


def l1_state_of(stacked: L1State, i: int, k_prev: float) -> L1State:
    """Run ``i``'s state (0-d tensors) from a stacked one, with its own ``k_prev``."""
    fields = {name: getattr(stacked, name)[i] for name in L1_STACKED_FIELDS}
    return L1State(k_prev=k_prev, **fields)


def l1_control_step(
    state: L1State,
    l0: float | Tensor,
    k: float,
    k_end: float,
    gains: L1Gains,
    k_ahead: float | None = None,
    slope: float | None = None,
) -> L1State:
    """One step of the law in the module docstring, after a training step, towards set point ``k``.

    ``l0`` is that step's mean number of active codes per sample; ``k`` the set point (the
    callback passes the schedule's k ``track_lead`` steps on); ``k_end`` the schedule's final
    target; ``k_ahead`` the target ``lead`` steps later (None: ``k``, no lead climb); ``slope``
    the target's log slope ``ff_lead`` steps later, log(k(t + d - 1) / k(t + d)) (None: the
    current one, log(k_prev / k)). With a tensor state or ``l0`` everything stays on their device
    (no host synchronisation); with floats the result is floats.
    """
    inputs = l1_inputs(state.k_prev, k, k_end, gains, k_ahead, slope)
    return l1_advance(state, l0, inputs)._replace(k_prev=float(k))


def _log(x: float | Tensor) -> float | Tensor:
    return x.log() if isinstance(x, Tensor) else math.log(x)


def _exp(x: float | Tensor) -> float | Tensor:
    return x.exp() if isinstance(x, Tensor) else math.exp(x)


def _clamp(x: float | Tensor, lo: float | Tensor, hi: float | Tensor) -> float | Tensor:
    if not isinstance(x, Tensor):
        assert not isinstance(lo, Tensor) and not isinstance(hi, Tensor)
        return min(max(x, lo), hi)
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        # Per-run bounds (a stack of runs): clamp takes tensors for both or for neither.
        return x.clamp(torch.as_tensor(lo, dtype=x.dtype), torch.as_tensor(hi, dtype=x.dtype))
    return x.clamp(lo, hi)


def _where(cond: bool | Tensor, a: float | Tensor, b: float | Tensor) -> float | Tensor:
    if isinstance(cond, Tensor):
        return torch.where(cond, a, b)
    return a if cond else b
