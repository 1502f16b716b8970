"""What truncating the metadynamics Gaussians (``kernelCutoff``) does to the bias, c(t) and a reweighted ΔF.

Alanine dipeptide in vacuum (amber, Reference platform, 300 K, Langevin 1/ps, 2 fs), well-tempered metadynamics on
the backbone φ/ψ (a TorchScript dihedral CV module through the native LatentBiasForce; periodic 48 × 48 grid,
σ = 0.35 rad = 2.7 grid spacings, height 1.2 kJ/mol, bias factor 6, a deposit every 250 steps: the settings of
tests/test_ala2_metadynamics.py). Two comparisons per seed:

1. **Same history, two kernel shapes** (deterministic): the run with truncated Gaussians (the default cutoff,
   √12.5 ≈ 3.54 widths per axis) is replayed with untruncated Gaussians at the same centres and heights. Printed:
   max |V_cut − V_full| on the grid at the end (kJ/mol and in units of the initial height), max |c_cut(t) −
   c_full(t)| over the deposits, and ΔF = F(φ > 0) − F(φ < 0) reweighted from the same frames with the c(t)
   log-weights β(V(z_t, t) − c(t)) of either bias (V at the frames by linear interpolation of each grid).
2. **Independent runs** (statistical): the same seed run once with ``kernelCutoff=None`` (untruncated, as
   openmm.app.Metadynamics); the trajectories decorrelate, so the two ΔF differ by sampling noise; printed per seed
   and as mean ± standard error over the seeds.

Run:  python benchmarks/cutoff_effect.py [--steps 500000] [--seeds 1 2 3] [--burn 0.2]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform as pyplatform
import tempfile
from pathlib import Path

import numpy as np

import latentbias as lb
import openmm
from openmm import app, unit
from latentbias.analysis import kt_kjmol
from latentbias.analysis.reweight import well_tempered_ct
from latentbias.bias import LatentMetadynamics, LatentVariable
from latentbias.bias.grid import BiasGrid
from latentbias.cvs import save_dihedral_cv
from latentbias.testsystems import alanine_dipeptide_vacuum

SETTINGS = dict(temperature=300.0, biasFactor=6.0, height=1.2, frequency=250)
WIDTH, GRID = 0.35, 48


def run(seed: int, steps: int, cutoff, model: Path) -> LatentMetadynamics:
    system, topology, positions = alanine_dipeptide_vacuum()
    if not model.exists():
        save_dihedral_cv(lb.backbone_dihedral_atoms(topology, ("phi", "psi")), system.getNumParticles(), model)
    variables = [LatentVariable(i, -math.pi, math.pi, WIDTH, periodic=True, gridWidth=GRID) for i in range(2)]
    extra = {} if cutoff == "default" else {"kernelCutoff": cutoff}
    meta = LatentMetadynamics(system, model, variables, **SETTINGS, **extra)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    meta.step(sim, steps)
    return meta


def delta_f(phi: np.ndarray, logw: np.ndarray) -> float:
    """F(φ > 0) − F(φ < 0), kJ/mol, from log-weights."""
    w = np.exp(logw - logw.max())
    return float(-kt_kjmol(300.0) * np.log(w[phi > 0].sum() / w[phi < 0].sum()))


def replay_untruncated(meta: LatentMetadynamics) -> tuple[np.ndarray, ...]:
    """The recorded centres and heights of ``meta`` deposited again as untruncated and as truncated Gaussians: final
    grids (full, cut), c(t) before each deposit (full, cut), V(z_t) before each deposit by linear interpolation
    (full, cut)."""
    rec = meta.getRecords()
    full = BiasGrid(meta.variables, kernelCutoff=None)
    cut = BiasGrid(meta.variables, kernelCutoff=meta.kernelCutoff)
    kt_dt = kt_kjmol(meta.temperature * (meta.biasFactor - 1.0))
    v_full, v_cut = np.zeros(full.shape), np.zeros(full.shape)
    ct_full, ct_cut, b_full, b_cut = [], [], [], []
    for z, bias in zip(rec["z"], rec["bias_kjmol"]):
        ct_full.append(well_tempered_ct(v_full, meta.temperature, meta.biasFactor))
        ct_cut.append(well_tempered_ct(v_cut, meta.temperature, meta.biasFactor))
        b_full.append(float(full.interpolate(z[None], v_full)[0]))
        b_cut.append(float(cut.interpolate(z[None], v_cut)[0]))
        height = meta.height * math.exp(-bias / kt_dt)
        full.add_gaussian(v_full, z, height)
        cut.add_gaussian(v_cut, z, height)
    if not np.allclose(v_cut, meta.getBias(), rtol=0, atol=1e-9):
        raise RuntimeError("the replayed truncated bias differs from the run's: the replay is wrong")
    return v_full, v_cut, np.array(ct_full), np.array(ct_cut), np.array(b_full), np.array(b_cut)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--burn", type=float, default=0.2, help="fraction of the deposits left out of ΔF")
    parser.add_argument("--no-independent", dest="independent", action="store_false",
                        help="skip the independent runs with untruncated Gaussians (comparison 2)")
    args = parser.parse_args()
    print(f"{datetime.date.today()} · {pyplatform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.1f} · "
          f"openmm {openmm.__version__} · latentbias {lb.__version__} · ala2 vacuum φ/ψ, Reference, "
          f"{args.steps} steps ({args.steps * 0.002:.0f} ps) per run")
    model = Path(tempfile.mkdtemp()) / "phipsi.pt"
    kt = kt_kjmol(300.0)
    print("\n| seed | max abs V_cut − V_full (kJ/mol) | in heights | max abs c_cut − c_full | ΔF, c(t) weights, cut bias "
          "| same frames, full bias | ΔF, independent run with full Gaussians |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for seed in args.seeds:
        meta = run(seed, args.steps, "default", model)
        v_full, v_cut, ct_full, ct_cut, b_full, b_cut = replay_untruncated(meta)
        rec = meta.getRecords()
        keep = np.arange(len(rec["z"])) >= int(args.burn * len(rec["z"]))
        phi = rec["z"][keep, 0]
        df_cut = delta_f(phi, (b_cut - ct_cut)[keep] / kt)
        df_full_same = delta_f(phi, (b_full - ct_full)[keep] / kt)
        df_indep = float("nan")
        if args.independent:
            other = run(seed, args.steps, None, model).getRecords()
            keep_o = np.arange(len(other["z"])) >= int(args.burn * len(other["z"]))
            df_indep = delta_f(other["z"][keep_o, 0], other["logweight"][keep_o])
        dv = np.abs(v_cut - v_full).max()
        rows.append((df_cut, df_full_same, df_indep))
        print(f"| {seed} | {dv:.4f} | {dv / SETTINGS['height']:.4f} | {np.abs(ct_cut - ct_full).max():.4f} | "
              f"{df_cut:.2f} | {df_full_same:.2f} | {df_indep:.2f} |", flush=True)
    r = np.array(rows)
    n = len(r)
    sem = r.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full(3, np.nan)
    print(f"| mean ± s.e. ({n} seeds) | | | | {r[:, 0].mean():.2f} ± {sem[0]:.2f} | {r[:, 1].mean():.2f} ± {sem[1]:.2f} "
          f"| {r[:, 2].mean():.2f} ± {sem[2]:.2f} |")
    d = r[:, 0] - r[:, 1]
    print(f"\nsame frames, cut − full bias: ΔF differs by {d.mean():+.3f} (max abs {np.abs(d).max():.3f}) kJ/mol")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
