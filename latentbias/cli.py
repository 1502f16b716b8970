"""Command-line interface: ``latentbias train``, ``run``, ``report``, ``path``, ``pocket`` and ``info`` (``latentbias CMD --help``).

Examples
--------
Train a 2-D encoder on heavy-atom distances and inspect the model::

    latentbias train --topology ala2.pdb --traj run1.dcd run2.dcd --selection "element != H" \\
        --features distances --latent-dim 2 -o ala2.pt
    latentbias info ala2.pt
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger("latentbias.cli")

from .features import FEATURE_KINDS, build_featurizer
from .models import ACTIVATIONS
from .training import OBJECTIVES


def _load_trajectories(topology_file: str, paths: Sequence[str], stride: int) -> tuple[Any, list[Any]]:
    """(mdtraj.Topology, [mdtraj.Trajectory]) or SystemExit naming the file that cannot be read."""
    import mdtraj as md

    try:
        topology = md.load_topology(topology_file)
    except Exception as exc:
        raise SystemExit(f"error: cannot read topology {topology_file}: {exc}") from None
    trajs = []
    for path in paths:
        try:
            trajs.append(md.load(path, top=topology, stride=stride))
        except Exception as exc:
            raise SystemExit(f"error: cannot read trajectory {path} with topology {topology_file}: {exc}") from None
    return topology, trajs


def _cmd_train(args: argparse.Namespace) -> int:
    from .export import save_model
    from .training import LatentModelEstimator

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it")
    history_path = out.with_suffix(out.suffix + ".history.json")
    topology, trajs = _load_trajectories(args.topology, args.traj, args.stride)
    featurizer = build_featurizer(args.features, topology, args.selection, trajs[0], args.contact_r0)
    cvs = None
    if args.cv:
        cvs = _load_cvs(args.cv, trajs)
    estimator = LatentModelEstimator(
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        activation=args.activation,
        objective=args.objective,
        lag=args.lag,
        cv_dims=list(range(cvs.shape[1])) if cvs is not None else None,
        cv_weight=args.cv_weight,
        jacobian_penalty=args.jacobian_penalty,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        validation_fraction=args.validation_fraction,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    model, result = estimator.fit_trajectories(featurizer, trajs, cvs=cvs)
    save_model(model, out, training=result, dtype=args.dtype, overwrite=args.overwrite,
               extra={"topology": str(args.topology), "trajectories": [str(t) for t in args.traj],
                      "selection": args.selection, "features": list(args.features)})
    history_path.write_text(json.dumps(result.history, indent=1))
    best = result.best_epoch
    logger.info("wrote %s (val loss %.4g at epoch %d) and %s", out, result.history["val_loss"][best]
                if result.history["val_loss"] else result.history["train_loss"][best], best, history_path)
    return 0


def _load_cvs(spec: str, trajs):
    """CV values from a text/npy file with one row per frame (after stride)."""
    import numpy as np

    path = Path(spec)
    values = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2, delimiter=None)
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    n = sum(len(t) for t in trajs)
    if len(values) != n:
        raise SystemExit(f"error: {spec} has {len(values)} rows but the trajectories have {n} frames")
    return values


def _cmd_info(args: argparse.Namespace) -> int:
    from .export import load_model

    try:
        mf = load_model(args.model)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    meta = dict(mf.metadata)
    if args.json:
        sys.stdout.write(json.dumps(meta, indent=1) + "\n")
        return 0
    spec = meta.get("feature_spec", {})
    arch = meta.get("architecture", {})
    lines = [
        f"model           {mf.path}",
        f"format          {meta.get('format')} v{meta.get('format_version')} (latentbias {meta.get('latentbias_version')},"
        f" torch {meta.get('torch_version')})",
        f"created         {meta.get('created')}",
        f"n_atoms         {meta['n_atoms']} (reads {len(meta['atom_indices'])} of them)",
        f"features        {spec.get('type')} ({meta.get('n_features')} values)",
        f"encoder         {arch.get('n_features')} -> {arch.get('hidden')} -> {meta['latent_dim']} ({arch.get('activation')})",
        f"latent_dim      {meta['latent_dim']}",
        f"dtype           {meta.get('dtype')}",
        f"units           {json.dumps(meta.get('units'))}",
        f"training hash   {meta.get('training_data_hash')}",
    ]
    training = meta.get("training") or {}
    if training:
        final = ", ".join(f"{k}={v:.4g}" for k, v in training.get("final", {}).items())
        lines.append(f"training        {training.get('epochs_run')} epochs, best {training.get('best_epoch')}: {final}")
    if meta.get("extra"):
        lines.append(f"extra           {json.dumps(meta['extra'])}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .campaign import Campaign, ConfigError, RunDirError, load_config
    from .campaign.multiconfig import is_multi_config

    if is_multi_config(args.config):  # [systems]: wild type and mutants in one shared latent space
        return _run_multi(args)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    rundir = Path(args.rundir) if args.rundir else Path(args.config).with_suffix("")
    try:
        progress = Campaign(cfg, rundir, progress=not args.quiet).run()
    except (RunDirError, ConfigError) as exc:
        raise SystemExit(f"error: {exc}") from None
    logger.info("campaign finished in %s (%s)", rundir, progress)
    return 0


def _run_multi(args: argparse.Namespace) -> int:
    from .campaign import ConfigError, RunDirError
    from .campaign.multi import MultiCampaign
    from .campaign.multiconfig import load_multi_config

    try:
        cfg = load_multi_config(args.config)
        rundir = Path(args.rundir) if args.rundir else Path(args.config).with_suffix("")
        progress = MultiCampaign(cfg, rundir, progress=not args.quiet).run()
    except (ConfigError, RunDirError) as exc:
        raise SystemExit(f"error: {exc}") from None
    logger.info("multi-system campaign finished in %s (%s)", rundir, progress)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .campaign.compare import compare, parse_state_spec

    try:
        states = dict(parse_state_spec(s) for s in args.state) if args.state else None
        result = compare(args.rundirs, cvs=args.cv, states=states, basins=args.basins, bins=args.bins,
                         out=args.out)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    logger.info("wrote %s", result.out / "compare.md")
    return 0


def _cmd_remap(args: argparse.Namespace) -> int:
    from .remap import remap_model

    path = remap_model(args.model, args.model_topology, args.topology, args.output, overwrite=args.overwrite)
    logger.info("wrote %s", path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .campaign.report import parse_cv_spec, write_report

    try:
        cvs = [parse_cv_spec(spec) for spec in args.cv or []]
        path = write_report(args.rundir, cvs=cvs, overwrite=True)
    except ValueError as exc:  # bad --cv, damaged or unfinished run directory: the message names the fix
        raise SystemExit(f"error: {exc}") from None
    logger.info("wrote %s", path)
    return 0


def _cmd_pocket(args: argparse.Namespace) -> int:
    import numpy as np

    from .analysis.pockets import (CavityVolume, PocketRegion, atom_radii, group_distance, lining_sasa,
                                   write_pocket_pdb)
    from .io import write_csv

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it")
    topology, trajs = _load_trajectories(args.topology, args.traj, args.stride)
    traj = trajs[0].join(trajs[1:]) if len(trajs) > 1 else trajs[0]
    if (args.residues is None) == (args.selection is None):
        raise SystemExit("error: name the pocket with --residues (PDB numbers) or --selection (mdtraj), not both")
    region = PocketRegion.from_residues(topology, args.residues if args.residues is not None else args.selection,
                                        padding=args.padding)
    if not args.no_superpose:
        traj.superpose(traj, 0, atom_indices=region.atoms)  # keeps the region box aligned with the pocket
    measure = CavityVolume(region, atom_radii(topology), step=args.step, probe_in=args.probe_in,
                           probe_out=args.probe_out, removal_distance=args.removal_distance,
                           volume_cutoff=args.volume_cutoff)
    volume = measure(traj)
    columns = {"frame": np.arange(traj.n_frames), "time_ps": traj.time, "volume_nm3": volume,
               "volume_A3": volume * 1000.0}
    if args.groups:
        try:
            ga, gb = (topology.select(sel) for sel in args.groups)
        except Exception as exc:
            raise SystemExit(f"error: cannot parse --groups {args.groups}: {exc}") from None
        columns["distance_nm"] = group_distance(traj, ga, gb)
    if args.sasa:
        columns["lining_sasa_nm2"] = lining_sasa(traj, region.atoms)
    settings = ", ".join(f"{k}={v}" for k, v in measure.settings().items())
    write_csv(out, list(columns), np.column_stack(list(columns.values())), overwrite=args.overwrite,
              comment=f"latentbias pocket: {args.topology} {' '.join(args.traj)}; {settings}")
    logger.info("wrote %s (%d frames; volume %.1f-%.1f A^3)", out, traj.n_frames, volume.min() * 1e3,
                volume.max() * 1e3)
    order = np.argsort(-volume, kind="stable")[: args.most_open]
    for rank, frame in enumerate(order):
        pdb = out.with_name(f"{out.stem}_open{rank + 1}_frame{frame}.pdb")
        points = measure.cavity_points(traj.xyz[frame].astype(np.float64))
        write_pocket_pdb(pdb, topology, traj.xyz[frame], points, overwrite=args.overwrite)
        logger.info("wrote %s (%.1f A^3, %d cavity points as CAV pseudo-atoms)", pdb, volume[frame] * 1e3,
                    len(points))
    return 0


def _estimator_defaults() -> dict[str, Any]:
    """The defaults of LatentModelEstimator's keyword arguments: one source for the CLI and the library."""
    from .training import LatentModelEstimator

    return {name: p.default for name, p in inspect.signature(LatentModelEstimator.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentbias", description="Learn latent CVs and bias OpenMM simulations.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    d = _estimator_defaults()
    train = sub.add_parser("train", help="train an encoder on trajectories and export a model file",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                           description="Train an autoencoder (or time-lagged autoencoder) on features of "
                                       "trajectories and export the encoder as a model file (TorchScript + metadata). "
                                       "Defaults are those of latentbias.LatentModelEstimator.")
    train.add_argument("--topology", "-t", required=True, help="topology file mdtraj can read (PDB, prmtop, psf, ...)")
    train.add_argument("--traj", nargs="+", required=True, help="trajectory files (DCD, XTC, ...)")
    train.add_argument("--selection", "-s", default="element != H", help="mdtraj atom selection")
    train.add_argument("--features", "-f", nargs="+", choices=FEATURE_KINDS, default=["distances"],
                       help="feature kinds, concatenated in order")
    train.add_argument("--contact-r0", type=float, default=0.8, help="contact switching distance r0, nm")
    train.add_argument("--latent-dim", "-d", type=int, default=d["latent_dim"], help="number of latent dimensions")
    train.add_argument("--hidden", type=int, nargs="+", default=list(d["hidden"]), help="encoder hidden widths")
    train.add_argument("--activation", default=d["activation"], choices=sorted(ACTIVATIONS),
                       help="activation function (smooth ones give continuous forces; relu does not)")
    train.add_argument("--objective", default=d["objective"], choices=list(OBJECTIVES),
                       help="reconstruct the frame itself or the frame --lag later")
    train.add_argument("--lag", type=int, default=d["lag"], help="lag in frames (time-lagged objective)")
    train.add_argument("--cv", help="file with CV values (one row per frame after --stride, .txt/.npy): latent dims "
                                    "0..k-1 are anchored to its k columns, in the CVs' units")
    train.add_argument("--cv-weight", type=float, default=d["cv_weight"], help="weight of the CV-alignment loss")
    train.add_argument("--jacobian-penalty", type=float, default=d["jacobian_penalty"],
                       help="weight of the encoder smoothness term against folds (latentbias.jacobian_penalty); 0: off")
    train.add_argument("--epochs", type=int, default=d["epochs"], help="maximum number of epochs")
    train.add_argument("--batch-size", type=int, default=d["batch_size"], help="frames per minibatch")
    train.add_argument("--lr", type=float, default=d["learning_rate"], help="Adam learning rate")
    train.add_argument("--validation-fraction", type=float, default=d["validation_fraction"],
                       help="fraction of frames held out for validation / early stopping")
    train.add_argument("--patience", type=int, default=d["patience"],
                       help="stop after this many epochs without validation improvement")
    train.add_argument("--seed", type=int, default=d["seed"], help="random seed (equal seeds give identical models)")
    train.add_argument("--stride", type=int, default=1, help="read every n-th frame")
    train.add_argument("--device", default=d["device"], choices=["cpu", "cuda", "auto"], help="training device")
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="precision of the export")
    train.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    train.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    train.add_argument("--output", "-o", required=True, help="model file to write (*.pt)")
    train.set_defaults(func=_cmd_train)

    run = sub.add_parser("run", help="run or resume an adaptive sampling campaign from a TOML config",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("config", help="campaign config (TOML)")
    run.add_argument("--rundir", help="run directory (default: the config's name without .toml); resumed if present")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="write report.md + PNGs for a run directory",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    report.add_argument("rundir")
    report.add_argument("--cv", action="append", metavar="NAME:KIND:ATOMS",
                        help="extra CV to reweight, e.g. phi:dihedral:4,6,8,14 or d:distance:1,18 "
                             "(0-based atom indices); repeat for several")
    report.set_defaults(func=_cmd_report)

    cmp_ = sub.add_parser("compare", help="compare the systems of multi-system campaigns: per-system FES, dG of "
                                          "states, ddG(mutant - wild type) with error bars (compare.md + PNGs)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cmp_.add_argument("rundirs", nargs="+", metavar="RUNDIR",
                      help="finished multi-system run directories (several: independent seeds of one config)")
    cmp_.add_argument("--cv", action="append", metavar="NAME:KIND:ATOMS",
                      help="CV (atom indices of the first system), e.g. phi:dihedral:4,6,8,14; default: the "
                           "config's [compare] cvs")
    cmp_.add_argument("--state", action="append", metavar="NAME:VAR=lo,hi",
                      help="state as CV or latent ranges, e.g. C7ax:phi=0,120 or A:z0=-1,0:z1=0,1; default: the "
                           "config's [compare] states")
    cmp_.add_argument("--basins", type=int, help="add the N most populated basins of the pooled latent FES")
    cmp_.add_argument("--bins", type=int, help="FES bins per dimension (default: [compare] bins or 40)")
    cmp_.add_argument("--out", help="output folder (default: RUNDIR/compare of the first run directory)")
    cmp_.set_defaults(func=_cmd_compare)

    remap = sub.add_parser("remap", help="apply a model trained on one topology (e.g. protein only) to another "
                                         "(e.g. the solvated system) by matching atoms",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    remap.add_argument("model", help="model file trained on --model-topology")
    remap.add_argument("--model-topology", required=True, help="topology the model was trained on (PDB, prmtop, ...)")
    remap.add_argument("--topology", "-t", required=True, help="topology of the system to bias")
    remap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    remap.add_argument("--output", "-o", required=True, help="model file to write (*.pt)")
    remap.set_defaults(func=_cmd_remap)

    pocket = sub.add_parser("pocket", help="pocket openness per frame (cavity volume, optional distance/SASA) as "
                                           "CSV, and the most open frames as PDB with cavity pseudo-atoms",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Cavity volume of a pocket region per frame (KVFinder-style probe-in / "
                                        "probe-out grid; latentbias.analysis.pockets). Lengths in nm.")
    pocket.add_argument("topology", help="topology file mdtraj can read (PDB, prmtop, ...)")
    pocket.add_argument("traj", nargs="+", help="trajectory files (DCD, XTC, PDB, ...)")
    pocket.add_argument("--residues", type=int, nargs="+", help="pocket-lining residues (PDB numbers)")
    pocket.add_argument("--selection", help="pocket-lining atoms as an mdtraj selection (instead of --residues)")
    pocket.add_argument("--padding", type=float, default=0.0, help="added to the residues' box, nm")
    pocket.add_argument("--step", type=float, default=0.06, help="grid spacing, nm")
    pocket.add_argument("--probe-in", type=float, default=0.14, help="probe-in radius, nm")
    pocket.add_argument("--probe-out", type=float, default=0.4, help="probe-out radius, nm")
    pocket.add_argument("--removal-distance", type=float, default=0.24, help="removed cavity-bulk frontier, nm")
    pocket.add_argument("--volume-cutoff", type=float, default=0.005, help="smallest cavity fragment kept, nm^3")
    pocket.add_argument("--groups", nargs=2, metavar=("SEL_A", "SEL_B"),
                        help="also the centre-of-mass distance between two mdtraj selections (distance_nm)")
    pocket.add_argument("--sasa", action="store_true", help="also the SASA of the pocket-lining atoms (nm^2)")
    pocket.add_argument("--most-open", type=int, default=3, help="write this many most open frames as PDB")
    pocket.add_argument("--no-superpose", action="store_true",
                        help="do not superpose frames on the pocket atoms first (the box is axis-aligned)")
    pocket.add_argument("--stride", type=int, default=1, help="read every n-th frame")
    pocket.add_argument("--overwrite", action="store_true", help="replace existing output files")
    pocket.add_argument("--output", "-o", default="pocket.csv",
                        help="CSV to write; PDBs go next to it as <stem>_open<rank>_frame<i>.pdb")
    pocket.set_defaults(func=_cmd_pocket)

    from .pathway.cli import add_path_parser

    add_path_parser(sub)

    info = sub.add_parser("info", help="print a model file's metadata")
    info.add_argument("model")
    info.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
