"""Which jobs of a sweep train together (the pack key), and how a pack takes its steps.

Members of a pack step in lockstep and, in ``vmap`` mode, through one stacked network, so they
must share everything that fixes the network's shapes and the loop's course. The key holds:
the dataset and its source; every model option (width, d_z, site, centring, signed trunk, input
normalisation, init, ...); the activation family (the arm's replacement rule, or the methods'
own Top-k/L1 family); the remedy and its phase; the batch, epoch and evaluation sizes; the epoch
count; the numeric path (precision, memory layout) and the accelerator.

Members may differ in the seed, the method (Top-k and L1 share a family: an L1 member is a
Top-k member with k = width and lambda > 0), the pressure arm (baseline, no_squeeze, fixed_k:
other k tables), k_start/k_end, beta, alpha, the learning rate and the L1 controller's gains.
So in the CPU study the packs are: {baseline, no_squeeze, fixed_k} x {Top-k, L1} x seeds;
{center, center_no_squeeze}; {signed_trunk, signed_trunk_no_squeeze}; auxk; resample; recover;
batchtopk; jumprelu — per dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from vaesae.assembly import run_plan
from vaesae.config import ConfigError

__all__ = ["PACK_MODES", "pack_key", "vmap_blocker", "pack_mode_for"]

PACK_MODES = ("loop", "vmap")


def pack_key(cfg: DictConfig) -> tuple:
    """The settings a job shares with every other member of its pack (module docstring)."""
    plan = run_plan(cfg)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    return (
        cfg.dataset.name,
        cfg.data.source,
        tuple(sorted((str(k), str(v)) for k, v in model.items())),
        str(cfg.arm.rule),
        str(OmegaConf.to_container(cfg.arm.rule_kw, resolve=True)),
        cfg.arm.remedy,
        cfg.arm.remedy_phase,
        int(cfg.data.batch_size),
        plan.epoch_samples,
        int(cfg.data.eval_size),
        plan.total_epochs,
        plan.precision,
        plan.channels_last,
        cfg.trainer.accelerator,
        int(cfg.trainer.threads or 0),
    )


def vmap_blocker(cfg: DictConfig) -> str | None:
    """Why a job cannot step in a stacked network (None: it can). The stacked step knows the
    Top-k/L1 family without remedies: a replacement rule brings its own autograd and state,
    AuxK and resampling change single members' losses and weights mid-epoch."""
    if cfg.arm.rule is not None:
        return f"arm={cfg.arm.name} replaces the activation with rule={cfg.arm.rule}"
    if cfg.arm.remedy != "none":
        return f"arm={cfg.arm.name} uses the remedy {cfg.arm.remedy}"
    if cfg.method.name not in ("topk", "l1"):
        return f"method={cfg.method.name} is not of the Top-k/L1 family"
    return None


def pack_mode_for(cfgs: Sequence[DictConfig], requested: str = "auto") -> str:
    """``loop`` or ``vmap`` for a pack. ``auto``: vmap on a GPU when every member can stack,
    loop otherwise (on a CPU the loop is faster: docs, Scaling). ``vmap`` asked for a member
    that cannot stack raises ConfigError naming the reason."""
    blockers = [b for b in (vmap_blocker(c) for c in cfgs) if b is not None]
    if requested == "vmap":
        if blockers:
            raise ConfigError(f"pack mode=vmap cannot stack this pack: {blockers[0]}; use loop")
        return "vmap"
    on_gpu = all(c.trainer.accelerator == "gpu" for c in cfgs)
    return "vmap" if on_gpu and not blockers and cfgs else "loop"
