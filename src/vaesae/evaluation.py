"""Per-epoch evaluation on the fixed evaluation set: dead-neuron rules, MIG and the other global
disentanglement metrics, neuron semantics.

`evaluate_codes` is a pure function of the evaluation set's latent means, SAE codes and factors;
`EvaluationCallback` runs the model over the evaluation set at the end of every training epoch,
calls it, and logs the result. All definitions come from `vaesae.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from vaesae.data.datamodule import attached_datamodule
from vaesae.metrics import (
    FiringStats,
    FiringSummary,
    ReconLevels,
    ReconStats,
    dci,
    dead_transitions,
    gap_closed,
    mig,
    min_samples_for_frequency,
    modularity_from_mi,
    neuron_semantics,
    recon_levels,
    sap,
)
from vaesae.models import VAESAEOutput, bernoulli_recon

if TYPE_CHECKING:
    # Type-only: the callbacks are built before, and without, the training module.
    from vaesae.module import VAESAEModule

__all__ = [
    "EvalSettings",
    "EvalResult",
    "HIST_NAMES",
    "frequency_rule_name",
    "evaluate_codes",
    "CodeCollector",
    "collect_codes",
    "EvaluationCallback",
]

# Firing-frequency histogram: neurons that never fire, then decades of frequency with inclusive
# upper edges 1e-4, 1e-3, 1e-2, 1e-1 and 1.
HIST_UPPER_LOG10 = (-4.0, -3.0, -2.0, -1.0)
HIST_NAMES = (
    "firing/hist_never",
    "firing/hist_le1e-4",
    "firing/hist_1e-4_1e-3",
    "firing/hist_1e-3_1e-2",
    "firing/hist_1e-2_1e-1",
    "firing/hist_gt1e-1",
)


def frequency_rule_name(value: float) -> str:
    """Column name of a frequency rule, e.g. 1e-3 -> 'freq1e-3'."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"freq{mantissa}e{int(exponent)}"


@dataclass(frozen=True)
class EvalSettings:
    """What to compute at each epoch's end (defaults match `conf/train.yaml`)."""

    primary_kind: str = "never"  # never | magnitude | frequency | window
    primary_value: float = 0.0
    magnitude_eps: float = 1e-3
    frequencies: tuple[float, ...] = (1e-3, 1e-4, 1e-5)
    window: int = 100_000
    dense_frequency: float = 0.1
    num_bins: int = 20
    align_threshold: float = 0.1
    select_threshold: float = 0.05
    dci_samples: int = 1500
    dci_sae: bool = False

    @property
    def primary_name(self) -> str:
        if self.primary_kind == "frequency":
            return frequency_rule_name(self.primary_value)
        return self.primary_kind


@dataclass
class EvalResult:
    """One epoch's figures (`scalars`, flat names as logged) and the per-neuron arrays."""

    scalars: dict[str, float]
    dead: dict[str, Tensor]  # rule name -> BoolTensor[M]
    frequency: Tensor  # float64 [M]
    normalized_mi: Tensor  # float64 [M, K], 0 for units not described (see `alignment`)
    alignment: Tensor  # float64 [M], NaN for units not described: dead (primary rule) or rare


def evaluate_codes(
    mu: Tensor,
    codes: Tensor,
    factors: Tensor,
    factor_names: tuple[str, ...],
    settings: EvalSettings,
    window_dead: Tensor | None = None,
    reference_dead: Tensor | None = None,
    firing: FiringSummary | None = None,
    with_dci: bool = False,
) -> EvalResult:
    """All per-epoch figures from the evaluation set.

    mu: [N, d_z] posterior means; codes: [N, M] SAE activations; factors: [N, K] classes.
    window_dead: the training-window rule's mask (None: not reported). reference_dead: the
    primary rule's mask at the end of the schedule (None before it), for revived / newly dead.
    firing: the codes' firing statistics when already streamed (:class:`FiringStats` over the
    evaluation batches); computed from ``codes`` when None.

    Scalars (rates are fractions of the M neurons):
      dead/<rule>          dead rate under each rule: never, magnitude, freq<tau> (only when
                           N * tau > 1), window; dead/primary repeats the chosen rule
      sparsity/dead_features  number of dead neurons under the primary rule
      neurons/dense        fraction of neurons firing on more than `dense_frequency` of samples
      neurons/revived, neurons/newly_dead  counts relative to the end of the schedule (NaN before)
      firing/hist_*        number of neurons per firing-frequency decade (HIST_NAMES)
      eval/l0              mean number of active codes per sample
      mig/latent, mig/sae  MIG of mu and of the SAE codes; mig/<code>/<factor> per factor
      modularity/<code>, sap/<code>  modularity (MIG's MI matrix) and continuous SAP of mu
                           (`latent`) and of the SAE units alive under the primary rule (`sae`;
                           a dead unit's constant code would count as a perfectly useless one)
      dci/{disentanglement,completeness,informativeness}/<code>  NaN unless ``with_dci``: DCI of mu
                           (and of the alive SAE codes with ``settings.dci_sae``) on the first
                           ``settings.dci_samples`` samples, trees fitted on their first 2/3 and
                           tested on the last 1/3 (disentanglement_lib's 2:1 split)
      semantics/*          per-unit semantics (`vaesae.metrics.neuron_semantics`) of the units
                           alive under the primary rule that fire on >= MIN_FIRING samples:
                           num_alive, num_described, mean alignment, fractions, coverage
    """
    width = codes.shape[1]
    if firing is None:
        firing = FiringSummary.from_activations(codes)
    elif firing.num_samples != codes.shape[0] or firing.fire_count.numel() != width:
        raise ValueError(
            f"firing statistics of {firing.num_samples} samples x {firing.fire_count.numel()} "
            f"units do not describe codes of shape {tuple(codes.shape)}"
        )
    dead = {
        "never": firing.dead_mask("never"),
        "magnitude": firing.dead_mask("magnitude", settings.magnitude_eps),
    }
    for tau in settings.frequencies:
        if firing.num_samples >= min_samples_for_frequency(tau):
            dead[frequency_rule_name(tau)] = firing.dead_mask("frequency", tau)
    if window_dead is not None:
        dead["window"] = window_dead.to(codes.device)
    primary = settings.primary_name
    if primary not in dead:
        raise ValueError(f"primary dead-neuron rule {primary!r} is not available this epoch")
    scalars: dict[str, float] = {
        f"dead/{name}": float(m.double().mean()) for name, m in dead.items()
    }
    scalars["dead/primary"] = scalars[f"dead/{primary}"]
    scalars["sparsity/dead_features"] = float(dead[primary].sum())

    frequency = firing.frequency()
    scalars["neurons/dense"] = float((frequency > settings.dense_frequency).double().mean())
    if reference_dead is None:
        scalars["neurons/revived"] = scalars["neurons/newly_dead"] = math.nan
    else:
        moved = dead_transitions(reference_dead.to(codes.device), dead[primary])
        scalars["neurons/revived"] = float(moved.num_revived)
        scalars["neurons/newly_dead"] = float(moved.num_newly_dead)
    fired = frequency[frequency > 0].log10()
    upper = torch.tensor(HIST_UPPER_LOG10, dtype=fired.dtype, device=fired.device)
    counts = torch.bincount(torch.searchsorted(upper, fired), minlength=len(upper) + 1)
    for name, count in zip(HIST_NAMES, [width - len(fired), *counts.tolist()], strict=True):
        scalars[name] = float(count)
    scalars["eval/l0"] = float((codes != 0).sum(1).double().mean())

    latent = mig(mu, factors, settings.num_bins)
    sae = mig(codes, factors, settings.num_bins)
    scalars["mig/latent"], scalars["mig/sae"] = latent.score, sae.score
    for k, name in enumerate(factor_names):
        scalars[f"mig/latent/{name}"] = float(latent.per_factor[k])
        scalars[f"mig/sae/{name}"] = float(sae.per_factor[k])
    alive = ~dead[primary]
    scalars.update(_global_scores(mu, codes[:, alive], factors, latent.mi, sae.mi[alive]))
    views = {"latent": mu, **({"sae": codes[:, alive]} if settings.dci_sae else {})}
    for view, z in views.items():
        # NaN at the other epochs: Lightning keeps a name's last logged value among its callback
        # metrics, so a row would otherwise repeat an earlier epoch's DCI as its own.
        scalars.update(
            _dci_scores(z, factors, settings.dci_samples, view)
            if with_dci
            else {f"dci/{name}/{view}": math.nan for name in DCI_NAMES}
        )
    semantics = neuron_semantics(
        codes,
        factors,
        ~dead[primary],
        align_threshold=settings.align_threshold,
        select_threshold=settings.select_threshold,
    )
    scalars.update({f"semantics/{k}": v for k, v in semantics.summary().items()})
    normalized = torch.zeros_like(sae.mi)
    normalized[semantics.neurons] = semantics.normalized_mi
    alignment = torch.full_like(frequency, math.nan, dtype=torch.float64)
    alignment[semantics.neurons] = semantics.alignment
    return EvalResult(scalars, dead, frequency, normalized, alignment)


def _global_scores(
    mu: Tensor, alive_codes: Tensor, factors: Tensor, mi_latent: Tensor, mi_alive: Tensor
) -> dict[str, float]:
    """Modularity and continuous SAP of mu and of the alive SAE codes (NaN with < 2 codes)."""
    out = {}
    for view, z, mi in (("latent", mu, mi_latent), ("sae", alive_codes, mi_alive)):
        usable = z.shape[1] >= 2 and factors.shape[1] >= 2
        out[f"modularity/{view}"] = float(modularity_from_mi(mi).mean()) if usable else math.nan
        out[f"sap/{view}"] = sap(z, factors).score if usable else math.nan
    return out


# The three DCI scores (Eastwood & Williams 2018), as their `vaesae.metrics.DCIResult` fields.
DCI_NAMES = ("disentanglement", "completeness", "informativeness")


def _dci_scores(z: Tensor, factors: Tensor, samples: int, view: str) -> dict[str, float]:
    """DCI of ``z`` on its first ``samples`` rows, split 2:1 into training and test rows."""
    n = min(samples, z.shape[0])
    cut = (2 * n) // 3
    if z.shape[1] < 2 or cut < 2 or n - cut < 1:
        return {f"dci/{name}/{view}": math.nan for name in DCI_NAMES}
    z, f = z[:n].double().cpu(), factors[:n].cpu()
    result = dci(z[:cut], f[:cut], z[cut:], f[cut:])
    return {f"dci/{name}/{view}": float(getattr(result, name)) for name in DCI_NAMES}


class CodeCollector:
    """Gathers the evaluation set's model outputs batch by batch: the latent means, codes and
    factors, the first batch's inputs and reconstructions (sigmoid of the logits), and, when
    given, ``firing`` (every batch's codes) and ``quality`` (every batch's reconstruction,
    decoded from mu, and SAE error). The outputs may come from the module itself
    (:func:`collect_codes`) or from a batched forward of several modules (a pack)."""

    def __init__(self, firing: FiringStats | None = None, quality: ReconStats | None = None):
        self.firing, self.quality = firing, quality
        self.mus: list[Tensor] = []
        self.codes: list[Tensor] = []
        self.factors: list[Tensor] = []
        self.first: tuple[Tensor, Tensor] | None = None

    def add(self, out: VAESAEOutput, x: Tensor, factors: Tensor) -> None:
        """One batch: the eval-mode output ``out`` of images ``x`` with ``factors``."""
        self.mus.append(out.mu.float())
        self.codes.append(out.codes.float())
        if self.firing is not None:
            self.firing.update(self.codes[-1])
        if self.quality is not None:
            per_image = bernoulli_recon(out.logits.float(), x, reduction="none")
            self.quality.update(per_image, out.h.float(), out.h_hat.float())
        self.factors.append(factors)
        if self.first is None:
            self.first = (x, torch.sigmoid(out.logits.float()))

    def result(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """mu [N, d_z], codes [N, M], factors [N, K], the first batch's inputs and recons."""
        assert self.first is not None, "the evaluation set is empty"
        cat = torch.cat
        return cat(self.mus), cat(self.codes), cat(self.factors), self.first[0], self.first[1]


@torch.no_grad()
def collect_codes(
    module: VAESAEModule, batches, collector: CodeCollector | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run the model in eval mode, in fp32, over (images, factors) batches, into ``collector``
    (a new one without accumulators when None).

    Returns mu [N, d_z], codes [N, M], factors [N, K] (all float32/long on the model's device)
    and the first batch's inputs and reconstructions (:meth:`CodeCollector.result`). Autocast is
    switched off, so the metrics see fp32 codes whatever precision training runs in.
    """
    was_training = module.training
    module.eval()
    collector = CodeCollector() if collector is None else collector
    try:
        for images, f in batches:
            x = module.to_input(images)
            with torch.autocast(x.device.type, enabled=False):
                collector.add(module.model(x), x, f)
    finally:
        module.train(was_training)
    return collector.result()


class EvaluationCallback(pl.Callback):
    """Evaluates the fixed evaluation set at the end of every training epoch and logs it.

    DCI (slow: gradient-boosted trees) is computed only at the end of the ``dci_epochs``. The
    primary rule's dead mask at the end of `reference_epoch` (the epoch at whose end k has
    reached k_end) is kept as the reference for revived / newly-dead counts in later epochs, and
    saved in checkpoints.

    Training progress (:mod:`vaesae.metrics.progress`): ``eval/recon`` (nats per image, decoded
    from mu), ``eval/fvu``, ``eval/sae_energy_fraction``, and the share of the no-information gap
    closed by the evaluation reconstruction (``eval/gap_closed``) and by the epoch's mean
    training reconstruction (``train/gap_closed``). ``levels``, the gap's two ends, are computed
    once from the evaluation set's images.
    """

    def __init__(
        self, settings: EvalSettings, reference_epoch: int | None, dci_epochs: tuple[int, ...] = ()
    ) -> None:
        self.settings = settings
        self.reference_epoch = reference_epoch
        self.dci_epochs = set(dci_epochs)
        self.reference_dead: Tensor | None = None
        self.last: EvalResult | None = None
        self.samples: tuple[Tensor, Tensor] | None = None
        self.levels: ReconLevels | None = None
        self.collected: CodeCollector | None = None

    def collector(self, pl_module: VAESAEModule) -> CodeCollector:
        """An empty collector with this epoch's firing and quality accumulators; filled by a
        caller that runs the model itself (a pack's batched forward) and handed back in
        ``collected``, it replaces the callback's own pass over the evaluation set."""
        firing = FiringStats(pl_module.model.sae.width).to(pl_module.device)
        return CodeCollector(firing, ReconStats())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VAESAEModule) -> None:
        dm = attached_datamodule(trainer)
        if self.levels is None:
            self.levels = recon_levels(
                pl_module.to_input(images) for images, _ in dm.eval_batches(pl_module.device)
            )
        collector, self.collected = self.collected, None
        if collector is None:
            collector = self.collector(pl_module)
            collect_codes(pl_module, dm.eval_batches(pl_module.device), collector)
        mu, codes, factors, x, recon = collector.result()
        firing, quality = collector.firing, collector.quality
        assert firing is not None and quality is not None
        window_dead = pl_module.window.dead_mask(self.settings.window)
        result = evaluate_codes(
            mu,
            codes,
            factors,
            dm.dataset.factor_names,
            self.settings,
            window_dead,
            self.reference_dead,
            firing.compute(),
            with_dci=trainer.current_epoch in self.dci_epochs,
        )
        result.scalars.update(quality.compute())
        result.scalars["eval/gap_closed"] = gap_closed(result.scalars["eval/recon"], self.levels)
        train_recon = trainer.callback_metrics.get("train/recon")
        result.scalars["train/gap_closed"] = (
            math.nan if train_recon is None else gap_closed(float(train_recon), self.levels)
        )
        if trainer.current_epoch == self.reference_epoch:
            self.reference_dead = result.dead[self.settings.primary_name].cpu()
        self.last, self.samples = result, (x, recon)
        pl_module.log_dict(result.scalars, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"reference_dead": self.reference_dead}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference_dead = state_dict.get("reference_dead")
