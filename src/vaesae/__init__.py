"""vaesae: sparsification and interpretability experiments on hybrid VAE-SAE models."""

__version__ = "0.1.0"
