"""Per-step cost of the native LatentBiasForce vs the TorchForce routes, alanine dipeptide in vacuum, one run.

Rows (each on the Reference and the CPU platform; µs/step, best of 3 repetitions):

* unbiased ala2 (Amber ff96, NoCutoff, HBonds, LangevinMiddle 2 fs);
* one TorchForce evaluating latent component 0 (``lb.latent_component_force``): the floor of any TorchScript bias;
* LatentBiasForce grid bias, d = 1, 2, 3 (``FusedBackend``: one forward + one backward pass whatever d), on the
  native path (the plugin's C++ evaluator of the model's native description, no libtorch per step) and on the
  libtorch path (``evaluationPath="torch"``: the TorchScript code);
* CustomCVForce route, d = 1, 2, 3 (``CustomCVBackend``: one TorchForce per dimension);
* latent restraint on all 3 dimensions: ``LatentRestraint`` (one TorchForce) vs ``fused_restraint_force`` (native
  and libtorch paths).

"overhead" = µs/step − unbiased µs/step on the same platform (issue 10's target on Reference: native overhead at
d = 1, 2, 3 ≤ one unbiased step).

The encoder is benchmarks/overhead.py's: 45 heavy-atom distances -> 64 -> 64 -> 3 tanh MLP, random weights,
float32. The grids hold a few Gaussians (values do not change the cost). Ratios: "×TF" = time / one TorchForce,
"×CV" = time / CustomCVForce route with the same d.

Run:  python benchmarks/native_overhead.py [--steps 2000] [--platforms Reference CPU] [--markdown]
      [--clock thread --repeats 10]   (Reference on a shared machine: CPU time of the stepping thread)
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
import torch

import latentbias as lb
import openmm
from openmm import app, unit
from latentbias import native
from latentbias.bias import BiasGrid, CustomCVBackend, LatentRestraint, LatentVariable
from latentbias.testsystems import alanine_dipeptide_vacuum

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import build_model  # noqa: E402  (the d = 3 float32 encoder of the other benchmark)

DT_FS = 2.0


def grid_for(z: np.ndarray, d: int) -> tuple[BiasGrid, np.ndarray]:
    # 40 points per axis (the cost per step does not depend on the grid size; 300^3 points would need ~14 GB of
    # spline coefficients, as for OpenMM's Continuous3DFunction)
    grid = BiasGrid([LatentVariable(i, z[i] - 3.0, z[i] + 3.0, 0.1, gridWidth=40) for i in range(d)])
    values = np.zeros(grid.shape)
    rng = np.random.default_rng(0)
    for _ in range(5):
        values += rng.uniform(1.0, 3.0) * grid.gaussian(z[:d] + rng.uniform(-0.5, 0.5, d))
    return grid, values


def cases(model: Path, z: np.ndarray):
    from latentbias.bias.fused import FusedBackend
    from latentbias.bias.restraint import fused_restraint_force

    def backend(cls, d, **kw):
        def setup(system):
            grid, values = grid_for(z, d)
            b = cls(lb.load_model(model), system, grid, 1000.0, **kw)
            b.set_grid(values, None)
        return setup

    yield "unbiased", lambda system: None
    yield "one TorchForce (z0)", lambda system: system.addForce(lb.latent_component_force(model, system, 0))
    for d in (1, 2, 3):
        yield f"LatentBiasForce grid d={d} native", backend(FusedBackend, d, evaluationPath="native")
    for d in (1, 2, 3):
        yield f"LatentBiasForce grid d={d} libtorch", backend(FusedBackend, d, evaluationPath="torch")
    for d in (1, 2, 3):
        yield f"CustomCVForce route d={d}", backend(CustomCVBackend, d)
    yield "LatentRestraint d=3 (1 TorchForce)", lambda system: LatentRestraint(
        model, system, centers=z, forceConstants=[100.0] * 3, backend="torchforce")
    yield "fused_restraint_force d=3 native", lambda system: fused_restraint_force(
        model, system, centers=z, forceConstants=[100.0] * 3, evaluationPath="native")
    yield "fused_restraint_force d=3 libtorch", lambda system: fused_restraint_force(
        model, system, centers=z, forceConstants=[100.0] * 3, evaluationPath="torch")


def make(platform: str, setup):
    system, topology, positions = alanine_dipeptide_vacuum()
    setup(system)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, DT_FS * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    props = {"Threads": str(os.cpu_count() or 1)} if platform == "CPU" else {}
    plat = openmm.Platform.getPlatformByName(platform)
    lb.check_platform(system, plat)
    sim = app.Simulation(topology, system, integrator, plat, props)
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return sim


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def time_per_step(sim, steps: int, clock: str = "wall", repeats: int = 3) -> float:
    """Best of `repeats` timings of `steps` steps, µs/step. ``clock="thread"`` measures the CPU time of the calling
    thread, which is what a Reference-platform step costs even on a machine shared with other jobs (the wall clock
    then also counts time spent waiting for a core); it is meaningless for the multi-threaded CPU platform."""
    sim.step(200)  # warm up (TorchScript profiling/optimisation runs)
    now = CLOCKS[clock]
    best = np.inf
    for _ in range(repeats):
        t0 = now()
        sim.step(steps)
        best = min(best, (now() - t0) / steps)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per repetition (3 repetitions, best kept)")
    parser.add_argument("--platforms", nargs="+", default=["Reference", "CPU"])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall clock (default) or the CPU time of this thread (Reference platform on a busy machine)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per case (best kept)")
    args = parser.parse_args()
    if not native.is_available():
        raise SystemExit(f"the native plugin is not available: {native.unavailable_reason()}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp))
        _, _, positions = alanine_dipeptide_vacuum()
        z = lb.load_model(model).encode(positions)
        rows = []
        for name, setup in cases(model, z):
            rows.append([name] + [time_per_step(make(p, setup), args.steps, args.clock, args.repeats)
                                  for p in args.platforms])
    by_name = {r[0]: r[1:] for r in rows}
    torch_force = by_name["one TorchForce (z0)"]

    def cv_ref(name):
        if name.startswith("LatentBiasForce grid d="):
            return by_name["CustomCVForce route d=" + name[len("LatentBiasForce grid d=")]]
        if name.startswith("fused_restraint_force"):
            return by_name["LatentRestraint d=3 (1 TorchForce)"]
        return None

    info = (f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · python {pyplatform.python_version()}"
            f" · openmm {openmm.version.version} · torch {torch.__version__} · latentbias {lb.__version__}"
            f" · {args.steps} steps ×{args.repeats} (best), {args.clock} clock, torch threads 1"
            f" · load average {os.getloadavg()[0]:.1f}")
    header = ["case"]
    for p in args.platforms:
        header += [f"{p} µs/step", f"{p} overhead", f"{p} ×TF", f"{p} ×CV"]
    unbiased = by_name["unbiased"]
    lines = []
    for row in rows:
        ref = cv_ref(row[0])
        cells = [row[0]]
        for j, us in enumerate(row[1:]):
            cells += [f"{us:.1f}", f"{us - unbiased[j]:.1f}", f"{us / torch_force[j]:.2f}",
                      "" if ref is None else f"{us / ref[j]:.2f}"]
        lines.append(cells)
    print(info)
    if args.markdown:
        print()
        print("| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
        for cells in lines:
            print("| " + " | ".join(cells) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [header] + lines) for i in range(len(header))]
        for cells in [header] + lines:
            print("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))))
    print("overhead: µs/step minus unbiased; ×TF: relative to one TorchForce; ×CV: relative to the CustomCVForce "
          "route (grid rows) or to LatentRestraint (restraint rows).")
    for j, p in enumerate(args.platforms):
        worst = max(by_name[f"LatentBiasForce grid d={d} native"][j] - unbiased[j] for d in (1, 2, 3))
        verdict = "met" if worst <= unbiased[j] else "not met"
        print(f"{p}: native overhead at d = 1-3 at most {worst:.1f} µs/step vs one unbiased step {unbiased[j]:.1f} µs "
              f"-> target (overhead <= one unbiased step) {verdict}")


if __name__ == "__main__":
    main()
