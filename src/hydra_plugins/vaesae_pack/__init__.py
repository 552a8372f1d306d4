"""Hydra plugin package of vaesae: the pack launcher (`hydra/launcher=pack`)."""
