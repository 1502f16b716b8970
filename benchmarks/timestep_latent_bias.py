"""Does the 2 fs time step sample the wrong ensemble under a frozen latent OPES bias? (issues 8, 12)

Takes the final (frozen) converge-phase bias of finished Ace-Ala-Nme / Ace-Gly-Nme campaigns
(``examples/ala_gly_compare.toml`` run directories: ``systems/<name>/round_NNN`` with ``plan.json``, the last
``bias_*.npz`` and the encoder of ``model_round``), runs fresh LangevinMiddle trajectories under that static bias at
several time steps with the same integrator seeds, and reweights them with the static weights exp(beta V(x)) (exact
for a static bias). It prints side by side, per bias and time step:

- dF(C7ax - rest) = F(0 <= phi < 120) - F(rest) (references: Ala 8.36 +- 0.39, Gly 0.93 +- 0.14 kJ/mol,
  examples/reference/), and for glycine the mirror state F(-120 <= phi < 0) - F(rest), equal to dF(C7ax) by
  symmetry (glycine is achiral);
- the *biased* (unweighted) population of 0 <= phi < 120: a time-step artefact shifts the sampled biased ensemble
  itself, independently of any reweighting;
- the mean of each over the integrator seeds with the standard error of the seeds.

``stiffness`` measures what the latent bias does to the integrator on frames of a run: the largest harmonic
frequency of the bias alone and of the force field (mass-weighted Hessian by central differences of forces, H-bond
constrained atoms' directions included, so an upper bound), the largest bias force, and the energy error of a
short NVE (velocity Verlet) segment at each time step with and without the bias.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/timestep_latent_bias.py run \
        --bias /tmp/mutant12/ex/seed3:gly --dt 2 1 --seeds 1 2 --ps 1000 --out runs/dt
    python benchmarks/timestep_latent_bias.py table --out runs/dt
    python benchmarks/timestep_latent_bias.py stiffness --bias /tmp/mutant12/ex/seed3:gly
    python benchmarks/timestep_latent_bias.py predict --bias /tmp/mutant12/ex/seed4:gly --out runs/dt

``predict`` evaluates the frozen bias V(phi, psi) on a grid (the encoder sees only sin/cos of phi and psi) and
prints the biased population of C7ax that exp(-beta (F_ref + V)) implies beside the ones sampled at each time step:
an integrator that samples the biased ensemble correctly reproduces it whatever the reweighting.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import logging
import time
from pathlib import Path

import numpy as np

KT = 2.494339  # kJ/mol at 300 K
PHI = {"ala": [4, 6, 8, 14], "gly": [4, 6, 8, 11]}
PSI = {"ala": [6, 8, 14, 16], "gly": [6, 8, 11, 13]}
REF = {"ala": 8.36, "gly": 0.93}
SAVE_PS = 0.5
BURN_PS = 20.0


def load_bias(spec: str):
    """``RUNDIR:system`` -> (system, topology, opes, positions of the last converge segment's frames)."""
    from latentbias.bias.grid import LatentVariable
    from latentbias.bias.opes import LatentOPES
    from latentbias.campaign.config import from_dict
    from latentbias.campaign.loop import Campaign
    from latentbias.campaign.rundir import RunDir

    rd, name = spec.rsplit(":", 1)
    member = Path(rd) / "systems" / name
    config = RunDir(member).read_config()  # without the run-directory format key
    base_dir = config.pop("base_dir", ".")
    if not Path(base_dir).is_dir():  # the worktree that ran it is gone: same example inputs in this checkout
        base_dir = str(Path(__file__).resolve().parents[1] / "examples")
    campaign = Campaign(from_dict(config, base_dir=base_dir), member, progress=False)
    progress = json.loads((member / "progress.json").read_text())
    last = progress["round"] if progress.get("finished") else progress["round"] - 1
    rdir = member / f"round_{last:03d}"
    plan = json.loads((rdir / "plan.json").read_text())
    if not plan.get("converge"):
        raise ValueError(f"{rdir} is not a converge round")
    system0, top, _ = campaign.system()
    system = copy.deepcopy(system0)
    model = member / f"round_{plan.get('model_round', last - 1):03d}" / "model.pt"
    o = campaign.cfg.opes
    opes = LatentOPES(system, str(model), [LatentVariable(**v) for v in plan["variables"]], 300.0, o.barrier, o.pace)
    opes.loadState(sorted(glob.glob(str(rdir / "bias_*.npz")))[-1][:-4])
    opes.depositionEnabled = False
    segs = sorted(glob.glob(str(rdir / "seg_*.npz")))
    starts = np.concatenate([np.load(s)["positions"] for s in segs[-4:]])
    return system, top, opes, starts, name, plan


def dihedral(x: np.ndarray, idx) -> np.ndarray:
    """phi in degrees of positions x (n, atoms, 3)."""
    p0, p1, p2, p3 = (x[:, i] for i in idx)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=1)[:, None]
    v = b0 - (b0 * b1n).sum(1)[:, None] * b1n
    w = b2 - (b2 * b1n).sum(1)[:, None] * b1n
    return np.degrees(np.arctan2((np.cross(b1n, v) * w).sum(1), (v * w).sum(1)))


def run_one(spec: str, dt_fs: float, seed: int, ps: float, out: Path) -> Path:
    import openmm as mm
    from openmm import app, unit

    tag = f"{spec.replace('/', '_').replace(':', '_')}_dt{dt_fs:g}_s{seed}"
    path = out / f"{tag}.npz"
    if path.exists():
        return path
    system, top, opes, starts, name, _ = load_bias(spec)
    integ = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, dt_fs * unit.femtosecond)
    integ.setRandomNumberSeed(int(seed))
    sim = app.Simulation(top, system, integ, mm.Platform.getPlatformByName("Reference"))
    # different seeds start from different frames of the converge phase's last segments (same frame for all dt)
    sim.context.setPositions(starts[(37 * seed) % len(starts)])
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, int(seed))
    opes.updateContext(sim.context)
    every = int(round(SAVE_PS / (dt_fs / 1000)))
    t0 = time.time()
    sim.step(int(round(BURN_PS / (dt_fs / 1000))))
    n = int(ps / SAVE_PS)
    phi, psi, bias = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        sim.step(every)
        x = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        phi[i] = dihedral(x[None], PHI[name])[0]
        psi[i] = dihedral(x[None], PSI[name])[0]
        bias[i] = opes.getBiasEnergy(sim.context)
    wall = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{tag}.tmp.npz"
    np.savez(tmp, phi=phi, psi=psi, bias=bias, wall=wall, dt=dt_fs, seed=seed, ps=ps, spec=spec, name=name)
    tmp.replace(path)
    logging.info("%s: %.0f s", tag, wall)
    return path


def dfree(phi: np.ndarray, logw: np.ndarray, lo: float, hi: float) -> float:
    s = (phi >= lo) & (phi < hi)
    w = np.exp(logw - logw.max())
    return float(-KT * np.log(w[s].sum() / w[~s].sum()))


def summarise(path: Path) -> dict:
    d = np.load(path)
    phi, logw = d["phi"], d["bias"] / KT
    blocks = np.array_split(np.arange(len(phi)), 5)
    r = {"spec": str(d["spec"]), "name": str(d["name"]), "dt": float(d["dt"]), "seed": int(d["seed"]),
         "ps": float(d["ps"]), "wall": float(d["wall"])}
    for key, (lo, hi) in {"c7ax": (0, 120), "mirror": (-120, 0)}.items():
        r[key] = dfree(phi, logw, lo, hi)
        r[key + "_err"] = float(np.std([dfree(phi[b], logw[b], lo, hi) for b in blocks], ddof=1) / np.sqrt(5))
    r["asym"] = r["c7ax"] - r["mirror"]
    r["asym_err"] = float(np.std([dfree(phi[b], logw[b], 0, 120) - dfree(phi[b], logw[b], -120, 0)
                                  for b in blocks], ddof=1) / np.sqrt(5))
    r["biased_c7ax"] = float(((phi >= 0) & (phi < 120)).mean())
    return r


def mean_se(v) -> str:
    v = np.asarray([x for x in v if np.isfinite(x)])
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1) / np.sqrt(len(v)):.2f}"


def table(out: Path) -> None:
    rows = [summarise(p) for p in sorted(out.glob("*.npz")) if not p.name.startswith(".")]
    print("| bias | dt fs | seed | ns | dF(C7ax − rest) | mirror (gly) | C7ax − mirror | biased pop. C7ax | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["spec"], -r["dt"], r["seed"])):
        gly = r["name"] == "gly"
        mirror = f"{r['mirror']:.2f} ± {r['mirror_err']:.2f}" if gly else ""
        asym = f"{r['asym']:.2f} ± {r['asym_err']:.2f}" if gly else ""
        print(f"| {r['spec']} | {r['dt']:g} | {r['seed']} | {r['ps'] / 1000:.1f} | {r['c7ax']:.2f} ± {r['c7ax_err']:.2f}"
              f" | {mirror} | {asym} | {r['biased_c7ax']:.3f} | {r['wall']:.0f} |")
    print("\nmean ± standard error over the integrator seeds (reference: Ala 8.36 ± 0.39, Gly 0.93 ± 0.14; "
          "glycine C7ax − mirror must be 0)\n")
    print("| bias | dt fs | seeds | dF(C7ax − rest) | ref | mirror | C7ax − mirror | biased pop. C7ax |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    keys = sorted({(r["spec"], r["dt"]) for r in rows}, key=lambda k: (k[0], -k[1]))
    for spec, dt in keys:
        g = [r for r in rows if r["spec"] == spec and r["dt"] == dt]
        gly = g[0]["name"] == "gly"
        print(f"| {spec} | {dt:g} | {len(g)} | {mean_se([r['c7ax'] for r in g])} | {REF[g[0]['name']]} | "
              f"{mean_se([r['mirror'] for r in g]) if gly else ''} | {mean_se([r['asym'] for r in g]) if gly else ''} | "
              f"{mean_se([r['biased_c7ax'] for r in g])} |")


def stiffness(spec: str, n_frames: int, dts, nve_steps_fs: float) -> None:
    """Largest harmonic frequencies of the bias and of the force field on frames of the converge phase, the
    largest bias force, and the NVE energy error of velocity Verlet at each time step with/without the bias."""
    import openmm as mm
    from openmm import app, unit

    system, top, opes, starts, name, plan = load_bias(spec)
    ngroup = opes.backend.force_group
    bias_groups = {ngroup}
    if {f.getForceGroup() for f in system.getForces()} != {0, ngroup}:
        raise ValueError("expected the force field in group 0 and the latent bias in its own group")
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    sim = app.Simulation(top, system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    opes.updateContext(sim.context)
    print(f"{spec}: bias force group(s) {sorted(bias_groups)}; grid spacing "
          f"{[(v['maxValue'] - v['minValue']) / (v['gridWidth'] - 1) for v in plan['variables']]}, "
          f"kernel sigma now {np.round(opes.getSigma(), 3).tolist()} (latent units)")

    def forces(x, groups):
        sim.context.setPositions(x)
        return sim.context.getState(getForces=True, groups=groups).getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer)

    rng = np.random.default_rng(0)
    pick = rng.choice(len(starts), size=n_frames, replace=False)
    # add the frames of highest bias (where the weights live) and of largest bias force
    bvals, fmax = [], []
    for i in range(len(starts)):
        sim.context.setPositions(starts[i])
        bvals.append(opes.getBiasEnergy(sim.context))
        fmax.append(np.linalg.norm(forces(starts[i], {ngroup}), axis=1).max())
    print(f"over all {len(starts)} frames of the last converge segments: max |F_bias| per atom: median "
          f"{np.median(fmax):.0f}, 99th pct {np.percentile(fmax, 99):.0f}, max {np.max(fmax):.0f} kJ/mol/nm")
    pick = np.unique(np.concatenate([pick, np.argsort(bvals)[-n_frames:], np.argsort(fmax)[-n_frames:]]))
    minv = 1.0 / np.sqrt(np.repeat(masses, 3))
    h = 1e-5
    rows = []
    for i in pick:
        x0 = np.array(starts[i])
        res = {}
        for label, groups in (("bias", {ngroup}), ("ff", {0})):
            n = x0.size
            H = np.empty((n, n))
            for k in range(n):
                xp, xm = x0.copy().ravel(), x0.copy().ravel()
                xp[k] += h
                xm[k] -= h
                H[k] = -(forces(xp.reshape(x0.shape), groups) - forces(xm.reshape(x0.shape), groups)).ravel() / (2 * h)
            H = 0.5 * (H + H.T) * minv[:, None] * minv[None, :]
            ev = np.linalg.eigvalsh(H)
            res[label] = np.sqrt(max(ev.max(), 0.0))  # 1/ps
            res[label + "_neg"] = np.sqrt(max(-ev.min(), 0.0))
        fb = forces(x0, {ngroup})
        rows.append((i, bvals[i], np.linalg.norm(fb, axis=1).max(), res["bias"], res["bias_neg"], res["ff"]))
    print("| frame | bias kJ/mol | max |F_bias| kJ/mol/nm | omega_max bias 1/ps | sqrt(-lambda_min) bias | "
          "omega_max ff (incl. constrained H) 1/ps | omega dt at 2 fs: bias (max of both signs) / ff |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for i, b, f, wb, wn, wf in rows:
        print(f"| {i} | {b:.2f} | {f:.0f} | {wb:.1f} | {wn:.1f} | {wf:.1f} | {max(wb, wn) * 0.002:.3f} / {wf * 0.002:.3f} |")
    wb = np.array([max(r[3], r[4]) for r in rows])
    wf = np.array([r[5] for r in rows])
    print(f"bias |omega|max (either sign): median {np.median(wb):.1f}, max {wb.max():.1f} 1/ps; force field: median "
          f"{np.median(wf):.1f} 1/ps")

    # the campaign's own check (latentbias.bias.stiffness, power iteration on the 3 frames of largest bias force)
    from latentbias.bias.stiffness import check_timestep
    for dt in dts:
        c = check_timestep(sim.context, np.asarray(starts), {ngroup}, dt)
        print(f"check_timestep at {dt:g} fs: omega {c['omega']:.0f} /ps, omega*dt {c['omega_dt']:.2f}, "
              f"suggested <= {c['suggested_timestep_fs']:.2f} fs, warned {bool(c['warned'])}")

    # NVE energy error of velocity Verlet (with the same HBonds constraints) from frames, with and without bias
    print("\n| dt fs | bias | rms(E - <E>) per segment kJ/mol | mean |drift| kJ/mol/ps |")
    print("|---:|---|---:|---:|")
    for dt in dts:
        for with_bias in (True, False):
            integ = mm.VerletIntegrator(dt * unit.femtosecond)
            integ.setConstraintTolerance(1e-8)
            groups = {0, ngroup} if with_bias else {0}
            integ.setIntegrationForceGroups(groups)
            s2 = app.Simulation(top, system, integ, mm.Platform.getPlatformByName("Reference"))
            opes.updateContext(s2.context)
            rms, drift = [], []
            nsteps = int(round(nve_steps_fs / dt))
            for i in pick[:8]:
                s2.context.setPositions(starts[i])
                s2.context.setVelocitiesToTemperature(300 * unit.kelvin, int(i) + 1)
                s2.context.applyConstraints(1e-8)
                s2.context.applyVelocityConstraints(1e-8)
                E = []
                for _ in range(50):
                    s2.step(max(1, nsteps // 50))
                    st = s2.context.getState(getEnergy=True, groups=groups)
                    E.append((st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
                E = np.array(E)
                t = np.arange(len(E)) * max(1, nsteps // 50) * dt / 1000
                rms.append(E.std())
                drift.append(abs(np.polyfit(t, E, 1)[0]))
            print(f"| {dt:g} | {'on' if with_bias else 'off'} | {np.mean(rms):.3f} | {np.mean(drift):.3f} |")


def _side(top, b: int, c: int) -> list[int]:
    """Atoms reachable from c without crossing the bond b-c (those a rotation about b-c moves)."""
    adj: dict[int, list[int]] = {}
    for a1, a2 in top.bonds():
        adj.setdefault(a1.index, []).append(a2.index)
        adj.setdefault(a2.index, []).append(a1.index)
    seen, stack = {c}, [c]
    while stack:
        for nb in adj.get(stack.pop(), []):
            if nb != b and nb not in seen:
                seen.add(nb)
                stack.append(nb)
    return sorted(seen)


def _set_dihedral(x: np.ndarray, idx, target_deg: float, moving: list[int]) -> np.ndarray:
    _, b, c, _ = idx
    ang = np.radians(target_deg - dihedral(x[None], idx)[0])
    axis = (x[c] - x[b]) / np.linalg.norm(x[c] - x[b])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * k @ k
    x = x.copy()
    x[moving] = (x[moving] - x[c]) @ rot.T + x[c]
    return x


def predict(spec: str, out: Path, step: float) -> None:
    """The biased ensemble the integrator should sample, exp(-beta (F_ref + V)) on a phi/psi grid, against the
    biased (unweighted) populations the runs in ``out`` sampled at each time step.

    The encoder's features are sin/cos of phi and psi only (``[features] kind = ["phipsi"]``), so the bias is a
    function V(phi, psi): it is evaluated exactly on a ``step``-degree grid by rotating the two torsions of one frame.
    F_ref is examples/reference/ (phi/psi metadynamics, 4 x 20 ns), interpolated; for glycine symmetrised
    (F(phi, psi) = F(-phi, -psi): glycine is achiral). The reference's own errors (~0.5 kJ/mol in the basins)
    limit the prediction; the trend with the time step does not depend on it."""
    import openmm as mm
    from openmm import unit
    from scipy.interpolate import RegularGridInterpolator

    system, top, opes, starts, name, _ = load_bias(spec)
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    opes.updateContext(ctx)
    group = {opes.backend.force_group}
    grid = np.arange(-180.0, 180.0, step) + step / 2
    x0 = np.asarray(starts[0], float)
    mv_phi, mv_psi = _side(top, PHI[name][1], PHI[name][2]), _side(top, PSI[name][1], PSI[name][2])
    V = np.empty((len(grid), len(grid)))
    for i, p in enumerate(grid):
        xp = _set_dihedral(x0, PHI[name], p, mv_phi)
        for j, q in enumerate(grid):
            ctx.setPositions(_set_dihedral(xp, PSI[name], q, mv_psi))
            V[i, j] = ctx.getState(getEnergy=True, groups=group).getPotentialEnergy().value_in_unit(
                unit.kilojoule_per_mole)
    ref = np.load(Path(__file__).resolve().parents[1] / "examples" / "reference" / f"{name}_amber14_phipsi_fes.npz")
    rp, rs, rf = ref["phi_deg"], ref["psi_deg"], ref["fes_kjmol"]
    if name == "gly":
        p = np.exp(-(rf - rf.min()) / KT)
        ip = [int(np.argmin(np.abs(((-a + 180) % 360) - 180 - rp))) for a in rp]
        iq = [int(np.argmin(np.abs(((-b + 180) % 360) - 180 - rs))) for b in rs]
        rf = -KT * np.log(0.5 * (p + p[np.ix_(ip, iq)]))
    ext = lambda a: np.concatenate([a - 360, a, a + 360])  # noqa: E731 - periodic padding
    interp = RegularGridInterpolator((ext(rp), ext(rs)), np.tile(rf, (3, 3)))
    pp, qq = np.meshgrid(grid, grid, indexing="ij")
    F = interp(np.stack([pp.ravel(), qq.ravel()], 1)).reshape(pp.shape)
    pb = np.exp(-(F + V - (F + V).min()) / KT)
    pb /= pb.sum()
    state = (grid >= 0) & (grid < 120)
    mirror = (grid >= -120) & (grid < 0)
    print(f"{spec}: bias on a {step:g}-degree phi/psi grid: max |dV/dphi| {np.abs(np.gradient(V, step, axis=0)).max():.1f}"
          f" kJ/mol/degree; predicted biased population of 0 <= phi < 120: {pb[state].sum():.3f}"
          + (f", of -120 <= phi < 0: {pb[mirror].sum():.3f}" if name == "gly" else ""))
    tag = f"{spec.replace('/', '_').replace(':', '_')}_dt"
    rows = [summarise(p) | {"phi": np.load(p)["phi"]} for p in sorted(out.glob(f"{tag}*.npz"))]
    for dt in sorted({r["dt"] for r in rows}, reverse=True):
        phi = np.concatenate([r["phi"] for r in rows if r["dt"] == dt])
        per = [float(((r["phi"] >= 0) & (r["phi"] < 120)).mean()) for r in rows if r["dt"] == dt]
        print(f"  sampled at {dt:g} fs ({len(per)} runs, {len(phi)} frames): population of 0 <= phi < 120 "
              f"{mean_se(per)}" + (f", of -120 <= phi < 0 {((phi >= -120) & (phi < 0)).mean():.3f}"
                                    if name == "gly" else ""))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("latentbias").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bias", nargs="+", required=True, help="RUNDIR:system (a finished ala_gly_compare campaign)")
    r.add_argument("--dt", nargs="+", type=float, default=[2.0, 1.0])
    r.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    r.add_argument("--ps", type=float, default=1000.0)
    r.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("stiffness")
    s.add_argument("--bias", required=True)
    s.add_argument("--frames", type=int, default=4)
    s.add_argument("--dt", nargs="+", type=float, default=[2.0, 1.0, 0.5])
    s.add_argument("--nve-fs", type=float, default=2000.0)
    pr = sub.add_parser("predict")
    pr.add_argument("--bias", required=True)
    pr.add_argument("--out", type=Path, required=True, help="folder of the runs of that bias (any time steps)")
    pr.add_argument("--step", type=float, default=2.0, help="grid spacing in degrees")
    a = ap.parse_args()
    if a.cmd == "run":
        # interleave: every seed at every dt before the next seed, so a stopped run still compares like with like
        for seed in a.seeds:
            for spec in a.bias:
                for dt in a.dt:
                    run_one(spec, dt, seed, a.ps, a.out)
        table(a.out)
    elif a.cmd == "table":
        table(a.out)
    elif a.cmd == "predict":
        predict(a.bias, a.out, a.step)
    else:
        stiffness(a.bias, a.frames, a.dt, a.nve_fs)


if __name__ == "__main__":
    main()
