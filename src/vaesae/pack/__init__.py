"""The pack engine: a sweep's jobs that share a pack key, trained together in one process
(`hydra/launcher=pack`; docs: Scaling)."""

from vaesae.pack.engine import PackJob, train_pack
from vaesae.pack.keys import PACK_MODES, pack_key, pack_mode_for, vmap_blocker

__all__ = ["PackJob", "train_pack", "PACK_MODES", "pack_key", "pack_mode_for", "vmap_blocker"]
