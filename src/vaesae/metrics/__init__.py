"""Metrics of sparse representations: dead-neuron rules, per-neuron semantics and global
disentanglement metrics (MIG, modularity, SAP, DCI).

No Lightning or Hydra. Dead-neuron rules, MIG, modularity and continuous SAP are pure torch;
discrete SAP (``sap(..., continuous=False)``, linear SVMs) and DCI (gradient-boosted trees) call
scikit-learn, imported inside those functions. Each module's docstring states the definitions it
implements.
"""

from vaesae.metrics.dci import DCIResult, dci, dci_from_importance
from vaesae.metrics.dead import (
    DEAD_KINDS,
    DeadTransitions,
    FiringSummary,
    SamplesSinceFired,
    advance_since_fired,
    dead_mask,
    dead_transitions,
    min_samples_for_frequency,
)
from vaesae.metrics.modularity import ModularityResult, modularity, modularity_from_mi
from vaesae.metrics.mutual_info import MIGResult, histogram_discretize, mig, mutual_information
from vaesae.metrics.progress import (
    ReconLevels,
    ReconStats,
    binary_entropy,
    fvu,
    gap_closed,
    recon_levels,
)
from vaesae.metrics.sap import SAPResult, sap
from vaesae.metrics.semantics import NeuronSemantics, firing_discretize, neuron_semantics
from vaesae.metrics.streaming import FiringStats

__all__ = [
    "DCIResult",
    "DEAD_KINDS",
    "DeadTransitions",
    "FiringStats",
    "FiringSummary",
    "MIGResult",
    "ModularityResult",
    "NeuronSemantics",
    "ReconLevels",
    "ReconStats",
    "SAPResult",
    "SamplesSinceFired",
    "advance_since_fired",
    "binary_entropy",
    "dci",
    "dci_from_importance",
    "dead_mask",
    "dead_transitions",
    "firing_discretize",
    "fvu",
    "gap_closed",
    "histogram_discretize",
    "mig",
    "min_samples_for_frequency",
    "modularity",
    "modularity_from_mi",
    "mutual_information",
    "neuron_semantics",
    "recon_levels",
    "sap",
]
