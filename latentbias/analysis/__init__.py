"""Analysis of biased simulations: reweighting, free-energy surfaces with block errors, and plots.

Energies are in **kJ/mol** and temperatures in **K** (OpenMM's md units); log-weights are dimensionless.
pymbar (for :func:`mbar_logweights`) and matplotlib (for :func:`plot_fes`) are imported only when used.
"""

from __future__ import annotations

from .constants import GAS_CONSTANT_KJ_PER_MOL_K, kt_kjmol, temperature_kelvin
from .fes import FreeEnergySurface, basin_free_energy_difference, block_labels, free_energy_surface
from .plots import plot_fes
from .reweight import (
    effective_sample_size,
    mbar_logweights,
    metad_ct_logweights,
    metad_final_bias_logweights,
    normalize_logweights,
    well_tempered_ct,
)

__all__ = [
    "FreeEnergySurface",
    "GAS_CONSTANT_KJ_PER_MOL_K",
    "basin_free_energy_difference",
    "block_labels",
    "effective_sample_size",
    "free_energy_surface",
    "kt_kjmol",
    "mbar_logweights",
    "metad_ct_logweights",
    "metad_final_bias_logweights",
    "normalize_logweights",
    "plot_fes",
    "temperature_kelvin",
    "well_tempered_ct",
]
