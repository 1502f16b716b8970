"""Analysis of biased simulations: reweighting, free-energy surfaces with honest error bars, and plots.

Energies are in **kJ/mol** and temperatures in **K** (OpenMM's md units); log-weights are dimensionless.
pymbar (for :func:`mbar_logweights`) and matplotlib (for :func:`plot_fes`) are imported only when used.
"""

from __future__ import annotations

from .constants import GAS_CONSTANT_KJ_PER_MOL_K, kt_kjmol, temperature_kelvin
from .fes import (
    FreeEnergySurface,
    basin_free_energy_difference,
    basin_free_energy_estimate,
    block_labels,
    free_energy_surface,
)
from .plots import plot_fes
from .reweight import (
    effective_sample_size,
    mbar_logweights,
    metad_ct_logweights,
    metad_final_bias_logweights,
    normalize_logweights,
    well_tempered_ct,
)
from .uncertainty import (
    Estimate,
    estimate_uncertainty,
    mbar_reweighter,
    replica_estimate,
    statistical_inefficiency,
)

__all__ = [
    "Estimate",
    "FreeEnergySurface",
    "GAS_CONSTANT_KJ_PER_MOL_K",
    "basin_free_energy_difference",
    "basin_free_energy_estimate",
    "block_labels",
    "effective_sample_size",
    "estimate_uncertainty",
    "free_energy_surface",
    "kt_kjmol",
    "mbar_logweights",
    "mbar_reweighter",
    "metad_ct_logweights",
    "metad_final_bias_logweights",
    "normalize_logweights",
    "plot_fes",
    "replica_estimate",
    "statistical_inefficiency",
    "temperature_kelvin",
    "well_tempered_ct",
]
