"""Per-neuron pictures: what a unit responds to, drawn at chosen epochs.

- `compute`: pure functions (unit ranking, top-activating samples, decoder-direction traversals,
  response curves);
- `render`: image pages and response-curve figures;
- `callback`: `write_pictures` and the Lightning callback (import it from
  `vaesae.pictures.callback`; it is not imported here, so that `vaesae.config` can read this
  package's constants without a cycle).
"""

from vaesae.pictures.compute import (
    EPOCH_NAMES,
    VIEWS,
    amplitude_grid,
    direction_inputs,
    rank_units,
    resolve_epochs,
    response_curves,
    top_activating,
    traversal_images,
    traversal_latents,
)

__all__ = [
    "EPOCH_NAMES",
    "VIEWS",
    "amplitude_grid",
    "direction_inputs",
    "rank_units",
    "resolve_epochs",
    "response_curves",
    "top_activating",
    "traversal_images",
    "traversal_latents",
]
