"""Analysis of biased simulations: reweighting, free-energy surfaces with block errors, plots, pocket openness.

Energies are in **kJ/mol** and temperatures in **K** (OpenMM's md units); log-weights are dimensionless.
pymbar (for :func:`mbar_logweights`) and matplotlib (for :func:`plot_fes`) are imported only when used.
"""

from __future__ import annotations

from .constants import GAS_CONSTANT_KJ_PER_MOL_K, kt_kjmol, temperature_kelvin
from .fes import FreeEnergySurface, basin_free_energy_difference, block_labels, free_energy_surface
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

__all__ = [
    "CavityVolume",
    "FreeEnergySurface",
    "GAS_CONSTANT_KJ_PER_MOL_K",
    "PocketRegion",
    "anchor_agreement",
    "atom_radii",
    "basin_free_energy_difference",
    "block_labels",
    "effective_sample_size",
    "free_energy_surface",
    "group_distance",
    "lining_sasa",
    "kt_kjmol",
    "mbar_logweights",
    "metad_ct_logweights",
    "metad_final_bias_logweights",
    "normalize_logweights",
    "plot_fes",
    "pocket_openness",
    "temperature_kelvin",
    "well_tempered_ct",
    "write_pocket_pdb",
]
