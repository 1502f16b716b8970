"""Models across topologies (issue 9 item 5): train on the solute alone, bias the solvated system."""

from __future__ import annotations

import mdtraj as md
import numpy as np
import openmm
import pytest
from openmm import app, unit

import latentbias as lb
from latentbias import native
from latentbias.bias.restraint import LatentRestraint
from latentbias.remap import match_atoms, remap_model
from latentbias.testsystems import _package_dir

from conftest import perturbed_frames, random_latent_model

EXPLICIT = _package_dir("openmmtools") / "data" / "alanine-dipeptide-explicit"


@pytest.fixture(scope="module")
def solvated():
    prmtop = app.AmberPrmtopFile(str(EXPLICIT / "alanine-dipeptide.prmtop"))
    crd = app.AmberInpcrdFile(str(EXPLICIT / "alanine-dipeptide.crd"))
    system = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer)
    system.setDefaultPeriodicBoxVectors(*crd.boxVectors)
    xyz = np.asarray(crd.positions.value_in_unit(unit.nanometer))
    box = np.asarray(crd.boxVectors.value_in_unit(unit.nanometer))
    return system, md.Topology.from_openmm(prmtop.topology), xyz, box


@pytest.fixture(scope="module")
def solute_model(ala2, tmp_path_factory):
    """A model trained on the 22-atom solute topology (vacuum prmtop), float64."""
    _, top, xyz = ala2
    feat = lb.Distances.from_selection(top, "element != H")
    model = random_latent_model(feat, top.n_atoms, perturbed_frames(xyz, 40), latent_dim=2, seed=5)
    path = tmp_path_factory.mktemp("remap") / "solute.pt"
    lb.save_model(model, path, dtype="float64")
    return path


def test_match_atoms_solute_into_solvated(ala2, solvated):
    _, top, _ = ala2
    _, stop, _, _ = solvated
    mapping = match_atoms(top, stop)
    assert np.all(mapping >= 0)
    for i, j in enumerate(mapping):
        a, b = top.atom(i), stop.atom(int(j))
        assert (a.name, a.residue.name, a.residue.resSeq) == (b.name, b.residue.name, b.residue.resSeq)


def test_match_atoms_names_the_missing_atoms(ala2, solvated):
    _, top, _ = ala2
    _, stop, _, _ = solvated
    sliced = stop.subset(stop.select("not (resname ALA and name CB)"))
    with pytest.raises(ValueError, match=r"ALA2-CB \(model atom \d+, chain 0\) -> no atom"):
        match_atoms(top, sliced)


def _solute_positions_in(stop, xyz_solute, box_xyz, mapping):
    xyz = box_xyz.copy()
    xyz[mapping] = xyz_solute
    return xyz


@pytest.mark.parametrize("route", ["torchforce", "native"])
def test_remapped_model_gives_the_same_z_and_solute_forces(ala2, solvated, solute_model, tmp_path, route):
    """z of the remapped model on the solvated positions equals z of the solute model on the solute positions;
    the restraint force acts on the solute atoms only and equals the vacuum one, water feels nothing."""
    if route == "native" and not native.is_available():
        pytest.skip(f"native plugin not built: {native.unavailable_reason()}")
    _, top, xyz = ala2
    system, stop, sxyz, box = solvated
    mapping = match_atoms(top, stop)
    xyz_solute = xyz + 0.01 * np.random.default_rng(0).standard_normal(xyz.shape)
    sxyz = _solute_positions_in(stop, xyz_solute, sxyz, mapping)
    path = remap_model(solute_model, top, stop, tmp_path / "solvated.pt")
    remapped = lb.load_model(path)
    assert remapped.n_atoms == stop.n_atoms
    assert remapped.metadata["extra"]["remapped_from"]["n_atoms"] == 22
    z_solvated = remapped.encode(sxyz, box)
    z_solute = lb.load_model(solute_model).encode(xyz_solute)
    np.testing.assert_allclose(z_solvated, z_solute, rtol=1e-12, atol=1e-12)

    def restraint_forces(model, n, positions, periodic_box=None):
        s = openmm.System()
        for _ in range(n):
            s.addParticle(1.0)
        if periodic_box is not None:
            s.setDefaultPeriodicBoxVectors(*periodic_box)
        r = LatentRestraint(model, s, centers=z_solute + 0.3, forceConstants=50.0, backend=route)
        ctx = openmm.Context(s, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        if periodic_box is not None:
            ctx.setPeriodicBoxVectors(*periodic_box)
        ctx.setPositions(positions)
        st = ctx.getState(getEnergy=True, getForces=True, groups={r.force.getForceGroup()})
        return st.getPotentialEnergy()._value, st.getForces(asNumpy=True)._value

    e_vac, f_vac = restraint_forces(solute_model, 22, xyz_solute)
    e_sol, f_sol = restraint_forces(path, stop.n_atoms, sxyz, box)
    assert e_vac > 1.0
    np.testing.assert_allclose(e_sol, e_vac, rtol=1e-10)
    np.testing.assert_allclose(f_sol[mapping], f_vac, rtol=1e-8, atol=1e-8)
    others = np.setdiff1d(np.arange(stop.n_atoms), mapping)
    assert np.abs(f_sol[others]).max() == 0.0


def test_remap_refuses_a_wrong_model_topology(ala2, solvated, solute_model, tmp_path):
    _, stop, _, _ = solvated
    with pytest.raises(ValueError, match="reads 22 atoms but model_topology has"):
        remap_model(solute_model, stop, stop, tmp_path / "x.pt")


def test_cli_remap(ala2, solvated, solute_model, tmp_path):
    from latentbias.cli import main

    _, top, xyz = ala2
    _, stop, sxyz, box = solvated
    solute_pdb, solvated_pdb = tmp_path / "solute.pdb", tmp_path / "solvated.pdb"
    md.Trajectory(xyz[None], top).save_pdb(str(solute_pdb))
    md.Trajectory(sxyz[None], stop).save_pdb(str(solvated_pdb))
    out = tmp_path / "cli.pt"
    assert main(["remap", str(solute_model), "--model-topology", str(solute_pdb), "-t", str(solvated_pdb),
                 "-o", str(out)]) == 0
    assert lb.load_model(out).n_atoms == stop.n_atoms
