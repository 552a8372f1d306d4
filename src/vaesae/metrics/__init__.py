"""Metrics of sparse representations: dead-neuron rules, MIG and per-neuron semantics.

Pure torch (no Lightning, Hydra or scikit-learn at run time); each module's docstring states the
definitions it implements.
"""

from vaesae.metrics.dead import (
    DEAD_KINDS,
    DeadTransitions,
    FiringSummary,
    SamplesSinceFired,
    dead_mask,
    dead_transitions,
    min_samples_for_frequency,
)
from vaesae.metrics.mutual_info import MIGResult, histogram_discretize, mig, mutual_information
from vaesae.metrics.semantics import NeuronSemantics, firing_discretize, neuron_semantics
from vaesae.metrics.streaming import FiringStats

__all__ = [
    "DEAD_KINDS",
    "DeadTransitions",
    "FiringStats",
    "FiringSummary",
    "MIGResult",
    "NeuronSemantics",
    "SamplesSinceFired",
    "dead_mask",
    "dead_transitions",
    "firing_discretize",
    "histogram_discretize",
    "mig",
    "min_samples_for_frequency",
    "mutual_information",
    "neuron_semantics",
]
