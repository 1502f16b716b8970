"""Ace-Ala-Nme against Ace-Gly-Nme in one shared latent space: ΔF(C7ax − rest) of each and ΔΔF, against the
references of examples/reference/ (openmm.app.Metadynamics on φ/ψ, 4 × 20 ns per system).

Runs examples/ala_gly_compare.toml once per seed (``[md] seed`` replaced; each run directory resumable), then
compares each seed alone (block-bootstrap errors) and all seeds together (Student-t spread of the seeds), and
prints a side-by-side table with the wall time of every campaign.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mutant_ddg.py --seeds 1 2 3 --outdir runs/mutant_ddg
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "ala_gly_compare.toml"
REFERENCE = ROOT / "examples" / "reference"


def reference() -> dict[str, float]:
    ala = json.loads((REFERENCE / "ala_amber14_phipsi_dF.json").read_text())
    gly = json.loads((REFERENCE / "gly_amber14_phipsi_dF.json").read_text())
    key = "dF_c7ax_minus_rest_fes_mean_kjmol"
    return {"ala": ala[key], "gly": gly[key], "ddg": gly[key] - ala[key]}


def transitions(rundir: Path) -> dict[str, dict[str, float]]:
    """Per system, among its estimate frames (time order): committed C7ax <-> rest transitions (cores
    30 <= phi < 90 and phi < -30 or phi >= 150 degrees, :func:`latentbias.analysis.uncertainty.transition_count`),
    the C7ax <-> C7eq-side ones (-150 <= phi < -30; for glycine the mirror basin), the round-trip (regenerative)
    bootstrap error of dF(C7ax - rest) over the C7ax/rest cores, the dF of the four quarters of the converge phase
    (a run-constant bias shows as all quarters off to one side), the converge phase's own latent round trips
    (``weights.json``: the pair of the two deepest latent basins) and its length in ns."""
    import numpy as np

    from latentbias.analysis.constants import kt_kjmol
    from latentbias.analysis.uncertainty import regenerative_error, transition_count
    from latentbias.campaign.compare import load_system_frames
    from latentbias.campaign.report import parse_cv_spec

    raw = json.loads((rundir / "multi.json").read_text())["config"]
    cvs = [parse_cv_spec(c) for c in raw.get("compare", {}).get("cvs", []) if c.startswith("phi:")]
    out = {}
    for s in load_system_frames(rundir, cvs):
        phi = s.cvs["phi"]
        state = (phi >= 0) & (phi < 120)
        core, rest = (phi >= 30) & (phi < 90), (phi < -30) | (phi >= 150)
        kt = kt_kjmol(s.temperature)

        def dfree(sel):
            w = np.exp(s.logw[sel] - s.logw[sel].max())
            pa, pb = w[state[sel]].sum(), w[~state[sel]].sum()
            return float(-kt * np.log(pa / pb)) if pa > 0 and pb > 0 else float("nan")

        regen, cycles = regenerative_error(dfree, core, rest, n_bootstrap=200, seed=0)
        info = json.loads((s.rundir / "weights.json").read_text())
        trips = info.get("latent_round_trips") or {}
        out[s.name] = {"transitions": transition_count(core, rest),
                       "to_c7eq_side": transition_count(core, (phi >= -150) & (phi < -30)),
                       "regen_error": regen, "cycles": cycles,
                       "quarters": [dfree(q) for q in np.array_split(np.arange(len(phi)), 4)],
                       "latent_round_trips": trips.get("round_trips"),
                       "converge_ns": float(info.get("converge_ps", float("nan"))) / 1000.0, "ess": info.get("ess")}
    return out


def run_seed(seed: int, outdir: Path, config: Path = CONFIG, jacobian_penalty: float | None = None
             ) -> tuple[Path, float]:
    from latentbias.campaign.multi import MultiCampaign
    from latentbias.campaign.multiconfig import multi_from_dict

    raw = tomllib.loads(config.read_text())
    raw["md"]["seed"] = seed
    if jacobian_penalty is not None:  # [model] jacobian_penalty (latentbias.jacobian_penalty)
        raw.setdefault("model", {})["jacobian_penalty"] = jacobian_penalty
    cfg = multi_from_dict(raw, base_dir=config.resolve().parent)
    rundir = outdir / f"seed{seed}"
    t0 = time.perf_counter()
    MultiCampaign(cfg, rundir, progress=False).run()
    return rundir, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--outdir", default="runs/mutant_ddg")
    parser.add_argument("--config", default=str(CONFIG), help="multi-system config (default: the example)")
    parser.add_argument("--jacobian-penalty", type=float, default=None,
                        help="set [model] jacobian_penalty (encoder smoothness weight; default: the config's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from latentbias.campaign.compare import compare

    outdir = Path(args.outdir).resolve()  # the mutant's built pdb is found relative to the run directory
    ref = reference()
    rows, rundirs = [], []
    for seed in args.seeds:
        rundir, wall = run_seed(seed, outdir, Path(args.config), args.jacobian_penalty)
        rundirs.append(rundir)
        c = compare([rundir], n_bootstrap=200)
        dg, ddg = c.dg["C7ax"], c.ddg["C7ax"].get("gly")  # a state a system never sampled has no estimate
        mirror = c.dg.get("C7ax_mirror", {}).get("gly")  # glycine is achiral: must equal dF(C7ax) of glycine
        rows.append((seed, dg.get("ala"), dg.get("gly"), ddg, wall, mirror, transitions(rundir)))
        print(f"seed {seed}: done in {wall:.0f} s", flush=True)
    print(f"\n| seed | dF ala (ref {ref['ala']:.2f}) | dF gly (ref {ref['gly']:.2f}) | ddF gly-ala (ref "
          f"{ref['ddg']:.2f}) | gly mirror (-120 <= phi < 0; = dF gly) | transitions ala / gly (to the C7eq side) | "
          "round-trip bootstrap error ala / gly | latent round trips ala / gly | converge ns ala / gly | wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def fmt(e):
        return "not sampled" if e is None else f"{e.value:.2f} ± {e.error:.2f}"

    for seed, a, g, d, wall, mirror, tr in rows:
        ta, tg = tr["ala"], tr["gly"]
        print(f"| {seed} | {fmt(a)} | {fmt(g)} | {fmt(d)} | {fmt(mirror)} | {ta['transitions']} ({ta['to_c7eq_side']})"
              f" / {tg['transitions']} ({tg['to_c7eq_side']}) | {ta['regen_error']:.2f} / {tg['regen_error']:.2f} | "
              f"{ta['latent_round_trips']} / {tg['latent_round_trips']} | {ta['converge_ns']:.2f} / "
              f"{tg['converge_ns']:.2f} | {wall:.0f} |")
    print("\nquarters of the converge phase, dF(C7ax - rest):")
    for seed, *_, tr in rows:
        quarters = (f"{n} " + ", ".join(f"{q:.2f}" for q in t["quarters"]) for n, t in tr.items())
        print(f"seed {seed}: " + "; ".join(quarters))
    if len(rundirs) > 1:
        c = compare(rundirs, out=outdir / "compare", n_bootstrap=200)
        a, g, d = (c.dg["C7ax"].get("ala"), c.dg["C7ax"].get("gly"), c.ddg["C7ax"].get("gly"))
        if a is None or g is None or d is None:
            print(f"| all ({len(rundirs)} seeds) | {fmt(a)} | {fmt(g)} | {fmt(d)} | | | |")
            return
        print(f"| all ({len(rundirs)} seeds, Student t) | {a.value:.2f} ± {a.error:.2f} | {g.value:.2f} ± "
              f"{g.error:.2f} | {d.value:.2f} ± {d.error:.2f} | | | |")
        print(f"\ndeviation from the references: ala {a.value - ref['ala']:+.2f}, gly {g.value - ref['gly']:+.2f}, "
              f"ddF {d.value - ref['ddg']:+.2f} kJ/mol (target |.| <= 1)")
        import numpy as np

        print("\nper-seed errors against the spread of the seeds (sd of the seed values; rms of the per-seed "
              "1 sigma errors; coverage of the reference by each seed's 1/2 sigma):")
        for k, label in ((1, "ala"), (2, "gly"), (3, "ddF")):
            est = [r[k] for r in rows if r[k] is not None]
            v, e = np.array([x.value for x in est]), np.array([x.error for x in est])
            r0 = ref["ddg" if label == "ddF" else label]
            print(f"{label}: sd {v.std(ddof=1):.2f}, rms error {np.sqrt(np.mean(e ** 2)):.2f}, 1 sigma "
                  f"{np.sum(np.abs(v - r0) <= e)}/{len(v)}, 2 sigma {np.sum(np.abs(v - r0) <= 2 * e)}/{len(v)}, "
                  f"within 1 kJ/mol {np.sum(np.abs(v - r0) <= 1.0)}/{len(v)}")
        m = [(r[2], r[5]) for r in rows if r[2] is not None and r[5] is not None]
        diff = np.array([g.value - mi.value for g, mi in m])
        err = np.array([np.hypot(g.error, mi.error) for g, mi in m])
        print(f"gly C7ax - mirror (must be 0): {np.round(diff, 2).tolist()}, |.| <= 2 sigma in "
              f"{np.sum(np.abs(diff) <= 2 * err)}/{len(diff)}")


if __name__ == "__main__":
    main()
