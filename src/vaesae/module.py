"""The LightningModule: trains a `VAESAE` on uint8 image batches and tracks firing windows.

Everything mathematical lives in `vaesae.models` (losses), `vaesae.metrics` (firing window) and
`vaesae.remedies` (the AuxK loss); this class only wires them into Lightning's training step. The
schedule callback (`vaesae.sparsity.SparsityScheduleCallback`) sets k or `l1_coef` before each
step and reads the returned L0; the evaluation callback reads `model` and `window` at each
epoch's end.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor

from vaesae.data.datamodule import attached_datamodule
from vaesae.metrics import SamplesSinceFired, fvu
from vaesae.models import VAESAE, VAESAEOutput, vae_sae_loss
from vaesae.remedies import AuxKSettings, sae_auxk_loss

__all__ = ["VAESAEModule", "LOGGED_TERMS", "step_figures"]

LOGGED_TERMS = ("loss", "recon", "kl", "sae_mse", "l1", "penalty")
# The trunk's raw scale, which the SAE's input normalisation divides out: logged so a drift of
# ||h|| (a symptom of a scale-dependent objective) stays visible.
SCALE_TERMS = ("sae/h_norm", "sae/input_scale")
# Images whose mean sets the data-dependent biases: enough for a mean intensity within ~1 % on
# dSprites, one encoder pass of a few hundred ms on a CPU.
DATA_INIT_IMAGES = 1024


def step_figures(terms: dict[str, Tensor], out: VAESAEOutput) -> dict[str, Tensor]:
    """What a training step logs (epoch means in metrics.csv): the loss terms ``train/*``, the
    trunk's raw norm ||h|| = ||x|| r (``sae/h_norm``), the SAE's fraction of variance
    unexplained (``sae/fvu``) and its input scale r (``sae/input_scale``); all detached."""
    scale = out.scale.detach()
    return {
        **{f"train/{name}": terms[name].detach() for name in LOGGED_TERMS},
        "sae/h_norm": out.h.detach().norm(dim=1).mean() * scale,
        "sae/fvu": fvu(out.h.detach(), out.h_hat.detach()),
        "sae/input_scale": scale,
    }


class VAESAEModule(pl.LightningModule):
    """Hybrid VAE-SAE training: loss = recon + beta KL + alpha SAE-MSE + lambda penalty (per image)
    [+ AuxK coef * L_aux].

    ``method`` names the activation rule (``rule_kw``: its settings) and the penalty is the rule's
    own (``SparseActivation.penalty``: ||s||_1, or JumpReLU's L0). ``center`` and
    ``signed_trunk`` go to :class:`vaesae.models.VAESAE`. ``auxk`` (a mapping of
    :class:`vaesae.remedies.AuxKSettings` fields, or None) adds alpha * coef * the AuxK loss from
    its ``start_epoch`` on, with dead units read from the training window counter; ``train/auxk``
    and ``remedy/dead`` (the units it treats, mean over the epoch's steps) are logged whenever it
    is configured (the loss 0 before it starts). ``init`` and ``logvar_bias`` go to
    :class:`vaesae.models.VAESAE`; with ``data_init`` a fresh run sets the model's data-dependent
    biases from the first ``DATA_INIT_IMAGES`` images of its first epoch before the first step.
    """

    def __init__(
        self,
        in_channels: int,
        d_z: int = 10,
        width: int = 500,
        method: str = "topk",
        k_start: int = 500,
        site: str = "hidden",
        stop_gradient: bool = True,
        normalize_decoder: bool = False,
        input_norm: str = "none",
        detach_sae_loss: bool = False,
        center: str = "none",
        signed_trunk: bool = False,
        rule_kw: dict | None = None,
        auxk: dict | None = None,
        beta: float = 1.0,
        alpha: float = 1.0,
        lr: float = 1e-3,
        channels_last: bool = False,
        init: str = "he",
        logvar_bias: float = 0.0,
        data_init: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = VAESAE(
            in_channels,
            d_z=d_z,
            width=width,
            method=method,
            k=k_start,
            site=site,
            stop_gradient=stop_gradient,
            normalize_decoder=normalize_decoder,
            input_norm=input_norm,
            detach_sae_loss=detach_sae_loss,
            center=center,
            signed_trunk=signed_trunk,
            rule_kw=rule_kw,
            init=init,
            logvar_bias=logvar_bias,
        )
        self.auxk = None if auxk is None else AuxKSettings(**auxk)
        # lambda: the controller overwrites it before every step for penalty rules; 0: no penalty.
        self.l1_coef: float | Tensor = 0.0
        # A buffer, so the window counts are saved in checkpoints with the weights.
        self.window = SamplesSinceFired(width)

    def to_input(self, images: Tensor) -> Tensor:
        """uint8 images 0..255 -> float in [0, 1] (the Bernoulli targets), in the model's layout."""
        x = images.float().div_(255.0)
        if self.hparams["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def setup(self, stage: str) -> None:
        if self.hparams["channels_last"]:
            # In place, so checkpoints restore into the same layout.
            # Module.to takes memory_format, which torch's typed overloads leave out.
            self.model.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]

    def on_train_start(self) -> None:
        # After a checkpoint is restored, so a resumed run (global_step > 0) keeps its weights.
        if not self.hparams["data_init"] or self.global_step > 0:
            return
        dm = attached_datamodule(self.trainer)
        first = dm.epoch_factors(0)[:DATA_INIT_IMAGES].to(self.device)
        self.model.init_from_data_(self.to_input(dm.images(first)))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, _ = batch
        x = self.to_input(images)
        out = self.model(x)
        sae = self.model.sae
        penalty = sae.activation.penalty(out.pre, out.codes)
        terms = vae_sae_loss(
            out, x, self.hparams["beta"], self.hparams["alpha"], self.l1_coef, penalty
        )
        loss = terms["loss"]
        logged = step_figures(terms, out)
        if self.auxk is not None:
            aux = out.codes.new_zeros(())
            # Dead as of the batches before this one, like Gao et al.'s running counter.
            dead = self.window.dead_mask(self.auxk.window)
            logged["remedy/dead"] = dead.sum().float()
            if self.auxk.active(self.current_epoch):
                k_aux = self.auxk.k_aux or sae.d_in // 2
                aux = sae_auxk_loss(sae, out.h, out.h_hat, dead, k_aux)
                loss = loss + self.hparams["alpha"] * self.auxk.coef * aux
            logged["train/auxk"] = aux.detach()
            logged["train/loss"] = loss.detach()
        self.window.update(out.codes.detach())
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=len(x))
        return {"loss": loss, "l0": terms["l0"]}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.model.sae.normalize_decoder:
            self.model.sae.normalize_decoder_()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The posterior samples draw from the global generators: saving them makes a resumed run
        # repeat the uninterrupted one exactly.
        rng_state: dict[str, Tensor | list[Tensor]] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng_state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_state"] = rng_state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("rng_state")
        if state is not None:
            torch.set_rng_state(state["cpu"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
