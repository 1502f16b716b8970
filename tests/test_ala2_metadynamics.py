"""Latent metadynamics on exact φ/ψ of alanine dipeptide vs openmm.app.Metadynamics on CustomTorsionForce φ/ψ."""

from __future__ import annotations

import math

import numpy as np
import openmm
import pytest
from openmm import app, unit

import latentbias as lb
from latentbias.analysis import kt_kjmol
from latentbias.bias import LatentMetadynamics, LatentVariable
from latentbias.cvs import save_dihedral_cv
from latentbias.testsystems import alanine_dipeptide_vacuum

SETTINGS = dict(temperature=300.0, biasFactor=6.0, height=1.2, frequency=250)
WIDTH, GRID = 0.35, 48


def phi_psi_atoms(topology):
    import mdtraj as md

    return lb.backbone_dihedral_atoms(md.Topology.from_openmm(topology), ("phi", "psi"))


def torsion_force(quad):
    f = openmm.CustomTorsionForce("theta")
    f.addTorsion(*[int(i) for i in quad], [])
    return f


def simulation(system, topology, positions, seed):
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    return sim


def openmm_metad(seed):
    system, topology, positions = alanine_dipeptide_vacuum()
    quads = phi_psi_atoms(topology)
    variables = [app.BiasVariable(torsion_force(q), -math.pi, math.pi, WIDTH, True, GRID) for q in quads]
    meta = app.Metadynamics(system, variables, SETTINGS["temperature"] * unit.kelvin, SETTINGS["biasFactor"],
                            SETTINGS["height"] * unit.kilojoule_per_mole, SETTINGS["frequency"])
    return meta, simulation(system, topology, positions, seed)


def latent_metad(seed, model_path):
    system, topology, positions = alanine_dipeptide_vacuum()
    if not model_path.exists():
        save_dihedral_cv(phi_psi_atoms(topology), system.getNumParticles(), model_path)
    variables = [LatentVariable(i, -math.pi, math.pi, WIDTH, periodic=True, gridWidth=GRID) for i in range(2)]
    # openmm.app.Metadynamics deposits untruncated Gaussians: the matching setting is kernelCutoff=None
    meta = LatentMetadynamics(system, model_path, variables, **SETTINGS, kernelCutoff=None)
    return meta, simulation(system, topology, positions, seed)


def basin_delta_f(fes_phi_psi: np.ndarray, phi: np.ndarray) -> float:
    """ΔF = F(φ>0) − F(φ<0) (kJ/mol) from a periodic FES grid indexed [φ, ψ] (last point duplicates the first)."""
    f = fes_phi_psi[:-1, :-1]
    p = np.exp(-(f - f.min()) / kt_kjmol(300.0))
    phi = phi[:-1]
    return float(-kt_kjmol(300.0) * np.log(p[phi > 0].sum() / p[phi < 0].sum()))


def test_dihedral_cv_matches_mdtraj(ala2, tmp_path):
    import mdtraj as md

    _, top, xyz = ala2
    path = save_dihedral_cv(lb.backbone_dihedral_atoms(top, ("phi", "psi")), 22, tmp_path / "phipsi.pt")
    frames = xyz[None] + 0.05 * np.random.default_rng(0).standard_normal((4, 22, 3))
    traj = md.Trajectory(frames, top)
    ref = np.column_stack([md.compute_phi(traj)[1][:, 0], md.compute_psi(traj)[1][:, 0]])
    np.testing.assert_allclose(lb.load_model(path).encode(frames), ref, atol=1e-6)
    assert lb.load_model(path).periodic == [[-math.pi, math.pi]] * 2


def test_same_trajectory_gives_the_same_bias_as_openmm_metadynamics(tmp_path):
    """Same seeds, same settings, 3 ps each; the two forces agree so closely that the trajectories coincide and
    the deposited grids agree to 1e-6 kJ/mol (OpenMM's grid is indexed [ψ, φ], ours [φ, ψ]).

    The runs are sequential: the Reference platform draws Langevin noise from one process-wide generator, so two
    Contexts stepped alternately would not see the same random numbers."""
    ref, sim_a = openmm_metad(seed=5)
    ref.step(sim_a, 1500)
    mine, sim_b = latent_metad(seed=5, model_path=tmp_path / "phipsi.pt")
    mine.step(sim_b, 1500)
    assert mine.numDeposits == 6
    theirs = ref._totalBias.T
    assert np.abs(theirs).max() > 1.0
    np.testing.assert_allclose(mine.getBias(), theirs, atol=1e-6)
    np.testing.assert_allclose(mine.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole),
                               ref.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole).T, atol=1e-5)
    np.testing.assert_allclose(mine.getCollectiveVariables(sim_b), ref.getCollectiveVariables(sim_a), atol=1e-6)


@pytest.mark.slow
def test_basin_free_energy_difference_agrees_with_openmm_metadynamics(tmp_path):
    """Independent 2 ns runs (FES averaged over the second half): |ΔF_latent − ΔF_openmm| <= 1.5 kJ/mol."""
    results = []
    for make in (lambda: openmm_metad(seed=21), lambda: latent_metad(seed=22, model_path=tmp_path / "phipsi.pt")):
        meta, sim = make()
        snaps = []
        for k in range(20):
            meta.step(sim, 50_000)
            if k >= 10:
                fe = meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)
                snaps.append(fe if isinstance(meta, LatentMetadynamics) else fe.T)
        phi = np.linspace(-math.pi, math.pi, GRID)
        results.append(basin_delta_f(np.mean(snaps, axis=0), phi))
    assert abs(results[0] - results[1]) <= 1.5, results


def test_deposit_frames_reweight_any_cv(tmp_path):
    """trajectoryFile frames line up with the records: φ from mdtraj on the DCD equals the recorded z0, and the
    c(t) / final-bias log-weights give a finite reweighted FES of a CV the sampler never saw (cap-cap distance)."""
    import mdtraj as md

    from latentbias.analysis import free_energy_surface

    system, topology, positions = alanine_dipeptide_vacuum()
    quads = phi_psi_atoms(topology)
    model = save_dihedral_cv(quads, 22, tmp_path / "phipsi.pt")
    variables = [LatentVariable(i, -math.pi, math.pi, WIDTH, periodic=True, gridWidth=GRID) for i in range(2)]
    meta = LatentMetadynamics(system, model, variables, recordFile=tmp_path / "hills.csv",
                              trajectoryFile=tmp_path / "frames.dcd", **SETTINGS)
    sim = simulation(system, topology, positions, seed=3)
    meta.step(sim, 10_000)
    rec = meta.getRecords()
    traj = md.load(str(tmp_path / "frames.dcd"), top=md.Topology.from_openmm(topology))
    assert len(traj) == len(rec["step"]) == 40
    np.testing.assert_allclose(md.compute_dihedrals(traj, quads[:1])[:, 0], rec["z"][:, 0], atol=1e-4)
    ends = md.compute_distances(traj, [[1, 18]])[:, 0]  # ACE CH3 carbon to NME CH3 carbon, nm
    for method in ("ct", "final"):
        logw = meta.getLogWeights(method)
        assert logw.shape == (40,) and np.all(np.isfinite(logw))
        fes = free_energy_surface(ends, logw, bins=5, temperature=300.0, n_blocks=4)
        assert np.nanmin(fes.free_energy) == 0.0
    np.testing.assert_allclose(meta.biasAt(rec["z"][-1:]), meta.grid.interpolate(rec["z"][-1:], meta.getBias()))
