"""Neuron resampling (Bricken et al. 2023, "Towards Monosemanticity", appendix "Neuron
Resampling"): dead units are re-initialised towards inputs that the SAE reconstructs badly."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import lightning.pytorch as pl
import torch
from torch import Tensor

from vaesae.data.datamodule import attached_datamodule
from vaesae.models import SparseAutoencoder

if TYPE_CHECKING:
    # Type-only: the callbacks are built before, and without, the training module.
    from vaesae.module import VAESAEModule

log = logging.getLogger("vaesae")

# Bricken et al.'s scale of a resampled encoder row, relative to the mean norm of the live rows.
ENCODER_SCALE = 0.2


class Resampled(NamedTuple):
    """New weights of the resampled units (R of them): ``index`` (R,) long, ``encoder_rows``
    (R, d_in), ``encoder_bias`` (R,) and ``decoder_columns`` (d_in, R)."""

    index: Tensor
    encoder_rows: Tensor
    encoder_bias: Tensor
    decoder_columns: Tensor


def resample_dead(
    inputs: Tensor,
    sq_error: Tensor,
    dead: Tensor,
    encoder_weight: Tensor,
    b_pre: Tensor,
    generator: torch.Generator,
) -> Resampled:
    """New weights for the ``dead`` (width, bool) units, from a pool of inputs.

    ``inputs`` (N, d_in) are the pool's normalised SAE inputs x, ``sq_error`` (N,) their squared
    reconstruction error ||x - x_hat||^2, ``b_pre`` (d_in) the SAE's pre-encoder bias. For each
    of the R dead units one input n is drawn with probability p_n = sq_error_n / sum_m sq_error_m,
    independently (with replacement; Bricken et al. weight by the square of their whole loss).
    With mu the pool's mean input, u = (x_n - mu) / ||x_n - mu|| and
    a = ENCODER_SCALE * mean_{live j} ||W_e[j]|| (mean norm 1 if no unit lives):

        decoder column = u,   encoder row = a u,   encoder bias = -a u . (mu - b_pre),

    so the unit's pre-activation is a u . (x - mu): Bricken et al.'s zero bias, measured from the
    data mean. (Their encoder input is centred by b_d, initialised to the data's geometric median;
    here b_pre need not be near the mean. The trunk's features are non-negative, so raw inputs all
    point along the mean: units resampled to them fire together, fill the top k and wreck the
    reconstruction.) Deterministic given ``generator`` (a CPU generator).
    """
    index = dead.nonzero().squeeze(1)
    n = len(index)
    weights = sq_error.detach().double().cpu().clamp_min(0)
    if weights.sum() <= 0:  # a perfect reconstruction everywhere: every input alike
        weights = torch.ones_like(weights)
    drawn = torch.multinomial(weights, n, replacement=True, generator=generator)
    x = inputs.detach()
    mu = x.mean(0)
    chosen = x[drawn.to(x.device)] - mu
    u = chosen / chosen.norm(dim=1, keepdim=True).clamp_min(1e-12)
    live = ~dead
    mean_norm = encoder_weight.detach()[live].norm(dim=1).mean() if live.any() else 1.0
    rows = ENCODER_SCALE * mean_norm * u
    return Resampled(index, rows, -rows @ (mu - b_pre.detach()), u.T)


def reset_adam_state(
    optimizer: torch.optim.Optimizer, param: Tensor, index: Tensor, dim: int
) -> None:
    """Zero Adam's moments (exp_avg, exp_avg_sq) of ``param``'s slices ``index`` along ``dim``,
    so the re-initialised weights do not inherit the dead units' history; a no-op before the
    first step (no state yet). The shared step count is left alone."""
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, index.to(state[key].device), 0.0)


@torch.no_grad()
def apply_resample(
    sae: SparseAutoencoder, new: Resampled, optimizer: torch.optim.Optimizer
) -> None:
    """Write ``new`` into ``sae`` (encoder rows and biases, decoder columns) and reset exactly
    those entries' Adam state."""
    index = new.index.to(sae.encoder.weight.device)
    sae.encoder.weight[index] = new.encoder_rows.to(sae.encoder.weight)
    sae.encoder.bias[index] = new.encoder_bias.to(sae.encoder.bias)
    sae.decoder.weight[:, index] = new.decoder_columns.to(sae.decoder.weight)
    for param, dim in ((sae.encoder.weight, 0), (sae.encoder.bias, 0), (sae.decoder.weight, 1)):
        reset_adam_state(optimizer, param, index, dim)


class ResampleCallback(pl.Callback):
    """Resample the window-dead units at the training times ``at`` (epochs, may be fractional).

    A point fires before the first training step whose time t = epoch + batch_idx / steps per
    epoch reaches it; a point past the last step never fires. Dead: not fired in the last
    ``window`` training samples (the module's ``window`` counter). The pool is ``pool_size``
    training-distribution images drawn afresh at each point with a generator seeded by
    (``seed``, point), run through the model in evaluation mode, so a resumed run resamples
    exactly as the uninterrupted one. A resampled unit's window counter restarts at 0. Logs
    ``remedy/resampled``, the units resampled per epoch, and ``remedy/dead``, the units dead
    under its window at the epoch's end.
    """

    def __init__(self, at: Sequence[float], window: int, pool_size: int, seed: int) -> None:
        if window < 1 or pool_size < 1:
            raise ValueError(
                f"resample needs window >= 1 and pool_size >= 1, got {window}, {pool_size}"
            )
        self.at = sorted(float(t) for t in at)
        self.window = window
        self.pool_size = pool_size
        self.seed = seed
        self._count = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        self._count = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: VAESAEModule, batch: Any, batch_idx: int
    ) -> None:
        steps = trainer.num_training_batches
        t = trainer.current_epoch + batch_idx / steps
        for i, point in enumerate(self.at):
            if t - 1 / steps < point <= t:
                self._count += self.resample(trainer, pl_module, i)

    def resample(self, trainer: pl.Trainer, pl_module: VAESAEModule, point: int) -> int:
        dead = pl_module.window.dead_mask(self.window)
        if not dead.any():
            return 0
        inputs, sq_error = self._pool(trainer, pl_module, point)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + point)
        sae = pl_module.model.sae
        new = resample_dead(inputs, sq_error, dead, sae.encoder.weight, sae.b_pre, generator)
        apply_resample(sae, new, trainer.optimizers[0])
        # A fresh unit starts a fresh window: its silence as a dead unit is not its own.
        pl_module.window.samples_since_fired[new.index.to(pl_module.device)] = 0
        log.info("resampled %d dead units at epoch %d", len(new.index), trainer.current_epoch)
        return len(new.index)

    @torch.no_grad()
    def _pool(
        self, trainer: pl.Trainer, pl_module: VAESAEModule, point: int
    ) -> tuple[Tensor, Tensor]:
        """Normalised SAE inputs x and squared errors ||x - x_hat||^2 of a fresh pool.

        The SAE's input h is normalised as one training batch would be (by the pool's own RMS),
        not by the running RMS of evaluation, which lags the trunk early in training; the
        resampled weights must fit the inputs that training will feed them.
        """
        dm = attached_datamodule(trainer)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * (point + 1))
        factors = dm.dataset.sample_factors(self.pool_size, gen).to(pl_module.device)
        sae = pl_module.model.sae
        was_training = pl_module.training
        pl_module.eval()
        try:
            raw = []  # the (centred) inputs h - c before the division by r
            for chunk in factors.split(dm.eval_batch_size):
                out = pl_module.model(pl_module.to_input(dm.images(chunk)))
                raw.append(out.h.float() * out.scale)
            h = torch.cat(raw)
            x = h / sae.batch_scale(h)
            x_hat = sae.decode(sae.encode(x))
        finally:
            pl_module.train(was_training)
        return x, (x - x_hat).pow(2).sum(1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        dead = float(pl_module.window.dead_mask(self.window).sum())
        for name, value in (("remedy/resampled", float(self._count)), ("remedy/dead", dead)):
            pl_module.log(name, value, on_step=False, on_epoch=True, batch_size=1)
