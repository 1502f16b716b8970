"""Build the OpenMM System, topology and starting positions a campaign config describes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import CampaignConfig, ConfigError

__all__ = ["build_system"]


def _constraints(name: str):
    from openmm import app

    return {"None": None, "HBonds": app.HBonds, "AllBonds": app.AllBonds, "HAngles": app.HAngles}[name]


def build_system(cfg: CampaignConfig) -> tuple[Any, Any, np.ndarray]:
    """(openmm.System, openmm.app.Topology, positions (n_atoms, 3) nm) for the config's [system] section.

    Vacuum/implicit systems use NoCutoff; a PDB with a unit cell and no implicit solvent uses PME (1 nm cutoff).
    """
    from openmm import app, unit

    s = cfg.system
    if s.testsystem == "alanine-dipeptide-vacuum":
        from ..testsystems import alanine_dipeptide_vacuum

        system, topology, positions = alanine_dipeptide_vacuum(None if s.constraints == "None" else s.constraints)
    elif s.testsystem == "t4-lysozyme-l99a-implicit":
        from ..testsystems import t4_lysozyme_l99a_implicit

        system, topology, positions = t4_lysozyme_l99a_implicit(None if s.constraints == "None" else s.constraints)
    elif s.prmtop is not None:
        prmtop = app.AmberPrmtopFile(str(cfg.resolve(s.prmtop)))
        coords = app.AmberInpcrdFile(str(cfg.resolve(s.coordinates)))
        periodic = coords.boxVectors is not None
        system = prmtop.createSystem(nonbondedMethod=app.PME if periodic else app.NoCutoff,
                                     constraints=_constraints(s.constraints),
                                     implicitSolvent=None)
        topology, positions = prmtop.topology, coords.positions
        if periodic:
            system.setDefaultPeriodicBoxVectors(*coords.boxVectors)
    elif s.system_xml is not None:
        import openmm

        system = openmm.XmlSerializer.deserialize(cfg.resolve(s.system_xml).read_text())
        pdb = app.PDBFile(str(cfg.resolve(s.pdb)))
        topology, positions = pdb.topology, pdb.positions
        if system.getNumParticles() != topology.getNumAtoms():
            raise ConfigError(f"[system] system_xml has {system.getNumParticles()} particles but pdb has "
                              f"{topology.getNumAtoms()} atoms")
    else:
        pdb = app.PDBFile(str(cfg.resolve(s.pdb)))
        files = list(s.forcefield) + ([s.implicit_solvent] if s.implicit_solvent else [])
        try:
            ff = app.ForceField(*files)
        except Exception as exc:
            raise ConfigError(f"[system] forcefield {files}: {exc}") from exc
        periodic = pdb.topology.getPeriodicBoxVectors() is not None and not s.implicit_solvent
        system = ff.createSystem(pdb.topology, nonbondedMethod=app.PME if periodic else app.NoCutoff,
                                 constraints=_constraints(s.constraints))
        topology, positions = pdb.topology, pdb.positions
    if s.start is not None:
        start = app.PDBFile(str(cfg.resolve(s.start)))
        if start.topology.getNumAtoms() != topology.getNumAtoms():
            raise ConfigError(f"[system] start = {s.start!r} has {start.topology.getNumAtoms()} atoms, the system has "
                              f"{topology.getNumAtoms()}")
        positions = start.positions
    xyz = np.asarray(positions.value_in_unit(unit.nanometer), dtype=float)
    return system, topology, xyz
