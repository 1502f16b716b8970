"""How well the Context's OPES bias follows the exact kernel sum: the local, refit and hermite routes.

``LatentOPES(contextUpdate="local")`` interpolates the kernel sum S with the
force's cubic spline and takes V = (α/β) ln(max(S, 0)/Z + ε) of the interpolated value; ``contextUpdate="refit"``
interpolates V itself (a spline of the node values of V). Both pass through V at the grid nodes. Between nodes each
differs from the exact V(z) = (α/β) ln(S_exact(z)/Z + ε), S_exact the kernel sum evaluated at z
(``KernelDensity.mixture_at``), by its interpolation error. This script measures the errors on the kernels of real
runs: ala2 in vacuum, Reference, the d = 1, 2, 3 encoder and grids of benchmarks/overhead.py (200, 100 × 100, 32³
points), OPES-METAD (barrier 30 kJ/mol, pace 500, default truncated kernels), ``--steps`` steps per run and seed.
Test points: kernel centres plus Gaussian noise of ``--noise`` kernel widths (where the sampled density is), clipped
into the grid. The two spline routes are evaluated with OpenMM's own splines of the same tables (``Continuous{1,2,3}DFunction``
in a ``CustomCompoundBondForce`` on Reference), which is what the Context computes (up to rounding; tested in
tests/test_opes_local.py).

``hermite``: the kernel sum in a Hermite table with the kernels' exact node derivatives
(``contextUpdate="hermite"``; the table built by the plugin, ``LatentBiasForce.setGridInterpolation("hermite")`` +
``addGridKernel``), from which the force takes V's node values and exact node derivatives (chain rule) and
interpolates V with cubic Hermite patches (``LatentBiasGrid::evaluateLogHermite``), evaluated here in numpy; the last
column checks that evaluation against the run's own Context at its current z. ``hermite of S``: the logarithm of
the Hermite patch of S instead (what the force did before the node transform; for comparison). The runs use
``contextUpdate="hermite"``; all interpolants are built from the same kernels.

Run:  python benchmarks/opes_local_accuracy.py [--steps 20000] [--seeds 1 2 3] [--points 300] [--dims 1 2 3]
      [--compression 1.0] [--noise 1.0]
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


def hermite_table(opes: LatentOPES) -> list[np.ndarray]:
    """The Hermite table (values, then the node derivatives of masks 1 .. 2^d − 1) that
    ``LatentBiasForce.setGridInterpolation("hermite")`` builds from ``opes``' kernels: a LatentBiasForce of the same
    grid (not in a Context), every kernel added with ``addGridKernel``. Arrays of shape grid.shape."""
    model = opes.model.path if hasattr(opes.model, "path") else opes.model
    force = type(opes.backend.force)(str(model))
    for v in opes.variables:
        force.addGridDimension(v.index, v.minValue, v.maxValue, v.gridWidth, v.periodic)
    force.setGridInterpolation("hermite")
    cutoff = 0.0 if opes.kde.cutoff is None else float(opes.kde.cutoff)
    for c, sg, w in zip(opes.kde.all_centers, opes.kde.all_sigmas, opes.kde.all_weights):
        force.addGridKernel([float(x) for x in c], [float(x) for x in sg], float(w), cutoff)
    shape = opes.grid.shape
    n = int(np.prod(shape))
    flat = np.concatenate([np.asarray(force.getGridValues()), np.asarray(force.getGridNodeDerivatives())])
    return [flat[m * n:(m + 1) * n].reshape(shape, order="F") for m in range(2 ** len(shape))]


def log_table(table: list[np.ndarray], a: float, eps: float, zed: float) -> list[np.ndarray]:
    """V = a ln(max(S, 0)/Z + ε) and its node derivatives from a Hermite table of S by the chain rule (what the force
    interpolates on the "hermite" route: LatentBiasGrid::logNodeDerivatives)."""
    d = int(round(math.log2(len(table))))
    p = np.maximum(table[0], 0.0)
    D = p + eps * zed
    out = [a * np.log(p / zed + eps)]
    for mask in range(1, 2**d):
        bits = [1 << k for k in range(d) if mask >> k & 1]
        if len(bits) == 1:
            v = table[mask] / D
        elif len(bits) == 2:
            v = table[mask] / D - table[bits[0]] * table[bits[1]] / D**2
        else:
            v = (table[7] / D - (table[3] * table[4] + table[5] * table[2] + table[6] * table[1]) / D**2
                 + 2 * table[1] * table[2] * table[4] / D**3)
        out.append(a * v)
    return out


def hermite_values(grid, table: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """The tensor-product cubic Hermite interpolant of ``table`` (hermite_table) at ``points`` (n, d): the patch
    LatentBiasGrid::evaluateGeneric evaluates (cells found as SplineFitter does)."""
    d = grid.ndim
    cells, basis = [], []
    for k, v in enumerate(grid.variables):
        x = np.array([v.minValue + i * (v.maxValue - v.minValue) / (v.gridWidth - 1) for i in range(v.gridWidth)])
        u = np.clip(points[:, k], x[0], x[-1])
        lo = np.clip(np.searchsorted(x, u, side="right") - 1, 0, len(x) - 2)
        h = x[lo + 1] - x[lo]
        t = (u - x[lo]) / h
        b = {(0, 0): 1 - 3 * t**2 + 2 * t**3, (1, 0): 3 * t**2 - 2 * t**3,
             (0, 1): h * (t - 2 * t**2 + t**3), (1, 1): h * (t**3 - t**2)}
        cells.append(lo)
        basis.append(b)
    out = np.zeros(len(points))
    for corner in range(2**d):
        idx = tuple(cells[k] + ((corner >> k) & 1) for k in range(d))
        for mask in range(2**d):
            term = table[mask][idx]
            for k in range(d):
                term = term * basis[k][((corner >> k) & 1, (mask >> k) & 1)]
            out += term
    return out


def run(model: Path, d: int, steps: int, seed: int, with_simulation: bool = False, compression: float = 1.0,
        noise: float = 1.0):
    """A ``steps``-step LatentOPES run (contextUpdate="hermite", ``compressionThreshold=compression``); returns it
    (and its Simulation if asked)."""
    system, topology, positions = alanine_dipeptide_vacuum()
    z = lb.load_model(model).encode(positions)
    opes = LatentOPES(system, model, variables(z, d), 300 * unit.kelvin, 30.0, 500, backend=FusedBackend,
                      contextUpdate="hermite", compressionThreshold=compression)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    opes.step(sim, steps)
    return (opes, sim) if with_simulation else opes


def errors(opes: LatentOPES, n_points: int, seed: int, sim=None, noise: float = 1.0) -> dict[str, float]:
    kde = opes.kde
    rng = np.random.default_rng(seed)
    pick = rng.integers(kde.num_kernels, size=n_points)
    pts = kde.all_centers[pick] + noise * rng.standard_normal((n_points, opes.grid.ndim)) * kde.all_sigmas[pick]
    lo = np.array([v.minValue for v in opes.variables])
    hi = np.array([v.maxValue for v in opes.variables])
    pts = np.clip(pts, lo + 1e-9, hi - 1e-9)
    zed = opes._normalization()
    a, eps = opes._alpha * opes._kt, math.exp(opes._logEpsilon)
    exact = opes._biasFromSums(kde.mixture_at(pts, kde.all_centers, kde.all_sigmas, kde.all_weights), zed)
    local = spline_values(opes.grid, kde.grid_sum, pts, f"{a!r}*log(max(T, 0)/{zed!r} + {eps!r})")
    refit = spline_values(opes.grid, opes.getBias(), pts, "T")
    table = hermite_table(opes)
    hermite_s = a * np.log(np.maximum(hermite_values(opes.grid, table, pts), 0.0) / zed + eps)
    vtable = log_table(table, a, eps, zed)
    hermite = hermite_values(opes.grid, vtable, pts)
    spacing = np.array([(v.maxValue - v.minValue) / (v.gridWidth - 1) for v in opes.variables])
    out = {"kernels": kde.num_kernels, "sigma/spacing": float(np.min(kde.all_sigmas / spacing))}
    if sim is not None:  # the run's own Context (contextUpdate="hermite") applies the same interpolant
        opes.updateContext(sim.context)
        zc = opes.backend.latent_values(sim.context)
        mine = hermite_values(opes.grid, vtable, zc[None, :])[0]
        out["context check"] = abs(mine - opes.backend.energy(sim.context))  # z inside the grid: no wall
    for name, v in (("local", local), ("refit", refit), ("hermite", hermite), ("hermite of S", hermite_s)):
        err = v - exact
        out[f"{name} rms"] = float(np.sqrt(np.mean(err**2)))
        out[f"{name} max"] = float(np.abs(err).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--compression", type=float, default=1.0,
                        help="compressionThreshold (σ units; smaller keeps more separate kernels)")
    parser.add_argument("--noise", type=float, default=1.0, help="test points: centre + noise × σ × N(0, 1)")
    args = parser.parse_args()
    print(f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.1f} · "
          f"openmm {openmm.__version__} · latentbias {lb.__version__} · Reference, {args.steps} steps per run, "
          f"{args.points} points, compressionThreshold {args.compression}, noise {args.noise} σ")
    model = build_model(Path(tempfile.mkdtemp()))
    print("| d | grid | seed | kernels | min σ / spacing | local: rms | local: max | refit: rms | refit: max | "
          "hermite: rms | hermite: max | hermite of S: rms | hermite of S: max | Context vs table |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in args.dims:
        shape = "x".join(str(v.gridWidth) for v in variables(np.zeros(3), d))
        for seed in args.seeds:
            opes, sim = run(model, d, args.steps, seed, with_simulation=True, compression=args.compression)
            r = errors(opes, args.points, seed, sim, noise=args.noise)
            print(f"| {d} | {shape} | {seed} | {r['kernels']} | {r['sigma/spacing']:.2f} | {r['local rms']:.4f} | "
                  f"{r['local max']:.4f} | {r['refit rms']:.4f} | {r['refit max']:.4f} | {r['hermite rms']:.4f} | "
                  f"{r['hermite max']:.4f} | {r['hermite of S rms']:.4f} | {r['hermite of S max']:.4f} | "
                  f"{r['context check']:.1e} |", flush=True)
    print("errors in kJ/mol against V of the exact kernel sum at the same z (kT = 2.494 kJ/mol).")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
