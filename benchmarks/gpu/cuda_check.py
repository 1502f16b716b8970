"""LatentBiasForce on OpenMM's CUDA platform: equality with Reference, finite differences, and a benchmark.

Runs with nothing but openmm (+ the openmm-cuda wheel), torch, numpy and the built plugin, so it runs on a lent GPU
machine that has no latentbias dependencies. Inputs come from prepare_device_inputs.py (models exported with
latentbias.save_model, each LatentBiasForce serialized as XML).

Usage: python cuda_check.py INPUTS PLUGIN_PREFIX OUTDIR [--quick]

PLUGIN_PREFIX is the cmake install prefix (plugins/ holds libLatentBiasReference.so and libLatentBiasCUDA.so; the
SWIG module latentbiasplugin.py, if built, sits at its top and is used to read z).

Both evaluation paths of LatentBiasForce are checked on CUDA: "native" (the common-compute kernels of
plugin/platforms/common, the default for models saved by latentbias.save_model) and "torch" (libtorch on OpenMM's
CUDA context), each forced through the force's evaluationPath; the path each Context really used is recorded.

Checks (each passes or fails on its own; the script always writes OUTDIR/gpu_check.json and gpu_check.md):
1. Equality, LatentBiasForce alone in a System, CUDA vs Reference's libtorch path (float64 autograd, independent of
   the native kernels): energy, z, forces.
   double precision + float64 model: relative 1e-8 on energy and z, 1e-7 on forces (‖ΔF‖/‖F‖);
   mixed / single precision + float32 model: relative 1e-4 on energy and z, 1e-3 on forces (issue 10's OpenCL bound).
   DHFR: a periodic model (minimum-image distances) with atoms shifted by whole box vectors so that molecules cross
   the boundary; energies must not change (invariance) and CUDA must equal Reference.
2. Finite differences on CUDA (double precision, both paths): central differences of the energy along random
   directions (h = 2e-5 nm) against −F·d, relative 1e-5; and along single coordinates of three atoms.
3. Benchmark (µs/step, median of 3 repeats after warm-up): ala2 vacuum (CUDA mixed, Reference 1 thread) unbiased vs
   + LatentBiasForce (45 distances, d = 2); DHFR/JAC PME (CUDA mixed) unbiased vs + LatentBiasForce (105 distances);
   one row per evaluation path.
"""

from __future__ import annotations

import json
import os
import platform as pyplatform
import re
import sys
import time
import traceback
from pathlib import Path

import torch  # noqa: F401  (libtorch before the plugin)
import numpy as np
import openmm
from openmm import app, unit

GROUP = 3
# LB_CHECK_PLATFORM=CPU runs the same code paths on a machine without a GPU (used to test this script).
GPU = os.environ.get("LB_CHECK_PLATFORM", "CUDA")
RESULTS: dict = {"checks": [], "benchmarks": [], "errors": []}
PATHS = ("native", "torch")  # LatentBiasForce evaluation paths checked on the GPU


def log(*a):
    print(*a, flush=True)


def load_plugins(prefix: Path):
    # `import openmm` (after torch) already loaded OpenMM's own plugins, CUDA included; load only ours
    loaded = openmm.Platform.loadPluginsFromDirectory(str(prefix / "plugins"))
    failures = list(openmm.Platform.getPluginLoadFailures())
    RESULTS["plugins_loaded"] = list(loaded)
    RESULTS["plugin_load_failures"] = failures
    log("plugins loaded:", loaded)
    if failures:
        log("plugin load failures:\n  " + "\n  ".join(failures))
    swig = None
    try:
        sys.path.insert(0, str(prefix))
        import latentbiasplugin as swig  # noqa: F811
    except Exception as exc:  # the SWIG wrapper is optional here: z is then not compared
        log("SWIG module not available (z not compared):", exc)
        RESULTS["swig_module"] = f"unavailable: {exc}"
    else:
        RESULTS["swig_module"] = "ok"
    return swig


def with_path(force_xml: str, path: str) -> str:
    """The serialized LatentBiasForce with its evaluationPath set to `path` ("auto", "native" or "torch")."""
    if 'evaluationPath="' in force_xml:
        return re.sub(r'evaluationPath="[^"]*"', f'evaluationPath="{path}"', force_xml, count=1)
    return force_xml.replace("<Force ", f'<Force evaluationPath="{path}" ', 1)


def path_in_context(ctx, swig) -> str | None:
    """Which path the Context's LatentBiasForce runs ("native"/"torch"), where the SWIG module is here."""
    if swig is None:
        return None
    system = ctx.getSystem()
    for i in range(system.getNumForces()):
        force = system.getForce(i)
        if swig.LatentBiasForce.isinstance(force):
            return swig.LatentBiasForce.cast(force).getEvaluationPathInContext(ctx)
    return None


def bias_system(n_atoms: int, force_xml: str, box=None) -> openmm.System:
    s = openmm.System()
    for _ in range(n_atoms):
        s.addParticle(1.0)
    if box is not None:
        s.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*b) for b in box])
    s.addForce(openmm.XmlSerializer.deserialize(force_xml))
    return s


def make_context(system, name, precision=None):
    props = {}
    if name == "CUDA":
        props = {"Precision": precision, "DeviceIndex": "0"}
    elif name == "OpenCL":
        props = {"Precision": precision}
    elif name == "CPU":
        props = {"Threads": "1"}
    integ = openmm.VerletIntegrator(0.001)
    return openmm.Context(system, integ, openmm.Platform.getPlatformByName(name), props), integ


def evaluate(ctx, swig, pos, box=None):
    ctx.setPositions(pos)
    if box is not None:
        ctx.setPeriodicBoxVectors(*[openmm.Vec3(*b) for b in box])
    st = ctx.getState(getEnergy=True, getForces=True, groups={GROUP})
    e = st.getPotentialEnergy().value_in_unit(unit.kilojoules_per_mole)
    f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoules_per_mole / unit.nanometer)
    z = None
    if swig is not None:
        sysf = [ctx.getSystem().getForce(i) for i in range(ctx.getSystem().getNumForces())]
        for force in sysf:
            if swig.LatentBiasForce.isinstance(force):
                z = np.array(swig.LatentBiasForce.cast(force).getLastLatentValues(ctx))
    return e, np.asarray(f), z


def record(name, ok, **info):
    entry = {"check": name, "pass": bool(ok), **info}
    RESULTS["checks"].append(entry)
    log(("PASS " if ok else "FAIL ") + name + "  " + json.dumps(info, default=float))


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def equality_checks(inp: Path, manifest: dict, swig, quick: bool):
    rng = np.random.default_rng(7)
    ala_xyz = np.array(app.AmberInpcrdFile(str(inp / "ala2.crd")).positions.value_in_unit(unit.nanometer))
    crd = app.AmberInpcrdFile(str(inp / "JAC.inpcrd"))
    jac_xyz = np.array(crd.positions.value_in_unit(unit.nanometer))
    jac_box = np.array(crd.boxVectors.value_in_unit(unit.nanometer))
    cases = [("ala2_d2_f64", "double", 1e-8, 1e-7), ("ala2_d2_f32", "mixed", 1e-4, 1e-3),
             ("ala2_d2_f32", "single", 1e-4, 1e-3), ("dhfr_d2_f64", "double", 1e-8, 1e-7),
             ("dhfr_d2_f32", "mixed", 1e-4, 1e-3)]
    for (tag, precision, tol_e, tol_f), path in [(c, p) for c in cases for p in PATHS]:
        name = f"{tag},{precision},{path}"
        try:
            m = manifest[tag]
            xml = (inp / m["force_xml"]).read_text()
            periodic = m["periodic"]
            xyz, box = (jac_xyz, jac_box) if periodic else (ala_xyz, None)
            ref, _ = make_context(bias_system(len(xyz), with_path(xml, "torch"), box), "Reference")
            cu, _ = make_context(bias_system(len(xyz), with_path(xml, path), box), GPU, precision)
            worst = {"dE_rel": 0.0, "dF_rel": 0.0, "dz_rel": 0.0}
            n_conf = 2 if quick else 4
            for c in range(n_conf):
                pos = xyz + (0.0 if c == 0 else 0.01 * rng.standard_normal(xyz.shape))
                if periodic and c > 0 and path == PATHS[0]:
                    # whole-box shifts of a random 30 % of the atoms: minimum-image features must not change
                    shift = rng.integers(-1, 2, size=(len(pos), 3)) * (rng.random((len(pos), 1)) < 0.3)
                    shifted = pos + shift @ box
                    e0, f0, _ = evaluate(ref, swig, pos, box)
                    e1, f1, _ = evaluate(ref, swig, shifted, box)
                    # float64 model: round-off only; float32 model: ~1e-6 relative from coordinates of ~6 nm
                    tol_inv = 1e-9 if tag.endswith("f64") else 1e-4
                    record(f"pbc_invariance_reference[{tag},{precision},conf{c}]",
                           abs(e1 - e0) <= tol_inv * max(1, abs(e0)),
                           E=e0, dE=e1 - e0, n_shifted=int((np.abs(shift).sum(1) > 0).sum()))
                    pos = shifted
                elif periodic and c > 0:
                    shift = rng.integers(-1, 2, size=(len(pos), 3)) * (rng.random((len(pos), 1)) < 0.3)
                    pos = pos + shift @ box
                er, fr, zr = evaluate(ref, swig, pos, box)
                ec, fc, zc = evaluate(cu, swig, pos, box)
                worst["dE_rel"] = max(worst["dE_rel"], abs(ec - er) / max(abs(er), 1e-12))
                worst["dF_rel"] = max(worst["dF_rel"], rel(fc, fr))
                if zr is not None and zc is not None:
                    worst["dz_rel"] = max(worst["dz_rel"], rel(zc, zr))
                if c == 0:
                    worst["E_ref"] = er
                    worst["F_norm_ref"] = float(np.linalg.norm(fr))
                    worst["z_ref"] = None if zr is None else zr.tolist()
                    worst["z_cuda"] = None if zc is None else zc.tolist()
            used = path_in_context(cu, swig)
            ok = worst["dE_rel"] <= tol_e and worst["dF_rel"] <= tol_f and worst["dz_rel"] <= tol_e
            ok = ok and used in (None, path)
            record(f"cuda_vs_reference[{name}]", ok, path_used=used, n_configurations=n_conf, tol_E_z=tol_e,
                   tol_F=tol_f, **worst)
            del ref, cu
        except Exception as exc:
            RESULTS["errors"].append(f"equality {name}: {exc}")
            record(f"cuda_vs_reference[{name}]", False, error=str(exc).splitlines()[0][:300])
            traceback.print_exc()


def finite_difference_checks(inp: Path, manifest: dict, swig=None):
    rng = np.random.default_rng(3)
    ala_xyz = np.array(app.AmberInpcrdFile(str(inp / "ala2.crd")).positions.value_in_unit(unit.nanometer))
    crd = app.AmberInpcrdFile(str(inp / "JAC.inpcrd"))
    jac = (np.array(crd.positions.value_in_unit(unit.nanometer)),
           np.array(crd.boxVectors.value_in_unit(unit.nanometer)))
    for (tag, xyz, box), path in [(c, p) for c in (("ala2_d2_f64", ala_xyz, None), ("dhfr_d2_f64",) + jac)
                                  for p in PATHS]:
        name = f"{tag},{path}"
        try:
            m = manifest[tag]
            system = bias_system(len(xyz), with_path((inp / m["force_xml"]).read_text(), path), box)
            ctx, _ = make_context(system, GPU, "double")
            pos = xyz + 0.005 * rng.standard_normal(xyz.shape)
            e0, f0, _ = evaluate(ctx, None, pos, box)
            h = 2e-5
            worst = 0.0
            details = []
            moving = np.nonzero(np.linalg.norm(f0, axis=1) > 0)[0]
            for trial in range(4):
                d = np.zeros_like(pos)
                d[moving] = rng.standard_normal((len(moving), 3))
                d /= np.linalg.norm(d)
                ep, _, _ = evaluate(ctx, None, pos + h * d, box)
                em, _, _ = evaluate(ctx, None, pos - h * d, box)
                fd = (ep - em) / (2 * h)
                an = -float((f0 * d).sum())
                err = abs(fd - an) / max(abs(an), 1e-8)
                worst = max(worst, err)
                details.append({"fd": fd, "analytic": an})
            for atom in moving[:3]:
                for k in range(3):
                    d = np.zeros_like(pos)
                    d[atom, k] = 1.0
                    ep, _, _ = evaluate(ctx, None, pos + h * d, box)
                    em, _, _ = evaluate(ctx, None, pos - h * d, box)
                    fd = (ep - em) / (2 * h)
                    an = -float(f0[atom, k])
                    worst = max(worst, abs(fd - an) / max(abs(an), 1e-3 * np.abs(f0).max()))
            used = path_in_context(ctx, swig)
            record(f"finite_differences_cuda_double[{name}]", worst <= 1e-5 and used in (None, path), path_used=used,
                   h_nm=h, worst_rel=worst, directions=details, n_moving_atoms=int(len(moving)))
        except Exception as exc:
            RESULTS["errors"].append(f"fd {name}: {exc}")
            record(f"finite_differences_cuda_double[{name}]", False, error=str(exc).splitlines()[0][:300])
            traceback.print_exc()


def time_steps(sim, steps, repeats):
    sim.step(steps // 5 + 1)  # warm-up (kernel compilation, allocator)
    sim.context.getState(getEnergy=True)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        sim.step(steps)
        sim.context.getState(getPositions=True)  # synchronises
        out.append(1e6 * (time.perf_counter() - t) / steps)
    return float(np.median(out)), out


def benchmark(inp: Path, manifest: dict, quick: bool, swig=None):
    cases = []
    prm = app.AmberPrmtopFile(str(inp / "ala2.prmtop"))
    ala_pos = app.AmberInpcrdFile(str(inp / "ala2.crd")).positions
    cases.append(("ala2 vacuum", prm, ala_pos, None, dict(nonbondedMethod=app.NoCutoff, constraints=app.HBonds),
                  "ala2_d2_f32", [(GPU, "mixed", 3000 if not quick else 500),
                                  ("Reference", None, 2000 if not quick else 300)]))
    jac = app.AmberPrmtopFile(str(inp / "JAC.prmtop"))
    crd = app.AmberInpcrdFile(str(inp / "JAC.inpcrd"))
    cases.append(("DHFR/JAC PME", jac, crd.positions, crd.boxVectors,
                  dict(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds),
                  "dhfr_d2_f32", [(GPU, "mixed", 2000 if not quick else 5)]))
    for label, prm_, pos, box, kw, tag, runs in cases:
        for plat, precision, steps in runs:

            def timed(force_xml):
                system = prm_.createSystem(**kw)
                if force_xml is not None:
                    system.addForce(openmm.XmlSerializer.deserialize(force_xml))
                integ = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                        0.002 * unit.picoseconds)
                props = ({"Precision": precision} if plat in ("CUDA", "OpenCL")
                         else ({"Threads": "1"} if plat == "CPU" else {}))
                sim = app.Simulation(prm_.topology, system, integ, openmm.Platform.getPlatformByName(plat), props)
                sim.context.setPositions(pos)
                if box is not None:
                    sim.context.setPeriodicBoxVectors(*box)
                sim.minimizeEnergy(maxIterations=100)
                sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
                result = time_steps(sim, steps, 3)
                used = path_in_context(sim.context, swig) if force_xml is not None else None
                del sim
                return result, used

            base = {"system": label, "platform": plat, "precision": precision, "steps": steps,
                    "n_atoms": prm_.topology.getNumAtoms(), "model": tag, "n_features": manifest[tag].get("n_features")}
            try:
                (med, reps), _ = timed(None)
                base.update(unbiased_us_per_step=med, unbiased_repeats=reps)
            except Exception as exc:
                base["unbiased_error"] = str(exc).splitlines()[0][:300]
                RESULTS["errors"].append(f"bench {label} {plat} unbiased: {exc}")
                traceback.print_exc()
            for path in PATHS:
                row = dict(base, path=path)
                try:
                    (med, reps), used = timed(with_path((inp / manifest[tag]["force_xml"]).read_text(), path))
                    row.update(biased_us_per_step=med, biased_repeats=reps, path_used=used)
                except Exception as exc:
                    row["biased_error"] = str(exc).splitlines()[0][:300]
                    RESULTS["errors"].append(f"bench {label} {plat} {path}: {exc}")
                    traceback.print_exc()
                if "biased_us_per_step" in row and "unbiased_us_per_step" in row:
                    row["overhead_us"] = row["biased_us_per_step"] - row["unbiased_us_per_step"]
                    row["overhead_pct"] = 100 * row["overhead_us"] / row["unbiased_us_per_step"]
                    row["ns_per_day_unbiased"] = 0.002 * 86400e6 / row["unbiased_us_per_step"] / 1000
                    row["ns_per_day_biased"] = 0.002 * 86400e6 / row["biased_us_per_step"] / 1000
                RESULTS["benchmarks"].append(row)
                log("BENCH", json.dumps(row, default=float))


def write_outputs(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=float))
    lines = [f"# LatentBiasForce on CUDA — {RESULTS.get('date')}", "",
             f"Device: {RESULTS.get('device')}; torch {RESULTS.get('torch')}; OpenMM {RESULTS.get('openmm')}; "
             f"CUDA platform {RESULTS.get('cuda_platform_version', '?')}; host {RESULTS.get('host')}", "",
             "## Checks", "", "| check | result | details |", "|---|---|---|"]
    for c in RESULTS["checks"]:
        det = {k: v for k, v in c.items() if k not in ("check", "pass", "directions", "z_ref", "z_cuda")}
        lines.append(f"| {c['check']} | {'PASS' if c['pass'] else 'FAIL'} | "
                     + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in det.items())
                     + " |")
    lines += ["", "## Benchmark (µs/step, median of 3 repeats; LangevinMiddle 2 fs, HBonds)", "",
              "| system | atoms | platform | precision | features | path (used) | unbiased | + LatentBiasForce | overhead | ns/day unbiased | ns/day biased |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in RESULTS["benchmarks"]:
        f = lambda k: f"{b[k]:.1f}" if k in b else b.get(k.replace("us_per_step", "error"), "—")  # noqa: E731
        lines.append(f"| {b['system']} | {b['n_atoms']} | {b['platform']} | {b['precision']} | {b['n_features']} | "
                     f"{b.get('path')} ({b.get('path_used')}) | "
                     f"{f('unbiased_us_per_step')} | {f('biased_us_per_step')} | "
                     f"{b.get('overhead_us', float('nan')):.1f} µs ({b.get('overhead_pct', float('nan')):.1f} %) | "
                     f"{b.get('ns_per_day_unbiased', float('nan')):.0f} | {b.get('ns_per_day_biased', float('nan')):.0f} |")
    if RESULTS["errors"]:
        lines += ["", "## Errors", ""] + [f"* {e.splitlines()[0][:400]}" for e in RESULTS["errors"]]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))


def main():
    inp, prefix, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    quick = "--quick" in sys.argv
    torch.set_num_threads(2)
    RESULTS.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), torch=torch.__version__,
                   openmm=openmm.__version__, host=pyplatform.node(), python=sys.version.split()[0],
                   device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
    manifest = json.loads((inp / "manifest.json").read_text())
    try:
        swig = load_plugins(prefix)
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        RESULTS["platforms"] = names
        log("platforms:", names, "device:", RESULTS["device"])
        if GPU not in names:
            raise RuntimeError(f"OpenMM has no {GPU} platform: " + "; ".join(RESULTS["plugin_load_failures"]))
        RESULTS["cuda_platform_version"] = openmm.Platform.getPlatformByName(GPU).getOpenMMVersion()
        RESULTS["checked_platform"] = GPU
        for part in (lambda: equality_checks(inp, manifest, swig, quick),
                     lambda: finite_difference_checks(inp, manifest, swig),
                     lambda: benchmark(inp, manifest, quick, swig)):
            try:
                part()
            except Exception as exc:
                RESULTS["errors"].append(str(exc))
                traceback.print_exc()
            write_outputs(out)
    except Exception as exc:
        RESULTS["errors"].append(f"setup: {exc}")
        traceback.print_exc()
    write_outputs(out)
    n_fail = sum(not c["pass"] for c in RESULTS["checks"])
    return 1 if n_fail or RESULTS["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
