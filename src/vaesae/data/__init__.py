"""Ground-truth datasets (dSprites, Shapes3D): factor spaces, official files, renderers."""

from vaesae.data.dataset import DATASETS, SOURCES, GroundTruthDataset, default_root, get_dataset
from vaesae.data.factors import DSPRITES, FACTOR_SPACES, SHAPES3D, FactorSpace
from vaesae.data.files import DataFileError, read_file

__all__ = [
    "DATASETS",
    "SOURCES",
    "DSPRITES",
    "SHAPES3D",
    "FACTOR_SPACES",
    "DataFileError",
    "FactorSpace",
    "GroundTruthDataset",
    "default_root",
    "get_dataset",
    "read_file",
]
