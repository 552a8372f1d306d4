"""The LightningModule: trains a `VAESAE` on uint8 image batches and tracks firing windows.

Everything mathematical lives in `vaesae.models` (losses) and `vaesae.metrics` (firing window);
this class only wires them into Lightning's training step. The schedule callback
(`vaesae.sparsity.SparsityScheduleCallback`) sets k or `l1_coef` before each step and reads the
returned L0; the evaluation callback reads `model` and `window` at each epoch's end.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor

from vaesae.metrics import SamplesSinceFired
from vaesae.models import VAESAE, vae_sae_loss

__all__ = ["VAESAEModule", "LOGGED_TERMS"]

LOGGED_TERMS = ("loss", "recon", "kl", "sae_mse", "l1")
# The trunk's raw scale, which the SAE's input normalisation divides out: logged so a drift of
# ||h|| (a symptom of a scale-dependent objective) stays visible.
SCALE_TERMS = ("sae/h_norm", "sae/input_scale")


class VAESAEModule(pl.LightningModule):
    """Hybrid VAE-SAE training: loss = recon + beta KL + alpha SAE-MSE + lambda L1 (per image)."""

    def __init__(
        self,
        in_channels: int,
        d_z: int = 10,
        width: int = 500,
        method: str = "topk",
        k_start: int = 500,
        site: str = "hidden",
        stop_gradient: bool = True,
        normalize_decoder: bool = True,
        input_norm: str = "batch",
        beta: float = 1.0,
        alpha: float = 1.0,
        lr: float = 1e-3,
        channels_last: bool = False,
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
        )
        # The controller overwrites this before every step for penalty rules; 0 means no L1 term.
        self.l1_coef: float | Tensor = 0.0
        # A buffer, so the window counts are saved in checkpoints with the weights.
        self.window = SamplesSinceFired(width)

    def to_input(self, images: Tensor) -> Tensor:
        """uint8 images 0..255 -> float in [0, 1] (the Bernoulli targets), in the model's layout."""
        x = images.float().div_(255.0)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            # In place, so checkpoints restore into the same layout.
            self.model.to(memory_format=torch.channels_last)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, _ = batch
        x = self.to_input(images)
        out = self.model(x)
        terms = vae_sae_loss(out, x, self.hparams.beta, self.hparams.alpha, self.l1_coef)
        self.window.update(out.codes.detach())
        scale = out.scale.detach()
        self.log_dict(
            {
                **{f"train/{name}": terms[name].detach() for name in LOGGED_TERMS},
                "sae/h_norm": out.h.detach().norm(dim=1).mean() * scale,
                "sae/input_scale": scale,
            },
            on_step=False,
            on_epoch=True,
            batch_size=len(x),
        )
        return {"loss": terms["loss"], "l0": terms["l0"]}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.model.sae.normalize_decoder:
            self.model.sae.normalize_decoder_()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The posterior samples draw from the global generators: saving them makes a resumed run
        # repeat the uninterrupted one exactly.
        checkpoint["rng_state"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("rng_state")
        if state is not None:
            torch.set_rng_state(state["cpu"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
