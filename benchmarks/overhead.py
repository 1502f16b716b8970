"""Per-step cost of latent biases on alanine dipeptide in vacuum, measured side by side in one run.

Rows (each on the Reference and the CPU platform):

* unbiased ala2 (Amber ff96, NoCutoff, HBonds, LangevinMiddle 2 fs);
* latent restraint on d = 3 (LatentRestraint: the native LatentBiasForce when built, else one TorchForce);
* a static latent grid bias, d = 1, 2, 3 (the default backend: native LatentBiasForce when built, else the
  CustomCVForce route) — the same force as metadynamics without depositions;
* LatentMetadynamics with d = 1, 2, 3 (default backend), a Gaussian every 500 steps;
* openmm.app.Metadynamics with one TorchForce BiasVariable per latent dimension (what a user writes without this
  package), same settings.

The encoder is a 45-distance (heavy atoms) -> 64 -> 64 -> 3 tanh MLP with random weights, exported in float32.
Prints a table of µs/step, ns/day and the ratio to unbiased; ``--markdown`` prints it as a Markdown table.

Run:  python benchmarks/overhead.py [--steps 3000] [--platforms Reference CPU] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform as pyplatform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import latentbias as lb
import openmm
from openmm import app, unit
from latentbias.bias import LatentMetadynamics, LatentRestraint, LatentVariable
from latentbias.testsystems import alanine_dipeptide_vacuum

DT_FS = 2.0
FREQUENCY = 500


def build_model(folder: Path) -> Path:
    import mdtraj as md

    system, topology, positions = alanine_dipeptide_vacuum()
    top = md.Topology.from_openmm(topology)
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    feat = lb.Distances.from_selection(top, "element != H")
    torch.manual_seed(0)
    ae = lb.FeatureAutoencoder(feat.n_features, 3, hidden=(64, 64), activation="tanh")
    frames = xyz[None] + 0.02 * np.random.default_rng(0).standard_normal((64, 22, 3))
    ae.standardizer.fit(lb.features.featurize(feat, frames))
    model = lb.LatentModel(feat, ae, 22)
    path = folder / "ala2_d3.pt"
    lb.save_model(model, path, dtype="float32", overwrite=True)
    return path


GRID = {1: 200, 2: 100, 3: 32}  # grid points per dimension (a 3-D grid of 32^3 = 33k values)


def variables(z: np.ndarray, d: int) -> list[LatentVariable]:
    return [LatentVariable(i, z[i] - 3.0, z[i] + 3.0, 0.3, gridWidth=GRID[d]) for i in range(d)]


def make(platform: str, setup):
    system, topology, positions = alanine_dipeptide_vacuum()
    runner = setup(system)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, DT_FS * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    props = {"Threads": str(os.cpu_count() or 1)} if platform == "CPU" else {}
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform), props)
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return sim, runner


def time_per_step(sim, runner, steps: int) -> float:
    advance = (lambda n: sim.step(n)) if runner is None else (lambda n: runner.step(sim, n))
    advance(FREQUENCY)  # warm up (TorchScript optimisation passes, first deposit)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        advance(steps)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best * 1e6


def cases(model: Path, z: np.ndarray):
    def openmm_metad(d):
        def setup(system):
            bvs = [app.BiasVariable(lb.latent_component_force(model, system, i), z[i] - 3.0, z[i] + 3.0, 0.3,
                                    gridWidth=GRID[d]) for i in range(d)]
            return app.Metadynamics(system, bvs, 300 * unit.kelvin, 5.0, 1.0 * unit.kilojoule_per_mole, FREQUENCY)
        return setup

    def latent_metad(d):
        def setup(system):
            return LatentMetadynamics(system, model, variables(z, d), 300.0, 5.0, 1.0, FREQUENCY)
        return setup

    def restraint(system):
        LatentRestraint(model, system, centers=z, forceConstants=[100.0, 100.0, 100.0])
        return None

    def static_grid(d):
        def setup(system):
            from latentbias.bias import BiasGrid
            from latentbias.bias.fused import default_grid_backend

            default_grid_backend()(lb.load_model(model), system, BiasGrid(variables(z, d)))
            return None
        return setup

    yield "unbiased", lambda system: None
    yield f"latent restraint, d=3 ({LatentRestraint.__name__}, backend auto)", restraint
    for d in (1, 2, 3):
        yield f"static latent grid bias d={d} (no deposits)", static_grid(d)
    for d in (1, 2, 3):
        yield f"LatentMetadynamics d={d} (deposit every {FREQUENCY})", latent_metad(d)
    for d in (1, 2, 3):
        yield f"openmm.app.Metadynamics + {d} TorchForce CV(s)", openmm_metad(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per repetition (3 repetitions, best kept)")
    parser.add_argument("--platforms", nargs="+", default=["Reference", "CPU"])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp))
        _, _, positions = alanine_dipeptide_vacuum()
        z = lb.load_model(model).encode(positions)
        rows = []
        for name, setup in cases(model, z):
            row = [name]
            for platform in args.platforms:
                sim, runner = make(platform, setup)
                row.append(time_per_step(sim, runner, args.steps))
            rows.append(row)
    base = rows[0][1:]
    header = ["case"] + [f"{p} µs/step | ns/day | ×unbiased" for p in args.platforms]
    lines = []
    for row in rows:
        cells = [row[0]]
        for us, b in zip(row[1:], base):
            cells.append(f"{us:8.1f} | {DT_FS * 1e-6 * 86400 / (us * 1e-6):7.1f} | {us / b:5.2f}")
        lines.append(cells)
    info = (f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · python {pyplatform.python_version()}"
            f" · openmm {openmm.version.version} · torch {torch.__version__} · openmmtorch 1.5 · latentbias {lb.__version__}"
            f" · {args.steps} steps ×3 (best), deposit every {FREQUENCY} steps, torch threads 1")
    if args.markdown:
        print(info + "\n")
        print("| case | " + " | ".join(f"{p} µs/step | {p} ns/day | {p} ×unbiased" for p in args.platforms) + " |")
        print("|---|" + "---:|" * (3 * len(args.platforms)))
        for cells in lines:
            print("| " + cells[0] + " | " + " | ".join(c.replace(" | ", " | ") for c in cells[1:]) + " |")
    else:
        print(info)
        width = max(len(r[0]) for r in lines)
        print(f"{'case':<{width}}  " + "  ".join(f"{h:>34}" for h in header[1:]))
        for cells in lines:
            print(f"{cells[0]:<{width}}  " + "  ".join(f"{c:>34}" for c in cells[1:]))


if __name__ == "__main__":
    main()
