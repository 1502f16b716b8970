"""Wild type and mutants in one latent space: build mutant structures, find the atoms all systems share.

A comparison of a wild type with its mutants needs one encoder whose latent coordinates mean the same thing in
every system. Its features are therefore defined on the atoms **common to all systems**: matched by chain, residue
number and atom name (:func:`common_atoms`). At a mutated position only the atoms both residues carry under the
same name are shared — for ALA→GLY the backbone N, CA, C, O and the amide H, but not CB (GLY has none) nor HA
(GLY names its α hydrogens HA2/HA3); for LEU→ALA also CB. Everything beyond that (the mutated side chain) is left
out of the features explicitly, so that the encoder cannot tell the systems apart by atoms one of them lacks.

Workflow::

    wt = load_pdb("wt.pdb")                                   # or any PDB
    mut = mutate("wt.pdb", ["L99A"], chain="A", out="l99a.pdb")
    shared = common_atoms([wt_topology, mut_topology], selection="element != H")
    # frames of each system restricted to its shared atoms (same order in every system) -> one training set;
    # the model trained on the shared-atom topology is applied to each full system with latentbias.remap_model.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .validation import ensure_mdtraj_topology

logger = logging.getLogger(__name__)

__all__ = ["parse_mutation", "mutate", "common_atoms"]

#: One-letter amino-acid codes (the 20 standard residues).
ONE_TO_THREE = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY", "H": "HIS",
    "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER", "T": "THR", "W": "TRP",
    "Y": "TYR", "V": "VAL",
}
_THREE = set(ONE_TO_THREE.values())


def parse_mutation(text: str) -> tuple[str, int, str]:
    """``(from, residue number, to)`` of a mutation written ``"L99A"`` or ``"LEU-99-ALA"`` (PDBFixer's form).

    Raises
    ------
    ValueError
        Neither form, or an unknown residue code.
    """
    s = str(text).strip().upper()
    m = re.fullmatch(r"([A-Z])(-?\d+)([A-Z])", s)
    if m:
        a, num, b = m.groups()
        if a not in ONE_TO_THREE or b not in ONE_TO_THREE:
            raise ValueError(f"mutation {text!r}: unknown one-letter residue code (use one of {''.join(ONE_TO_THREE)})")
        return ONE_TO_THREE[a], int(num), ONE_TO_THREE[b]
    m = re.fullmatch(r"([A-Z]{3})-(-?\d+)-([A-Z]{3})", s)
    if m:
        a, num, b = m.groups()
        for r in (a, b):
            if r not in _THREE:
                raise ValueError(f"mutation {text!r}: unknown residue {r} (standard three-letter names only)")
        return a, int(num), b
    raise ValueError(f"mutation {text!r}: write it as 'L99A' (one-letter, residue number) or 'LEU-99-ALA'")


def mutate(pdb: str | os.PathLike, mutations: Sequence[str], chain: str | None = None,
           out: str | os.PathLike | None = None, overwrite: bool = False,
           platform: str = "Reference", seed: int = 1) -> tuple[Any, np.ndarray]:
    """Build a mutant of a structure with PDBFixer: residues replaced, missing side-chain atoms added.

    Parameters
    ----------
    pdb : path
        Wild-type structure (PDB or PDBx/mmCIF).
    mutations : sequence of str
        ``"L99A"`` or ``"LEU-99-ALA"`` (residue numbers as in the file).
    chain : str, optional
        Chain id; default: the first chain.
    out : path, optional
        Where to write the mutant PDB (never overwritten unless ``overwrite``).
    platform : str
        OpenMM platform of PDBFixer's minimisation of the rebuilt atoms.
    seed : int, default 1
        Random seed of the integrator PDBFixer uses while it places rebuilt atoms (≥ 1: OpenMM reads 0 as "pick
        one at random") and of the random start positions OpenMM's Modeller gives new hydrogens. Fixed, so the same inputs give the same mutant: without it two runs of one
        multi-system campaign built different mutants, and everything trained on them differed.

    Returns
    -------
    (openmm.app.Topology, numpy.ndarray of shape (n_atoms, 3), nm)
        The mutant with hydrogens added at pH 7 (as PDBFixer's ``addMissingHydrogens``).

    Raises
    ------
    ValueError
        A mutation names a residue that is not in the chain, or whose residue name differs from the file's.
    """
    import openmm
    from openmm import app, unit
    from pdbfixer import PDBFixer

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 1 <= seed <= 2**31 - 1:
        raise ValueError(f"seed must be an integer in [1, 2**31 - 1] (0 would mean a random seed), got {seed!r}")
    path = Path(pdb)
    if not path.is_file():
        raise FileNotFoundError(f"structure {path} not found")
    # PDBFixer minimises rebuilt atoms in a Context; name the platform (with pocl installed, OpenMM's default is
    # OpenCL, where this minimisation crashes the process on this stack)
    fixer = PDBFixer(filename=str(path), platform=openmm.Platform.getPlatformByName(platform))
    chains = list(fixer.topology.chains())
    chain_id = chain if chain is not None else chains[0].id
    target = [c for c in chains if c.id == chain_id]
    if not target:
        raise ValueError(f"{path}: no chain {chain_id!r} (chains: {[c.id for c in chains]})")
    residues = {int(r.id): r.name for r in target[0].residues() if r.id.strip().lstrip("-").isdigit()}
    specs = []
    for text in mutations:
        a, num, b = parse_mutation(text)
        if num not in residues:
            raise ValueError(f"mutation {text!r}: chain {chain_id} of {path} has no residue {num}")
        if residues[num] != a:
            raise ValueError(f"mutation {text!r}: residue {num} of chain {chain_id} in {path} is {residues[num]}, not {a}")
        specs.append(f"{a}-{num}-{b}")
    fixer.applyMutations(specs, chain_id)
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=int(seed))
    # OpenMM's Modeller starts new hydrogens at positions drawn from Python's global ``random`` before it minimises
    # them: seeded here (and the caller's random state restored) so the same inputs give the same mutant
    state = random.getstate()
    try:
        random.seed(int(seed))
        fixer.addMissingHydrogens(7.0)
    finally:
        random.setstate(state)
    xyz = np.asarray(fixer.positions.value_in_unit(unit.nanometer), dtype=float)
    if out is not None:
        out = Path(out)
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
        with open(out, "w") as fh:
            app.PDBFile.writeFile(fixer.topology, fixer.positions, fh, keepIds=True)
    logger.info("built mutant %s of %s (%d atoms)", ",".join(specs), path, len(xyz))
    return fixer.topology, xyz


def common_atoms(topologies: Sequence[Any], selection: str | None = None) -> list[np.ndarray]:
    """Indices, in each topology, of the atoms every topology has (same chain position, residue number, atom name).

    Parameters
    ----------
    topologies : sequence of mdtraj.Topology, openmm.app.Topology or path
        The wild type first (its order defines the order of the result), then the mutants.
    selection : str, optional
        mdtraj selection applied in the first topology (e.g. ``"element != H"`` or ``"backbone"``).

    Returns
    -------
    list of numpy.ndarray of int
        ``result[s][k]`` is the index in topology s of shared atom k; all arrays have the same length.

    Notes
    -----
    The residue *name* is not part of the key (it differs at a mutated site); atoms of a mutated residue are
    shared only where both residues carry the same atom name. The atoms left out at each mutated site are logged.
    """
    tops = [ensure_mdtraj_topology(t, f"topologies[{i}]") for i, t in enumerate(topologies)]
    if len(tops) < 2:
        raise ValueError("common_atoms needs at least two topologies (the wild type and a mutant)")

    def keyed(top):
        out: dict[tuple, int] = {}
        for atom in top.atoms:
            key = (atom.residue.chain.index, atom.residue.resSeq, atom.name)
            if key in out:
                raise ValueError(f"duplicate atom {atom} (chain {atom.residue.chain.index}): atom names must be "
                                 "unique within a residue")
            out[key] = atom.index
        return out

    maps = [keyed(t) for t in tops]
    first = tops[0]
    candidates = first.select(selection) if selection else np.arange(first.n_atoms)
    keys = [(first.atom(int(i)).residue.chain.index, first.atom(int(i)).residue.resSeq, first.atom(int(i)).name)
            for i in candidates]
    shared = [k for k in keys if all(k in m for m in maps[1:])]
    if not shared:
        raise ValueError("the topologies share no atoms (by chain, residue number and atom name): are they the same "
                         "protein with the same numbering?")
    dropped = [k for k in keys if k not in set(shared)]
    if dropped:
        logger.info("common_atoms: %d atoms of the first topology are not in every system (mutated side chains): %s",
                    len(dropped), ", ".join(f"{r}:{n}" for _, r, n in dropped[:20]))
    return [np.array([m[k] for k in shared], dtype=np.int64) for m in maps]
