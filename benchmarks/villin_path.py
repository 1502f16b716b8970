"""Villin HP35 (implicit solvent) end to end: a small campaign, then the transition-path workflow (issue 11).

A campaign on villin HP35 (openmm's test.pdb without water and ions, 582 atoms; amber99sbildn + OBC2, HBonds,
2 fs, 300 K) whose encoder reads the aligned backbone (N, CA, C, O: 140 atoms) and whose decoder returns it; one
unbiased round and one metadynamics round. Then `latentbias.pathway.transition_path` between the two lowest basins
of the latent FES: decoded backbones completed with the nearest sampled frame (hydrogens and side chains),
restrained relaxation at every node, umbrella windows, MBAR profile.

Prints side by side: decoder reconstruction RMSD (validation split of the last training; and decode(encode(x)) on
every 10th frame), barriers along the path (umbrella/MBAR, the campaign's own reweighted frames, the smoothed
latent FES at the nodes), physical checks of the structures before (rebuilt) and after relaxation, wall times.

Usage: OMP_NUM_THREADS=1 python benchmarks/villin_path.py [--steps 2000] [--nodes 6] [--production-steps 1000]
       [--equilibration-steps 200] [--minimize-iterations 500] [--out runs/villin_path] [--platform CPU]
Writes the run directory, path outputs (path.pdb, profile.png, ...) and summary.json under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

CONFIG = """
[system]
pdb = "{pdb}"
forcefield = ["amber99sbildn.xml"]
implicit_solvent = "amber99_obc.xml"
constraints = "HBonds"

[md]
platform = "{platform}"
platform_properties = {{ Threads = "1" }}
temperature = 300.0
timestep = 2.0
seed = {seed}

[features]
kind = ["aligned"]
selection = "backbone"

[model]
latent_dim = 2
hidden = [16, 16]
activation = "silu"
epochs = 30
patience = 10
learning_rate = 0.005

[campaign]
rounds = 2
round0_steps = {steps}
steps_per_round = {steps}
save_interval = 5
checkpoint_interval = 500
strategy = ["metadynamics"]

[metadynamics]
bias_factor = 10.0
height = 2.0
frequency = 25
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="MD steps of each of the two campaign rounds")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--production-steps", type=int, default=1000)
    ap.add_argument("--equilibration-steps", type=int, default=200)
    ap.add_argument("--sample-interval", type=int, default=10)
    ap.add_argument("--minimize-iterations", type=int, default=500)
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default="runs/villin_path")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from latentbias.campaign import Campaign, load_config
    from latentbias.pathway import reconstruction_rmsd, samples_from_rundir, transition_path, write_path_outputs
    from latentbias.pathway.checks import check_structure
    from latentbias.testsystems import villin_implicit_pdb

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pdb = villin_implicit_pdb(out / "villin.pdb")
    (out / "villin.toml").write_text(CONFIG.format(pdb=pdb.resolve().as_posix(), platform=args.platform,
                                                   steps=args.steps, seed=args.seed))
    t0 = time.perf_counter()
    Campaign(load_config(out / "villin.toml"), out / "run", progress=False).run()
    t_campaign = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = samples_from_rundir(out / "run")
    props = {"Threads": "1"} if args.platform == "CPU" else {}
    tp = transition_path(samples, "basin:0", "basin:1", n_nodes=args.nodes, bins=20, sensitivity_samples=5,
                         n_bootstrap=50, seed=args.seed, output_dir=out / "path" / "windows", platform=args.platform,
                         platform_properties=props, equilibration_steps=args.equilibration_steps,
                         production_steps=args.production_steps, sample_interval=args.sample_interval,
                         minimize_iterations=args.minimize_iterations)
    t_path = time.perf_counter() - t0
    write_path_outputs(tp, out / "path", overwrite=True)
    rec = reconstruction_rmsd(samples.model, samples.positions[::10])
    rebuilt = [check_structure(samples.system, samples.topology, x) for x in tp.rebuilt]
    s = tp.summary()
    rows = [
        ("frames (in the estimate)", f"{len(samples.z)} ({int(np.isfinite(samples.logweights).sum())})"),
        ("decoder validation RMSD (backbone, A)", f"{s['decoder_validation_rmsd_angstrom']:.2f}"),
        ("decode(encode(x)) RMSD, every 10th frame (A)", f"{rec.mean():.2f} (max {rec.max():.2f})"),
        ("barrier: umbrella / MBAR (kJ/mol)", "{:.2f} +- {:.2f}".format(*s["umbrella_barrier_kjmol"])),
        ("barrier: reweighted campaign frames (kJ/mol)", "{:.2f} +- {:.2f}".format(*s["reweighted_barrier_kjmol"])),
        ("barrier: smoothed latent FES at nodes (kJ/mol)",
         f"{s['string']['barrier_kjmol']:.2f} (resampled FES sd {s['string']['barrier_spread_kjmol']:.2f})"),
        ("rebuilt: max bond dev (A) / clashes",
         f"{max(c.max_bond_deviation for c in rebuilt) * 10:.3f} / {sum(c.n_clashes for c in rebuilt)}"),
        ("relaxed: max bond dev (A) / clashes", f"{s['max_bond_deviation_angstrom']:.3f} / {s['clashes']}"),
        ("all relaxed structures physical", str(s["all_physical"])),
        ("wall time: campaign / path (s)", f"{t_campaign:.0f} / {t_path:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nvillin HP35, {args.steps}+{args.steps} campaign steps, {args.nodes} nodes x "
          f"{args.production_steps} steps, platform {args.platform}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    summary = {**s, "reconstruction_rmsd_angstrom_mean": float(rec.mean()), "campaign_s": t_campaign,
               "path_s": t_path, "args": vars(args),
               "rebuilt_clashes": int(sum(c.n_clashes for c in rebuilt))}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
