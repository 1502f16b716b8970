"""Is a structure physical? Bond lengths against the force field and steric clashes.

* Bonds: every ``HarmonicBondForce`` term and every constraint of the ``openmm.System`` gives a bonded pair and its
  equilibrium length; :func:`bond_deviations` returns |r − r0|.
* Clashes (:func:`clashes`), for atoms more than three bonds apart (bonds from the System), two criteria:

  - steric, heavy atoms: distance below the sum of their van der Waals radii (Bondi, via ``mdtraj.element``)
    minus ``overlap`` (0.04 nm = 0.4 Å, MolProbity's "serious clash"); N/O pairs are left out (hydrogen bonds);
  - the force field's own: distance below ``sigma_fraction`` (0.8) × σ_ij of the ``NonbondedForce`` (Lorentz-
    Berthelot σ_ij = (σ_i + σ_j)/2, pairs with ε_i ε_j > 0), where the Lennard-Jones pair energy is ≥ 44 ε_ij:
    this covers hydrogens with the force field's radii (Amber's polar H has σ ≈ 0.1 nm, so an N–H···O=C contact
    that Bondi radii would call a clash is no clash for the force field that relaxed it).

Units: nm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["StructureCheck", "bond_deviations", "bonded_pairs", "check_structure", "clashes"]


def bonded_pairs(system: Any) -> tuple[np.ndarray, np.ndarray]:
    """Bonded atom pairs of an ``openmm.System`` (HarmonicBondForce terms and constraints) and their equilibrium
    lengths (nm): shapes (n_bonds, 2) and (n_bonds,)."""
    import openmm
    from openmm import unit

    pairs, lengths = {}, {}
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r0, _ = force.getBondParameters(k)
                key = (min(i, j), max(i, j))
                pairs[key] = True
                lengths[key] = r0.value_in_unit(unit.nanometer) if unit.is_quantity(r0) else float(r0)
    for k in range(system.getNumConstraints()):
        i, j, r0 = system.getConstraintParameters(k)
        key = (min(i, j), max(i, j))
        lengths[key] = r0.value_in_unit(unit.nanometer) if unit.is_quantity(r0) else float(r0)
    keys = sorted(lengths)
    return np.array(keys, dtype=np.int64).reshape(-1, 2), np.array([lengths[k] for k in keys])


def bond_deviations(system: Any, positions: Any) -> np.ndarray:
    """|r − r0| of every bonded pair (:func:`bonded_pairs`), nm, shape=(n_bonds,)."""
    x = np.asarray(positions, dtype=float)
    pairs, r0 = bonded_pairs(system)
    r = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    return np.abs(r - r0)


def _within_bonds(pairs: np.ndarray, n_atoms: int, max_bonds: int = 3) -> Any:
    """Sparse boolean matrix (scipy CSR): atoms at most ``max_bonds`` bonds apart (the diagonal included).

    Sparse products keep this linear in the number of atoms (a protein atom has a few dozen neighbours within
    three bonds), so the check scales to whole proteins."""
    from scipy import sparse

    ones = np.ones(len(pairs), dtype=np.int32)
    adj = sparse.coo_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(n_atoms, n_atoms)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.int32)
    reach = sparse.identity(n_atoms, dtype=np.int32, format="csr")
    for _ in range(max_bonds):
        reach = ((reach + reach @ adj) > 0).astype(np.int32)
    return reach.tocsr()


def _lennard_jones(system: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(sigma, epsilon) per particle from the System's NonbondedForce (nm, kJ/mol), or None without one."""
    import openmm
    from openmm import unit

    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            sig, eps = np.zeros(force.getNumParticles()), np.zeros(force.getNumParticles())
            for i in range(force.getNumParticles()):
                _, s, e = force.getParticleParameters(i)
                sig[i] = s.value_in_unit(unit.nanometer) if unit.is_quantity(s) else float(s)
                eps[i] = e.value_in_unit(unit.kilojoule_per_mole) if unit.is_quantity(e) else float(e)
            return sig, eps
    return None


def clashes(system: Any, topology: Any, positions: Any, overlap: float = 0.04,
            sigma_fraction: float = 0.8) -> list[tuple[int, int, float]]:
    """Clashing pairs ``(i, j, depth_nm)`` by the two criteria of the module docstring (empty list: none).

    Parameters
    ----------
    system : openmm.System
        Source of the bonds and of the Lennard-Jones parameters.
    topology : openmm.app.Topology
        Source of the elements.
    positions : array_like, shape=(n_atoms, 3), nm
    overlap : float
        Allowed overlap of heavy atoms' van der Waals spheres, nm.
    sigma_fraction : float
        Force-field criterion: d < sigma_fraction × σ_ij.

    Returns
    -------
    list of (int, int, float)
        The depth is how far the pair is inside the worse of the two limits, nm.
    """
    import mdtraj as md

    x = np.asarray(positions, dtype=float)
    n = len(x)
    symbols = [a.element.symbol if a.element is not None else "C" for a in topology.atoms()]
    if len(symbols) != n:
        raise ValueError(f"topology has {len(symbols)} atoms but positions have {n}")
    pairs, _ = bonded_pairs(system)
    heavy = np.array([s != "H" for s in symbols])
    polar = np.array([s in ("N", "O") for s in symbols])
    radii = np.array([md.element.get_by_symbol(s).radius for s in symbols])
    lj = _lennard_jones(system)
    if lj is not None and len(lj[0]) != n:
        raise ValueError(f"the System's NonbondedForce has {len(lj[0])} particles but positions have {n}")
    # candidate pairs: closer than the largest limit either criterion can give (KD-tree: no n x n matrices)
    cutoff = 2.0 * radii.max() - overlap
    if lj is not None and np.any(lj[1] > 0):
        cutoff = max(cutoff, sigma_fraction * float(lj[0][lj[1] > 0].max()))
    from scipy.spatial import cKDTree

    cand = cKDTree(x).query_pairs(max(cutoff, 0.0), output_type="ndarray")
    if len(cand) == 0:
        return []
    near = _within_bonds(pairs, n)
    keep = np.asarray(near[cand[:, 0], cand[:, 1]]).ravel() == 0
    i, j = cand[keep, 0], cand[keep, 1]
    d = np.linalg.norm(x[i] - x[j], axis=1)
    steric = np.where(heavy[i] & heavy[j] & ~(polar[i] & polar[j]), radii[i] + radii[j] - overlap - d, -np.inf)
    depth = steric
    if lj is not None:
        sig, eps = lj
        limit = np.where(eps[i] * eps[j] > 0, sigma_fraction * 0.5 * (sig[i] + sig[j]) - d, -np.inf)
        depth = np.maximum(depth, limit)
    bad = np.flatnonzero(depth > 0)
    order = np.lexsort((j[bad], i[bad]))
    return [(int(i[b]), int(j[b]), float(depth[b])) for b in bad[order]]


@dataclass
class StructureCheck:
    """Physical checks of one structure: largest |r − r0| over the bonds (nm), number of clashes, the deepest
    clash (nm, 0 without clashes)."""

    max_bond_deviation: float
    n_clashes: int
    worst_overlap: float

    @property
    def physical(self) -> bool:
        """Bonds within 0.01 nm (0.1 Å) of the force field's equilibrium and no clash."""
        return self.max_bond_deviation < 0.01 and self.n_clashes == 0


def check_structure(system: Any, topology: Any, positions: Any, overlap: float = 0.04) -> StructureCheck:
    """:class:`StructureCheck` of one structure (positions in nm, shape=(n_atoms, 3))."""
    dev = bond_deviations(system, positions)
    bad = clashes(system, topology, positions, overlap)
    return StructureCheck(float(dev.max()) if dev.size else 0.0, len(bad), max((b[2] for b in bad), default=0.0))
