"""Reference φ/ψ free energy surfaces of capped alanine and glycine by long well-tempered metadynamics.

The estimators and the learned-CV campaigns of latentbias are checked against these surfaces (issues 8 and 12), so
this script uses nothing from latentbias: the ideal collective variables φ and ψ (one ``TorsionForce`` each), OpenMM's
own ``openmm.app.Metadynamics`` (well-tempered, bias on a periodic 2-D grid) and plain numpy. It needs only
``openmm`` and ``numpy`` and runs unchanged on a machine without latentbias.

Systems (vacuum, NoCutoff, HBonds constraints, 300 K, 2 fs, LangevinMiddle with friction 1/ps):

* ``ala2_ff96``   — alanine dipeptide exactly as latentbias' demo simulates it (openmmtools'
  ``alanine-dipeptide-gbsa`` prmtop/crd, Amber ff96; ``latentbias.testsystems.alanine_dipeptide_vacuum``).
* ``ala_amber14`` — Ace-Ala-Nme, ``amber14-all.xml`` (``inputs/ace_ala_nme.pdb``).
* ``gly_amber14`` — Ace-Gly-Nme, ``amber14-all.xml`` (``inputs/ace_gly_nme.pdb``, pdbfixer ALA-2-GLY; see
  ``make_inputs.py``).

Metadynamics settings (defaults) and why:

* Gaussian width σ = 0.35 rad (20°): the C7eq/C5/αR/C7ax basins are 40–90° wide, so σ resolves them while a
  Gaussian still covers a basin in a few deposits.
* Grid 73 × 73 points over [-π, π] (OpenMM repeats the first point at the end of a periodic axis: 72 distinct
  points, 5° spacing = σ/4, fine enough for the spline and the FES).
* Initial height 1 kJ/mol (≈ 0.4 kT) every 500 steps (1 ps): the bias grows at ≤ 1 kJ/mol/ps, slow compared
  with the ~ps relaxation of the backbone torsions inside a basin, so the bias stays close to adiabatic.
* Bias factor γ = 8 (ΔT = 2100 K, kT·γ ≈ 20 kJ/mol): the 25–40 kJ/mol barriers to C7ax / αL are crossed many
  times per ns once the bias has grown, while the bias converges to −(1 − 1/γ)·F over ≈ 1 ns of filling.

Outputs (in ``--outdir``; rewritten atomically every ``--checkpoint-wall`` seconds, so a killed run leaves data):

* ``<run>_fes.npz`` — ``phi_deg``, ``psi_deg`` (72 distinct grid points each), ``fes_kjmol`` (72, 72) indexed
  [phi, psi] with min 0, ``bias_kjmol``, ``time_ns`` + ``dF_fes_kjmol`` + ``dF_reweight_kjmol`` (ΔF against
  simulated time), ``frames`` (t_ns, φ, ψ, V(s,t), c(t)) of every deposit, settings.
* ``<run>_fes.csv`` — phi_deg, psi_deg, fes_kjmol.
* ``<run>.json`` — ΔF(C7ax − rest) from the FES and from reweighting, simulated time, µs/step, settings.

ΔF(C7ax − rest) = −kT ln(P(0° < φ < 120°) / P(rest)). From the bias: F(s) = −γ/(γ−1)·V(s), probabilities summed
over the grid (points on φ = 0° and 120° count half). By reweighting: every deposit records the CVs s_t and the bias
V(s_t, t) *before* that deposit; frames get weights exp(β[V(s_t,t) − c(t)]) with Tiwary & Parrinello's (2015)
c(t) = β⁻¹ ln(∫ exp(γ/(γ−1)·βV(s,t)) ds / ∫ exp(βV(s,t)/(γ−1)) ds); the first ``--discard-ns`` are left out.

Usage::

    python phipsi_metadynamics.py run --system ala_amber14 --ns 20 --seed 1 --outdir out --max-wall 400
    python phipsi_metadynamics.py summary out/*.npz --outdir examples/reference
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KB = 0.0083144626181532  # kJ/mol/K (openmm.unit.MOLAR_GAS_CONSTANT_R)
HERE = Path(__file__).resolve().parent
SYSTEMS = ("ala2_ff96", "ala_amber14", "gly_amber14")
C7AX_DEG = (0.0, 120.0)


# ---------------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file next to ``path``, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _save_npz(path: Path, **arrays) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    _atomic_write(path, write)


def _save_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _atomic_write(path, write)


def _fes_csv(phi_deg, psi_deg, fes) -> str:
    lines = ["phi_deg,psi_deg,fes_kjmol"]
    for i, p in enumerate(phi_deg):
        for j, q in enumerate(psi_deg):
            lines.append(f"{p:.4f},{q:.4f},{fes[i, j]:.6f}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# systems
# ---------------------------------------------------------------------------------------------------------------
def _openmmtools_ala2(data_dir: Path | None) -> tuple[Path, Path]:
    names = ("alanine-dipeptide.prmtop", "alanine-dipeptide.crd")
    if data_dir is not None and all((data_dir / n).is_file() for n in names):
        return data_dir / names[0], data_dir / names[1]
    import importlib.util

    spec = importlib.util.find_spec("openmmtools")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "ala2_ff96 needs openmmtools' alanine-dipeptide-gbsa files: install openmmtools or pass --data-dir with "
            f"{names[0]} and {names[1]}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "alanine-dipeptide-gbsa"
    return folder / names[0], folder / names[1]


def build_system(name: str, data_dir: Path | None):
    """System, topology and positions of one of SYSTEMS (vacuum, NoCutoff, HBonds)."""
    from openmm import app

    if name == "ala2_ff96":
        prmtop_path, crd_path = _openmmtools_ala2(data_dir)
        prmtop = app.AmberPrmtopFile(str(prmtop_path))
        crd = app.AmberInpcrdFile(str(crd_path))
        system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
        return system, prmtop.topology, crd.positions
    if name in ("ala_amber14", "gly_amber14"):
        pdb_name = {"ala_amber14": "ace_ala_nme.pdb", "gly_amber14": "ace_gly_nme.pdb"}[name]
        folder = data_dir if data_dir is not None and (data_dir / pdb_name).is_file() else HERE / "inputs"
        pdb = app.PDBFile(str(folder / pdb_name))
        ff = app.ForceField("amber14-all.xml")
        system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
        return system, pdb.topology, pdb.positions
    raise ValueError(f"unknown system {name!r}; choose one of {SYSTEMS}")


def backbone_torsions(topology) -> tuple[list[int], list[int]]:
    """φ = C(i-1)-N-CA-C and ψ = N-CA-C-N(i+1) of the single non-cap residue (atom indices)."""
    residues = list(topology.residues())
    central = [r for r in residues if r.name not in ("ACE", "NME", "NHE", "HOH")]
    if len(central) != 1:
        raise ValueError(f"expected one residue between the caps, found {[r.name for r in central]}")
    res = central[0]
    prev = residues[res.index - 1]
    nxt = residues[res.index + 1]

    def atom(r, n):
        for a in r.atoms():
            if a.name == n:
                return a.index
        raise ValueError(f"atom {n} missing from residue {r.name}{r.id}")

    phi = [atom(prev, "C"), atom(res, "N"), atom(res, "CA"), atom(res, "C")]
    psi = [atom(res, "N"), atom(res, "CA"), atom(res, "C"), atom(nxt, "N")]
    return phi, psi


def torsion_force(idx: list[int]):
    import openmm

    f = openmm.CustomTorsionForce("theta")
    f.addTorsion(*idx, [])
    return f


# ---------------------------------------------------------------------------------------------------------------
# estimators on the grid
# ---------------------------------------------------------------------------------------------------------------
def grid_axes(grid_width: int) -> np.ndarray:
    """Distinct grid points of a periodic Metadynamics axis over [-π, π] (the last point repeats the first), rad."""
    return np.linspace(-np.pi, np.pi, grid_width)[:-1]


def c7ax_weights(phi_rad: np.ndarray) -> np.ndarray:
    """Indicator of 0° < φ < 120° on grid points; points exactly on an edge count half (trapezoid rule)."""
    deg = np.degrees(phi_rad)
    lo, hi = C7AX_DEG
    w = ((deg > lo + 1e-9) & (deg < hi - 1e-9)).astype(float)
    w[np.isclose(deg, lo, atol=1e-6) | np.isclose(deg, hi, atol=1e-6)] = 0.5
    return w


def delta_f_from_fes(fes: np.ndarray, phi_rad: np.ndarray, kT: float) -> float:
    """ΔF(C7ax − rest) in kJ/mol from F[phi, psi] on the distinct grid points."""
    w = c7ax_weights(phi_rad)[:, None]
    p = np.exp(-(fes - fes.min()) / kT)
    pa = float((p * w).sum())
    pb = float((p * (1.0 - w)).sum())
    return -kT * math.log(pa / pb)


def fes_from_bias(bias_phi_psi: np.ndarray, bias_factor: float) -> np.ndarray:
    """Well-tempered estimate F = −γ/(γ−1)·V on [phi, psi], shifted to min 0 (kJ/mol)."""
    f = -bias_factor / (bias_factor - 1.0) * bias_phi_psi
    return f - f.min()


def ct_of_bias(bias_phi_psi: np.ndarray, bias_factor: float, kT: float) -> float:
    """Tiwary–Parrinello c(t) (kJ/mol) of a bias on the distinct grid points (uniform measure)."""
    g = bias_factor
    a = g / (g - 1.0) * bias_phi_psi / kT
    b = bias_phi_psi / ((g - 1.0) * kT)
    la = a.max() + math.log(np.exp(a - a.max()).sum())
    lb = b.max() + math.log(np.exp(b - b.max()).sum())
    return kT * (la - lb)


def delta_f_reweight(frames: np.ndarray, kT: float, discard_ns: float) -> float:
    """ΔF(C7ax − rest) from frames (t_ns, φ, ψ, V, c) weighted by exp(β(V − c)), t > discard_ns."""
    sel = frames[frames[:, 0] > discard_ns]
    if len(sel) < 10:
        return float("nan")
    logw = (sel[:, 3] - sel[:, 4]) / kT
    w = np.exp(logw - logw.max())
    deg = np.degrees(sel[:, 1])
    in_a = (deg > C7AX_DEG[0]) & (deg < C7AX_DEG[1])
    pa, pb = w[in_a].sum(), w[~in_a].sum()
    if pa <= 0 or pb <= 0:
        return float("nan")
    return -kT * math.log(pa / pb)


# ---------------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------------
def run(args) -> dict:
    import openmm
    from openmm import app, unit

    T = 300.0
    kT = KB * T
    system, topology, positions = build_system(args.system, Path(args.data_dir) if args.data_dir else None)
    phi_idx, psi_idx = backbone_torsions(topology)
    variables = [app.BiasVariable(torsion_force(ix), -np.pi, np.pi, args.width, periodic=True, gridWidth=args.grid)
                 for ix in (phi_idx, psi_idx)]
    meta = app.Metadynamics(system, variables, T * unit.kelvin, args.bias_factor, args.height * unit.kilojoules_per_mole,
                            args.stride)
    integrator = openmm.LangevinMiddleIntegrator(T * unit.kelvin, 1.0 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(args.seed)
    platform = openmm.Platform.getPlatformByName(args.platform)
    props = {"Threads": "1"} if args.platform == "CPU" else {}
    if args.platform == "CUDA":
        props = {"Precision": "mixed"}
    sim = app.Simulation(topology, system, integrator, platform, props)
    sim.context.setPositions(positions)
    sim.minimizeEnergy()
    sim.context.setVelocitiesToTemperature(T * unit.kelvin, args.seed)
    sim.step(args.equil_steps)  # unbiased (bias is zero) equilibration, not recorded
    sim.currentStep = 0

    force = meta._force  # the CustomCVForce openmm.app.Metadynamics added (its CVs are φ, ψ)
    group = force.getForceGroup()
    dt_ns = 2e-6
    n_deposits = int(round(args.ns / (args.stride * dt_ns)))
    axes = grid_axes(args.grid)
    tag = f"{args.system}_s{args.seed}"
    out = Path(args.outdir)
    frames = np.zeros((n_deposits, 5))
    t_hist, df_fes_hist, df_rw_hist = [], [], []
    t0 = time.perf_counter()
    last_ckpt = t0
    done = 0

    def bias_phi_psi():
        # Metadynamics keeps the bias as [psi, phi] (reversed variable order), with the periodic duplicate.
        return meta._totalBias[:-1, :-1].T.copy()

    def snapshot(final: bool) -> dict:
        sim_ns = done * args.stride * dt_ns
        wall = time.perf_counter() - t0
        bias = bias_phi_psi()
        fes = fes_from_bias(bias, args.bias_factor)
        dff = delta_f_from_fes(fes, axes, kT)
        dfr = delta_f_reweight(frames[:done], kT, args.discard_ns) if done else float("nan")
        result = {
            "system": args.system, "seed": args.seed, "platform": args.platform, "final": final,
            "simulated_ns": sim_ns, "wall_s": wall,
            "us_per_step": 1e6 * wall / max(1, done * args.stride),
            "dF_c7ax_minus_rest_fes_kjmol": dff, "dF_c7ax_minus_rest_reweight_kjmol": dfr,
            "c7ax_definition": "0 deg < phi < 120 deg", "discard_ns_for_reweighting": args.discard_ns,
            "settings": {"temperature_K": T, "timestep_fs": 2.0, "friction_per_ps": 1.0, "constraints": "HBonds",
                         "nonbonded": "NoCutoff", "bias_factor": args.bias_factor, "height_kjmol": args.height,
                         "sigma_rad": args.width, "deposit_every_steps": args.stride, "grid_width": args.grid,
                         "equilibration_steps": args.equil_steps, "openmm": openmm.__version__},
            "phi_atoms": phi_idx, "psi_atoms": psi_idx,
        }
        _save_npz(out / f"{tag}_fes.npz", phi_deg=np.degrees(axes), psi_deg=np.degrees(axes), fes_kjmol=fes,
                  bias_kjmol=bias, time_ns=np.array(t_hist), dF_fes_kjmol=np.array(df_fes_hist),
                  dF_reweight_kjmol=np.array(df_rw_hist), frames=frames[:done],
                  frames_columns=np.array(["t_ns", "phi_rad", "psi_rad", "bias_kjmol", "ct_kjmol"]),
                  bias_factor=args.bias_factor, temperature_K=T, simulated_ns=sim_ns, seed=args.seed,
                  system=args.system, discard_ns=args.discard_ns)
        _save_text(out / f"{tag}_fes.csv", _fes_csv(np.degrees(axes), np.degrees(axes), fes))
        _save_text(out / f"{tag}.json", json.dumps(_finite_or_none(result), indent=1))
        return result

    record_every = max(1, int(round(args.record_ps / (args.stride * 2e-3))))
    while done < n_deposits:
        sim.step(args.stride)  # Metadynamics.step's loop, recording s and V(s, t) before each deposit
        s = force.getCollectiveVariableValues(sim.context)
        v = sim.context.getState(energy=True, groups={group}).getPotentialEnergy()
        v_kj = v.value_in_unit(unit.kilojoules_per_mole)
        frames[done] = (sim.currentStep * dt_ns, s[0], s[1], v_kj, ct_of_bias(bias_phi_psi(), args.bias_factor, kT))
        height = meta.height * np.exp(-v / (unit.MOLAR_GAS_CONSTANT_R * meta._deltaT))
        meta._addGaussian(s, height, sim.context)
        done += 1
        if done % record_every == 0:
            t_hist.append(round(done * args.stride * dt_ns, 9))
            df_fes_hist.append(delta_f_from_fes(fes_from_bias(bias_phi_psi(), args.bias_factor), axes, kT))
            df_rw_hist.append(delta_f_reweight(frames[:done], kT, args.discard_ns))
        now = time.perf_counter()
        if now - t0 > args.max_wall:
            break
        if now - last_ckpt > args.checkpoint_wall:
            snapshot(False)
            last_ckpt = now
    result = snapshot(True)
    print(json.dumps({k: result[k] for k in ("system", "seed", "simulated_ns", "wall_s", "us_per_step",
                                              "dF_c7ax_minus_rest_fes_kjmol", "dF_c7ax_minus_rest_reweight_kjmol")}),
          flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# summary over runs
# ---------------------------------------------------------------------------------------------------------------
def _finite_or_none(x):
    """NaN/inf -> None, recursively, so that the JSON is strict."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def summary(args) -> dict:
    """Combine runs per system into a mean FES ± spread and ΔF per run, mean, spread."""
    kT = KB * 300.0
    by_system: dict[str, list] = {}
    for p in args.files:
        d = np.load(p, allow_pickle=False)
        by_system.setdefault(str(d["system"]), []).append((p, d))
    out = Path(args.outdir)
    report = {}
    for system, runs in sorted(by_system.items()):
        phi = runs[0][1]["phi_deg"]
        psi = runs[0][1]["psi_deg"]
        fes_list, per_run = [], []
        for p, d in runs:
            f = d["fes_kjmol"]
            # common zero: the free energy of the whole torus, −kT ln Σ exp(−βF) = 0
            f = f + kT * math.log(np.exp(-(f - f.min()) / kT).sum()) - f.min()
            fes_list.append(f)
            per_run.append({"file": Path(p).name, "seed": int(d["seed"]), "simulated_ns": float(d["simulated_ns"]),
                            "dF_fes_kjmol": delta_f_from_fes(d["fes_kjmol"], np.radians(phi), kT),
                            "dF_reweight_kjmol": delta_f_reweight(d["frames"], kT, float(d["discard_ns"])),
                            "dF_vs_time": {"time_ns": d["time_ns"].tolist(), "dF_fes_kjmol": d["dF_fes_kjmol"].tolist(),
                                           "dF_reweight_kjmol": d["dF_reweight_kjmol"].tolist()}})
        stack = np.array(fes_list)
        mean = stack.mean(axis=0)
        # mean of F in probability space would weight rare regions differently; the arithmetic mean of aligned F
        # is what PLUMED users compare; the spread is the standard deviation across runs (ddof=1 when n > 1).
        spread = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.full_like(mean, np.nan)
        shift = mean.min()
        mean = mean - shift
        dfs = np.array([r["dF_fes_kjmol"] for r in per_run])
        dfr = np.array([r["dF_reweight_kjmol"] for r in per_run])
        n = len(dfs)
        entry = {
            "system": system, "n_runs": n, "runs": per_run,
            "simulated_ns_total": float(sum(r["simulated_ns"] for r in per_run)),
            "dF_c7ax_minus_rest_fes_mean_kjmol": float(dfs.mean()),
            "dF_c7ax_minus_rest_fes_std_kjmol": float(dfs.std(ddof=1)) if n > 1 else None,
            "dF_c7ax_minus_rest_fes_sem_kjmol": float(dfs.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
            "dF_c7ax_minus_rest_fes_of_mean_surface_kjmol": delta_f_from_fes(mean, np.radians(phi), kT),
            "dF_c7ax_minus_rest_reweight_mean_kjmol": float(np.mean(dfr[np.isfinite(dfr)])) if np.isfinite(dfr).any()
            else None,
            "dF_c7ax_minus_rest_reweight_std_kjmol": float(np.std(dfr[np.isfinite(dfr)], ddof=1))
            if np.isfinite(dfr).sum() > 1 else None,
            "c7ax_definition": "0 deg < phi < 120 deg", "temperature_K": 300.0,
        }
        report[system] = entry
        _save_npz(out / f"{system}_phipsi_fes.npz", phi_deg=phi, psi_deg=psi, fes_kjmol=mean, fes_spread_kjmol=spread,
                  fes_runs_kjmol=stack - shift)
        lines = ["phi_deg,psi_deg,fes_kjmol,spread_kjmol"]
        for i, a in enumerate(phi):
            for j, b in enumerate(psi):
                lines.append(f"{a:.4f},{b:.4f},{mean[i, j]:.6f},{spread[i, j]:.6f}")
        _save_text(out / f"{system}_phipsi_fes.csv", "\n".join(lines) + "\n")
        _save_text(out / f"{system}_phipsi_dF.json", json.dumps(_finite_or_none(entry), indent=1))
        print(f"{system}: n={n} total {entry['simulated_ns_total']:.2f} ns  dF(C7ax-rest) FES "
              f"{entry['dF_c7ax_minus_rest_fes_mean_kjmol']:.2f} ± {entry['dF_c7ax_minus_rest_fes_std_kjmol']} "
              f"reweight {entry['dF_c7ax_minus_rest_reweight_mean_kjmol']} kJ/mol")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one well-tempered metadynamics run")
    r.add_argument("--system", choices=SYSTEMS, required=True)
    r.add_argument("--ns", type=float, default=20.0, help="simulated time (ns) to aim for")
    r.add_argument("--max-wall", type=float, default=float("inf"), help="stop after this many seconds of wall time")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--platform", default="Reference", choices=["Reference", "CPU", "CUDA", "OpenCL"])
    r.add_argument("--bias-factor", type=float, default=8.0)
    r.add_argument("--height", type=float, default=1.0, help="initial Gaussian height, kJ/mol")
    r.add_argument("--width", type=float, default=0.35, help="Gaussian sigma, rad")
    r.add_argument("--grid", type=int, default=73, help="grid points per axis (incl. the periodic duplicate)")
    r.add_argument("--stride", type=int, default=500, help="steps between deposits")
    r.add_argument("--equil-steps", type=int, default=5000)
    r.add_argument("--discard-ns", type=float, default=1.0, help="frames before this time are not reweighted")
    r.add_argument("--record-ps", type=float, default=100.0, help="interval of the ΔF(t) record, ps")
    r.add_argument("--checkpoint-wall", type=float, default=30.0, help="rewrite outputs every this many seconds")
    r.add_argument("--data-dir", default=None, help="folder with the input files (prmtop/crd, PDBs)")
    r.add_argument("--outdir", required=True)
    s = sub.add_parser("summary", help="combine runs into mean FES ± spread per system")
    s.add_argument("files", nargs="+")
    s.add_argument("--outdir", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args)
    else:
        summary(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
