"""Throughput of parallel walkers: simulated ns per wall-clock hour, 1 walker (in process) vs N walkers on Dask.

Runs the same small alanine-dipeptide campaign (vacuum, Reference platform, aligned heavy-atom features and
checkpoint segments as in examples/ala2_campaign.toml; one unbiased round 0 and one metadynamics round 1 with the
native LatentBiasForce) once with ``[execution] walkers = 1`` (the simulation runs
in the campaign's process) and once with ``walkers = N`` (default 2) on an embedded LocalCluster of N worker
processes, and prints the simulate phase of each round side by side: simulated time over all walkers, wall time,
ns per wall hour and the ratio. The walker figures include everything the campaign pays for parallelism:
cluster start-up (round 0), per-round system/model set-up on the workers, task transfer, the per-segment barrier
and the driver's commits. Training and weighting (on the driver) are not counted: they are the same for both.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/walkers.py [--walkers 2] [--steps 20000] [--repeats 1]

The machine's 1-minute load average is printed before and after each run: on a shared machine the ratio is only
meaningful when the load stays below the number of cores minus the walkers.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIG = """
[system]
testsystem = "alanine-dipeptide-vacuum"
constraints = "HBonds"

[md]
platform = "Reference"
temperature = 300.0
timestep = 2.0
seed = 11

[features]
kind = ["aligned"]
selection = "element != H"

[model]
latent_dim = 2
hidden = [16, 16]
epochs = 20
patience = 10

[campaign]
rounds = 2
round0_steps = {round0}
steps_per_round = {steps}
save_interval = 250
checkpoint_interval = {checkpoint}
strategy = "metadynamics"

[execution]
walkers = {walkers}
"""


def md_rate(steps: int) -> float:
    """Plain OpenMM MD of alanine dipeptide (Reference, no bias, no campaign): simulated ns per wall hour."""
    import openmm
    from openmm import unit

    from latentbias.testsystems import alanine_dipeptide_vacuum

    system, _, positions = alanine_dipeptide_vacuum()
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    integrator.step(100)
    t0 = time.perf_counter()
    integrator.step(steps)
    return steps * 0.002e-3 / (time.perf_counter() - t0) * 3600


def control(walkers: int, steps: int) -> tuple[float, float]:
    """What the machine gives right now: plain MD in this process vs ``walkers`` copies at once in the worker
    processes of the campaign's own LocalCluster (ns per wall hour, all copies together)."""
    from latentbias.campaign.config import from_dict
    from latentbias.campaign.execution import WalkerPool

    one = md_rate(steps)
    pool = WalkerPool(from_dict({"system": {"testsystem": "alanine-dipeptide-vacuum"},
                                 "execution": {"walkers": walkers}}).execution)
    try:
        pool.client().wait_for_workers(walkers)
        futures = [pool.submit(md_rate, steps, key=f"control-{i}") for i in range(walkers)]
        many = sum(pool.client().gather(futures))
    finally:
        pool.close()
    return one, many


def run(walkers: int, steps: int, checkpoint: int, folder: Path) -> list[dict[str, Any]]:
    from latentbias.campaign.config import load_config
    from latentbias.campaign.loop import Campaign

    timings: list[dict[str, Any]] = []

    class Timed(Campaign):
        def _simulate(self, r: int, progress: dict[str, Any]) -> dict[str, Any]:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = super()._simulate(r, progress)
            n_steps = self.cfg.campaign.round0_steps if r == 0 else self.cfg.campaign.steps_per_round
            timings.append({"round": r, "walkers": walkers, "wall_s": time.perf_counter() - t0,
                            "sim_ns": walkers * n_steps * self.cfg.md.timestep * 1e-6, "load_before": load,
                            "load_after": os.getloadavg()[0]})
            return out

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(CONFIG.format(round0=steps // 2, steps=steps, checkpoint=checkpoint,
                                                      walkers=walkers))
    Timed(load_config(folder / "config.toml"), folder / "run", progress=False).run()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100000, help="MD steps of round 1 per walker (round 0: half)")
    parser.add_argument("--checkpoint", type=int, default=25000,
                        help="steps per checkpoint segment (examples/ala2_campaign.toml: 25000)")
    parser.add_argument("--repeats", type=int, default=2, help="1-walker and N-walker runs alternate")
    args = parser.parse_args()

    import openmm

    import latentbias

    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; {platform.node()}, {os.cpu_count()} cores; "
          f"latentbias {latentbias.__version__}, OpenMM {openmm.__version__}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    rows = []
    controls = [control(args.walkers, args.steps) for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory(prefix="latentbias-walkers-bench-") as tmp:
        for rep in range(args.repeats):
            for n in (1, args.walkers):
                rows += run(n, args.steps, args.checkpoint, Path(tmp) / f"w{n}_{rep}")
    print(f"{'round':>5} {'walkers':>7} {'sim ps':>8} {'wall s':>8} {'ns/hour':>8} {'vs 1':>6} "
          f"{'load before/after':>18}")
    for row in rows:
        base = [b for b in rows if b["round"] == row["round"] and b["walkers"] == 1]
        rate = row["sim_ns"] / row["wall_s"] * 3600
        ref = sum(b["sim_ns"] / b["wall_s"] * 3600 for b in base) / len(base)
        print(f"{row['round']:>5} {row['walkers']:>7} {row['sim_ns'] * 1000:>8.1f} {row['wall_s']:>8.1f} {rate:>8.2f} "
              f"{rate / ref:>6.2f} {row['load_before']:>8.2f} / {row['load_after']:<8.2f}")
    print(f"control (plain MD, {args.steps} steps, no campaign): 1 process vs {args.walkers} worker processes at once, "
          "ns/hour: " + "; ".join(f"{one:.1f} vs {many:.1f} ({many / one:.2f}x)" for one, many in controls))


if __name__ == "__main__":
    main()
