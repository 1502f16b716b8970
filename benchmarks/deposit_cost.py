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
parameter; :mod:`latentbias.bias.densitygrid`), and ``contextUpdate="hermite"`` (as local, the table a Hermite
table with the kernels' exact node derivatives: ``addGridKernel`` touches only the kernel's support; ``--routes``
picks the routes). Per d: µs/step (best of ``--repeats`` × ``--steps``) static
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

``--method interleaved``: the cost of one metadynamics deposit, untruncated vs truncated Gaussians, d = 1, 2, 3,
each as shipped ("new") and as before the deposit fast path of helper metad10 ("old": :class:`LegacyMetadynamics`,
kept here only, axis-by-axis factors, term-by-term c(t) window update, two reads of z and V(z)): medians of ``--calls``
deposits of each with the calls of the four runs interleaved (a changing load on a shared machine then hits all
alike), as a percentage of 500 static steps. Before timing, an old and a new run of 5000 steps (one after the other)
must end with the same bias grid (bit for bit), the same Context energy and the same records (c(t) and log-weights
to 1e-9: their window sums are taken in another order); the script stops otherwise.

``--method opes-interleaved``: the cost of one OPES-METAD deposit, refit and local route, d = 1, 2, 3, each as shipped
("new") and as before the OPES deposit fast path of helper opespy10 ("old": ``opes_legacy.LegacyOPES``, kept in
``benchmarks/opes_legacy.py`` only), the calls of the four runs interleaved, as % of 500 static steps. Before timing,
an old and a new run of 5000 steps per route, OPES-METAD and OPES-explore, one after the other, must end with the
same kernels, kernel sums, V on the grid, Context energy and records bit for bit (c(t) and log-weights to 1e-9: its
log-sum-exp is now one vectorised pass), and an old and a new ``KernelDensity`` fed the same random walk of up to 305
kernels (54 configurations: d, periodicity, cutoff, compression; :func:`kde_old_and_new_agree`) must hold the same
sums and kernels bit for bit after every deposit; ``--no-check`` skips these. Then ``KernelDensity.add`` with 200-5000 stored
kernels (the O(N) part), ``--no-compression`` a d = 3 run whose kernel count grows, and one local deposit by parts.

Run:  python benchmarks/deposit_cost.py [--method metad|opes|interleaved|opes-interleaved] [--steps 10000]
      [--repeats 3] [--calls 20] [--routes refit local hermite]   (--repeats 0 with --method opes: no step-rate
      columns, interleaved only)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform as pyplatform
import sys
import tempfile
import time
from functools import reduce
from pathlib import Path

import numpy as np

import latentbias as lb
import openmm
from openmm import app, unit
from latentbias.bias import LatentMetadynamics, LatentOPES
from latentbias.bias.ctcache import FULL_INTERVAL, RESCALE_MARGIN, WINDOW_FRACTION, RunningCt
from latentbias.bias.cutoff import truncated_gaussian
from latentbias.bias.fused import FusedBackend
from latentbias.testsystems import alanine_dipeptide_vacuum

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import build_model, variables  # noqa: E402  (the d = 3 encoder and grids of the other benchmark)
from opes_legacy import LegacyOPES  # noqa: E402  (the OPES deposit path before the fast path, for comparison)


class LegacyRunningCt(RunningCt):
    """RunningCt with the window update of before the deposit fast path (helper metad10): term by term."""

    def update(self, bias, window, height):
        if self._ea is None:
            return
        self._updates += 1
        self._growth += abs(float(height))
        ca, cb = self._a / self._kt, (self._a - self._scale) / self._kt
        if self._updates >= FULL_INTERVAL or max(abs(ca), abs(cb)) * self._growth > RESCALE_MARGIN:
            self._ea = self._eb = None
            return
        if np.prod([len(range(*w.indices(n))) for w, n in zip(window, bias.shape)]) > WINDOW_FRACTION * bias.size:
            for terms, c, m in ((self._ea, ca, self._ma), (self._eb, cb, self._mb)):
                np.multiply(bias, c, out=terms)
                terms -= m
                np.exp(terms, out=terms)
            self._sa, self._sb = float(self._ea.sum()), float(self._eb.sum())
            return
        part = bias[window]
        for name, c, m in (("a", ca, self._ma), ("b", cb, self._mb)):
            terms = self._ea if name == "a" else self._eb
            x = np.multiply(part, c)
            x -= m
            np.exp(x, out=x)
            change = float(x.sum()) - float(terms[window].sum())
            terms[window] = x
            if name == "a":
                self._sa += change
            else:
                self._sb += change


def legacy_factors(grid, position):
    """BiasGrid.gaussian_factors before the fast path: axis by axis."""
    per_axis = []
    for x, v, axis in zip(position, grid.variables, grid._axes):
        delta = axis - float(x)
        if v.periodic:
            period = v.maxValue - v.minValue
            delta = delta - period * np.round(delta / period)
        if grid.kernelCutoff is None:
            g = np.exp(-0.5 * (delta / v.biasWidth) ** 2)
        else:
            g = truncated_gaussian(delta / v.biasWidth, grid.kernelCutoff)
        if v.periodic:
            g[-1] = g[0]
        per_axis.append(g)
    return per_axis


def legacy_grid_deposit(grid, values, position, height, buffer):
    """BiasGrid.deposit before the fast path."""
    factors = legacy_factors(grid, position)
    if grid.kernelCutoff is not None:
        window = grid.support(factors)
        values[window] += height * reduce(np.multiply.outer, [f[w] for f, w in zip(factors, window)])
        return factors, window
    if grid.ndim == 1 or buffer is None:
        values += height * reduce(np.multiply.outer, factors)
        return factors, None
    head = reduce(np.multiply.outer, factors[:-1])
    np.multiply.outer(head, factors[-1], out=buffer)
    np.multiply(buffer, height, out=buffer)
    values += buffer
    return factors, None


class LegacyMetadynamics(LatentMetadynamics):
    """LatentMetadynamics with the deposit of before the fast path (``--legacy`` rows; same bias, same records)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._runningCt = LegacyRunningCt(self.temperature, self.biasFactor)

    def _deposit(self, simulation):
        context = simulation.context
        backend = self.backend
        z = backend.latent_values(context)
        acting = backend.energy(context)
        scale = backend.scale
        wall = 0.0
        for x, v in zip(z, self.grid.variables):
            if not v.periodic:
                over = max(0.0, x - v.maxValue) + max(0.0, v.minValue - x)
                wall += 0.5 * backend.wall_force_constant * over * over
        bias = (acting - wall) / scale if scale > 0 else float(self.biasAt(z[None])[0])
        total = self._totalBias if self._otherBias else self._selfBias
        ct = self._runningCt.value(total, scale)
        time_ps = context.getTime().value_in_unit(unit.picosecond)
        self._record(simulation.currentStep, time_ps, z, bias, wall, ct, acting)
        if not self.depositionEnabled:
            return
        height = self.height * np.exp(-bias / self._ktDeltaT)
        _, window = legacy_grid_deposit(self.grid, self._selfBias, z, height, self._scratch)
        self._nDeposits += 1
        if window is None:
            window = self._runningCt.window(self.grid, z, height)
        self._runningCt.update(self._totalBias if self._otherBias else self._selfBias, window, height)
        widths = [float(v.biasWidth) for v in self.grid.variables]
        cutoff = self.grid.kernelCutoff
        if cutoff is None:
            backend.force.addGridGaussian([float(c) for c in z], widths, float(height))
        else:
            backend.force.addGridGaussian([float(c) for c in z], widths, float(height), float(cutoff))
        backend.force.updateParametersInContext(context)


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


def make_opes(model: Path, d: int, cutoff="default", contextUpdate="auto", cls=LatentOPES, **kwargs):
    system, topology, positions = alanine_dipeptide_vacuum()
    z = lb.load_model(model).encode(positions)
    opes = cls(system, model, variables(z, d), 300 * unit.kelvin, 30.0, 500, backend=FusedBackend,
               kernelCutoff=cutoff, contextUpdate=contextUpdate, **kwargs)
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


def opes_breakdown(model: Path, d: int, steps: int, calls: int, cutoff="default", route="local") -> dict[str, float]:
    """Thread CPU time (µs, median of ``calls``) of the parts of one OPES deposit on ``route`` ("local" or
    "hermite"), after ``steps`` steps."""
    opes, sim = make_opes(model, d, cutoff, route)
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


def _interleaved_medians(runs: dict, calls: int) -> dict[str, float]:
    """Median thread CPU time (µs) of one step ("NAME step") and of one step followed by a deposit ("NAME
    deposit") for each (bias, Simulation) of ``runs``, the calls of all runs interleaved so load hits them alike."""
    times: dict[str, list[float]] = {f"{k} {n}": [] for k in runs for n in ("step", "deposit")}
    for _ in range(calls):
        for name, (bias, sim) in runs.items():
            t0 = time.thread_time()
            sim.step(1)
            times[f"{name} step"].append(time.thread_time() - t0)
            t0 = time.thread_time()
            sim.step(1)
            sim.currentStep = (sim.currentStep // 500 + 1) * 500
            bias._deposit(sim)
            times[f"{name} deposit"].append(time.thread_time() - t0)
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


def interleaved_opes_deposit_cost(model: Path, d: int, calls: int,
                                  routes: tuple[str, ...] = ("refit", "local")) -> dict[str, float]:
    """Median thread CPU time (µs) of one OPES deposit (one step + deposit − one step) for each of ``routes``
    (``contextUpdate`` values), the calls of the runs interleaved. Each run first steps 2500 steps (5 deposits)."""
    runs = {name: make_opes(model, d, "default", name) for name in routes}
    med = _interleaved_medians(runs, calls)
    return {name: med[f"{name} deposit"] - med[f"{name} step"] for name in runs} | {
        "step": float(np.median([med[f"{name} step"] for name in runs])),
        "kernels": runs[routes[-1]][0].numKernels}


def main_opes(args) -> None:
    model = model_path(args)
    routes = tuple(args.routes)
    head = "| d | grid | static µs/step |"
    for name in routes:
        head += (f" {name} µs/step | cost |" if args.repeats > 0 else "") + f" deposit, {name} µs | per 500 steps |"
    print(head + " kernels |")
    print("|---|---|---:|" + "---:|" * ((4 if args.repeats > 0 else 2) * len(routes)) + "---:|")
    breakdowns = {}
    for d in (1, 2, 3):
        shape = "x".join(str(n) for n in [v.gridWidth for v in variables(np.zeros(3), d)])
        best = {}
        if args.repeats > 0:
            for name, deposit, route in (("static", False, "local"),) + tuple((r, True, r) for r in routes):
                best[name] = min(time_opes(model, d, deposit, args.steps, "default", route)
                                 for _ in range(args.repeats))
        r = interleaved_opes_deposit_cost(model, d, args.calls, routes)
        static = best.get("static", r["step"])
        per = 500 * static
        row = f"| {d} | {shape} | {static:.1f} |"
        for name in routes:
            if args.repeats > 0:
                row += f" {best[name]:.1f} | {100 * (best[name] - static) / static:+.1f} % |"
            row += f" {r[name]:.0f} | {100 * r[name] / per:.1f} % |"
        print(row + f" {r['kernels']} |", flush=True)
        breakdowns[d] = {route: opes_breakdown(model, d, args.steps, args.calls, route=route)
                         for route in routes if route in ("local", "hermite")}
    for route in [r for r in routes if r in ("local", "hermite")]:
        print(f"\nOne {route} OPES deposit by parts, thread CPU time (µs, median of", args.calls, "calls):\n")
        names = [k for k in breakdowns[1][route] if k != "kernels"]
        print("| part | d = 1 | d = 2 | d = 3 |\n|---|---:|---:|---:|")
        for name in names:
            print(f"| {name} | " + " | ".join(f"{breakdowns[d][route][name]:.0f}" for d in (1, 2, 3)) + " |")


def opes_old_and_new_agree(model: Path, d: int, steps: int = 5000) -> None:
    """Run the OPES deposit path before the fast path of helper opespy10 (:class:`opes_legacy.LegacyOPES`) and the
    shipped one, one after the other, on both Context routes, OPES-METAD and OPES-explore: the kernels, the kernel
    sums on the grid and at the centres, V on the grid, the Context energy and the records must be equal bit for bit,
    c(t) and the log-weights to 1e-9 (c(t)'s log-sum-exp is now one vectorised pass instead of a sequential
    ``np.logaddexp.reduce``: equal to rounding). Stops the script otherwise."""
    for route in ("refit", "local"):
        for explore in (False, True):
            out = []
            for cls in (LegacyOPES, LatentOPES):
                opes, sim = make_opes(model, d, "default", route, cls, explore=explore)
                opes.step(sim, steps)
                energy = sim.context.getState(getEnergy=True).getPotentialEnergy()._value
                k = opes.kde
                out.append((opes.getBias(), opes.getRecords(), energy, k.centers, k.sigmas, k.weights, k.grid_sum,
                            k.center_sum))
            old, new = out
            what = f"d = {d}, {route}, {'explore' if explore else 'METAD'}"
            for name, a, b in zip(("bias grid", "records", "energy", "centres", "sigmas", "weights", "grid sum",
                                   "centre sums"), old, new):
                if name == "records":
                    assert len(b["step"]) == steps // 500 + 5, what
                    for key in a:
                        tol = 1e-9 if key in ("ct_kjmol", "logweight") else 0.0
                        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=tol, err_msg=f"{what}: {key}")
                else:
                    assert np.array_equal(a, b), f"{what}: the {name} differ"


def kde_old_and_new_agree(deposits: int = 300) -> int:
    """The old (:class:`opes_legacy.LegacyKernelDensity`) and the new ``KernelDensity`` fed the same random walk of
    kernels (shrinking, unequal widths, log-normal weights; other walkers' kernels set half-way; a rebuild every 37
    updates), d = 1, 2, 3, periodic or not, untruncated and cut at 3 and 5.1 σ, compression thresholds 0, 1, 2
    (up to ``deposits`` + 5 kernels, recursive merges): grid sums, centre sums, kernels and journals must be equal
    bit for bit after every deposit. Returns the number of configurations checked; stops the script otherwise."""
    from latentbias.bias.grid import BiasGrid, LatentVariable
    from latentbias.bias.kernels import KernelDensity
    from opes_legacy import LegacyKernelDensity

    checked = 0
    for d in (1, 2, 3):
        for periodic in (False, True):
            lo, hi = (-np.pi, np.pi) if periodic else (-2.0, 2.0)
            grid = BiasGrid([LatentVariable(i, lo, hi, 0.3, periodic=periodic, gridWidth=(60, 30, 16)[d - 1])
                             for i in range(d)])
            for cutoff in (None, 3.0, 5.1):
                for threshold in (0.0, 1.0, 2.0):
                    rng = np.random.default_rng(100 * d + 10 * periodic + int(threshold))
                    new = KernelDensity(grid, threshold, rebuild_interval=37, cutoff=cutoff)
                    old = LegacyKernelDensity(grid, threshold, rebuild_interval=37, cutoff=cutoff)
                    new.journal, old.journal = [], []
                    x = rng.normal(size=d) * 0.5
                    for i in range(deposits):
                        x = x + rng.normal(size=d) * 0.3
                        if not periodic:
                            x = np.clip(x, lo - 0.3, hi + 0.3)
                        sigma = 0.3 * (1 + i) ** -0.15 * rng.uniform(0.7, 1.3, size=d)
                        w = float(np.exp(rng.normal()))
                        new.add(x, sigma, w)
                        old.add(x, sigma, w)
                        if i == deposits // 2:
                            fc, fs, fw = rng.uniform(lo, hi, (5, d)), np.full((5, d), 0.25), rng.random(5)
                            new.set_fixed(fc, fs, fw)
                            old.set_fixed(fc, fs, fw)
                        same = (len(new.journal) == len(old.journal) and all(
                            np.array_equal(getattr(new, k), getattr(old, k))
                            for k in ("grid_sum", "center_sum", "centers", "sigmas", "weights", "counts")))
                        assert same, (f"KernelDensity old != new: d = {d}, periodic {periodic}, cutoff {cutoff}, "
                                      f"threshold {threshold}, deposit {i}")
                    checked += 1
    return checked


def interleaved_opes_old_new(model: Path, d: int, calls: int, **kwargs) -> dict[str, float]:
    """Median thread CPU time (µs) of one OPES deposit (one step + deposit − one step), refit and local route, each
    as shipped ("new") and before the fast path ("old", :class:`opes_legacy.LegacyOPES`), the calls of the four runs
    interleaved. Each run first steps 2500 steps (5 deposits)."""
    runs = {f"{route} {age}": make_opes(model, d, "default", route, cls, **kwargs)
            for route in ("refit", "local") for age, cls in (("old", LegacyOPES), ("new", LatentOPES))}
    med = _interleaved_medians(runs, calls)
    return {name: med[f"{name} deposit"] - med[f"{name} step"] for name in runs} | {
        "step": float(np.mean([med[f"{name} step"] for name in runs])), "kernels": runs["local new"][0].numKernels}


def opes_parts_old_new(model: Path, d: int, calls: int) -> dict[str, float]:
    """Median thread CPU time (µs) of the Python parts of one local OPES deposit, old and new interleaved call by call,
    on the state a 2500-step run left (weights 1e-9, so the estimate barely changes), each after an untimed step:
    z and V(z) read back, c(t), ``KernelDensity.add`` (the kernel on its box, the sums at the centres, compression),
    σ (N_eff) + the coarse-grid check, and the push to the Context (``addGridKernel`` + ``setParameter`` +
    ``updateParametersInContext``, the same code in both)."""
    new, sim = make_opes(model, d, "default", "local")
    old, _ = make_opes(model, d, "default", "local", LegacyOPES)  # its own Context, never stepped: its parts only
    old.kde.set_own(new.kde.centers, new.kde.sigmas, new.kde.weights, new.kde.counts)
    new.kde.set_own(new.kde.centers, new.kde.sigmas, new.kde.weights, new.kde.counts)
    ctx = sim.context
    z = new.backend.latent_values(ctx)

    def push():
        new.kde.journal.clear()
        new.kde.add(z, new.getSigma(), 1e-9)
        t0 = time.thread_time()
        new.updateContext(ctx)
        return time.thread_time() - t0

    parts = {
        "z, V(z): old": lambda: (new.backend.latent_values(ctx), new.backend.energy(ctx),
                                 ctx.getState().getTime()),
        "z, V(z): new": lambda: (new.backend.latent_values_and_energy(ctx), ctx.getTime()),
        "c(t): old": old.ct, "c(t): new": new.ct,
        "KernelDensity.add: old": lambda: old.kde.add(z, old.getSigma(), 1e-9),
        "KernelDensity.add: new": lambda: new.kde.add(z, new.getSigma(), 1e-9),
        "σ, N_eff, grid check: old": lambda: old._warnIfGridTooCoarse(old.getSigma()),
        "σ, N_eff, grid check: new": lambda: new._warnIfGridTooCoarse(new.getSigma()),
    }
    times: dict[str, list[float]] = {k: [] for k in parts} | {"push to the Context (both)": []}
    for _ in range(calls):
        for name, call in parts.items():
            sim.step(1)
            t0 = time.thread_time()
            call()
            times[name].append(time.thread_time() - t0)
        old.kde.journal = None
        sim.step(1)
        times["push to the Context (both)"].append(push())
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


def kde_add_with_many_kernels(calls: int, sizes=(200, 2000, 5000)) -> dict[int, tuple[float, float]]:
    """Median thread CPU time (µs) of ``KernelDensity.add`` (old, new) with N stored kernels (d = 3, the 32³ grid
    of the d = 3 benchmark, σ = 0.15, N centres uniform in the grid, cut at 5.1 σ, threshold 1), each call a sample
    next to one stored kernel (a merge), the old and new calls interleaved: the O(N) part of a deposit (nearest
    kernel, centre sums) for long runs whose kernels compression does not merge."""
    from latentbias.bias.grid import BiasGrid, LatentVariable
    from latentbias.bias.kernels import KernelDensity
    from opes_legacy import LegacyKernelDensity

    grid = BiasGrid([LatentVariable(i, -3.0, 3.0, 0.3, gridWidth=32) for i in range(3)])
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        c, s, w = rng.uniform(-2.5, 2.5, (n, 3)), np.full((n, 3), 0.15), rng.uniform(0.5, 1.5, n)
        kdes = [cls(grid, 1.0, rebuild_interval=10**9, cutoff=5.1) for cls in (LegacyKernelDensity, KernelDensity)]
        times: list[list[float]] = [[], []]
        for kde in kdes:
            kde.set_own(c, s, w, np.ones(n, int))
        for i in range(calls):
            for k, kde in enumerate(kdes):
                t0 = time.thread_time()
                kde.add(c[i % n] + 0.01, s[0], 1e-3)
                times[k].append(time.thread_time() - t0)
        out[n] = (float(np.median(times[0])) * 1e6, float(np.median(times[1])) * 1e6)
    return out


def deposit_clocks(model: Path, d: int, calls: int) -> dict[str, float]:
    """Median of ``calls`` deposits (each after one step, as in :func:`_interleaved_medians`) of the new OPES path,
    refit and local route, by three clocks (µs): the stepping thread's CPU time (what the other tables report), the
    process's CPU time (all its threads) and wall time; and the same for 500 static steps. A Context update that
    runs in another thread is invisible to the first clock."""
    out = {}
    for route in ("refit", "local"):
        opes, sim = make_opes(model, d, "default", route)
        times: dict[str, list[float]] = {"thread": [], "process": [], "wall": []}
        for _ in range(calls):
            sim.step(1)
            sim.currentStep = (sim.currentStep // 500 + 1) * 500
            t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
            opes._deposit(sim)
            times["thread"].append(time.thread_time() - t0)
            times["process"].append(time.process_time() - p0)
            times["wall"].append(time.perf_counter() - w0)
        out |= {f"{route} {k}": float(np.median(v)) * 1e6 for k, v in times.items()}
    opes.depositionEnabled = False
    t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
    sim.step(500)
    out |= {"500 steps thread": (time.thread_time() - t0) * 1e6, "500 steps process": (time.process_time() - p0) * 1e6,
            "500 steps wall": (time.perf_counter() - w0) * 1e6}
    return out


def main_opes_interleaved(args) -> None:
    """``--method opes-interleaved``: old vs new OPES deposit path (see :func:`interleaved_opes_old_new`)."""
    model = model_path(args)
    if not args.no_check:
        print(f"KernelDensity old == new bit for bit after every deposit in {kde_old_and_new_agree()} configurations",
              flush=True)
    print("| d | grid | static µs/step | refit: old µs | new µs | per 500 steps (old → new) | local: old µs | new µs "
          "| per 500 steps (old → new) | kernels |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d in (1, 2, 3):
        if not args.no_check:
            opes_old_and_new_agree(model, d)
        r = interleaved_opes_old_new(model, d, args.calls)
        static = min(time_opes(model, d, False, args.steps, "default", "local") for _ in range(args.repeats))
        shape = "x".join(str(n) for n in [v.gridWidth for v in variables(np.zeros(3), d)])
        per = 5 * static  # 500 steps, in %
        print(f"| {d} | {shape} | {static:.1f} | {r['refit old']:.0f} | {r['refit new']:.0f} | "
              f"{r['refit old'] / per:.1f} → {r['refit new'] / per:.1f} % | {r['local old']:.0f} | "
              f"{r['local new']:.0f} | {r['local old'] / per:.1f} → {r['local new'] / per:.1f} % | {r['kernels']} |",
              flush=True)
    if args.no_compression:
        print("\nd = 3 without compression (compressionThreshold=0: every deposit a new kernel, ~5 + calls kernels):\n")
        r = interleaved_opes_old_new(model, 3, args.calls, compressionThreshold=0.0)
        print(f"refit old {r['refit old']:.0f} → new {r['refit new']:.0f} µs; local old {r['local old']:.0f} → new "
              f"{r['local new']:.0f} µs; kernels at the end {r['kernels']}", flush=True)
    print("\nKernelDensity.add with N stored kernels (d = 3, 32³ grid, a merge per call; µs, median of", args.calls,
          "calls, old and new interleaved):\n")
    print("| N kernels | old µs | new µs |\n|---:|---:|---:|")
    for n, (t_old, t_new) in kde_add_with_many_kernels(args.calls).items():
        print(f"| {n} | {t_old:.0f} | {t_new:.0f} |", flush=True)
    print("\nThe new deposit by three clocks (µs, median of 50 deposits; 500 static steps once):\n")
    print("| d | clock | refit deposit | local deposit | 500 static steps | refit, per 500 steps | local, per 500 steps |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for d in (1, 2, 3):
        c = deposit_clocks(model, d, 50)
        for clock in ("thread", "process", "wall"):
            per = c[f"500 steps {clock}"] / 100
            print(f"| {d} | {clock} | {c[f'refit {clock}']:.0f} | {c[f'local {clock}']:.0f} | "
                  f"{c[f'500 steps {clock}']:.0f} | {c[f'refit {clock}'] / per:.1f} % | {c[f'local {clock}'] / per:.1f} % |",
                  flush=True)
    print("\nOne local OPES deposit by parts, old and new interleaved (µs, median of", args.calls, "calls):\n")
    parts = {d: opes_parts_old_new(model, d, args.calls) for d in (1, 2, 3)}
    print("| part | d = 1 | d = 2 | d = 3 |\n|---|---:|---:|---:|")
    for name in parts[1]:
        print(f"| {name} | " + " | ".join(f"{parts[d][name]:.0f}" for d in (1, 2, 3)) + " |")


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


def old_and_new_deposits_agree(model: Path, d: int, steps: int = 5000) -> None:
    """Run the old (:class:`LegacyMetadynamics`) and the new deposit path one after the other (the Reference
    platform's random numbers come from one global stream, so runs stepped in turn would not share a trajectory),
    for untruncated and truncated Gaussians: the bias grids must be equal bit for bit, the Context energies equal,
    the records equal (c(t) and log-weights to 1e-9 kJ/mol and 1e-9: their window sums are taken in another order)."""
    for cutoff in (None, "default"):
        out = []
        for cls in (LegacyMetadynamics, LatentMetadynamics):
            system, topology, positions = alanine_dipeptide_vacuum()
            z0 = lb.load_model(model).encode(positions)
            extra = {} if cutoff == "default" else {"kernelCutoff": cutoff}
            meta = cls(system, model, variables(z0, d), 300 * unit.kelvin, 10.0, 1.0, 500, backend=FusedBackend,
                       **extra)
            integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                         2 * unit.femtosecond)
            integrator.setRandomNumberSeed(1)
            sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
            sim.context.setPositions(positions)
            meta.step(sim, steps)
            energy = sim.context.getState(getEnergy=True).getPotentialEnergy()._value
            out.append((meta.getBias(), meta.getRecords(), energy))
        (bias_old, rec_old, e_old), (bias_new, rec_new, e_new) = out
        kind = "untruncated" if cutoff is None else "truncated"
        assert np.array_equal(bias_old, bias_new), f"d = {d}, {kind}: the bias grids differ"
        assert e_old == e_new, f"d = {d}, {kind}: the Context energies differ ({e_old} vs {e_new})"
        assert len(rec_new["step"]) == steps // 500
        for key in rec_old:
            tol = 1e-9 if key in ("ct_kjmol", "logweight") else 0.0
            np.testing.assert_allclose(rec_new[key], rec_old[key], rtol=0, atol=tol, err_msg=f"d = {d}, {kind}: {key}")


def interleaved_deposit_cost(model: Path, d: int, calls: int) -> dict[str, float]:
    """Median thread CPU time (µs) of one step and of one step + a whole deposit, for untruncated ("full") and
    truncated ("cut", the default cutoff) Gaussians, each with the deposit as shipped ("new") and as before the
    fast path ("old", :class:`LegacyMetadynamics`), the calls of the four runs interleaved so that a changing load
    on a shared machine affects all alike. Each run first steps 2500 steps (5 deposits)."""
    runs = {}
    for name, cutoff, cls in (("full old", None, LegacyMetadynamics), ("full new", None, LatentMetadynamics),
                              ("cut old", "default", LegacyMetadynamics), ("cut new", "default", LatentMetadynamics)):
        system, topology, positions = alanine_dipeptide_vacuum()
        z0 = lb.load_model(model).encode(positions)
        extra = {} if cutoff == "default" else {"kernelCutoff": cutoff}
        meta = cls(system, model, variables(z0, d), 300 * unit.kelvin, 10.0, 1.0, 500, backend=FusedBackend, **extra)
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
        integrator.setRandomNumberSeed(1)
        sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
        sim.context.setPositions(positions)
        meta.step(sim, 2500)
        runs[name] = (meta, sim)
    med = _interleaved_medians(runs, calls)
    return {name: med[f"{name} deposit"] - med[f"{name} step"] for name in runs} | {
        "step": float(np.mean([med[f"{name} step"] for name in runs]))}


def interleaved_parts(model: Path, d: int, calls: int) -> dict[str, float]:
    """Median thread CPU time (µs) of the parts of one truncated deposit, old and new path interleaved call by call,
    on the state a 2500-step run left (heights of 1e-6 kJ/mol, so the grid barely changes), each after an untimed
    step: the Gaussian on the Python grid + the c(t) window update; z and V(z) read back (one energy-only
    evaluation); the Context's local update (``addGridGaussian`` + ``updateParametersInContext``, the same C++ in
    both)."""
    system, topology, positions = alanine_dipeptide_vacuum()
    z0 = lb.load_model(model).encode(positions)
    meta = LatentMetadynamics(system, model, variables(z0, d), 300 * unit.kelvin, 10.0, 1.0, 500, backend=FusedBackend)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    meta.step(sim, 2500)
    ctx, backend, grid = sim.context, meta.backend, meta.grid
    legacy_ct = LegacyRunningCt(meta.temperature, meta.biasFactor)
    z = backend.latent_values(ctx)
    height = 1e-6
    old_bias, new_bias = meta._selfBias.copy(), meta._selfBias.copy()
    legacy_ct.value(old_bias)
    meta._runningCt.value(new_bias)

    def grid_ct_old():
        _, window = legacy_grid_deposit(grid, old_bias, z, height, None)
        legacy_ct.update(old_bias, window, height)

    def grid_ct_new():
        _, window = grid.deposit(new_bias, z, height)
        meta._runningCt.update(new_bias, window, height)

    def read_old():
        return backend.latent_values(ctx), backend.energy(ctx)

    def read_new():
        return backend.latent_values_and_energy(ctx)

    def context_update():
        backend.force.addGridGaussian(z.tolist(), backend._widths, height, grid.kernelCutoff)
        backend.force.updateParametersInContext(ctx)

    parts = {"Python grid + c(t), old": grid_ct_old, "Python grid + c(t), new": grid_ct_new,
             "z, V(z) after a step (energy-only evaluation), old": read_old,
             "z, V(z) after a step (energy-only evaluation), new": read_new, "Context update (both)": context_update}
    times: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(calls):
        for name, call in parts.items():
            sim.step(1)  # not timed: every part starts after a step, as a deposit does
            t0 = time.thread_time()
            call()
            times[name].append(time.thread_time() - t0)
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


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
    parser.add_argument("--no-check", action="store_true", help="opes-interleaved: skip the old/new equality runs")
    parser.add_argument("--no-compression", action="store_true",
                        help="opes-interleaved: also time d = 3 deposits without compression (growing kernel count)")
    parser.add_argument("--method", choices=["metad", "opes", "interleaved", "opes-interleaved"], default="metad",
                        help="interleaved: only the per-deposit cost of metadynamics, full vs cut Gaussians, "
                             "old vs new deposit path, d = 1-3, calls of the four runs interleaved")
    parser.add_argument("--calls", type=int, default=20, help="calls per part of the one-deposit breakdown")
    parser.add_argument("--routes", nargs="+", default=["refit", "local", "hermite"],
                        choices=["refit", "local", "hermite"],
                        help="--method opes: LatentOPES contextUpdate routes compared (interleaved)")
    args = parser.parse_args()
    print(f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.1f} · "
          f"openmm {openmm.__version__} · latentbias {lb.__version__} · Reference, {args.steps} steps x "
          f"{args.repeats} (best), deposit every 500 steps, thread CPU time, {args.method}")
    if args.method == "interleaved":
        print("| d | grid | static µs/step | full, old µs | full, new µs | per 500 steps (old → new) | cut, old µs | "
              "cut, new µs | per 500 steps (old → new) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for d in (1, 2, 3):
            old_and_new_deposits_agree(model_path(args), d)
            r = interleaved_deposit_cost(model_path(args), d, args.calls)
            static = min(time_run(model_path(args), d, False, FusedBackend, args.steps) for _ in range(args.repeats))
            shape = "x".join(str(n) for n in [v.gridWidth for v in variables(np.zeros(3), d)])
            per = 5 * static  # 500 steps, in %
            print(f"| {d} | {shape} | {static:.1f} | {r['full old']:.0f} | {r['full new']:.0f} | "
                  f"{r['full old'] / per:.1f} → {r['full new'] / per:.1f} % | {r['cut old']:.0f} | "
                  f"{r['cut new']:.0f} | {r['cut old'] / per:.1f} → {r['cut new'] / per:.1f} % |", flush=True)
        parts = interleaved_parts(model_path(args), 3, args.calls)
        print("\nOne truncated d = 3 deposit by parts, old and new interleaved (µs, median of", args.calls, "calls):\n")
        print("| part | µs |\n|---|---:|")
        for name, value in parts.items():
            print(f"| {name} | {value:.0f} |")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        return
    if args.method == "opes-interleaved":
        main_opes_interleaved(args)
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
