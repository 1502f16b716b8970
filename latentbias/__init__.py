"""latentbias: bias OpenMM simulations along the latent coordinates of a learned encoder.

``torch`` is imported before ``openmm`` on purpose (openmm-torch's plugin needs torch's libraries loaded
first); if the user imported ``openmm`` earlier, the plugins are reloaded. See :mod:`latentbias._environment`.
"""

from __future__ import annotations

import logging

import torch  # noqa: F401  (must precede openmm; see module docstring)

from ._environment import ensure_torch_plugins

ensure_torch_plugins()

__version__ = "0.1.0"

from .features import (  # noqa: E402
    AlignedCoordinates,
    Concatenate,
    Contacts,
    Dihedrals,
    Distances,
    Featurizer,
    Standardizer,
    backbone_dihedral_atoms,
    chi_dihedral_atoms,
    select_atoms,
)
from .models import MLP, FeatureAutoencoder, LatentModel  # noqa: E402
from .training import LatentModelEstimator, TrainingResult  # noqa: E402
from .export import LatentModelFile, load_model, save_model  # noqa: E402
from .forces import latent_component_force, latent_cv_forces, latent_vector_module  # noqa: E402
from .reporters import LatentReporter  # noqa: E402
from .remap import remap_model  # noqa: E402
from .platforms import check_platform  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AlignedCoordinates",
    "Concatenate",
    "Contacts",
    "Dihedrals",
    "Distances",
    "FeatureAutoencoder",
    "Featurizer",
    "LatentModel",
    "LatentModelEstimator",
    "LatentModelFile",
    "LatentReporter",
    "MLP",
    "Standardizer",
    "TrainingResult",
    "backbone_dihedral_atoms",
    "check_platform",
    "chi_dihedral_atoms",
    "latent_component_force",
    "latent_cv_forces",
    "latent_vector_module",
    "load_model",
    "remap_model",
    "save_model",
    "select_atoms",
]
