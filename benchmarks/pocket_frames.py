"""Frames of T4 lysozyme L99A with a breathing cavity, for checking pocket measures (writes an XTC).

Source: short force-field MD of the ligand-free receptor (openmmtools' ``T4-lysozyme-L99A-implicit``, Amber
ff99SB-ILDN-era prmtop) in vacuum with a 1.0 nm non-periodic cutoff, on the CPU platform. The residues lining the
L99A cavity are coupled to a hotter bath than the rest (per-degree-of-freedom Langevin thermostat, BAOAB), so the
cavity breathes within picoseconds instead of the nanoseconds an unbiased 300 K run needs (~1.5 ns/day here in
implicit solvent). The frames are physical structures of the force field (bonded geometry intact, no clashes),
not a Boltzmann ensemble: they serve to compare cavity-volume measures, not to estimate free energies.

Usage::

    python benchmarks/pocket_frames.py --out tests/data/t4l_l99a_breathing.xtc
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

#: Residues (PDB numbers of receptor.pdb) lining the L99A cavity (within 0.45 nm of the benzene-like ligand of
#: openmmtools' complex.pdb, minus the two charged surface lysines).
POCKET_RESIDUES = [78, 84, 87, 88, 91, 99, 102, 103, 111, 118, 121, 133, 153]


def data_dir() -> Path:
    from latentbias.testsystems import _package_dir

    return _package_dir("openmmtools") / "data" / "T4-lysozyme-L99A-implicit"


def hot_region_integrator(dt_ps: float, friction_per_ps: float, kt_per_dof: np.ndarray):
    """BAOAB Langevin CustomIntegrator whose bath temperature is set per degree of freedom (kJ/mol)."""
    import openmm as mm

    integ = mm.CustomIntegrator(dt_ps)
    integ.addGlobalVariable("a", float(np.exp(-friction_per_ps * dt_ps)))
    integ.addPerDofVariable("kT", 0.0)
    integ.addPerDofVariable("x1", 0.0)
    integ.addUpdateContextState()
    integ.addComputePerDof("v", "v + 0.5*dt*f/m")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    integ.addComputePerDof("v", "a*v + sqrt((1-a*a)*kT/m)*gaussian")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    integ.addComputePerDof("x1", "x")
    integ.addConstrainPositions()
    integ.addComputePerDof("v", "v + 0.5*dt*f/m + (x-x1)/dt")
    integ.addConstrainVelocities()
    integ.setPerDofVariableByName("kT", [mm.Vec3(k, k, k) for k in kt_per_dof])
    return integ


def main() -> None:
    import mdtraj as md
    import openmm as mm
    from openmm import app, unit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/data/t4l_l99a_breathing.xtc")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--interval", type=int, default=100, help="steps between frames (2 fs steps)")
    parser.add_argument("--equilibrate", type=int, default=200, help="steps before the first frame")
    parser.add_argument("--hot", type=float, default=600.0, help="bath temperature of the pocket residues, K")
    parser.add_argument("--cold", type=float, default=300.0, help="bath temperature of the rest, K")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    folder = data_dir()
    prmtop = app.AmberPrmtopFile(str(folder / "receptor.prmtop"))
    crd = app.AmberInpcrdFile(str(folder / "receptor.crd"))
    system = prmtop.createSystem(nonbondedMethod=app.CutoffNonPeriodic, nonbondedCutoff=1.0 * unit.nanometer,
                                 constraints=app.HBonds)
    top = md.Topology.from_openmm(prmtop.topology)
    hot_atoms = set(top.select("resSeq " + " ".join(map(str, POCKET_RESIDUES))).tolist())
    kb = 0.0083144626  # kJ/mol/K
    kt = np.array([kb * (args.hot if i in hot_atoms else args.cold) for i in range(top.n_atoms)])
    integ = hot_region_integrator(0.002, 5.0, kt)
    integ.setRandomNumberSeed(args.seed)
    platform = mm.Platform.getPlatformByName("CPU")
    ctx = mm.Context(system, integ, platform, {"Threads": "1"})
    ctx.setPositions(crd.positions)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
    ctx.setVelocitiesToTemperature(args.cold * unit.kelvin, args.seed)
    t0 = time.perf_counter()
    integ.step(args.equilibrate)
    xyz = []
    for k in range(args.frames):
        integ.step(args.interval)
        xyz.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        print(f"frame {k + 1}/{args.frames}  {time.perf_counter() - t0:.0f} s", flush=True)
    traj = md.Trajectory(np.asarray(xyz, dtype=np.float32), top)
    traj.time = (args.equilibrate + args.interval * (1 + np.arange(args.frames))) * 0.002
    traj.superpose(traj, 0, atom_indices=top.select("name CA"))
    traj.save_xtc(args.out)
    print(f"wrote {args.out}: {traj.n_frames} frames, {traj.n_atoms} atoms, {time.perf_counter() - t0:.0f} s MD")


if __name__ == "__main__":
    main()
