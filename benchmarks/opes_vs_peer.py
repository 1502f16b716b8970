"""LatentOPES on exact φ/ψ (a hand-made CV module) vs the published peer openmm-opes 0.2.0 on CustomTorsionForce φ/ψ.

Alanine dipeptide in vacuum (Amber ff96 prmtop of openmmtools, HBonds), 300 K, 2 fs, LangevinMiddle 1/ps,
Reference platform. Both samplers run OPES-METAD with the same barrier, pace, fixed σ0, compression threshold
and grid. At equal simulated time each run reports ΔF = F(C7ax) − F(rest), C7ax = {0 < φ < 120°}:

* ``dF_bias``: from the final bias, F = −V/(1 − 1/γ), summed over the grid nodes of each region;
* ``dF_rw``: from the frames (one in the middle of every deposition interval, first 10 % discarded), reweighted
  with β(V_t(s_t) − c(t)) — V_t the bias acting on the frame, c(t) each code's current c(t) estimate.

``table`` compares the per-code means of many seeds: Welch t-interval of LatentOPES − peer, TOST of equivalence
within ±``--margin`` (default 0.5 kJ/mol), paired difference over common seeds, and each code against the
long-metadynamics reference (examples/reference). ``--cv torsion`` runs LatentOPES on φ/ψ from CustomTorsionForces
(the same function as the CV module, at the peer's cost), which is what makes ≥ 10 seeds affordable on 2 cores.

Usage::

    python benchmarks/opes_vs_peer.py run latent 1 --ns 2 --out results/latent_1.json   # one run
    python benchmarks/opes_vs_peer.py run latent 1 --ns 1 --cv torsion --out ...        # φ/ψ from CustomTorsionForce
    python benchmarks/opes_vs_peer.py table results/*.json [--at-ns 1]                  # table + Welch/TOST
    python benchmarks/opes_vs_peer.py timing                                            # µs/step of both
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import latentbias as lb  # noqa: F401  (imports torch before openmm: TorchForce plugin loading order)
import openmm
from openmm import app, unit

from latentbias.analysis import kt_kjmol
from latentbias.bias import CustomCVBackend, LatentOPES, LatentVariable
from latentbias.cvs import save_dihedral_cv
from latentbias.testsystems import alanine_dipeptide_vacuum

T = 300.0
SETTINGS = dict(barrier=40.0, pace=500, sigma=0.15, grid=101, compression=1.0)
KT = kt_kjmol(T)


def phi_psi_atoms(topology):
    import mdtraj as md

    return lb.backbone_dihedral_atoms(md.Topology.from_openmm(topology), ("phi", "psi"))


def simulation(system, topology, positions, seed):
    integrator = openmm.LangevinMiddleIntegrator(T * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(T * unit.kelvin, seed)
    return sim


def torsion_backend(quadruplets):
    """A :class:`CustomCVBackend` whose latent component i is computed by a ``CustomTorsionForce`` of
    ``quadruplets[i]`` instead of the TorchForce of the dihedral CV module: the same φ/ψ (same convention, to
    round-off; ``tests/test_opes_vs_peer.py`` checks energies and forces), at the cost of the peer's CV. It lets
    LatentOPES' OPES algorithm (kernels, compression, c(t), bias grid) be run for many seeds on the 2-core machine,
    where the TorchScript CV module costs ~30x the MD step."""

    class TorsionBackend(CustomCVBackend):
        def collective_variable_force(self, model, system, index):
            f = openmm.CustomTorsionForce("theta")
            f.addTorsion(*[int(i) for i in quadruplets[index]], [])
            return f

    return TorsionBackend


class Latent:
    name = "latentbias LatentOPES"

    def __init__(self, seed, folder, backend=None, cv="module", contextUpdate="auto"):
        """``cv``: "module" (the TorchScript φ/ψ CV module through the default backend, native LatentBiasForce) or
        "torsion" (the same φ/ψ from CustomTorsionForces inside LatentOPES' CustomCVForce backend).
        ``contextUpdate``: LatentOPES' route to the Context ("auto": local on the native backend, refit on the
        CustomCVForce one)."""
        system, topology, positions = alanine_dipeptide_vacuum()
        model = Path(folder) / "phipsi.pt"
        quads = phi_psi_atoms(topology)
        if not model.exists():
            save_dihedral_cv(quads, system.getNumParticles(), model)
        if cv == "torsion":
            if backend is not None:
                raise ValueError("cv='torsion' chooses the backend itself")
            backend = torsion_backend(quads)
            self.name = "LatentOPES (torsion CV)"
        elif cv != "module":
            raise ValueError(f"cv must be 'module' or 'torsion', got {cv!r}")
        s = SETTINGS
        variables = [LatentVariable(i, -math.pi, math.pi, s["sigma"], periodic=True, gridWidth=s["grid"])
                     for i in range(2)]
        self.opes = LatentOPES(system, model, variables, T, barrier=s["barrier"], pace=s["pace"],
                               compressionThreshold=s["compression"], backend=backend, contextUpdate=contextUpdate)
        self.sim = simulation(system, topology, positions, seed)

    def step(self, n):
        self.opes.step(self.sim, n)

    def observe(self):
        z = self.opes.getCollectiveVariables(self.sim)
        v = self.opes.getBiasEnergy(self.sim.context) - self.opes.backend.wall_energy(z)
        return z, v, self.opes.ct()

    def bias(self):
        return self.opes.getBias()

    def gamma(self):
        return self.opes.biasFactor

    def kernels(self):
        return self.opes.numKernels


class Peer:
    name = "openmm-opes 0.2.0"

    def __init__(self, seed, folder=None):
        from openmm_opes import OPES

        system, topology, positions = alanine_dipeptide_vacuum()
        s = SETTINGS
        variables = []
        for quad in phi_psi_atoms(topology):
            f = openmm.CustomTorsionForce("theta")
            f.addTorsion(*[int(i) for i in quad], [])
            variables.append(app.BiasVariable(f, -math.pi, math.pi, s["sigma"], True, s["grid"]))
        self.opes = OPES(system, variables, T * unit.kelvin, s["barrier"] * unit.kilojoule_per_mole, s["pace"],
                         None, compressionThreshold=s["compression"])
        self.sim = simulation(system, topology, positions, seed)

    def step(self, n):
        self.opes.step(self.sim, n)

    def observe(self):
        z = np.asarray(self.opes.getCollectiveVariables(self.sim))
        v = self.opes.getBiasEnergy(self.sim.context).value_in_unit(unit.kilojoule_per_mole)
        ct = self.opes.getCt().value_in_unit(unit.kilojoule_per_mole) if self.opes.getNumKernels() else -SETTINGS["barrier"]
        return z, v, ct

    def bias(self):
        # the peer's grids are indexed [psi, phi] (slowest axis last variable); return [phi, psi]
        return np.asarray(self.opes.getBias().value_in_unit(unit.kilojoule_per_mole)).T

    def gamma(self):
        return float(self.opes.biasFactor)

    def kernels(self):
        return self.opes.getNumKernels()


def in_c7ax(phi):
    return (phi > 0) & (phi < math.radians(120.0))


def delta_f_from_bias(bias, gamma):
    """ΔF(C7ax − rest) from F = −V/(1−1/γ) on the periodic [φ, ψ] grid (last node repeats the first)."""
    f = -bias[:-1, :-1] / (1.0 - 1.0 / gamma)
    phi = np.linspace(-math.pi, math.pi, bias.shape[0])[:-1]
    logp = -(f - f.min()) / KT
    a = in_c7ax(phi)
    return float(-KT * (np.logaddexp.reduce(logp[a].ravel()) - np.logaddexp.reduce(logp[~a].ravel())))


def delta_f_from_frames(phi, logw):
    a = in_c7ax(phi)
    return float(-KT * (np.logaddexp.reduce(logw[a]) - np.logaddexp.reduce(logw[~a])))


def run(code, seed, ns, out=None, cv="module"):
    """One run of ``code`` ("latent" or "peer"; ``cv`` = "module" or "torsion" for latent, see :class:`Latent`);
    returns (and writes to ``out``) its result dict."""
    folder = tempfile.mkdtemp()
    sampler = Latent(seed, folder, cv=cv) if code == "latent" else Peer(seed)
    pace = SETTINGS["pace"]
    n_intervals = int(round(ns * 1e6 / 2.0 / pace))  # 2 fs steps
    zs, vs, cts, checkpoints = [], [], [], []
    t0 = time.perf_counter()
    for k in range(n_intervals):
        sampler.step(pace // 2)  # a frame in the middle of the interval: never at a deposition
        z, v, ct = sampler.observe()
        zs.append(z), vs.append(v), cts.append(ct)
        sampler.step(pace - pace // 2)
        if (k + 1) % (n_intervals // 4) == 0:
            checkpoints.append({"ns": (k + 1) * pace * 2e-6, "dF_bias": delta_f_from_bias(sampler.bias(), sampler.gamma())})
    wall = time.perf_counter() - t0
    zs, vs, cts = np.array(zs), np.array(vs), np.array(cts)
    start = len(vs) // 10
    logw = (vs[start:] - cts[start:]) / KT
    result = {"code": code, "cv": cv if code == "latent" else "torsion", "name": sampler.name, "seed": seed,
              "ns": ns, "wall_s": wall,
              "us_per_step": wall / (n_intervals * pace) * 1e6, "kernels": sampler.kernels(),
              "dF_bias": delta_f_from_bias(sampler.bias(), sampler.gamma()),
              "dF_rw": delta_f_from_frames(zs[start:, 0], logw), "checkpoints": checkpoints,
              "settings": SETTINGS}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "checkpoints"}))
    return result


#: kJ/mol, examples/reference/README.md: openmm.app.Metadynamics on φ/ψ, 4 × 20 ns, mean 11.73, sd 0.21 -> sem 0.105
REFERENCE_DF = (11.73, 0.21 / 2.0)
EQUIVALENCE_MARGIN = 0.5  # kJ/mol, issue 8: "same ΔF within 0.5 kJ/mol"


def welch(x, y, margin=EQUIVALENCE_MARGIN, alpha=0.05):
    """Difference of means mean(x) − mean(y) of two independent samples, unequal variances (Welch).

    Returns a dict: ``diff``, its standard error ``se``, the Welch–Satterthwaite degrees of freedom ``df``, the
    two-sided (1 − α) t-interval ``ci95``, the (1 − 2α) interval ``ci90`` and the TOST (two one-sided tests,
    Schuirmann 1987) of equivalence within ±``margin``: ``p_tost`` = max of the two one-sided p-values of
    H0: diff ≤ −margin and H0: diff ≥ +margin; equivalence is shown at level α iff p_tost < α, i.e. iff ``ci90``
    lies inside (−margin, +margin).
    """
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    diff = float(x.mean() - y.mean())
    t95, t90 = stats.t.ppf(1 - alpha / 2, df), stats.t.ppf(1 - alpha, df)
    p_lower = stats.t.sf((diff + margin) / se, df)  # H0: diff <= -margin
    p_upper = stats.t.cdf((diff - margin) / se, df)  # H0: diff >= +margin
    p_tost = float(max(p_lower, p_upper))
    return {"diff": diff, "se": se, "df": float(df), "ci95": (diff - t95 * se, diff + t95 * se),
            "ci90": (diff - t90 * se, diff + t90 * se), "p_tost": p_tost, "equivalent": p_tost < alpha,
            "margin": margin, "p_two_sided": float(2 * stats.t.sf(abs(diff) / se, df))}


def versus_reference(x, reference=REFERENCE_DF):
    """mean(x) − reference with the t-interval (sem of x and the reference's error in quadrature, df of x)."""
    from scipy import stats

    x = np.asarray(x, float)
    d = float(x.mean() - reference[0])
    se = math.hypot(x.std(ddof=1) / math.sqrt(len(x)), reference[1])
    t95 = stats.t.ppf(0.975, len(x) - 1)
    return {"diff": d, "se": se, "ci95": (d - t95 * se, d + t95 * se)}


def _label(r):
    return "peer" if r["code"] == "peer" else f"latent/{r.get('cv', 'module')}"


def load_rows(paths, at_ns=None):
    """Result dicts of ``paths``; with ``at_ns`` every run's dF_bias is taken at that simulated time (its
    checkpoints), and dF_rw only from runs that ended there."""
    rows = [json.loads(Path(p).read_text()) for p in paths]
    if at_ns is None:
        return rows
    kept = []
    for r in rows:
        hit = [c for c in r["checkpoints"] if abs(c["ns"] - at_ns) < 1e-6]
        if not hit:
            continue
        r = dict(r, dF_bias=hit[0]["dF_bias"])
        if abs(r["ns"] - at_ns) > 1e-6:
            r["dF_rw"] = float("nan")
        r["ns"] = at_ns
        kept.append(r)
    return kept


def compare(rows, margin=EQUIVALENCE_MARGIN):
    """Per estimator, every LatentOPES group (cv) against the peer: :func:`welch` (and the paired difference over
    common seeds), and every group against :data:`REFERENCE_DF`. Returns {(label, key): dict}."""
    out = {}
    labels = sorted({_label(r) for r in rows})
    values = {(lab, key): {r["seed"]: r[key] for r in rows if _label(r) == lab and np.isfinite(r[key])}
              for lab in labels for key in ("dF_bias", "dF_rw")}
    for (lab, key), v in values.items():
        if len(v) > 1:
            out[(lab, key, "reference")] = versus_reference(list(v.values()))
        peer = values.get(("peer", key), {})
        if lab != "peer" and len(v) > 1 and len(peer) > 1:
            w = welch(list(v.values()), list(peer.values()), margin)
            common = sorted(set(v) & set(peer))
            if len(common) > 1:
                d = np.array([v[s] - peer[s] for s in common])
                w["paired"] = (float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d))
            out[(lab, key, "peer")] = w
    return out


def table(paths, at_ns=None, margin=EQUIVALENCE_MARGIN):
    """Side-by-side table with per-code means, Welch intervals of LatentOPES − peer, TOST and the reference."""
    rows = load_rows(paths, at_ns)
    print(f"{'code':<26}{'seed':>5}{'ns':>6}{'dF_bias':>10}{'dF_rw':>10}{'kernels':>9}{'us/step':>10}{'wall_s':>9}")
    for r in sorted(rows, key=lambda r: (_label(r), r["seed"])):
        print(f"{r['name']:<26}{r['seed']:>5}{r['ns']:>6.1f}{r['dF_bias']:>10.2f}{r['dF_rw']:>10.2f}{r['kernels']:>9d}"
              f"{r['us_per_step']:>10.1f}{r['wall_s']:>9.0f}")
    print()
    for lab in sorted({_label(r) for r in rows}):
        sel = [r for r in rows if _label(r) == lab]
        for key in ("dF_bias", "dF_rw"):
            x = np.array([r[key] for r in sel if np.isfinite(r[key])])
            if len(x) == 0:
                continue
            sd = x.std(ddof=1) if len(x) > 1 else float("nan")
            print(f"{lab:<16} {key:<8} mean {x.mean():6.2f}  sd {sd:5.2f}  sem {sd / math.sqrt(len(x)):5.2f}  (n={len(x)})")
    print()
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[_label(r)] = r
    labels = sorted({_label(r) for r in rows})
    print("| seed | " + " | ".join(f"{lab} dF_bias | {lab} dF_rw" for lab in labels) + " |")
    print("|---:|" + "---:|" * (2 * len(labels)))
    for seed in sorted(by_seed):
        cells = []
        for lab in labels:
            r = by_seed[seed].get(lab)
            cells += [f"{r['dF_bias']:.2f}", f"{r['dF_rw']:.2f}"] if r else ["–", "–"]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print()
    res = compare(rows, margin)
    for (lab, key, against), c in sorted(res.items()):
        if against == "peer":
            paired = c.get("paired")
            ptxt = f"; paired over {paired[2]} seeds {paired[0]:+.2f} +- {paired[1]:.2f}" if paired else ""
            print(f"{lab} - peer, {key}: {c['diff']:+.2f} +- {c['se']:.2f} (Welch df {c['df']:.1f}), "
                  f"95% CI [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}], 90% CI [{c['ci90'][0]:+.2f}, {c['ci90'][1]:+.2f}]; "
                  f"TOST +-{c['margin']} p = {c['p_tost']:.3f}: equivalence {'SHOWN' if c['equivalent'] else 'NOT shown'} "
                  f"(two-sided p of a difference {c['p_two_sided']:.2f}){ptxt}")
    for (lab, key, against), c in sorted(res.items()):
        if against == "reference":
            print(f"{lab} - reference {REFERENCE_DF[0]}, {key}: {c['diff']:+.2f} +- {c['se']:.2f}, "
                  f"95% CI [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]")
    return res


def timing(steps=20_000):
    """µs/step of both samplers (and unbiased / CustomCVForce fallback), interleaved, after a warm-up."""
    from latentbias.bias import CustomCVBackend

    folder = tempfile.mkdtemp()
    system, topology, positions = alanine_dipeptide_vacuum()
    cases = {"unbiased": None, "openmm-opes 0.2.0": lambda: Peer(1),
             "LatentOPES (native LatentBiasForce)": lambda: Latent(1, folder),
             "LatentOPES (CustomCVBackend)": lambda: Latent(1, folder, backend=CustomCVBackend)}
    objs = {}
    for name, make in cases.items():
        if make is None:
            sim = simulation(system, topology, positions, 1)
            objs[name] = sim.step
        else:
            obj = make()
            objs[name] = obj.step
        objs[name](5000)  # warm-up, kernels deposited
    times = {name: [] for name in objs}
    for _ in range(3):
        for name, step in objs.items():
            t0 = time.perf_counter()
            step(steps)
            times[name].append((time.perf_counter() - t0) / steps * 1e6)
    print(f"{'case':<38}{'µs/step (min of 3)':>20}")
    for name, t in times.items():
        print(f"{name:<38}{min(t):>20.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("code", choices=["latent", "peer"])
    r.add_argument("seed", type=int)
    r.add_argument("--ns", type=float, default=2.0)
    r.add_argument("--out", required=True)
    r.add_argument("--cv", choices=["module", "torsion"], default="module",
                   help="LatentOPES' φ/ψ: the TorchScript CV module (default) or CustomTorsionForces (peer's cost)")
    t = sub.add_parser("table")
    t.add_argument("paths", nargs="+")
    t.add_argument("--at-ns", type=float, default=None, help="compare dF_bias at this simulated time (checkpoints)")
    t.add_argument("--margin", type=float, default=EQUIVALENCE_MARGIN, help="TOST equivalence margin, kJ/mol")
    tm = sub.add_parser("timing")
    tm.add_argument("--steps", type=int, default=20_000)
    a = p.parse_args(argv)
    if a.cmd == "run":
        run(a.code, a.seed, a.ns, a.out, a.cv)
    elif a.cmd == "table":
        table(a.paths, a.at_ns, a.margin)
    else:
        timing(a.steps)


if __name__ == "__main__":
    sys.exit(main())
