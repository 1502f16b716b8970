"""Per-step cost of LatentBiasForce's device kernels on OpenMM's OpenCL platform, alanine dipeptide in vacuum.

Rows (µs/step, best of --repeats timings of --steps steps, all cases interleaved in each repetition, wall clock): unbiased ala2 (Amber ff96, NoCutoff, HBonds,
LangevinMiddle 2 fs); LatentBiasForce grid bias d = 1, 2, 3 (``FusedBackend``, native path: the common-compute
kernels of plugin/platforms/common); the fused restraint on 3 dimensions. Columns: one per OpenCL precision, with
"overhead" = µs/step − unbiased µs/step of the same precision. The same rows on Reference/CPU come from
benchmarks/native_overhead.py; TorchForce/CustomCVForce rows cannot run on OpenCL (openmm-torch's OpenCL plugin does
not load against openmm 8.5) and are left out.

The encoder is benchmarks/overhead.py's (45 heavy-atom distances -> 64 -> 64 -> 3, tanh).

With pocl (pocl-opencl-icd) OpenCL runs on the CPU: these are NOT GPU numbers. Each biased step pays four kernel
launches and one blocking download of z (d numbers, for V(z) on the host), i.e. one host-device synchronisation per
step; the row "unbiased + 1 sync/step" (a getState(getEnergy=True) after every step, no bias) measures that cost
alone.

Run:  python benchmarks/opencl_overhead.py [--steps 200] [--repeats 15] [--precisions single mixed] [--markdown]
      (on a busy machine POCL_MAX_PTHREAD_COUNT=1 keeps pocl's worker threads from waiting for cores)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform as pyplatform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import app, unit

import latentbias as lb
from latentbias import native
from latentbias.testsystems import alanine_dipeptide_vacuum

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_overhead import DT_FS, grid_for  # noqa: E402
from overhead import build_model  # noqa: E402


def cases(model: Path, z: np.ndarray):
    from latentbias.bias.fused import FusedBackend
    from latentbias.bias.restraint import fused_restraint_force

    def backend(d):
        def setup(system):
            grid, values = grid_for(z, d)
            b = FusedBackend(lb.load_model(model), system, grid, 1000.0, evaluationPath="native")
            b.set_grid(values, None)
        return setup

    yield "unbiased", lambda system: None
    for d in (1, 2, 3):
        yield f"LatentBiasForce grid d={d} native", backend(d)
    yield "fused_restraint_force d=3 native", lambda system: fused_restraint_force(
        model, system, centers=z, forceConstants=[100.0] * 3, evaluationPath="native")


def make(precision: str, setup):
    system, topology, positions = alanine_dipeptide_vacuum()
    setup(system)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, DT_FS * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    plat = openmm.Platform.getPlatformByName("OpenCL")
    lb.check_platform(system, plat)
    sim = app.Simulation(topology, system, integrator, plat, {"Precision": precision})
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return sim


def time_steps(sim, steps: int, sync_every_step: bool = False, clock=time.perf_counter) -> float:
    """One timing of `steps` steps, µs/step (the queue drained before and after). ``clock``: wall clock by default;
    ``time.process_time`` gives the CPU time of all this process's threads (OpenMM's, libtorch's, pocl's), which
    other processes on a shared machine perturb much less than the wall clock."""
    sim.context.getState(getPositions=True)
    t0 = clock()
    if sync_every_step:
        for _ in range(steps):
            sim.step(1)
            sim.context.getState(getEnergy=True)
    else:
        sim.step(steps)
    sim.context.getState(getPositions=True)  # waits for the queue to finish
    return (clock() - t0) / steps * 1e6


def measure(sims: dict, steps: int, repeats: int, warmup: int = 200, keep_all: bool = False,
            clock=time.perf_counter) -> dict:
    """Best of `repeats` timings per case (µs/step), the cases interleaved in every repetition (so that all of them
    see the same background load on a shared machine). ``sims`` maps a case to ``(simulation, sync_every_step)``;
    with ``keep_all`` every repetition's timing is returned (a list per case, in repetition order) instead of the
    best."""
    for name, (sim, _) in sims.items():
        sim.step(warmup)  # warm up
    times = {name: [] for name in sims}
    for _ in range(repeats):
        for name, (sim, sync) in sims.items():
            times[name].append(time_steps(sim, steps, sync, clock))
    return times if keep_all else {name: min(values) for name, values in times.items()}


def opencl_device() -> str:
    try:
        out = subprocess.run(["clinfo", "-l"], capture_output=True, text=True, timeout=20).stdout
        return " / ".join(line.strip() for line in out.splitlines() if line.strip()) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no clinfo)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=15, help="timings per case, interleaved (best kept)")
    parser.add_argument("--precisions", nargs="+", default=["single", "mixed"])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if "OpenCL" not in names:
        raise SystemExit(f"no OpenCL platform here (platforms: {names}); install an OpenCL runtime, e.g. pocl-opencl-icd")
    if not native.is_available():
        raise SystemExit(f"the native plugin is not available: {native.unavailable_reason()}")
    if not openmm.Platform.getPlatformByName("OpenCL").supportsKernels([native.KERNEL_NAME]):
        raise SystemExit("the LatentBiasForce plugin was built without its OpenCL kernels")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp))
        _, _, positions = alanine_dipeptide_vacuum()
        z = lb.load_model(model).encode(positions)
        case_list = list(cases(model, z))
        names = [case_list[0][0], "unbiased + 1 sync/step"] + [name for name, _ in case_list[1:]]
        columns = []
        for p in args.precisions:
            sims = {name: (make(p, setup), False) for name, setup in case_list}
            sims["unbiased + 1 sync/step"] = (make(p, lambda system: None), True)
            columns.append(measure(sims, args.steps, args.repeats))
            del sims
        rows = [[name] + [col[name] for col in columns] for name in names]
    unbiased = rows[0][1:]
    header = ["case (OpenCL)"]
    for p in args.precisions:
        header += [f"{p} µs/step", f"{p} overhead"]
    lines = [[r[0]] + [c for j, us in enumerate(r[1:]) for c in (f"{us:.1f}", f"{us - unbiased[j]:.1f}")] for r in rows]
    print(f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · python "
          f"{pyplatform.python_version()} · openmm {openmm.version.version} · latentbias {lb.__version__} · "
          f"OpenCL device: {opencl_device()} · POCL_MAX_PTHREAD_COUNT={os.environ.get('POCL_MAX_PTHREAD_COUNT', 'unset')}"
          f" · {args.steps} steps ×{args.repeats} interleaved (best), wall clock · load average "
          f"{os.getloadavg()[0]:.1f}")
    if args.markdown:
        print("\n| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
        for cells in lines:
            print("| " + " | ".join(cells) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [header] + lines) for i in range(len(header))]
        for cells in [header] + lines:
            print("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))))
    print("overhead: µs/step minus the unbiased step of the same precision.")


if __name__ == "__main__":
    main()
