"""The reference's own 1-D profile along a latent transition path: is an umbrella barrier's gap to the minimax a bug?

`benchmarks/ala2_transition_path.py` compares the umbrella (MBAR) barrier along a latent path with the lowest-pass
(minimax) barrier of the reference phi/psi FES. Those are different quantities: a 1-D profile F(s) in a tube around
a path counts the cross-section of the tube and the metric of s, which depend on the encoder. This script measures
the quantity the umbrella windows estimate, from reference data that never saw the encoder:

1. reference frames: MD of alanine dipeptide (the demo's system) under the static bias V(phi, psi) = -(1 - 1/8)
   F_ref(phi, psi) (the converged well-tempered bias of `examples/reference/ala2_ff96_phipsi_fes.npz`, F capped at
   50 kJ/mol), a frame every 250 steps with its exact log-weight V/kT — an unbiased ensemble by reweighting, with
   the saddle region well populated;
2. for every (run directory, path folder) pair: the frames are encoded with that run's final encoder and projected on
   the path's nodes (``path.csv``) in the same tube (2 sqrt(kT/k)) and bins (2 per node) as the umbrella profile
   (:func:`latentbias.pathway.profile.reweighted_profile`, block bootstrap): the reference barrier along that path.

Agreement with the umbrella barrier (within errors) says the windows are right and a gap to the minimax is the
coordinate's; disagreement points at the windows (e.g. a latent point shared by two conformers, not equilibrated).
The frames' own phi/psi histogram gives the minimax again (a check of step 1).

Usage: OMP_NUM_THREADS=1 python benchmarks/ala2_path_reference_projection.py RUNDIR:PATHDIR [...]
       [--ns 2 --seeds 1,2 | --frames a.npz,b.npz] [--save-frames DIR]
PATHDIR: a per-run output folder of ala2_transition_path.py (path.csv, path.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ala2_transition_path import C7AX, C7EQ, PHI, PSI, REFERENCE, dihedrals  # noqa: E402

BIAS_FACTOR, F_CAP, STRIDE = 8.0, 50.0, 250


def reference_frames(ns: float, seed: int) -> dict[str, np.ndarray]:
    """Static-bias MD (Reference platform, 300 K, 2 fs, LangevinMiddle 1/ps): positions (nm) and bias (kJ/mol)."""
    import openmm
    from openmm import unit

    from latentbias.testsystems import alanine_dipeptide_vacuum

    ref = np.load(REFERENCE)
    v = -(1.0 - 1.0 / BIAS_FACTOR) * np.minimum(ref["fes_kjmol"], F_CAP)  # [phi, psi] on -180..175 deg
    vp = np.pad(v, ((0, 1), (0, 1)), mode="wrap")  # periodic table over [-pi, pi] (last point = first)
    system, _, positions = alanine_dipeptide_vacuum()
    cv = openmm.CustomCVForce("table(phi, psi)")
    for name, idx in (("phi", PHI), ("psi", PSI)):
        t = openmm.CustomTorsionForce("theta")
        t.addTorsion(*idx)
        cv.addCollectiveVariable(name, t)
    cv.addTabulatedFunction("table", openmm.Continuous2DFunction(73, 73, vp.T.ravel().tolist(), -np.pi, np.pi,
                                                                 -np.pi, np.pi, True))
    cv.setForceGroup(30)
    system.addForce(cv)
    integ = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
    integ.setRandomNumberSeed(int(seed))
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, int(seed))
    integ.step(5000)
    n = int(ns * 1e6 / 2 / STRIDE)
    x, bias = np.zeros((n, system.getNumParticles(), 3)), np.zeros(n)
    for i in range(n):
        integ.step(STRIDE)
        st = ctx.getState(getPositions=True, getEnergy=True, groups={30})
        x[i] = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        bias[i] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return {"positions": x, "bias_kjmol": bias}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", help="RUNDIR:PATHDIR")
    ap.add_argument("--ns", type=float, default=2.0, help="ns of reference MD per seed")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--frames", default=None, help="comma-separated .npz of earlier reference frames (skips the MD)")
    ap.add_argument("--save-frames", default=None, help="folder to save the reference frames in")
    ap.add_argument("--bootstrap", type=int, default=100)
    args = ap.parse_args()

    from latentbias.analysis.barriers import minimax_barrier, nearest_cell
    from latentbias.analysis.constants import kt_kjmol
    from latentbias.pathway import samples_from_rundir
    from latentbias.pathway.profile import reweighted_profile

    kt = kt_kjmol(300.0)
    if args.frames:
        parts = [dict(np.load(f)) for f in args.frames.split(",")]
    else:
        parts = []
        for s in args.seeds.split(","):
            t0 = time.perf_counter()
            parts.append(reference_frames(args.ns, int(s)))
            print(f"reference MD seed {s}: {args.ns} ns in {time.perf_counter() - t0:.0f} s", flush=True)
            if args.save_frames:
                Path(args.save_frames).mkdir(parents=True, exist_ok=True)
                np.savez(Path(args.save_frames) / f"ala2_static_bias_seed{s}.npz", **parts[-1])
    x = np.concatenate([p["positions"] for p in parts]).astype(float)
    logw = np.concatenate([p["bias_kjmol"] for p in parts]) / kt

    ref = np.load(REFERENCE)
    ax = ref["phi_deg"]
    edges = np.r_[ax - 2.5, ax[-1] + 2.5]
    a, b = nearest_cell([ax, ax], C7EQ, (True, True)), nearest_cell([ax, ax], C7AX, (True, True))
    reference_minimax = minimax_barrier(ref["fes_kjmol"], a, b, periodic=True).forward
    rows = []
    for pair in args.pairs:
        rd, pdir = pair.split(":")
        samples = samples_from_rundir(rd)
        if not rows:  # the frames' own phi/psi FES: minimax again (checks the static-bias ensemble)
            phi, psi = dihedrals(x, samples.topology)
            wrap = lambda v: (v - edges[0]) % 360.0 + edges[0]  # noqa: E731
            h, _, _ = np.histogram2d(wrap(phi), wrap(psi), bins=[edges, edges], weights=np.exp(logw - logw.max()))
            with np.errstate(divide="ignore"):
                f2 = -kt * np.log(h / h.sum())
            f2 = np.where(np.isfinite(f2), f2 - f2[np.isfinite(f2)].min(), np.nan)
            print(f"{len(x)} reference frames: minimax of their phi/psi histogram "
                  f"{minimax_barrier(f2, a, b, periodic=True).forward:.2f} kJ/mol (reference FES "
                  f"{reference_minimax:.2f})")
        summary = json.loads((Path(pdir) / "path.json").read_text())
        nodes = np.loadtxt(Path(pdir) / "path.csv", delimiter=",", skiprows=2)[:, 2:4]
        tube = 2.0 * np.sqrt(kt / summary["relax"]["force_constant"])
        prof = reweighted_profile(samples.model.encode(x), logw, nodes, 300.0, bins=2 * len(nodes),
                                  max_distance=tube, n_bootstrap=args.bootstrap, seed=1, label="reference frames")
        umb = summary["umbrella_barrier_kjmol"]
        rows.append((Path(rd).name, pdir, umb, prof.barrier.value, prof.barrier.error, prof.info["n_frames"]))
    print()
    print("| run | path folder | umbrella barrier | reference frames, same latent path and tube | frames in tube | "
          "umbrella − reference-on-path | umbrella − minimax |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, pdir, umb, ref_b, ref_e, n in rows:
        print(f"| {name} | {pdir} | {umb[0]:.2f} ± {umb[1]:.2f} | {ref_b:.2f} ± {ref_e:.2f} | {n} | "
              f"{umb[0] - ref_b:+.2f} | {umb[0] - reference_minimax:+.2f} |")


if __name__ == "__main__":
    main()
