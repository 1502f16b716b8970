"""Bias overhead of a ~100-feature encoder on solvated systems, CPU and OpenCL platforms, one run (issue 10 item 7).

Systems (built from files shipped in the openmm and openmmtools wheels, no downloads):

* villin HP35 in implicit solvent: openmm's ``app/data/test.pdb`` with its water and ions removed (582 atoms),
  amber99sbildn + amber99_obc (OBC GBSA), NoCutoff;
* alanine dipeptide in explicit water: openmmtools' ``alanine-dipeptide-explicit`` (2269 atoms, Amber prmtop,
  TIP3P), PME with a 0.9 nm cutoff.

Both: HBonds, LangevinMiddle 2 fs, 300 K, 1/ps, positions minimised (200 iterations) once before all cases.

Encoder: 105 distances among 15 atoms (villin: 15 CA atoms spread along the chain; ala2: the 15 first solute atoms;
minimum image in the periodic box) -> standardisation -> 64 -> 64 -> 2 (tanh), random weights, exported in float32
(TorchScript + the native description). Bias: a d = 2 latent grid (40 x 40, a few Gaussians; the values do not change
the cost) with walls, i.e. the force metadynamics applies between deposits.

Rows per system (µs/step; each platform a column group):

* unbiased;
* LatentBiasForce, native path (the plugin's C++ evaluator on CPU, its common-compute kernels on OpenCL);
* LatentBiasForce, libtorch path (``evaluation_path="torch"``: TorchScript forward + backward every step);
* one openmm-torch TorchForce returning z0 (the floor of any TorchScript bias; no grid);
* the CustomCVForce route (``CustomCVBackend``: one TorchForce per latent dimension in a CustomCVForce + grid).

A route that cannot run on a platform is shown as "refused" with ``latentbias.check_platform``'s reason (openmm-torch
on OpenCL: its OpenCL plugin does not load against this OpenMM, and the process would die; LatentBiasForce's libtorch
path runs only where libtorch runs, i.e. Reference and CPU).

Timing: all cases of one system (both platforms) are built first, then timed interleaved: every repetition times
each case once (``--steps`` steps, the queue drained before and after, wall clock), so that all see the same
background load. "min" = best repetition; "overhead" = min(biased) / min(unbiased) − 1 of the same platform;
"paired" = median over repetitions of (biased / unbiased of the same repetition) − 1, less sensitive to load
drifting during the run. "bias alone" = the cost of one evaluation of the bias's forces by themselves: median time of
``getState(getForces=True)`` restricted to the bias's force group minus that of the same call for an empty group
(``--calls`` of each, alternating); it resolves costs far below the run-to-run noise of whole steps on a busy machine
(for a force that needs no extra host-device synchronisation per step, the per-step overhead should be about this).
Issue 10's target: native overhead ≤ 5 %.

``--clock process`` measures the CPU time of all this process's threads instead of the wall clock: use it on a
shared machine, with ``--cpu-threads 1`` and ``POCL_MAX_PTHREAD_COUNT=1`` (other processes then perturb the numbers
through caches only, not through waits for a core).

On a machine without a GPU the OpenCL platform is pocl on the CPU: these are not GPU numbers.

Run:  python benchmarks/protein_overhead.py [--steps 200] [--repeats 7] [--platforms CPU OpenCL (default: both
      where OpenCL exists)]
      [--cpu-threads N] [--opencl-precision single] [--systems villin ala2_water] [--clock wall|process]
      [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform as pyplatform
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
from latentbias.bias import CustomCVBackend
from latentbias.bias.fused import FusedBackend
from latentbias.testsystems import _package_dir, villin_water_pdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_overhead import DT_FS, grid_for  # noqa: E402
from opencl_overhead import measure, opencl_device  # noqa: E402

N_FEATURE_ATOMS = 15  # 15 * 14 / 2 = 105 distances
LATENT_DIM = 2


def villin_implicit():
    """Villin HP35 (test.pdb without water and ions) in OBC implicit solvent: system, topology, positions (nm)."""
    pdb = app.PDBFile(str(villin_water_pdb()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([r for r in modeller.topology.residues() if len(list(r.atoms())) == 1])  # the Cl- ions
    ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    ca = [a.index for a in modeller.topology.atoms() if a.name == "CA"]
    atoms = [ca[i] for i in np.linspace(0, len(ca) - 1, N_FEATURE_ATOMS).round().astype(int)]
    return system, modeller.topology, modeller.positions, atoms


def ala2_explicit():
    """Alanine dipeptide in TIP3P water (openmmtools data), PME 0.9 nm: system, topology, positions (nm)."""
    folder = _package_dir("openmmtools") / "data" / "alanine-dipeptide-explicit"
    prmtop = app.AmberPrmtopFile(str(folder / "alanine-dipeptide.prmtop"))
    crd = app.AmberInpcrdFile(str(folder / "alanine-dipeptide.crd"))
    system = prmtop.createSystem(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                 constraints=app.HBonds)
    system.setDefaultPeriodicBoxVectors(*crd.boxVectors)
    return system, prmtop.topology, crd.positions, list(range(N_FEATURE_ATOMS))


SYSTEMS = {"villin": ("villin HP35, OBC implicit solvent", villin_implicit),
           "ala2_water": ("alanine dipeptide, TIP3P water, PME", ala2_explicit)}


def minimised(builder):
    """The system's positions after 200 iterations of L-BFGS on the CPU platform (one thread), as a numpy array."""
    system, topology, positions, atoms = builder()
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
    state = ctx.getState(getPositions=True)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = np.asarray(state.getPeriodicBoxVectors().value_in_unit(unit.nanometer)) \
        if system.usesPeriodicBoundaryConditions() else None
    return topology, np.asarray(xyz), box, atoms


def export_encoder(path: Path, n_atoms: int, atoms: list[int], xyz: np.ndarray, box) -> Path:
    """105 distances among ``atoms`` -> 64 -> 64 -> 2 tanh, random weights, standardiser fitted on perturbed frames."""
    pairs = [(a, b) for i, a in enumerate(atoms) for b in atoms[i + 1:]]
    feat = lb.Distances(pairs)
    torch.manual_seed(0)
    ae = lb.FeatureAutoencoder(feat.n_features, LATENT_DIM, hidden=(64, 64), activation="tanh")
    frames = xyz[None] + 0.02 * np.random.default_rng(0).standard_normal((32,) + xyz.shape)
    ae.standardizer.fit(lb.features.featurize(feat, frames, box))
    lb.save_model(lb.LatentModel(feat, ae, n_atoms), path, dtype="float32", overwrite=True)
    return path


def cases(model: Path, z: np.ndarray):
    """(name, setup(system)) per row; setup adds the bias to the system."""
    def grid_backend(cls, **kw):
        def setup(system):
            grid, values = grid_for(z, LATENT_DIM)
            b = cls(lb.load_model(model), system, grid, 1000.0, **kw)
            b.set_grid(values, None)
        return setup

    yield "unbiased", lambda system: None
    yield "LatentBiasForce d=2, native path", grid_backend(FusedBackend, evaluationPath="native")
    yield "LatentBiasForce d=2, libtorch path", grid_backend(FusedBackend, evaluationPath="torch")
    yield "one TorchForce (z0, no grid)", lambda system: system.addForce(lb.latent_component_force(model, system, 0))
    yield "CustomCVForce route d=2 (2 TorchForces)", grid_backend(CustomCVBackend)


BIAS_GROUP, EMPTY_GROUP = 30, 31  # the bias's forces are moved to BIAS_GROUP; nothing is in EMPTY_GROUP


def make(builder, topology, xyz, box, platform: str, props: dict, setup):
    """A Simulation of the system with the case's bias (its forces in BIAS_GROUP); raises ValueError
    (check_platform) where it cannot run."""
    system = builder()[0]
    n_base = system.getNumForces()
    if any(f.getForceGroup() in (BIAS_GROUP, EMPTY_GROUP) for f in system.getForces()):
        raise RuntimeError(f"the unbiased system already uses force group {BIAS_GROUP} or {EMPTY_GROUP}")
    setup(system)
    for i in range(n_base, system.getNumForces()):
        system.getForce(i).setForceGroup(BIAS_GROUP)
    plat = openmm.Platform.getPlatformByName(platform)
    lb.check_platform(system, plat)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, DT_FS * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(topology, system, integrator, plat, props)
    if box is not None:
        sim.context.setPeriodicBoxVectors(*box)
    sim.context.setPositions(xyz)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return sim


def bias_alone(sim, calls: int, clock) -> float:
    """Cost of one evaluation of the bias's forces alone, µs: median time of ``getState(getForces=True)`` restricted
    to BIAS_GROUP minus the median of the same call for the empty group (which pays the same force download and
    Python conversion), ``calls`` of each, alternating."""
    timings = {BIAS_GROUP: [], EMPTY_GROUP: []}
    for _ in range(calls):
        for group in timings:
            t0 = clock()
            sim.context.getState(getForces=True, groups={group})
            timings[group].append(clock() - t0)
    return (np.median(timings[BIAS_GROUP]) - np.median(timings[EMPTY_GROUP])) * 1e6


def short_reason(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 400 else text[:397] + "..."


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def run_system(key: str, platforms: list[str], props: dict, steps: int, repeats: int, warmup: int, folder: Path,
               clock: str = "wall", calls: int = 100):
    """Timings of every case of one system: {case: {platform: list of µs/step per repetition, or a refusal str}},
    and {(case, platform): cost of the bias's forces alone, µs} (``bias_alone``, ``calls`` calls)."""
    title, builder = SYSTEMS[key]
    topology, xyz, box, atoms = minimised(builder)
    model = export_encoder(folder / f"{key}.pt", topology.getNumAtoms(), atoms, xyz, box)
    z = lb.load_model(model).encode(xyz, box)
    sims, out = {}, {}
    for name, setup in cases(model, z):
        out[name] = {}
        for p in platforms:
            try:
                sims[(name, p)] = (make(builder, topology, xyz, box, p, props[p], setup), False)
            except ValueError as error:  # check_platform: this route cannot run on this platform
                out[name][p] = "refused: " + short_reason(error)
            except ImportError as error:  # e.g. openmm-torch not installed
                out[name][p] = "unavailable: " + short_reason(error)
    samples = measure(sims, steps, repeats, warmup=warmup, keep_all=True, clock=CLOCKS[clock])
    for (name, p), values in samples.items():
        out[name][p] = values
    alone = {key: bias_alone(sim, calls, CLOCKS[clock]) for key, (sim, _) in sims.items() if key[0] != "unbiased"}
    del sims
    return title, topology.getNumAtoms(), out, alone


def versions() -> str:
    def v(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"
    return (f"python {pyplatform.python_version()} · openmm {openmm.version.version} · torch {torch.__version__} · "
            f"openmmtorch {v('openmmtorch')} · latentbias {lb.__version__}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return pyplatform.processor() or "unknown CPU"


def table(title: str, n_atoms: int, out: dict, alone: dict, platforms: list[str], markdown: bool) -> list[str]:
    header = ["case"]
    for p in platforms:
        header += [f"{p} min µs/step", f"{p} median", f"{p} overhead µs", f"{p} overhead", f"{p} paired",
                   f"{p} bias alone µs (% of step)"]
    rows, notes = [], []
    unbiased = out["unbiased"]
    for name, per in out.items():
        cells = [name]
        for p in platforms:
            values = per[p]
            if isinstance(values, str):
                if values not in notes:
                    notes.append(values)
                cells += [f"{values.split(':')[0]} ({notes.index(values) + 1})", "", "", "", "", ""]
                continue
            base = unbiased[p]
            cells += [f"{min(values):.1f}", f"{np.median(values):.1f}"]
            if name == "unbiased":
                cells += ["0", "0", "0", ""]
            else:
                paired = np.median(np.asarray(values) / np.asarray(base)) - 1
                cost = alone[(name, p)]
                cells += [f"{min(values) - min(base):+.1f}", f"{100 * (min(values) / min(base) - 1):+.1f} %",
                          f"{100 * paired:+.1f} %", f"{cost:.1f} ({100 * cost / min(base):.2f} %)"]
        rows.append(cells)
    lines = [f"{title} ({n_atoms} atoms)"]
    if markdown:
        lines += ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
        lines += ["  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths)))
                  for r in [header] + rows]
    lines += [f"({i + 1}) {note}" for i, note in enumerate(notes)]
    return lines


def verdicts(title: str, out: dict, alone: dict, platforms: list[str]) -> list[str]:
    """Issue 10's target (native overhead <= 5 %), from the step timings and from the bias's cost alone."""
    lines = []
    name = "LatentBiasForce d=2, native path"
    for p in platforms:
        base, values = out["unbiased"][p], out[name][p]
        if isinstance(values, str) or isinstance(base, str):
            lines.append(f"{title}, {p}: native path not measured ({values})")
            continue
        ov = 100 * (min(values) / min(base) - 1)
        paired = 100 * (np.median(np.asarray(values) / np.asarray(base)) - 1)
        share = 100 * alone[(name, p)] / min(base)
        verdict = "met" if max(ov, paired) <= 5.0 else ("not met" if min(ov, paired) > 5.0 else "undecided (noise)")
        lines.append(f"{title}, {p}: native overhead {ov:+.1f} % (min) / {paired:+.1f} % (paired median) of "
                     f"{min(base):.0f} µs/step -> target <= 5 % {verdict}; the bias alone costs "
                     f"{alone[(name, p)]:.1f} µs = {share:.2f} % of an unbiased step -> "
                     f"{'met' if share <= 5.0 else 'not met'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=7, help="timings per case, interleaved")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps per case before the first timing")
    parser.add_argument("--platforms", nargs="+", default=None,
                        help="default: CPU, and OpenCL where OpenMM has an OpenCL platform")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1, help="CPU platform Threads")
    parser.add_argument("--opencl-precision", default="single", choices=["single", "mixed", "double"])
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall clock (default), or the CPU time of this process (all its threads): on a shared "
                             "machine, with --cpu-threads 1 and POCL_MAX_PTHREAD_COUNT=1")
    parser.add_argument("--calls", type=int, default=100, help="getState calls per case for the bias-alone cost")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if args.platforms is None:
        args.platforms = ["CPU"] + (["OpenCL"] if "OpenCL" in available else [])
        if "OpenCL" not in available:
            print(f"no OpenCL platform here (platforms: {available}): CPU only; for OpenCL on a CPU install an "
                  "OpenCL runtime, e.g. pocl-opencl-icd")
    missing = [p for p in args.platforms if p not in available]
    if missing:
        raise SystemExit(f"platform(s) {missing} not available here (platforms: {available}); for OpenCL on a CPU "
                         "install an OpenCL runtime, e.g. pocl-opencl-icd")
    if not native.is_available():
        raise SystemExit(f"the native plugin is not available: {native.unavailable_reason()}")
    torch.set_num_threads(1)
    props = {"CPU": {"Threads": str(args.cpu_threads)}, "OpenCL": {"Precision": args.opencl_precision},
             "Reference": {}, "CUDA": {"Precision": "mixed"}}
    load_before, started = os.getloadavg(), datetime.datetime.now(datetime.timezone.utc)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.systems:
            results.append(run_system(key, args.platforms, props, args.steps, args.repeats, args.warmup, Path(tmp),
                                      args.clock, args.calls))
    load_after = os.getloadavg()
    info = [f"{started:%Y-%m-%d %H:%M} UTC (start) · {pyplatform.node()} · {cpu_model()}, {os.cpu_count()} cores · "
            f"{versions()}",
            f"CPU platform Threads={args.cpu_threads}, torch threads 1"
            + (f" · OpenCL {args.opencl_precision} precision on {opencl_device()} · POCL_MAX_PTHREAD_COUNT="
               f"{os.environ.get('POCL_MAX_PTHREAD_COUNT', 'unset')}" if "OpenCL" in args.platforms else "")
            + f" · {args.steps} steps x {args.repeats} interleaved repetitions, {args.clock} clock",
            "load average (1/5/15 min) before {:.1f}/{:.1f}/{:.1f}, after {:.1f}/{:.1f}/{:.1f}".format(
                *load_before, *load_after)]
    print("\n".join(info))
    for title, n_atoms, out, alone in results:
        print()
        print("\n".join(table(title, n_atoms, out, alone, args.platforms, args.markdown)))
    print()
    print("overhead: min(case) / min(unbiased) - 1, same platform; paired: median over repetitions of case / unbiased "
          "of the same repetition, - 1. refused: latentbias.check_platform's reason (no Context made).")
    print(f"bias alone: median getState(getForces=True) time for the bias's force group minus that for an empty group, "
          f"{args.calls} calls each, {args.clock} clock.")
    for title, _, out, alone in results:
        print("\n".join(verdicts(title, out, alone, args.platforms)))


if __name__ == "__main__":
    main()
