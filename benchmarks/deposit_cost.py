"""Cost of metadynamics deposits on the native LatentBiasForce: local Gaussian updates vs a full grid refit.

Alanine dipeptide in vacuum on the Reference platform, the d = 1, 2, 3 encoder and grids of
benchmarks/overhead.py (200, 100x100, 32x32x32 points), native evaluation path. Rows per d (µs/step, best of
``--repeats``, CPU time of the stepping thread so that other processes on a shared machine count less):

* static: the same LatentMetadynamics with depositions switched off (the bias still acts);
* local: a deposit every 500 steps, pushed with ``LatentBiasForce.addGridGaussian`` (only the Gaussian's
  support of the interpolant changes; the default since issue 10 item 6);
* refit: a deposit every 500 steps, pushed by replacing the whole table (``setGridValues``: the spline is
  refitted over the whole grid; the behaviour before);
* "full" columns: untruncated Gaussians (``kernelCutoff=None``, as openmm.app.Metadynamics); "cut" columns:
  Gaussians truncated at the default ``kernelCutoff`` (√12.5 ≈ 3.54 widths per axis, PLUMED's cutoff), whose
  deposit touches only the nodes within the cutoff (Python grid, c(t), the Context's interpolant).

"cost" = (deposit row − static) / static: issue 10's target is < 2 % at d = 3 for the local row.
Each deposit also evaluates c(t) over the whole grid in Python (for the log-weights); that part is included.

``--method opes``: ``LatentOPES`` (OPES-METAD, barrier 30 kJ/mol, pace 500, fixed σ0 = the variables' biasWidth,
default truncated kernels), the two ways a deposit reaches the Context side by side in one run:
``contextUpdate="refit"`` (the table holds V = (α/β) ln(P/Z + ε), recomputed on the whole grid and pushed with
``setGridValues``: a full spline refit, the behaviour before) and ``contextUpdate="local"`` (the table holds the
kernel sum, the force takes the logarithm, a deposit is ``addGridKernel`` on the kernel's support + Z as a Context
parameter; :mod:`latentbias.bias.densitygrid`). Per d: µs/step (best of ``--repeats`` × ``--steps``) static
(depositions off), refit, local; the cost of one deposit as the median of ``--calls`` deposits of each route with
the calls interleaved (deposit = (one step + deposit) − one step; % of 500 static steps, issue 10's target < 2 %
at d = 3); and the local deposit by parts (thread CPU time, medians): z and V(z) read back from the Context, c(t),
``KernelDensity.add`` (the kernel on its box + sums at the kernel centres), the push to the Context
(``addGridKernel`` + ``setParameter`` + ``updateParametersInContext``: the local update of the interpolant).

``--method metad`` also prints a breakdown of one d = 3 deposit (thread CPU time, median of ``--calls`` calls on the
state a 2500-step run left): the energy-only evaluation for z and V(z), c(t) as the deposit computes it (window
update + sums, :class:`latentbias.bias.ctcache.RunningCt`) next to the full-grid ``well_tempered_ct`` it replaces,
the Gaussian added to the Python grid, ``addGridGaussian`` + ``updateParametersInContext`` (the local update of
the Context), and the whole deposit.

``--method interleaved``: the cost of one metadynamics deposit, untruncated vs truncated Gaussians, d = 1, 2, 3:
medians of ``--calls`` deposits of each with the calls of the two runs interleaved (a changing load on a shared
machine then hits both alike), as a percentage of 500 static steps.

Run:  python benchmarks/deposit_cost.py [--method metad|opes|interleaved] [--steps 10000] [--repeats 3] [--calls 20]
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
from latentbias.bias import LatentMetadynamics, LatentOPES
from latentbias.bias.fused import FusedBackend
from latentbias.testsystems import alanine_dipeptide_vacuum

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import build_model, variables  # noqa: E402  (the d = 3 encoder and grids of the other benchmark)


class RefitBackend(FusedBackend):
    """FusedBackend that pushes every deposit as a whole new table (the full refit)."""

    def add_gaussian(self, center, height, values, context):
        self.set_grid(values(), context)


def time_run(model: Path, d: int, deposit: bool, backend: type, steps: int, cutoff="default") -> float:
    system, topology, positions = alanine_dipeptide_vacuum()
    z = lb.load_model(model).encode(positions)
    extra = {} if cutoff == "default" else {"kernelCutoff": cutoff}
    meta = LatentMetadynamics(system, model, variables(z, d), 300 * unit.kelvin, 10.0, 1.0, 500, backend=backend,
                              **extra)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    meta.step(sim, 1000)  # two deposits, so the grid is not flat
    meta.depositionEnabled = deposit
    t0 = time.thread_time()
    meta.step(sim, steps)
    return (time.thread_time() - t0) / steps * 1e6


def make_opes(model: Path, d: int, cutoff="default", contextUpdate="auto"):
    system, topology, positions = alanine_dipeptide_vacuum()
    z = lb.load_model(model).encode(positions)
    opes = LatentOPES(system, model, variables(z, d), 300 * unit.kelvin, 30.0, 500, backend=FusedBackend,
                      kernelCutoff=cutoff, contextUpdate=contextUpdate)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    opes.step(sim, 2500)  # five kernels, so the estimate is not flat
    return opes, sim


def time_opes(model: Path, d: int, deposit: bool, steps: int, cutoff="default", contextUpdate="auto") -> float:
    opes, sim = make_opes(model, d, cutoff, contextUpdate)
    opes.depositionEnabled = deposit
    t0 = time.thread_time()
    opes.step(sim, steps)
    return (time.thread_time() - t0) / steps * 1e6


def median_thread_times_us(parts: dict, calls: int) -> dict:
    """Median thread CPU time (µs) of each named call, over ``calls`` repeats."""
    out = {}
    for name, call in parts.items():
        times = []
        for _ in range(calls):
            t0 = time.thread_time()
            call()
            times.append(time.thread_time() - t0)
        out[name] = float(np.median(times)) * 1e6
    return out


def opes_breakdown(model: Path, d: int, steps: int, calls: int, cutoff="default") -> dict[str, float]:
    """Thread CPU time (µs, median of ``calls``) of the parts of one local OPES deposit, after ``steps`` steps."""
    opes, sim = make_opes(model, d, cutoff, "local")
    opes.step(sim, steps)
    z = opes.backend.latent_values(sim.context)

    parts = {
        "z and V(z) read from the Context": lambda: (opes.backend.latent_values(sim.context),
                                                      opes.backend.energy(sim.context)),
        "c(t)": opes.ct,
        "KernelDensity.add": lambda: opes.kde.add(z, opes.getSigma(), 1.0),
    }
    out = median_thread_times_us(parts, calls)
    push = []
    for _ in range(calls):  # each push after one (untimed) kernel added
        opes.kde.add(z, opes.getSigma(), 1.0)
        opes._refreshBias()
        t0 = time.thread_time()
        opes.updateContext(sim.context)
        push.append(time.thread_time() - t0)
    out["push (addGridKernel, setParameter, updateParametersInContext)"] = float(np.median(push)) * 1e6
    out["kernels"] = opes.numKernels
    return out


def interleaved_opes_deposit_cost(model: Path, d: int, calls: int) -> dict[str, float]:
    """Median thread CPU time (µs) of one OPES deposit (one step + deposit − one step) for the refit and the local
    route, the calls of the two runs interleaved. Each run first steps 2500 steps (5 deposits)."""
    runs = {name: make_opes(model, d, "default", name) for name in ("refit", "local")}
    times: dict[str, list[float]] = {f"{k} {n}": [] for k in runs for n in ("step", "deposit")}
    for _ in range(calls):
        for name, (opes, sim) in runs.items():
            t0 = time.thread_time()
            sim.step(1)
            times[f"{name} step"].append(time.thread_time() - t0)
            t0 = time.thread_time()
            sim.step(1)
            sim.currentStep = (sim.currentStep // 500 + 1) * 500
            opes._deposit(sim)
            times[f"{name} deposit"].append(time.thread_time() - t0)
    med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    return {name: med[f"{name} deposit"] - med[f"{name} step"] for name in runs} | {
        "kernels": runs["local"][0].numKernels}


def main_opes(args) -> None:
    model = model_path(args)
    print("| d | grid | static µs/step | refit µs/step | cost | local µs/step | cost | deposit, refit µs | "
          "per 500 steps | deposit, local µs | per 500 steps | kernels |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    breakdowns = {}
    for d in (1, 2, 3):
        shape = "x".join(str(n) for n in [v.gridWidth for v in variables(np.zeros(3), d)])
        best = {}
        for name, deposit, route in (("static", False, "local"), ("refit", True, "refit"), ("local", True, "local")):
            best[name] = min(time_opes(model, d, deposit, args.steps, "default", route) for _ in range(args.repeats))
        r = interleaved_opes_deposit_cost(model, d, args.calls)
        per = 500 * best["static"]
        cost = {k: 100 * (best[k] - best["static"]) / best["static"] for k in ("refit", "local")}
        print(f"| {d} | {shape} | {best['static']:.1f} | {best['refit']:.1f} | {cost['refit']:+.1f} % | "
              f"{best['local']:.1f} | {cost['local']:+.1f} % | {r['refit']:.0f} | {100 * r['refit'] / per:.1f} % | "
              f"{r['local']:.0f} | {100 * r['local'] / per:.1f} % | {r['kernels']} |", flush=True)
        breakdowns[d] = opes_breakdown(model, d, args.steps, args.calls)
    print("\nOne local OPES deposit by parts, thread CPU time (µs, median of", args.calls, "calls):\n")
    names = [k for k in breakdowns[1] if k != "kernels"]
    print("| part | d = 1 | d = 2 | d = 3 |\n|---|---:|---:|---:|")
    for name in names:
        print(f"| {name} | " + " | ".join(f"{breakdowns[d][name]:.0f}" for d in (1, 2, 3)) + " |")


def metad_breakdown(model: Path, d: int, calls: int, cutoff="default") -> dict[str, float]:
    """Thread CPU time (µs, median of ``calls``) of the parts of one metadynamics deposit (native path)."""
    from latentbias.analysis.reweight import well_tempered_ct
    system, topology, positions = alanine_dipeptide_vacuum()
    z0 = lb.load_model(model).encode(positions)
    extra = {} if cutoff == "default" else {"kernelCutoff": cutoff}
    meta = LatentMetadynamics(system, model, variables(z0, d), 300 * unit.kelvin, 10.0, 1.0, 500, backend=FusedBackend,
                              **extra)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    meta.step(sim, 2500)
    ctx, backend = sim.context, meta.backend
    z = backend.latent_values(ctx)
    widths = [v.biasWidth for v in meta.variables]
    scratch = np.empty(meta.grid.shape)

    def gaussian_and_ct():
        meta.grid.add_gaussian(meta._selfBias, z, 1e-6, scratch)
        meta._runningCt.update(meta._selfBias, meta._runningCt.window(meta.grid, z, 1e-6), 1e-6)
        return meta._runningCt.value(meta._selfBias)

    def deposit():
        sim.step(1)  # not timed separately: subtract the "one step" row
        sim.currentStep = (sim.currentStep // 500 + 1) * 500
        meta._deposit(sim)

    parts = {
        "one step": lambda: sim.step(1),
        "one step + z, V(z) (energy-only evaluation)": lambda: (sim.step(1), backend.latent_values(ctx),
                                                                backend.energy(ctx)),
        "c(t) full grid (well_tempered_ct, before)": lambda: well_tempered_ct(meta._selfBias, meta.temperature,
                                                                               meta.biasFactor),
        "Gaussian on the Python grid + running c(t)": gaussian_and_ct,
        "addGridGaussian + updateParametersInContext": lambda: (backend.add_gaussian(
            z, 1e-6, lambda: meta._totalBias, ctx)),
        "one step + whole deposit": deposit,
    }
    return median_thread_times_us(parts, calls)


def interleaved_deposit_cost(model: Path, d: int, calls: int) -> dict[str, float]:
    """Median thread CPU time (µs) of one step and of one step + a whole deposit, for untruncated ("full") and
    truncated ("cut", the default cutoff) Gaussians, the calls of the two runs interleaved so that a changing load
    on a shared machine affects both alike. Each run first steps 2500 steps (5 deposits)."""
    runs = {}
    for name, cutoff in (("full", None), ("cut", "default")):
        system, topology, positions = alanine_dipeptide_vacuum()
        z0 = lb.load_model(model).encode(positions)
        extra = {} if cutoff == "default" else {"kernelCutoff": cutoff}
        meta = LatentMetadynamics(system, model, variables(z0, d), 300 * unit.kelvin, 10.0, 1.0, 500,
                                  backend=FusedBackend, **extra)
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
        integrator.setRandomNumberSeed(1)
        sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
        sim.context.setPositions(positions)
        meta.step(sim, 2500)
        runs[name] = (meta, sim)
    times: dict[str, list[float]] = {f"{k} {n}": [] for k in runs for n in ("step", "deposit")}
    for _ in range(calls):
        for name, (meta, sim) in runs.items():
            t0 = time.thread_time()
            sim.step(1)
            times[f"{name} step"].append(time.thread_time() - t0)
            t0 = time.thread_time()
            sim.step(1)
            sim.currentStep = (sim.currentStep // 500 + 1) * 500
            meta._deposit(sim)
            times[f"{name} deposit"].append(time.thread_time() - t0)
    med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    return {name: med[f"{name} deposit"] - med[f"{name} step"] for name in runs} | {
        "step": 0.5 * (med["full step"] + med["cut step"])}


_MODEL: list[Path] = []


def model_path(args) -> Path:
    if not _MODEL:
        _MODEL.append(build_model(Path(tempfile.mkdtemp())))
    return _MODEL[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="(tables are always Markdown)")
    parser.add_argument("--method", choices=["metad", "opes", "interleaved"], default="metad",
                        help="interleaved: only the per-deposit cost of metadynamics, full vs cut Gaussians, "
                             "d = 1-3, calls of the two runs interleaved")
    parser.add_argument("--calls", type=int, default=20, help="calls per part of the one-deposit breakdown")
    args = parser.parse_args()
    print(f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.1f} · "
          f"openmm {openmm.__version__} · latentbias {lb.__version__} · Reference, {args.steps} steps x "
          f"{args.repeats} (best), deposit every 500 steps, thread CPU time, {args.method}")
    if args.method == "interleaved":
        print("| d | grid | static µs/step | deposit, full Gaussians µs | per 500 steps | deposit, cut µs | "
              "per 500 steps |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for d in (1, 2, 3):
            r = interleaved_deposit_cost(model_path(args), d, args.calls)
            static = min(time_run(model_path(args), d, False, FusedBackend, args.steps) for _ in range(args.repeats))
            shape = "x".join(str(n) for n in [v.gridWidth for v in variables(np.zeros(3), d)])
            per = 500 * static
            print(f"| {d} | {shape} | {static:.1f} | {r['full']:.0f} | {100 * r['full'] / per:.1f} % | "
                  f"{r['cut']:.0f} | {100 * r['cut'] / per:.1f} % |", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        return
    if args.method == "opes":
        main_opes(args)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        return
    model = model_path(args)
    print("| d | grid | static µs/step | local, full µs/step | cost | local, cut µs/step | cost | refit, full µs/step "
          "| cost |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for d in (1, 2, 3):
        best = {}
        for name, deposit, backend, cutoff in (("static", False, FusedBackend, "default"),
                                               ("local full", True, FusedBackend, None),
                                               ("local cut", True, FusedBackend, "default"),
                                               ("refit", True, RefitBackend, None)):
            best[name] = min(time_run(model, d, deposit, backend, args.steps, cutoff) for _ in range(args.repeats))
        shape = "x".join(str(n) for n in [v.gridWidth for v in variables(np.zeros(3), d)])
        cost = {k: 100 * (best[k] - best["static"]) / best["static"] for k in ("local full", "local cut", "refit")}
        print(f"| {d} | {shape} | {best['static']:.1f} | {best['local full']:.1f} | {cost['local full']:+.1f} % | "
              f"{best['local cut']:.1f} | {cost['local cut']:+.1f} % | {best['refit']:.1f} | {cost['refit']:+.1f} % |")
    full = metad_breakdown(model, 3, args.calls, None)
    cut = metad_breakdown(model, 3, args.calls, "default")
    print("\nOne d = 3 deposit, thread CPU time (µs, median of", args.calls, "calls):\n")
    print("| part | full Gaussians | cut (default) |\n|---|---:|---:|")
    for name in full:
        print(f"| {name} | {full[name]:.0f} | {cut[name]:.0f} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
