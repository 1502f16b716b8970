"""Write examples/ala2_c7eq.pdb: alanine dipeptide (openmmtools' ff96 prmtop) minimised in the C7eq basin.

φ/ψ are held at (−80°, 75°) by a stiff torsion restraint during minimisation, then released for a final
unrestrained minimisation. Run once; the PDB is committed.
"""

from __future__ import annotations

import math
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
from openmm import app, unit

import latentbias as lb
from latentbias.testsystems import alanine_dipeptide_vacuum


def main() -> None:
    system, topology, positions = alanine_dipeptide_vacuum()
    quads = lb.backbone_dihedral_atoms(md.Topology.from_openmm(topology), ("phi", "psi"))
    restraint = openmm.CustomTorsionForce("0.5*k*min(dtheta, 2*pi-dtheta)^2; dtheta = abs(theta-theta0); pi = 3.14159265")
    restraint.addGlobalParameter("k", 2000.0)
    restraint.addPerTorsionParameter("theta0")
    for quad, target in zip(quads, (-80.0, 75.0)):
        restraint.addTorsion(*[int(i) for i in quad], [math.radians(target)])
    system.addForce(restraint)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1e-3, 5000)
    ctx.setParameter("k", 0.0)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1e-3, 5000)
    state = ctx.getState(getPositions=True)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    traj = md.Trajectory(np.asarray(xyz)[None], md.Topology.from_openmm(topology))
    phi, psi = np.degrees(md.compute_dihedrals(traj, quads)[0])
    out = Path(__file__).with_name("ala2_c7eq.pdb")
    with open(out, "w") as fh:
        app.PDBFile.writeFile(topology, state.getPositions(), fh)
    print(f"wrote {out}: phi = {phi:.1f} deg, psi = {psi:.1f} deg")


if __name__ == "__main__":
    main()
