"""Cost of metadynamics deposits on the native LatentBiasForce: local Gaussian updates vs a full grid refit.

Alanine dipeptide in vacuum on the Reference platform, the d = 1, 2, 3 encoder and grids of
benchmarks/overhead.py (200, 100x100, 32x32x32 points), native evaluation path. Rows per d (µs/step, best of
``--repeats``, CPU time of the stepping thread so that other processes on a shared machine count less):

* static: the same LatentMetadynamics with depositions switched off (the bias still acts);
* local: a deposit every 500 steps, pushed with ``LatentBiasForce.addGridGaussian`` (only the Gaussian's
  support of the interpolant changes; the default since issue 10 item 6);
* refit: a deposit every 500 steps, pushed by replacing the whole table (``setGridValues``: the spline is
  refitted over the whole grid; the behaviour before).

"cost" = (deposit row − static) / static: issue 10's target is < 2 % at d = 3 for the local row.
Each deposit also evaluates c(t) over the whole grid in Python (for the log-weights); that part is included.

Run:  python benchmarks/deposit_cost.py [--steps 10000] [--repeats 3] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform as pyplatform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import latentbias as lb
import openmm
from openmm import app, unit
from latentbias.bias import LatentMetadynamics
from latentbias.bias.fused import FusedBackend
from latentbias.testsystems import alanine_dipeptide_vacuum

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import build_model, variables  # noqa: E402  (the d = 3 encoder and grids of the other benchmark)


class RefitBackend(FusedBackend):
    """FusedBackend that pushes every deposit as a whole new table (the full refit)."""

    def add_gaussian(self, center, height, values, context):
        self.set_grid(values(), context)


def time_run(model: Path, d: int, deposit: bool, backend: type, steps: int) -> float:
    system, topology, positions = alanine_dipeptide_vacuum()
    z = lb.load_model(model).encode(positions)
    meta = LatentMetadynamics(system, model, variables(z, d), 300 * unit.kelvin, 10.0, 1.0, 500, backend=backend)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    meta.step(sim, 1000)  # two deposits, so the grid is not flat
    meta.depositionEnabled = deposit
    t0 = time.thread_time()
    meta.step(sim, steps)
    return (time.thread_time() - t0) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    model = build_model(Path(tempfile.mkdtemp()))
    print(f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.1f} · "
          f"openmm {openmm.__version__} · latentbias {lb.__version__} · Reference, {args.steps} steps x "
          f"{args.repeats} (best), deposit every 500 steps, thread CPU time")
    print("| d | grid | static µs/step | local µs/step | local cost | refit µs/step | refit cost | refit/local |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for d in (1, 2, 3):
        best = {}
        for name, deposit, backend in (("static", False, FusedBackend), ("local", True, FusedBackend),
                                       ("refit", True, RefitBackend)):
            best[name] = min(time_run(model, d, deposit, backend, args.steps) for _ in range(args.repeats))
        shape = "x".join(str(n) for n in [v.gridWidth for v in variables(np.zeros(3), d)])
        cost = {k: 100 * (best[k] - best["static"]) / best["static"] for k in ("local", "refit")}
        extra_local, extra_refit = best["local"] - best["static"], best["refit"] - best["static"]
        ratio = f"{extra_refit / extra_local:.0f}x" if extra_local > 0 and extra_refit > 0 else "— (within noise)"
        print(f"| {d} | {shape} | {best['static']:.1f} | {best['local']:.1f} | {cost['local']:+.1f} % | "
              f"{best['refit']:.1f} | {cost['refit']:+.1f} % | {ratio} |")


if __name__ == "__main__":
    main()
