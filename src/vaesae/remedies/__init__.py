"""Remedies for dead SAE units: the AuxK loss and neuron resampling."""

from vaesae.remedies.auxk import AUXK_METHODS, AuxKSettings, auxk_loss, sae_auxk_loss
from vaesae.remedies.resample import (
    ENCODER_SCALE,
    ResampleCallback,
    Resampled,
    apply_resample,
    resample_dead,
    reset_adam_state,
)

__all__ = [
    "AUXK_METHODS",
    "ENCODER_SCALE",
    "AuxKSettings",
    "ResampleCallback",
    "Resampled",
    "apply_resample",
    "auxk_loss",
    "reset_adam_state",
    "resample_dead",
    "sae_auxk_loss",
]
