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


def transitions(rundir: Path) -> dict[str, int]:
    """Committed C7ax <-> rest transitions among each system's estimate frames (time order; cores 30 <= phi < 90
    and phi < -30 or phi >= 150 degrees, :func:`latentbias.analysis.uncertainty.transition_count`)."""
    from latentbias.analysis.uncertainty import transition_count
    from latentbias.campaign.compare import load_system_frames
    from latentbias.campaign.report import parse_cv_spec

    raw = json.loads((rundir / "multi.json").read_text())["config"]
    cvs = [parse_cv_spec(c) for c in raw.get("compare", {}).get("cvs", []) if c.startswith("phi:")]
    out = {}
    for s in load_system_frames(rundir, cvs):
        phi = s.cvs["phi"]
        out[s.name] = transition_count((phi >= 30) & (phi < 90), (phi < -30) | (phi >= 150))
    return out


def run_seed(seed: int, outdir: Path, config: Path = CONFIG) -> tuple[Path, float]:
    from latentbias.campaign.multi import MultiCampaign
    from latentbias.campaign.multiconfig import multi_from_dict

    raw = tomllib.loads(config.read_text())
    raw["md"]["seed"] = seed
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from latentbias.campaign.compare import compare

    outdir = Path(args.outdir)
    ref = reference()
    rows, rundirs = [], []
    for seed in args.seeds:
        rundir, wall = run_seed(seed, outdir, Path(args.config))
        rundirs.append(rundir)
        c = compare([rundir], n_bootstrap=200)
        dg, ddg = c.dg["C7ax"], c.ddg["C7ax"].get("gly")  # a state a system never sampled has no estimate
        mirror = c.dg.get("C7ax_mirror", {}).get("gly")  # glycine is achiral: must equal dF(C7ax) of glycine
        rows.append((seed, dg.get("ala"), dg.get("gly"), ddg, wall, mirror, transitions(rundir)))
        print(f"seed {seed}: done in {wall:.0f} s", flush=True)
    print(f"\n| seed | dF ala (ref {ref['ala']:.2f}) | dF gly (ref {ref['gly']:.2f}) | ddF gly-ala (ref "
          f"{ref['ddg']:.2f}) | wall s | gly mirror (-120 <= phi < 0; = dF gly) | transitions ala / gly |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    def fmt(e):
        return "not sampled" if e is None else f"{e.value:.2f} ± {e.error:.2f}"

    for seed, a, g, d, wall, mirror, tr in rows:
        print(f"| {seed} | {fmt(a)} | {fmt(g)} | {fmt(d)} | {wall:.0f} | {fmt(mirror)} | {tr.get('ala')} / "
              f"{tr.get('gly')} |")
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


if __name__ == "__main__":
    main()
