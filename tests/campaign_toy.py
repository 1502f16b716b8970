"""A 2-D toy for campaign tests: one mobile particle in a three-well potential plus three fixed anchors.

The sampler sees only the distances between the four particles; the wells are far apart in (x, y).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from toy import MULTI_WELL_2D

WELLS = {"A": (0.6, 0.3), "B": (-0.6, 0.3), "C": (0.0, -0.6)}


def write_toy_system(folder: Path) -> tuple[Path, Path]:
    """system.xml + start.pdb: particle 0 (mass 10) in MULTI_WELL_2D starting in well A; anchors of mass 0."""
    system = openmm.System()
    force = openmm.CustomExternalForce(MULTI_WELL_2D)
    system.addParticle(10.0)
    force.addParticle(0, [])
    for _ in range(3):
        system.addParticle(0.0)  # fixed anchors
    system.addForce(force)
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    top = app.Topology()
    chain = top.addChain()
    for name in ("P", "A1", "A2", "A3"):
        res = top.addResidue("TOY", chain)
        top.addAtom(name, app.element.argon, res)
    xyz = np.array([[WELLS["A"][0], WELLS["A"][1], 0.0], [2.0, 0.0, 0.0], [-1.0, 1.7, 0.0], [-1.0, -1.7, 0.3]])
    with open(folder / "start.pdb", "w") as fh:
        app.PDBFile.writeFile(top, xyz * 10 * unit.angstrom, fh)
    return folder / "system.xml", folder / "start.pdb"


def toy_config_text(rounds: int = 4, steps: int = 20000, round0: int = 10000, strategy: str = "metadynamics",
                    checkpoint: int = 2000, converge_steps: int = 0, extra: str = "") -> str:
    converge = "" if not converge_steps else f"""
[converge]
enabled = true
method = "opes"
max_steps = {converge_steps}
min_steps = {converge_steps // 2}
burn_in = 0.2
tolerance = 0.3

[opes]
barrier = 15.0
pace = 100
sigma = 0.05
grid_points = 50
"""
    return f"""
[system]
system_xml = "system.xml"
pdb = "start.pdb"
constraints = "None"

[md]
platform = "Reference"
temperature = 300.0
timestep = 4.0
friction = 1.0
seed = 9

[features]
kind = ["distances"]
selection = "all"

[model]
latent_dim = 2
hidden = [16, 16]
epochs = 60
patience = 15
learning_rate = 0.005

[campaign]
rounds = {rounds}
steps_per_round = {steps}
round0_steps = {round0}
save_interval = 100
checkpoint_interval = {checkpoint}
strategy = "{strategy}"

[metadynamics]
bias_factor = 10.0
height = 1.5
frequency = 100
sigma = 0.08
grid_points = 50

[frontier]
n_targets = 2
restraint_k = 300.0
pull_fraction = 0.5
""" + converge + extra


def nearest_well(xy: np.ndarray) -> np.ndarray:
    names = np.array(list(WELLS))
    centres = np.array(list(WELLS.values()))
    return names[np.argmin(np.linalg.norm(xy[:, None, :] - centres[None], axis=2), axis=1)]
