"""RMSE of campaigns' reweighted φ/ψ FES against the reference (examples/reference/ala2_ff96_phipsi_fes.npz).

Usage::

    python benchmarks/demo_fes_rmse.py RUNDIR [RUNDIR ...] [--coarse 3] [--pool]

The measure is :func:`latentbias.analysis.compare_periodic_fes` (the one `make demo` prints): the reference's 5°
cells merged ``--coarse`` × ``--coarse`` (default 3, or the COARSE environment variable: 15° bins), reference
Boltzmann-averaged within a bin, frames with logweight = −inf left out, the best constant offset removed, the region
where the coarse reference is below 25 kJ/mol; the coverage says how much of the region the run sampled. ``--pool``
also compares the runs together (each run's weights normalised, runs weighted equally).
"""
from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import mdtraj as md
import numpy as np

from latentbias.analysis import compare_periodic_fes

ROOT = Path(__file__).resolve().parents[1]
PHI, PSI = [4, 6, 8, 14], [6, 8, 14, 16]


def angles_and_logweights(rundir: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) φ/ψ in degrees and (n,) final log-weights of every frame of a campaign, rounds in order."""
    angles, logw = [], []
    for r in sorted(glob.glob(os.path.join(rundir, "round_*"))):
        t = md.load(os.path.join(r, "frames.dcd"), top=os.path.join(r, "topology.pdb"))
        angles.append(np.degrees(md.compute_dihedrals(t, [PHI, PSI])))
        lines = Path(r, "frames.csv").read_text().splitlines()
        header = lines[1].split(",")
        col = header.index("logweight")
        logw.append(np.array([float(line.split(",")[col]) for line in lines[2:]]))
    if not angles:
        raise SystemExit(f"{rundir}: no round_* folders (give a campaign's run directory)")
    return np.concatenate(angles), np.concatenate(logw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rundirs", nargs="+")
    parser.add_argument("--coarse", type=int, default=int(os.environ.get("COARSE", "3")))
    parser.add_argument("--pool", action="store_true", help="also compare the runs together")
    args = parser.parse_args()
    ref = np.load(ROOT / "examples" / "reference" / "ala2_ff96_phipsi_fes.npz")
    runs = [angles_and_logweights(rd) for rd in args.rundirs]
    for rd, (a, lw) in zip(args.rundirs, runs):
        res = compare_periodic_fes(a, lw, ref["fes_kjmol"], ref["phi_deg"], 300.0, args.coarse)
        print(rd, "frames used", int(np.isfinite(lw).sum()), res)
    if args.pool and len(runs) > 1:
        res = compare_periodic_fes([a for a, _ in runs], [lw for _, lw in runs], ref["fes_kjmol"], ref["phi_deg"],
                                   300.0, args.coarse)
        print(f"pooled ({len(runs)} runs, weighted equally)", res)


if __name__ == "__main__":
    main()
