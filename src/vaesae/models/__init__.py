"""Models: conv VAE, sparse autoencoder with interchangeable activation rules, the hybrid.

Importing the package registers every activation rule (topk, l1, batchtopk, jumprelu).
"""

from vaesae.models.activations import (
    ACTIVATIONS,
    L1ReLU,
    SparseActivation,
    TopK,
    activation_class,
    make_activation,
    register_activation,
)
from vaesae.models.batchtopk import BatchTopK
from vaesae.models.hybrid import SAE_SITES, VAESAE
from vaesae.models.init import INIT_SCHEMES
from vaesae.models.jumprelu import JumpReLU
from vaesae.models.losses import (
    LOSS_TERMS,
    bernoulli_recon,
    gaussian_kl,
    l0_norm,
    l1_norm,
    sae_mse,
    vae_sae_loss,
)
from vaesae.models.outputs import VAESAEOutput
from vaesae.models.sae import CENTERS, INPUT_NORMS, SAEOutput, SparseAutoencoder
from vaesae.models.vae import ConvDecoder, ConvEncoder, GaussianHead, reparameterize

__all__ = [
    "ACTIVATIONS",
    "CENTERS",
    "INIT_SCHEMES",
    "INPUT_NORMS",
    "LOSS_TERMS",
    "SAE_SITES",
    "VAESAE",
    "BatchTopK",
    "ConvDecoder",
    "ConvEncoder",
    "GaussianHead",
    "JumpReLU",
    "L1ReLU",
    "SAEOutput",
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
