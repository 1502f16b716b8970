"""Transition paths through a learned latent space: minimum free-energy paths on the latent FES, structures decoded
and relaxed along them, and free-energy profiles measured by restrained MD (umbrella windows + MBAR).

Modules: :mod:`~latentbias.pathway.rebuild` (decoded atoms -> full structures), :mod:`~latentbias.pathway.relax`
(restrained relaxation = umbrella windows), :mod:`~latentbias.pathway.realisations` (independent runs of the windows
and whether they agree), :mod:`~latentbias.pathway.profile` (MBAR / reweighted profiles and
barriers), :mod:`~latentbias.pathway.checks` (bond lengths, clashes), :mod:`~latentbias.pathway.workflow` (the
whole pipeline on a run directory or on given samples; ``latentbias path``).
"""

from .checks import StructureCheck, bond_deviations, check_structure, clashes
from .profile import (PathProfile, path_barrier, path_end_difference, reweighted_profile, umbrella_profile,
                      write_profiles)
from .realisations import RealisationCheck, compare_realisations, pool_windows, realisation_seed
from .rebuild import kabsch_fit, nearest_frames, rebuild_structure, reconstruction_rmsd
from .relax import PathWindows, default_force_constant, relax_path
from .workflow import (LatentSamples, TransitionPath, compare_profiles, latent_fes, resolve_endpoint,
                       samples_from_rundir, transition_path, transition_path_from_rundir, write_path_outputs)

__all__ = [
    "LatentSamples", "PathProfile", "PathWindows", "RealisationCheck", "StructureCheck", "TransitionPath",
    "bond_deviations", "check_structure", "clashes", "compare_profiles", "compare_realisations",
    "default_force_constant", "kabsch_fit",
    "latent_fes", "nearest_frames", "path_barrier", "path_end_difference", "pool_windows", "realisation_seed",
    "rebuild_structure", "reconstruction_rmsd", "relax_path", "resolve_endpoint", "reweighted_profile",
    "samples_from_rundir", "transition_path", "transition_path_from_rundir", "umbrella_profile", "write_path_outputs",
    "write_profiles",
]
