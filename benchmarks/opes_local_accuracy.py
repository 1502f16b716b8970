"""How well the Context's OPES bias follows the exact kernel sum: the local route vs the refit route.

``LatentOPES(contextUpdate="local")`` (the default with the native plugin) interpolates the kernel sum S with the
force's cubic spline and takes V = (α/β) ln(max(S, 0)/Z + ε) of the interpolated value; ``contextUpdate="refit"``
interpolates V itself (a spline of the node values of V). Both pass through V at the grid nodes. Between nodes each
differs from the exact V(z) = (α/β) ln(S_exact(z)/Z + ε), S_exact the kernel sum evaluated at z
(``KernelDensity.mixture_at``), by its interpolation error. This script measures both errors on the kernels of real
runs: ala2 in vacuum, Reference, the d = 1, 2, 3 encoder and grids of benchmarks/overhead.py (200, 100 × 100, 32³
points), OPES-METAD (barrier 30 kJ/mol, pace 500, default truncated kernels), ``--steps`` steps per run and seed.
Test points: kernel centres plus Gaussian noise of one kernel width (where the sampled density is), clipped into the
grid. Both interpolants are evaluated with OpenMM's own splines of the same tables (``Continuous{1,2,3}DFunction``
in a ``CustomCompoundBondForce`` on Reference), which is what the Context computes (up to rounding; tested in
tests/test_opes_local.py).

Run:  python benchmarks/opes_local_accuracy.py [--steps 20000] [--seeds 1 2 3] [--points 300]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform as pyplatform
import sys
import tempfile
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

import latentbias as lb
from latentbias.bias import LatentOPES
from latentbias.bias.fused import FusedBackend
from latentbias.testsystems import alanine_dipeptide_vacuum

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import build_model, variables  # noqa: E402


def spline_values(grid, table: np.ndarray, points: np.ndarray, expression: str) -> np.ndarray:
    """``expression`` of T = OpenMM's spline of ``table`` at ``points`` (n, d), Reference platform."""
    d = grid.ndim
    periodic = grid.variables[0].periodic
    lo = [v.minValue for v in grid.variables]
    hi = [v.maxValue for v in grid.variables]
    values = np.asarray(table, dtype=float).ravel(order="F").tolist()
    if d == 1:
        fn = openmm.Continuous1DFunction(values, lo[0], hi[0], periodic)
    elif d == 2:
        fn = openmm.Continuous2DFunction(*grid.shape, values, lo[0], hi[0], lo[1], hi[1], periodic)
    else:
        fn = openmm.Continuous3DFunction(*grid.shape, values, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], periodic)
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomCompoundBondForce(1, expression.replace("T", f"table({', '.join(['x1', 'y1', 'z1'][:d])})"))
    force.addTabulatedFunction("table", fn)
    force.addBond([0], [])
    system.addForce(force)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    out = []
    for p in points:
        ctx.setPositions([list(p) + [0.0] * (3 - d)])
        out.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(out)


def run(model: Path, d: int, steps: int, seed: int) -> LatentOPES:
    system, topology, positions = alanine_dipeptide_vacuum()
    z = lb.load_model(model).encode(positions)
    opes = LatentOPES(system, model, variables(z, d), 300 * unit.kelvin, 30.0, 500, backend=FusedBackend)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    opes.step(sim, steps)
    return opes


def errors(opes: LatentOPES, n_points: int, seed: int) -> dict[str, float]:
    kde = opes.kde
    rng = np.random.default_rng(seed)
    pick = rng.integers(kde.num_kernels, size=n_points)
    pts = kde.all_centers[pick] + rng.standard_normal((n_points, opes.grid.ndim)) * kde.all_sigmas[pick]
    lo = np.array([v.minValue for v in opes.variables])
    hi = np.array([v.maxValue for v in opes.variables])
    pts = np.clip(pts, lo + 1e-9, hi - 1e-9)
    zed = opes._normalization()
    a, eps = opes._alpha * opes._kt, math.exp(opes._logEpsilon)
    exact = opes._biasFromSums(kde.mixture_at(pts, kde.all_centers, kde.all_sigmas, kde.all_weights), zed)
    local = spline_values(opes.grid, kde.grid_sum, pts, f"{a!r}*log(max(T, 0)/{zed!r} + {eps!r})")
    refit = spline_values(opes.grid, opes.getBias(), pts, "T")
    spacing = np.array([(v.maxValue - v.minValue) / (v.gridWidth - 1) for v in opes.variables])
    out = {"kernels": kde.num_kernels, "sigma/spacing": float(np.min(kde.all_sigmas / spacing))}
    for name, v in (("local", local), ("refit", refit)):
        err = v - exact
        out[f"{name} rms"] = float(np.sqrt(np.mean(err**2)))
        out[f"{name} max"] = float(np.abs(err).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--points", type=int, default=300)
    args = parser.parse_args()
    print(f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.1f} · "
          f"openmm {openmm.__version__} · latentbias {lb.__version__} · Reference, {args.steps} steps per run, "
          f"{args.points} points")
    model = build_model(Path(tempfile.mkdtemp()))
    print("| d | grid | seed | kernels | min σ / spacing | local: rms | local: max | refit: rms | refit: max |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for d in (1, 2, 3):
        shape = "x".join(str(v.gridWidth) for v in variables(np.zeros(3), d))
        for seed in args.seeds:
            r = errors(run(model, d, args.steps, seed), args.points, seed)
            print(f"| {d} | {shape} | {seed} | {r['kernels']} | {r['sigma/spacing']:.2f} | {r['local rms']:.4f} | "
                  f"{r['local max']:.4f} | {r['refit rms']:.4f} | {r['refit max']:.4f} |", flush=True)
    print("errors in kJ/mol against V of the exact kernel sum at the same z (kT = 2.494 kJ/mol).")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
