"""Biasing methods on latent coordinates: restraints and steering, metadynamics, OPES, umbrella sampling."""

from .backends import CustomCVBackend, GridBiasBackend
from .grid import BiasGrid, LatentVariable
from .metadynamics import LatentMetadynamics
from .opes import LatentOPES
from .multithermal import MultithermalOPES
from .restraint import LatentRestraint, SteeringResult, steer
from .umbrella import LatentUmbrellaSampling, UmbrellaResult, path_coordinate, straight_path

__all__ = [
    "BiasGrid",
    "CustomCVBackend",
    "GridBiasBackend",
    "LatentMetadynamics",
    "LatentOPES",
    "MultithermalOPES",
    "LatentRestraint",
    "LatentUmbrellaSampling",
    "LatentVariable",
    "SteeringResult",
    "UmbrellaResult",
    "path_coordinate",
    "steer",
    "straight_path",
]
