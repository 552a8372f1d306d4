"""What a run prints: the known, harmless library messages silenced, and only those."""

from __future__ import annotations

import logging
import warnings

# Lightning 2.x calls a torch pytree API that torch 2.13 deprecates; the call is Lightning's and
# harmless, so this one message is silenced (and nothing else).
LIGHTNING_PYTREE_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def silence_lightning_pytree_warning() -> None:
    """Ignore the one FutureWarning that Lightning's pytree call raises under torch 2.13."""
    warnings.filterwarnings("ignore", message=LIGHTNING_PYTREE_WARNING, category=FutureWarning)


def quiet_lightning_notes() -> None:
    """Hide Lightning's start-up notes (accelerator, a product tip, "max_epochs reached"): they
    are info-level rank-zero messages; its warnings and errors still show."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
