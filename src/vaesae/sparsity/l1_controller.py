"""Multiplicative controller of the L1 coefficient lambda, so the achieved L0 tracks a target k.

lambda <- clamp(lambda * exp(eta * (L0 - k) / k), lo, hi)

An integral controller on log(lambda): lambda grows while codes are denser than the target and
shrinks while they are sparser; the relative error makes the gain independent of the k level.
The error is unbounded above (L0 can reach width, 10x a target of 50) but bounded below by -1,
so lambda climbs faster than it falls. Overshooting is not harmless here: units that an
L1 penalty pushes below zero on every input receive no gradient and stay dead when lambda
relaxes, so an aggressive controller would itself create the dead neurons the tool measures.

Defaults, from the real VAE-SAE on CPU (dSprites-like 64x64 binary shapes, Adam 1e-3, batch 32):
- ``eta = 0.02``. Target dropped at once from 500 to 50 (natural L0 ~200): L0 came within ~10 %
  of it after ~300 steps, from above, with no dip. With eta = 0.05 it took ~100 steps but dipped
  to ~33 and stayed there while lambda fell 85x (units had died).
- ``lo = 1e-4``, below where the L1 term starts to bite (~1e-2 there; a latent-site SAE on the
  10-d mean may bite lower). While k(t) is above the codes' natural L0 (~80-200 on that data)
  lambda sinks to ``lo`` and must climb back, 2 % per step while L0 is twice the target: with a
  400-step linear 500 -> 50 ramp, lambda left ``lo`` when k crossed L0 (~120) and L0 was still
  ~100 at 200 steps past the ramp's end. At paper scale (the ramp lasts ~5x10^5 steps on dSprites)
  such a lag is a small fraction of it; short runs want a higher ``lo`` (it only moves the floor)
  or a larger ``eta`` (faster, but see the dip above).
- ``hi = 1e3``, far above the ~5 that held L0 = 50 on that data (RGB images give larger
  reconstruction gradients and need a larger lambda).
- ``init = 1e-3``, below the effective range, so the first steps do not kill units.
"""

from __future__ import annotations

import math

from torch import Tensor

L1_COEF_INIT = 1e-3
L1_ETA = 0.02
L1_COEF_MIN = 1e-4
L1_COEF_MAX = 1e3


def update_l1_coef(
    coef: float | Tensor,
    l0: float | Tensor,
    k_target: float,
    eta: float = L1_ETA,
    lo: float = L1_COEF_MIN,
    hi: float = L1_COEF_MAX,
) -> float | Tensor:
    """One controller step: clamp(coef * exp(eta * (l0 - k_target) / k_target), lo, hi).

    ``l0`` is the measured mean number of active codes per sample. With tensor inputs the update
    stays on their device (no host synchronisation in a training loop); with floats it is a float.
    """
    error = (l0 - k_target) / k_target
    factor = (eta * error).exp() if isinstance(error, Tensor) else math.exp(eta * error)
    new = coef * factor
    if isinstance(new, Tensor):
        return new.clamp(lo, hi)
    return min(max(new, lo), hi)
