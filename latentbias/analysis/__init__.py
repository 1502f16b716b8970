"""Analysis of biased simulations: reweighting, free-energy surfaces with honest error bars, plots, pocket openness.

Energies are in **kJ/mol** and temperatures in **K** (OpenMM's md units); log-weights are dimensionless.
pymbar (for :func:`mbar_logweights`) and matplotlib (for :func:`plot_fes`) are imported only when used.
"""

from __future__ import annotations

from .barriers import MinimaxBarrier, minimax_barrier
from .constants import GAS_CONSTANT_KJ_PER_MOL_K, kt_kjmol, temperature_kelvin
from .fes import (
    FreeEnergySurface,
    basin_free_energy_difference,
    basin_free_energy_estimate,
    block_labels,
    free_energy_surface,
)
from .fes_compare import FESComparison, compare_periodic_fes
from .plots import plot_fes
from .pockets import (
    CavityVolume,
    PocketRegion,
    anchor_agreement,
    atom_radii,
    group_distance,
    lining_sasa,
    pocket_openness,
    write_pocket_pdb,
)
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
    "CavityVolume",
    "Estimate",
    "FESComparison",
    "FreeEnergySurface",
    "GAS_CONSTANT_KJ_PER_MOL_K",
    "MinimaxBarrier",
    "PocketRegion",
    "anchor_agreement",
    "atom_radii",
    "basin_free_energy_difference",
    "basin_free_energy_estimate",
    "block_labels",
    "compare_periodic_fes",
    "effective_sample_size",
    "estimate_uncertainty",
    "free_energy_surface",
    "group_distance",
    "lining_sasa",
    "kt_kjmol",
    "mbar_logweights",
    "minimax_barrier",
    "mbar_reweighter",
    "metad_ct_logweights",
    "metad_final_bias_logweights",
    "normalize_logweights",
    "plot_fes",
    "pocket_openness",
    "replica_estimate",
    "statistical_inefficiency",
    "temperature_kelvin",
    "well_tempered_ct",
    "write_pocket_pdb",
]
