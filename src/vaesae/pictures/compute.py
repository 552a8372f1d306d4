"""What the per-neuron pictures show, as functions of tensors (no files, no Lightning).

Notation: N evaluation samples, M SAE units, K factors, U units drawn, d the SAE's input size.
The SAE computes s = act(W_e (x - b_pre) + b_e) and x_hat = W_d s + b_pre on x = (h - c) / r
(`vaesae.models.sae`); the model's reconstruction of h is x_hat * r + c.

- `rank_units`: which units are drawn (alive ones only: dead units are counted, never drawn).
- `top_activating`: dataset-level activation maximisation, the samples with the largest code.
- `direction_inputs`, `traversal_latents`, `traversal_images`: the unit's dictionary direction
  W_d[:, i] pushed through the rest of the model, as if the unit alone were active.
- `response_curves`: the unit's mean activation per value of each factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vaesae.models import VAESAE

__all__ = [
    "VIEWS",
    "EPOCH_NAMES",
    "resolve_epochs",
    "rank_units",
    "top_activating",
    "amplitude_grid",
    "direction_inputs",
    "traversal_latents",
    "traversal_images",
    "response_curves",
]

# The two rankings of the alive units a picture can be drawn for.
VIEWS = ("frequency", "alignment")
# Named epochs of `pictures.epochs`: epoch 0, the reference epoch (k reaches k_end), the last one.
EPOCH_NAMES = ("first", "reference", "final")


def resolve_epochs(
    spec: Sequence[str | int], reference: int | None, total_epochs: int
) -> tuple[int, ...]:
    """Epoch numbers of `pictures.epochs` entries, sorted and without repeats: ``first`` -> 0,
    ``reference`` -> `reference` (the epoch whose evaluation runs at k = k_end; skipped when
    None), ``final`` -> total_epochs - 1, an integer -> itself."""
    named = {"first": 0, "reference": reference, "final": total_epochs - 1}
    out = set()
    for entry in spec:
        if isinstance(entry, str):
            if entry not in named:
                raise ValueError(
                    f"pictures.epochs entry {entry!r}: choose {', '.join(EPOCH_NAMES)} or a number"
                )
            epoch = named[entry]
        else:
            epoch = int(entry)
        if epoch is not None:
            out.add(int(epoch))
    return tuple(sorted(out))


def rank_units(
    view: str, frequency: Tensor, alignment: Tensor, dead: Tensor, num_units: int
) -> Tensor:
    """Indices (LongTensor[<= num_units]) of the units drawn in a view, best first.

    ``frequency``: the alive units (``dead`` False) by firing frequency on the evaluation set,
    highest first. ``alignment``: the alive units with a finite alignment (those
    `vaesae.metrics.neuron_semantics` describes: they fire often enough to be scored) by
    alignment, highest first. Ties keep the lower unit index first. Fewer than `num_units`
    indices when fewer units qualify.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    score = (frequency if view == "frequency" else alignment).detach().double().cpu()
    eligible = ~dead.detach().bool().cpu() & torch.isfinite(score)
    candidates = eligible.nonzero().flatten()
    # A stable sort of the negated score: descending, with ties in index order.
    order = torch.sort(-score[candidates], stable=True).indices
    return candidates[order][:num_units]


def top_activating(codes: Tensor, units: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The `n` evaluation samples with the largest activation of each unit.

    codes: [N, M] activations; units: LongTensor[U]. Returns (indices LongTensor[U, n'],
    values [U, n']) with n' = min(n, N): row u lists the samples in decreasing order of
    codes[:, units[u]] (ties: lower sample index first), so indices[u, 0] is the argmax.
    Samples where the unit does not fire (value <= 0) can appear when it fires on fewer than n;
    the caller decides how to show them.
    """
    picked = codes[:, units.to(codes.device)].T  # [U, N]
    values, indices = torch.sort(picked, dim=1, descending=True, stable=True)
    n = min(n, codes.shape[0])
    return indices[:, :n], values[:, :n]


def amplitude_grid(max_activation: Tensor, steps: int) -> Tensor:
    """[U, steps] amplitudes a_j = j / (steps - 1) * max_u, j = 0..steps-1: from 0 (the unit
    silent) to the unit's largest activation on the evaluation set."""
    if steps < 2:
        raise ValueError(f"a traversal needs >= 2 steps, got {steps}")
    fractions = torch.linspace(0.0, 1.0, steps, device=max_activation.device)
    return max_activation.float()[:, None] * fractions[None, :]


def direction_inputs(b_pre: Tensor, w_d: Tensor, units: Tensor, amplitudes: Tensor) -> Tensor:
    """x_hat[u, j] = b_pre + amplitudes[u, j] * W_d[:, units[u]]: the SAE's reconstruction (in
    its normalised units) when unit units[u] alone is active, at amplitude a.

    b_pre: [d]; w_d: [d, M] (the decoder weight, one dictionary direction per column); units:
    LongTensor[U]; amplitudes: [U, T]. Returns [U, T, d].
    """
    directions = w_d[:, units.to(w_d.device)].T  # [U, d]
    return b_pre + amplitudes[:, :, None].to(w_d) * directions[:, None, :]


@torch.no_grad()
def traversal_latents(model: VAESAE, units: Tensor, amplitudes: Tensor) -> Tensor:
    """Decoder inputs z [U, T, d_z] of the traversal of `direction_inputs` through `model`.

    The reconstruction is mapped back to the units of h, h' = x_hat * r + c, with the evaluation
    scale r and centre c of the SAE (running statistics, never updated here). Then, as in
    :meth:`VAESAE.forward` in eval mode: at ``site="hidden"`` the latent head reads h' and z is
    its mean mu; at ``site="latent"`` the SAE's input is mu itself, so z = h'.
    """
    sae = model.sae
    was_training = model.training
    model.eval()  # the SAE's running scale and centre must be read, not updated
    try:
        with torch.autocast(sae.b_pre.device.type, enabled=False):
            x_hat = direction_inputs(sae.b_pre, sae.decoder.weight, units, amplitudes)
            flat = x_hat.reshape(-1, x_hat.shape[-1]).float()
            centre = sae.input_center(flat)
            raw = flat * sae.input_scale(flat) + (0.0 if centre is None else centre)
            z = model.latent_head(raw)[0] if model.site == "hidden" else raw
    finally:
        model.train(was_training)
    return z.reshape(*amplitudes.shape, -1)


@torch.no_grad()
def traversal_images(model: VAESAE, units: Tensor, amplitudes: Tensor) -> Tensor:
    """Images [U, T, C, 64, 64] in [0, 1] of the traversal: sigmoid(decoder(z)), z from
    `traversal_latents` (the mean of the Bernoulli decoder, as in the reconstructions)."""
    z = traversal_latents(model, units, amplitudes)
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(z.device.type, enabled=False):
            logits = model.decoder(z.reshape(-1, z.shape[-1]).float())
    finally:
        model.train(was_training)
    return torch.sigmoid(logits.float()).reshape(*z.shape[:2], *logits.shape[1:])


def response_curves(codes: Tensor, factors: Tensor, factor_sizes: Sequence[int]) -> list[Tensor]:
    """Mean activation of each unit per value of each factor.

    codes: [N, U] activations of the drawn units (zeros included: a silent sample counts as 0);
    factors: LongTensor[N, K] class indices; factor_sizes: the K numbers of classes. Returns K
    float64 tensors, the k-th [U, factor_sizes[k]] with entry (u, v) = mean of codes[n, u] over
    the samples n with factors[n, k] = v, NaN for a value with no sample.
    """
    codes = codes.detach().double()
    curves = []
    for k, size in enumerate(factor_sizes):
        values = factors[:, k].to(codes.device)
        sums = torch.zeros(size, codes.shape[1], dtype=torch.float64, device=codes.device)
        sums.index_add_(0, values, codes)
        counts = torch.bincount(values, minlength=size).double()
        mean = sums / counts[:, None]  # 0 / 0 = NaN for a value no sample has
        curves.append(mean.T.cpu())
    return curves
