"""``latentbias path RUNDIR --from A --to B [--nodes N]``: the transition-path workflow on a campaign's run folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("latentbias.cli")

__all__ = ["add_path_parser"]

_ENDPOINTS = "'z0,z1' or 'z0,z1,z2' (latent point), 'frame:N' (frame N, order of weights.csv), 'basin:K' (K-th basin of the " \
             "latent FES, lowest first) or 'auto'"


def _properties(args: argparse.Namespace) -> dict[str, str] | None:
    if args.threads is None:
        return None
    if args.threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
    if args.platform != "CPU":
        raise SystemExit(f"error: --threads sets the CPU platform's thread count; --platform is {args.platform}")
    return {"Threads": str(args.threads)}


def _cmd_path(args: argparse.Namespace) -> int:
    from .workflow import transition_path_from_rundir, write_path_outputs

    rundir = Path(args.rundir)
    out = Path(args.output) if args.output else rundir / "path"
    if not args.overwrite:
        for name in ("path.pdb", "path.dcd", "profile.csv", "profile.png"):
            if (out / name).exists():
                raise SystemExit(f"error: {out / name} exists; pass --overwrite or choose --output")
    tp = transition_path_from_rundir(
        rundir, args.start, args.end, args.nodes, bins=args.bins, smooth=args.smooth, fixed_ends=args.fixed_ends,
        sensitivity_samples=args.sensitivity_samples, n_bootstrap=args.bootstrap, seed=args.seed,
        output_dir=out / "windows", platform=args.platform, platform_properties=_properties(args),
        force_constant=args.force_constant,
        equilibration_steps=args.equilibration_steps, production_steps=args.production_steps,
        sample_interval=args.sample_interval, realisations=args.realisations, progress=not args.quiet)
    write_path_outputs(tp, out, overwrite=True)
    s = tp.summary()
    logger.info("barrier along the path: umbrella/MBAR %.2f +- %.2f kJ/mol; reweighted campaign frames %.2f +- %.2f; "
                "smoothed latent FES %.2f. Relaxed structures: max bond deviation %.3f A, %d clashes. Decoder held-out "
                "RMSD: %s A. Outputs in %s", *s["umbrella_barrier_kjmol"], *s["reweighted_barrier_kjmol"],
                s["string"]["barrier_kjmol"], s["max_bond_deviation_angstrom"], s["clashes"],
                s["decoder_validation_rmsd_angstrom"], out)
    return 0


def add_path_parser(sub: Any) -> None:
    """Register the ``path`` subcommand."""
    p = sub.add_parser(
        "path", help="minimum free-energy path between two states, relaxed structures and an umbrella profile",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Find the minimum free-energy path between two states on the campaign's latent FES, decode "
                    "its nodes into structures (completed from the nearest sampled frames), relax each by restrained "
                    "MD at its node and use those runs as umbrella windows: writes path.pdb (one MODEL per node), "
                    "path.dcd, path.csv, profile.csv, profile.png and path.json.")
    p.add_argument("rundir", help="campaign run directory (finished: weights.csv and a model with a decoder)")
    p.add_argument("--from", dest="start", default="auto", help="start state: " + _ENDPOINTS)
    p.add_argument("--to", dest="end", default="auto", help="end state: " + _ENDPOINTS)
    p.add_argument("--nodes", type=int, default=16, help="nodes of the path (= structures = umbrella windows)")
    p.add_argument("--platform", default="Reference",
                   help="OpenMM platform for the restrained MD (named explicitly; Reference or CPU on a CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of the CPU platform (default: OpenMM's, every core); the windows are bitwise "
                        "reproducible only with the same --seed and thread count")
    p.add_argument("--force-constant", type=float, default=None,
                   help="umbrella force constant, kJ/mol per latent unit^2 (default: thermal width = half the node "
                        "spacing)")
    p.add_argument("--equilibration-steps", type=int, default=5000, help="MD steps discarded per window")
    p.add_argument("--production-steps", type=int, default=50000, help="MD steps sampled per window")
    p.add_argument("--sample-interval", type=int, default=50, help="steps between recorded samples")
    p.add_argument("--realisations", type=int, default=2,
                   help="independent runs of the windows (other MD seeds, same structures), pooled; their own "
                        "barriers must agree or a warning says the profile is not converged (1: no check)")
    p.add_argument("--bins", type=int, default=40, help="latent FES bins per dimension")
    p.add_argument("--smooth", type=float, default=1.0, help="Gaussian smoothing of the latent FES, bins")
    p.add_argument("--fixed-ends", action="store_true", help="keep the end nodes at --from/--to (default: they relax "
                   "to the nearest minimum)")
    p.add_argument("--sensitivity-samples", type=int, default=10, help="FES resamples for the path's sensitivity")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples for the error bars")
    p.add_argument("--seed", type=int, default=0, help="seed of the MD and the bootstrap")
    p.add_argument("--output", "-o", help="output folder (default: RUNDIR/path)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_path)
