"""Hydra configs of `vaesae.train` (a package, so Hydra finds them in an installed wheel)."""
