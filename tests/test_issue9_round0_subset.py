"""Issue 9 item 5 (audit row 17): a campaign's round 0 from protein-only (water-stripped) trajectories of a solvated
system. Alanine dipeptide solvated by openmm's Modeller (amber14 + TIP3P, 544 atoms, cutoff-periodic), 4 ps of MD
on the CPU platform saved every 0.5 ps, then the water stripped with mdtraj: the campaign matches the 22 atoms onto
the system by residue and atom name, places the water around each frame, and runs a metadynamics round from the
last of those frames."""

from __future__ import annotations

from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import pytest
from openmm import app, unit

from latentbias.campaign import Campaign, ConfigError, load_config
from latentbias.campaign.rundir import RunDir
from latentbias.features import featurize
from latentbias.testsystems import alanine_dipeptide_vacuum

N_FRAMES = 8
SAVE = 250  # steps between frames (2 fs)


def _system(topology, box=None):
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    return ff.createSystem(topology, nonbondedMethod=app.CutoffPeriodic, nonbondedCutoff=0.8 * unit.nanometer,
                           constraints=app.HBonds)


@pytest.fixture(scope="module")
def solvated(tmp_path_factory):
    """(folder, full frames nm (n, 544, 3), their potential energies kJ/mol, protein atom indices)."""
    folder = tmp_path_factory.mktemp("solvated")
    _, topology, positions = alanine_dipeptide_vacuum()
    modeller = app.Modeller(topology, positions)
    modeller.addSolvent(app.ForceField("amber14-all.xml", "amber14/tip3p.xml"), padding=0.9 * unit.nanometer)
    system = _system(modeller.topology)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(3)
    sim = app.Simulation(modeller.topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    sim.context.setPositions(modeller.positions)
    sim.minimizeEnergy(maxIterations=300)
    start = sim.context.getState(getPositions=True).getPositions()
    with open(folder / "start.pdb", "w") as fh:
        app.PDBFile.writeFile(modeller.topology, start, fh)
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    sim.step(500)  # leave the minimum
    frames, energies = [], []
    for _ in range(N_FRAMES):
        sim.step(SAVE)
        state = sim.context.getState(getPositions=True, getEnergy=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    top = md.Topology.from_openmm(modeller.topology)
    box = np.asarray(system.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer))
    traj = md.Trajectory(np.array(frames), top, unitcell_lengths=np.full((N_FRAMES, 3), float(box)),
                         unitcell_angles=np.full((N_FRAMES, 3), 90.0))
    protein = top.select("not water")
    stripped = traj.atom_slice(protein)
    stripped.save_dcd(str(folder / "protein.dcd"))
    stripped[0].save_pdb(str(folder / "protein.pdb"))
    return folder, np.array(frames), np.array(energies), protein


def _config(folder: Path, name: str = "c.toml", topology: str | None = "protein.pdb",
            selection: str = "not water and not element H") -> Path:
    text = f"""
[system]
system_xml = "system.xml"
pdb = "start.pdb"

[md]
platform = "CPU"
platform_properties = {{Threads = "1"}}
temperature = 300.0
timestep = 2.0
friction = 1.0
seed = 11

[features]
kind = ["distances"]
selection = "{selection}"

[model]
latent_dim = 1
hidden = [8]
epochs = 20
patience = 5

[campaign]
rounds = 2
steps_per_round = 200
save_interval = 50
checkpoint_interval = 100
round0_trajectories = ["protein.dcd"]
{'' if topology is None else f'round0_topology = "{topology}"'}
strategy = "metadynamics"

[metadynamics]
frequency = 50
height = 1.0
grid_points = 40
"""
    path = folder / name
    path.write_text(text)
    return path


def test_protein_only_trajectories_seed_round_0_of_the_solvated_system(solvated, tmp_path):
    folder, frames, energies, protein = solvated
    run = tmp_path / "run"
    campaign = Campaign(load_config(_config(folder)), run, progress=False)
    progress = campaign.run()
    assert progress["finished"]
    rd = RunDir(run)
    plan = rd.read_plan(0)
    assert plan["strategy"] == "given" and plan["round0_atoms"]["given_atoms"] == 22
    assert plan["round0_atoms"]["system_atoms"] == frames.shape[1] == 544
    stored = rd.read_segment(0, 0)
    xyz = stored["positions"].astype(float)
    assert xyz.shape == frames.shape
    # the protein atoms are the trajectory's (DCD float32 precision), so the features are those of the full MD frames
    np.testing.assert_allclose(xyz[:, protein], frames[:, protein], atol=2e-6)
    featurizer = campaign.featurizer()
    assert set(np.asarray(featurizer.atom_indices())) <= set(protein)
    boxes = stored["box"].astype(float)
    np.testing.assert_allclose(featurize(featurizer, xyz, boxes), featurize(featurizer, frames, boxes), atol=1e-5)
    # the water was placed around each frame: a configuration no higher in energy than the MD frame itself (thermal
    # solvent lies ~ n_dof kT/2 above the minimum the relaxation reaches), far below a clash
    system = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    relaxed = []
    for f in range(len(xyz)):
        ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in boxes[f]])
        ctx.setPositions(xyz[f])
        relaxed.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    relaxed = np.array(relaxed)
    assert np.all(np.isfinite(relaxed)) and np.all(relaxed < energies), (relaxed, energies)
    # round 1 (metadynamics) started from the last of these frames and ran: finite frames, no explosion
    r1 = rd.load_segments(1, rd.round_segments(1))
    assert len(r1["positions"]) == 4 and np.all(np.isfinite(r1["positions"]))
    assert np.max(np.abs(r1["positions"][0].astype(float) - xyz[-1])) < 0.3  # 50 steps after the stitched frame


def test_stripped_trajectories_without_their_topology_name_the_fix(solvated, tmp_path):
    folder = solvated[0]
    with pytest.raises(ValueError, match=r"round0_trajectories: .*protein\.dcd does not fit the 544-atom topology .*"
                                         r"round0_topology = \"protein\.pdb\""):
        Campaign(load_config(_config(folder, "plain.toml", topology=None)), tmp_path / "run", progress=False).run()


def test_a_trajectory_atom_without_a_match_is_named(solvated, tmp_path):
    folder = solvated[0]
    pdb = (folder / "protein.pdb").read_text()
    renamed = tmp_path / "renamed.pdb"
    lines = pdb.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(("ATOM", "HETATM")) and line[12:16].strip() == "CA")
    lines[i] = lines[i][:12] + " CX " + lines[i][16:]
    renamed.write_text("\n".join(lines) + "\n")
    config = _config(folder, "renamed.toml", topology=str(renamed))
    with pytest.raises(ConfigError, match=r"\[campaign\] round0_topology: cannot match the model's atoms onto the "
                                          r"target topology .*ALA2-CX .*-> no atom"):
        Campaign(load_config(config), tmp_path / "run", progress=False).run()


def test_features_of_atoms_the_trajectories_lack_are_refused(solvated, tmp_path):
    folder = solvated[0]
    config = _config(folder, "water.toml", selection="not element H and (not water or index 22)")
    with pytest.raises(ConfigError, match=r"round0_topology: the features \(\[features\] selection\) read atoms the "
                                          r"trajectories do not hold: HOH\d+-O \(22\)"):
        Campaign(load_config(config), tmp_path / "run", progress=False).run()


def test_round0_topology_needs_trajectories(solvated, tmp_path):
    folder = solvated[0]
    text = _config(folder).read_text().replace('round0_trajectories = ["protein.dcd"]\n', "round0_steps = 200\n")
    (folder / "notraj.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"round0_topology is the topology of round0_trajectories, which are not"):
        load_config(folder / "notraj.toml")
