"""Models: conv VAE, sparse autoencoder with interchangeable activation rules, the hybrid."""

from vaesae.models.activations import (
    ACTIVATIONS,
    L1ReLU,
    SparseActivation,
    TopK,
    activation_class,
    make_activation,
    register_activation,
)
from vaesae.models.hybrid import SAE_SITES, VAESAE, VAESAEOutput
from vaesae.models.losses import (
    LOSS_TERMS,
    bernoulli_recon,
    gaussian_kl,
    l0_norm,
    l1_norm,
    sae_mse,
    vae_sae_loss,
)
from vaesae.models.sae import INPUT_NORMS, SparseAutoencoder
from vaesae.models.vae import ConvDecoder, ConvEncoder, GaussianHead, reparameterize

__all__ = [
    "ACTIVATIONS",
    "INPUT_NORMS",
    "LOSS_TERMS",
    "SAE_SITES",
    "VAESAE",
    "ConvDecoder",
    "ConvEncoder",
    "GaussianHead",
    "L1ReLU",
    "SparseActivation",
    "SparseAutoencoder",
    "TopK",
    "VAESAEOutput",
    "activation_class",
    "bernoulli_recon",
    "gaussian_kl",
    "l0_norm",
    "l1_norm",
    "make_activation",
    "reparameterize",
    "register_activation",
    "sae_mse",
    "vae_sae_loss",
]
