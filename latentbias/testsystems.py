"""Offline test systems: files shipped inside installed packages (no downloads).

Used by the examples, the CLI demo and the tests. openmmtools is needed only for its data files, which are read
through ``importlib`` paths without importing ``openmmtools`` itself (that import pulls in numba and more).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

__all__ = ["alanine_dipeptide_files", "villin_water_pdb", "villin_implicit_pdb", "alanine_dipeptide_vacuum",
           "t4_lysozyme_l99a_files", "t4_lysozyme_l99a_implicit"]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} is not installed; it provides offline test-system files "
            f"(pip install {name}, or `pip install latentbias[test]`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def alanine_dipeptide_files() -> dict[str, Path]:
    """Paths of openmmtools' ``alanine-dipeptide-gbsa`` files (Amber ff96): ``prmtop``, ``crd`` and ``pdb``."""
    folder = _package_dir("openmmtools") / "data" / "alanine-dipeptide-gbsa"
    files = {
        "prmtop": folder / "alanine-dipeptide.prmtop",
        "crd": folder / "alanine-dipeptide.crd",
        "pdb": folder / "alanine-dipeptide.pdb",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"openmmtools data files missing: {missing}")
    return files


def t4_lysozyme_l99a_files() -> dict[str, Path]:
    """Paths of openmmtools' ``T4-lysozyme-L99A-implicit`` receptor (ligand-free, 2603 atoms, Amber): ``prmtop``,
    ``crd`` and ``pdb``; ``complex_pdb`` holds the receptor with its p-xylene ligand."""
    folder = _package_dir("openmmtools") / "data" / "T4-lysozyme-L99A-implicit"
    files = {"prmtop": folder / "receptor.prmtop", "crd": folder / "receptor.crd", "pdb": folder / "receptor.pdb",
             "complex_pdb": folder / "complex.pdb"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"openmmtools data files missing: {missing}")
    return files


def alanine_dipeptide_vacuum(constraints: str | None = "HBonds"):
    """Alanine dipeptide in vacuum (NoCutoff), from the Amber prmtop.

    Returns
    -------
    system : openmm.System
    topology : openmm.app.Topology
    positions : openmm.unit.Quantity, shape=(22, 3), nm
    """
    return _amber_system(alanine_dipeptide_files(), constraints)


def t4_lysozyme_l99a_implicit(constraints: str | None = "HBonds"):
    """T4 lysozyme L99A without its ligand in OBC2 implicit solvent (NoCutoff), from openmmtools' Amber prmtop.

    The receptor files hold no ligand: the L99A cavity is empty (2603 atoms). GB parameters come from the prmtop
    (``implicitSolvent=OBC2``, solute dielectric 1, solvent dielectric 78.5).

    Returns
    -------
    system : openmm.System
    topology : openmm.app.Topology
    positions : openmm.unit.Quantity, shape=(2603, 3), nm
    """
    from openmm import app

    return _amber_system(t4_lysozyme_l99a_files(), constraints, implicitSolvent=app.OBC2)


def _amber_system(files: dict[str, Path], constraints: str | None, **options: Any):
    """(system, topology, positions) of an Amber prmtop/crd pair, NoCutoff; ``options`` go to createSystem."""
    from openmm import app

    prmtop = app.AmberPrmtopFile(str(files["prmtop"]))
    crd = app.AmberInpcrdFile(str(files["crd"]))
    cons = {None: None, "HBonds": app.HBonds, "AllBonds": app.AllBonds, "HAngles": app.HAngles}[constraints]
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=cons, **options)
    return system, prmtop.topology, crd.positions


def villin_water_pdb() -> Path:
    """OpenMM's ``app/data/test.pdb``: villin headpiece in a periodic water box (8867 atoms)."""
    import openmm

    path = Path(os.path.dirname(openmm.__file__)) / "app" / "data" / "test.pdb"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the openmm installation")
    return path


def villin_implicit_pdb(path: str | os.PathLike) -> Path:
    """Write villin HP35 without its water and ions (582 atoms, hydrogens kept; for implicit solvent, e.g.
    ``amber99sbildn.xml`` + ``amber99_obc.xml``) from :func:`villin_water_pdb` to ``path``; returns the path."""
    from openmm import app

    from .io import atomic_write_bytes

    pdb = app.PDBFile(str(villin_water_pdb()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([r for r in modeller.topology.residues() if len(list(r.atoms())) == 1])  # the ions
    import io

    buf = io.StringIO()
    app.PDBFile.writeFile(modeller.topology, modeller.positions, buf, keepIds=True)
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return Path(path)
