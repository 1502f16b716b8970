"""Do two realisations of a path's umbrella windows agree? The check of `latentbias path --realisations` on
window folders that already exist (issue 11).

Each argument pair is two window folders of the same path (``window_<k>.npz`` files written by
``latentbias.pathway.relax_path``: same nodes and force constant, other MD seeds), e.g. an earlier run and a
rerun. The script rebuilds each realisation's umbrella profile exactly as ``transition_path`` does (2 bins per
window, tube of twice the thermal width sqrt(kT/k), block bootstrap), prints each realisation's barrier and
F(end) − F(start) side by side, the pooled profile's barrier, and the verdict of
``latentbias.pathway.compare_realisations`` (agreement within 3 combined σ).

Usage: OMP_NUM_THREADS=1 python benchmarks/path_realisations.py A/windows B/windows [C/windows D/windows ...]
       [--temperature 300] [--bootstrap 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from latentbias.analysis.constants import kt_kjmol
from latentbias.bias.umbrella import UmbrellaResult
from latentbias.io import load_npz
from latentbias.pathway import PathWindows, compare_realisations, pool_windows, umbrella_profile


def read_windows(folder: Path, temperature: float) -> PathWindows:
    files = sorted(folder.glob("window_*.npz"))
    if not files:
        raise SystemExit(f"error: no window_*.npz in {folder}")
    data = [load_npz(f) for f in files]
    centers = np.stack([d["center"] for d in data])
    k = np.array([float(d["force_constant"]) for d in data])
    d = centers.shape[1]
    restraint = {"dims": list(range(d)), "lower_walls": [-np.inf] * d, "upper_walls": [np.inf] * d,
                 "wall_force_constant": [0.0] * d, "period": [0.0] * d}
    result = UmbrellaResult(centers, np.repeat(k[:, None], d, axis=1), [x["z"] for x in data], temperature,
                            restraint, [x["step"] for x in data])
    return PathWindows(centers, np.stack([x["structure"] for x in data]), np.stack([x["structure_z"] for x in data]),
                       np.array([float(x["energy"]) for x in data]), result,
                       {"force_constant": float(k[0]), "seeds": [x["seeds"].tolist() if "seeds" in x else None
                                                                 for x in data][:1]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="pairs of window folders (realisation A, realisation B)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    if len(args.folders) % 2:
        raise SystemExit("error: give window folders in pairs")
    rows = []
    print(f"{'path':<34} {'barrier A':>14} {'barrier B':>14} {'end-start A':>14} {'end-start B':>14} "
          f"{'pooled':>14} {'max dev':>8}  verdict")
    for a, b in zip(args.folders[::2], args.folders[1::2]):
        runs = [read_windows(Path(f), args.temperature) for f in (a, b)]
        nodes = runs[0].nodes
        tube = 2.0 * np.sqrt(kt_kjmol(args.temperature) / runs[0].settings["force_constant"])
        kw = {"bins": 2 * len(nodes), "n_bootstrap": args.bootstrap, "seed": 0, "max_distance": tube}
        own = [umbrella_profile(r.umbrella, nodes, **kw) for r in runs]
        pooled = umbrella_profile(pool_windows(runs), nodes, **kw)
        check = compare_realisations(own)
        fmt = lambda e: f"{e.value:6.2f} ± {e.error:4.2f}"  # noqa: E731
        name = str(Path(a).parent.name)
        print(f"{name:<34} {fmt(own[0].barrier):>14} {fmt(own[1].barrier):>14} {fmt(own[0].end_minus_start):>14} "
              f"{fmt(own[1].end_minus_start):>14} {fmt(pooled.barrier):>14} {check.largest_deviation:8.1f}  "
              f"{'agree' if check.consistent else 'DISAGREE'}")
        rows.append({"a": a, "b": b, "check": check.summary(),
                     "pooled_barrier_kjmol": [pooled.barrier.value, pooled.barrier.error]})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
