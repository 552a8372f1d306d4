"""Metrics of sparse representations: dead-neuron rules, MIG and per-neuron semantics.

Pure torch (no Lightning, Hydra or scikit-learn at run time); definitions in DESIGN.md §5.
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
from vaesae.metrics.semantics import NeuronSemantics, neuron_semantics, semantics_from_mi
from vaesae.metrics.streaming import CodeMetrics, FiringStats, MIGMetric

__all__ = [
    "DEAD_KINDS",
    "CodeMetrics",
    "DeadTransitions",
    "FiringStats",
    "FiringSummary",
    "MIGMetric",
    "MIGResult",
    "NeuronSemantics",
    "SamplesSinceFired",
    "dead_mask",
    "dead_transitions",
    "histogram_discretize",
    "mig",
    "min_samples_for_frequency",
    "mutual_information",
    "neuron_semantics",
    "semantics_from_mi",
]
