"""Alanine dipeptide C7eq -> C7ax transition path from demo campaigns, checked against the reference phi/psi FES.

For every run directory (a finished `examples/ala2_campaign.toml` campaign): the latent MFEP between the frame nearest
C7eq (phi, psi = -80, 70 deg) and the frame nearest C7ax (70, -70) among the frames in the estimate, relaxed
structures and umbrella windows at its nodes (`latentbias.pathway.transition_path`), then

* phi along the relaxed structures: from < 0 to > 0, and how far it ever steps backwards (unwrapped through the
  shorter arc; "monotonic within thermal noise" = no backward step larger than --noise deg);
* the umbrella (MBAR) barrier along the path against the minimax barrier of the reference phi/psi FES
  (examples/reference/ala2_ff96_phipsi_fes.npz, lowest pass between the C7eq and C7ax basins,
  `latentbias.analysis.barriers.minimax_barrier`, periodic);
* the decoder's reconstruction RMSD on held-out frames (the converge phase's frames: the final encoder never trained
  on them), after optimal superposition.

Usage: OMP_NUM_THREADS=1 python benchmarks/ala2_transition_path.py RUNDIR [RUNDIR ...] [--nodes 20]
       [--production-steps 50000] [--out runs/ala2_paths] [--platform Reference]
Prints a table and writes per run RUNDIR-name/ (path.pdb, profile.png, ...) and summary.json under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent / "examples" / "reference" / "ala2_ff96_phipsi_fes.npz"
PHI, PSI = [4, 6, 8, 14], [6, 8, 14, 16]
C7EQ, C7AX = (-80.0, 70.0), (70.0, -70.0)


def dihedrals(xyz: np.ndarray, topology) -> tuple[np.ndarray, np.ndarray]:
    import mdtraj as md

    t = md.Trajectory(np.asarray(xyz), md.Topology.from_openmm(topology))
    ang = np.degrees(md.compute_dihedrals(t, [PHI, PSI]))
    return ang[:, 0], ang[:, 1]


def reference_barrier() -> dict:
    from latentbias.analysis.barriers import minimax_barrier, nearest_cell

    ref = np.load(REFERENCE)
    axes = [ref["phi_deg"], ref["psi_deg"]]
    a = nearest_cell(axes, C7EQ, (True, True))
    b = nearest_cell(axes, C7AX, (True, True))
    mean = minimax_barrier(ref["fes_kjmol"], a, b, periodic=True)
    runs = [minimax_barrier(f, a, b, periodic=True).forward for f in ref["fes_runs_kjmol"]]
    return {"forward": mean.forward, "backward": mean.backward, "runs_sd": float(np.std(runs, ddof=1)),
            "saddle_phi_psi": [float(axes[0][mean.saddle_index[0]]), float(axes[1][mean.saddle_index[1]])]}


def reference_along(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Reference phi/psi FES at the given angles (periodic bilinear interpolation), kJ/mol."""
    from scipy.interpolate import RegularGridInterpolator

    ref = np.load(REFERENCE)
    ax, f = ref["phi_deg"], ref["fes_kjmol"]
    ext = np.r_[ax, ax[0] + 360.0]
    fe = np.pad(f, ((0, 1), (0, 1)), mode="wrap")
    interp = RegularGridInterpolator((ext, ext), fe)
    wrap = lambda a: (np.asarray(a) - ax[0]) % 360.0 + ax[0]
    return interp(np.column_stack([wrap(phi), wrap(psi)]))


def phi_monotonic(phi: np.ndarray) -> tuple[float, float]:
    """(net change, largest backward step) of phi along the path, deg, steps taken through the shorter arc."""
    steps = (np.diff(phi) + 180.0) % 360.0 - 180.0
    net = float(steps.sum())
    sign = np.sign(net) if net else 1.0
    return net, float(max(0.0, -(sign * steps).min()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rundirs", nargs="+")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--production-steps", type=int, default=50000)
    parser.add_argument("--equilibration-steps", type=int, default=5000)
    parser.add_argument("--platform", default="Reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=20.0, help="allowed backward step of phi, deg")
    parser.add_argument("--bins", type=int, default=None,
                        help="latent FES bins per dimension (default: the workflow's)")
    parser.add_argument("--out", default="runs/ala2_paths")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from latentbias.pathway import samples_from_rundir, transition_path, write_path_outputs

    ref = reference_barrier()
    print(f"reference phi/psi FES: minimax barrier C7eq -> C7ax {ref['forward']:.2f} kJ/mol (sd over 4 runs "
          f"{ref['runs_sd']:.2f}), saddle at phi, psi = {ref['saddle_phi_psi']}")
    rows = []
    for rd in args.rundirs:
        t0 = time.perf_counter()
        samples = samples_from_rundir(rd)
        phi, psi = dihedrals(samples.positions, samples.topology)
        used = np.isfinite(samples.logweights)

        def nearest(target):
            d = np.hypot((phi - target[0] + 180) % 360 - 180, (psi - target[1] + 180) % 360 - 180)
            d[~used] = np.inf
            return int(np.argmin(d))

        a, b = nearest(C7EQ), nearest(C7AX)
        extra = {} if args.bins is None else {"bins": args.bins}
        tp = transition_path(samples, f"frame:{a}", f"frame:{b}", n_nodes=args.nodes, seed=args.seed, **extra,
                             platform=args.platform, production_steps=args.production_steps,
                             equilibration_steps=args.equilibration_steps,
                             output_dir=Path(args.out) / Path(rd).name / "windows")
        write_path_outputs(tp, Path(args.out) / Path(rd).name, overwrite=True)
        p_phi, p_psi = dihedrals(tp.windows.structures, samples.topology)
        net, back = phi_monotonic(p_phi)
        along = reference_along(p_phi, p_psi)
        s = tp.summary()
        row = {"rundir": rd, "start_frame": a, "end_frame": b, "start_phi_psi": [float(phi[a]), float(psi[a])],
               "end_phi_psi": [float(phi[b]), float(psi[b])], "path_phi": p_phi.round(1).tolist(),
               "path_psi": p_psi.round(1).tolist(), "phi_net_change": net, "phi_max_backward_step": back,
               "phi_start_negative_end_positive": bool(p_phi[0] < 0 < p_phi[-1]),
               "umbrella_barrier": s["umbrella_barrier_kjmol"], "reweighted_barrier": s["reweighted_barrier_kjmol"],
               "latent_string_barrier": s["string"]["barrier_kjmol"],
               "string_barrier_spread": s["string"]["barrier_spread_kjmol"],
               "reference_minimax_barrier": ref["forward"],
               "reference_fes_along_path": along.round(2).tolist(),
               "reference_barrier_along_path": float(along.max() - along[: int(np.argmax(along)) + 1].min()),
               "phi_max_forward_step": float(np.max(np.abs((np.diff(p_phi) + 180.0) % 360.0 - 180.0))),
               "umbrella_minus_reference": s["umbrella_barrier_kjmol"][0] - ref["forward"],
               "decoder_rmsd_angstrom": s["decoder_heldout_rmsd_angstrom"],
               "decoder_heldout_frames": s.get("heldout_rmsd_frames"),
               "max_bond_deviation_angstrom": s["max_bond_deviation_angstrom"], "clashes": s["clashes"],
               "rebuilt_max_bond_deviation_angstrom": s["rebuilt_max_bond_deviation_angstrom"],
               "force_constant": s["relax"]["force_constant"], "wall_s": time.perf_counter() - t0,
               "profiles_check": s["profiles_check"], "realisations_consistent": s["realisations"].get("consistent"),
               "window_starts": s["relax"].get("window_starts"), "string_initial": tp.string.info.get("initial")}
        rows.append(row)
        (Path(args.out) / "summary.json").write_text(json.dumps(rows, indent=1))
    print()
    print("| run | phi start -> end (deg) | max backward / largest step (deg) | umbrella barrier | reweighted-frames "
          "barrier | latent-FES string | reference FES along the relaxed path | reference minimax | umbrella - ref | "
          "decoder RMSD (A) | max bond dev (A) | clashes | umbrella vs frames | windows from fallback |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {Path(r['rundir']).name} | {r['path_phi'][0]:.0f} -> {r['path_phi'][-1]:.0f} | "
              f"{r['phi_max_backward_step']:.1f} / {r['phi_max_forward_step']:.0f} | "
              f"{r['umbrella_barrier'][0]:.2f} ± {r['umbrella_barrier'][1]:.2f} | "
              f"{r['reweighted_barrier'][0]:.2f} ± {r['reweighted_barrier'][1]:.2f} | "
              f"{r['latent_string_barrier']:.2f} | {r['reference_barrier_along_path']:.2f} | "
              f"{r['reference_minimax_barrier']:.2f} | "
              f"{r['umbrella_minus_reference']:+.2f} | {r['decoder_rmsd_angstrom'] or float('nan'):.2f} | "
              f"{r['max_bond_deviation_angstrom']:.3f} | {r['clashes']} | "
              f"{r['profiles_check']['deviation_sigma']:.1f} sigma"
              f"{'' if r['profiles_check']['consistent'] else ' (warned)'} | "
              f"{sum(x == 'fallback' for x in r['window_starts'] or [])} |")
    for r in rows:
        print(f"{Path(r['rundir']).name}: phi along the path {r['path_phi']}")


if __name__ == "__main__":
    main()
