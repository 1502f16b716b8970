"""Quickstart: learn a 2-D latent space for alanine dipeptide and evaluate it inside a live OpenMM simulation.

1. Unbiased ala2 in vacuum (Amber ff96 prmtop from openmmtools' data, NoCutoff, HBonds, 300 K, Reference platform).
2. Train a 2-D autoencoder on the 45 heavy-atom distances.
3. Export it to one TorchScript file (metadata inside).
4. Attach the latent coordinates as openmm-torch TorchForce collective variables to a fresh simulation, run 10 ps
   and print z and its range.

Run:  python examples/ala2_quickstart.py [--out DIR] [--unbiased-ps 200]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

import latentbias as lb  # import before openmm is not required, but keeps the plugin check in one place
import mdtraj as md
import openmm
from openmm import app, unit
from latentbias.testsystems import alanine_dipeptide_vacuum

TEMPERATURE = 300 * unit.kelvin
TIMESTEP = 2 * unit.femtosecond


def make_simulation(system, topology, positions, seed):
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 1 / unit.picosecond, TIMESTEP)
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName("Reference")
    lb.check_platform(system, platform)  # a route that cannot run raises here, before any Context exists
    sim = app.Simulation(topology, system, integrator, platform)
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(TEMPERATURE, seed)
    return sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples/output", help="output folder")
    parser.add_argument("--unbiased-ps", type=float, default=200.0, help="length of the unbiased run, ps")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. unbiased sampling, one frame every 0.5 ps
    system, topology, positions = alanine_dipeptide_vacuum()
    sim = make_simulation(system, topology, positions, args.seed)
    sim.minimizeEnergy()
    sim.step(500)  # 1 ps equilibration
    frames = []
    n_frames = int(args.unbiased_ps / 0.5)
    for _ in range(n_frames):
        sim.step(250)
        frames.append(sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    traj = md.Trajectory(np.array(frames), md.Topology.from_openmm(topology))
    traj.save_dcd(str(out / "unbiased.dcd"))
    traj[0].save_pdb(str(out / "ala2.pdb"))
    print(f"[{time.perf_counter() - t0:5.1f} s] unbiased: {args.unbiased_ps:.0f} ps, {len(traj)} frames -> {out}/unbiased.dcd")

    # 2. train a 2-D encoder on heavy-atom distances
    featurizer = lb.Distances.from_selection(traj.topology, "element != H")
    estimator = lb.LatentModelEstimator(latent_dim=2, hidden=(32, 32), epochs=300, learning_rate=3e-3,
                                        patience=30, seed=0, progress=False)
    model, result = estimator.fit_trajectories(featurizer, traj)
    print(f"[{time.perf_counter() - t0:5.1f} s] trained on {featurizer.n_features} distances: "
          f"{len(result.history['train_loss'])} epochs, validation loss {result.history['val_loss'][result.best_epoch]:.4f}")

    # 3. export: one TorchScript file, metadata inside
    model_path = lb.save_model(model, out / "ala2_latent.pt", training=result, overwrite=True)
    print(f"[{time.perf_counter() - t0:5.1f} s] exported {model_path} (latent_dim={model.latent_dim})")

    # 4. latent coordinates as CVs of a fresh simulation (energy 0: monitored, not biased)
    system2, topology2, positions2 = alanine_dipeptide_vacuum()
    cv = openmm.CustomCVForce("0")
    for i, force in enumerate(lb.latent_cv_forces(model_path, system2)):
        cv.addCollectiveVariable(f"z{i}", force)
    system2.addForce(cv)
    sim2 = make_simulation(system2, topology2, positions2, args.seed + 1)
    zs = []
    t1 = time.perf_counter()
    for _ in range(50):  # 10 ps, z every 0.2 ps
        sim2.step(100)
        zs.append(cv.getCollectiveVariableValues(sim2.context))
    zs = np.array(zs)
    elapsed = time.perf_counter() - t1
    for k in range(0, len(zs), 10):
        print(f"  t = {0.2 * (k + 1):5.1f} ps   z = ({zs[k, 0]: .3f}, {zs[k, 1]: .3f})")
    print(f"[{time.perf_counter() - t0:5.1f} s] 10 ps with latent CVs in {elapsed:.1f} s "
          f"({elapsed / 5000 * 1e6:.0f} us/step); z range: "
          + ", ".join(f"z{i} in [{zs[:, i].min():.3f}, {zs[:, i].max():.3f}]" for i in range(zs.shape[1])))
    z_train = model.transform(traj.xyz)
    print("  training-data z range: "
          + ", ".join(f"z{i} in [{z_train[:, i].min():.3f}, {z_train[:, i].max():.3f}]" for i in range(2)))


if __name__ == "__main__":
    main()
