"""A pocket campaign against an unbiased run of equal simulated time: openness distributions side by side.

    OMP_NUM_THREADS=1 python benchmarks/pocket_campaign.py examples/t4l_pocket_ci.toml RUNDIR [--markdown]

Runs (or resumes) the campaign of the config, then an unbiased Langevin run from the same starting structure,
with the same platform, integrator settings, seed and save interval, for as many MD steps as the campaign
simulated in all its rounds (round 0 included). Both sets of frames go through the campaign's openness measure
(:class:`latentbias.campaign.pocket.PocketMeasure`). Prints the openness distribution of each (raw frames: the
biased ones are *not* reweighted here — this is what each run visited) and the measured MD speed (ns/day) of the
unbiased run and of the campaign's rounds (from campaign.log, training excluded).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np


def unbiased_run(campaign, n_steps: int, save_interval: int) -> tuple[np.ndarray, float]:
    """Positions (nm) every save_interval steps of an unbiased run from the campaign's start; wall seconds of MD."""
    import openmm
    from openmm import unit

    from latentbias.campaign.simulate import make_simulation

    system, _, xyz = campaign.system()
    sim = make_simulation(campaign, openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system)),
                          campaign.cfg.md.seed)
    sim.context.setPositions(xyz * unit.nanometer)
    sim.context.setVelocitiesToTemperature(campaign.cfg.md.temperature * unit.kelvin, campaign.cfg.md.seed)
    frames = []
    t0 = time.perf_counter()
    for _ in range(n_steps // save_interval):
        sim.step(save_interval)
        frames.append(sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.asarray(frames), time.perf_counter() - t0


def campaign_speed(rundir: Path) -> list[tuple[int, float, float]]:
    """(round, simulated ps, wall s) of every round from campaign.log."""
    out = []
    for line in (rundir / "campaign.log").read_text().splitlines():
        m = re.search(r"round (\d+) simulated: \d+ segments, ([\d.]+) ps in (\d+) s", line)
        if m:
            out.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    return out


def describe(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.05, 0.5, 0.95])
    return {"frames": len(values), "min": values.min(), "q05": q[0], "median": q[1], "mean": values.mean(),
            "q95": q[2], "max": values.max()}


def figure(path: Path, campaign, frames, biased: np.ndarray, unbiased: np.ndarray) -> None:
    """Two panels: openness against MD step (campaign rounds and the unbiased run); the most open campaign frame's
    Cα trace with its cavity grid points (projected on the x-y plane after superposition on the start)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from latentbias.campaign.pocket import pocket_measure

    cfg = campaign.cfg
    scale = 1000.0 if cfg.pocket.measure == "volume" else 1.0
    unit = "Å³" if cfg.pocket.measure == "volume" else "nm"
    fig = Figure(figsize=(8.0, 3.3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    dt = cfg.campaign.save_interval * cfg.md.timestep / 1000.0
    t = np.arange(1, len(biased) + 1) * dt
    ax.plot(np.arange(1, len(unbiased) + 1) * dt, unbiased * scale, color="0.5", lw=1, label="unbiased")
    for r in np.unique(frames["round"]):
        sel = frames["round"] == r
        ax.plot(t[sel], biased[sel] * scale, lw=1, label=f"round {r}" + (" (unbiased)" if r == 0 else " (pocket)"))
    ax.set_xlabel("simulated time (ps)")
    ax.set_ylabel(f"cavity volume ({unit})")
    ax.legend(fontsize=6)
    ax.set_title("L99A cavity: campaign vs unbiased", fontsize=9)
    measure = pocket_measure(campaign)
    i = int(np.argmax(biased))
    xyz = measure.superpose(frames["positions"][i].astype(float))[0]
    pts = measure.cavity_points(xyz)
    ca = measure.topology.select("name CA")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(xyz[ca, 0], xyz[ca, 1], color="0.6", lw=0.7)
    lining = np.intersect1d(ca, measure.fit_atoms) if measure.fit_atoms is not None else ca[:0]
    ax2.scatter(xyz[lining, 0], xyz[lining, 1], s=10, color="tab:blue", label="lining Cα")
    ax2.scatter(pts[:, 0], pts[:, 1], s=2, color="tab:red", label=f"cavity points ({len(pts)})")
    ax2.set_aspect("equal")
    ax2.set_xlabel("x (nm)")
    ax2.set_ylabel("y (nm)")
    ax2.legend(fontsize=6, loc="lower left")
    ax2.set_title(f"most open frame: {biased[i] * scale:.0f} {unit}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    import openmm

    import latentbias
    from latentbias.campaign import Campaign, load_config
    from latentbias.campaign.pocket import pocket_measure

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("rundir")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--figure", help="write a two-panel PNG (openness vs time; most open frame with its cavity)")
    ap.add_argument("--unbiased-only", type=int, metavar="STEPS", default=0,
                    help="only the unbiased run, of STEPS steps (the campaign's planned total), into "
                         "RUNDIR/unbiased_openness.json; lets it run beside the campaign on another core")
    args = ap.parse_args()
    cfg = load_config(args.config)
    rundir = Path(args.rundir)
    if args.unbiased_only:
        from latentbias.campaign.systems import build_system

        class _Shim:  # what make_simulation and the measure need, without touching the run directory
            def __init__(self):
                self.cfg, self._s = cfg, build_system(cfg)

            def system(self):
                return self._s

        shim = _Shim()
        xyz, wall = unbiased_run(shim, args.unbiased_only, cfg.campaign.save_interval)
        from latentbias.campaign.pocket import PocketMeasure

        rundir.mkdir(parents=True, exist_ok=True)
        np.save(rundir / "unbiased_positions.npy", xyz.astype(np.float32))
        unbiased = PocketMeasure(cfg.pocket, shim.system()[1], reference=shim.system()[2])(xyz)
        (rundir / "unbiased_openness.json").write_text(json.dumps({"openness": unbiased.tolist(), "wall_s": wall,
                                                                   "steps": args.unbiased_only}))
        print(f"unbiased: {args.unbiased_only} steps in {wall:.0f} s; openness {describe(unbiased)}")
        return
    t0 = time.perf_counter()
    campaign = Campaign(cfg, rundir, progress=False)
    campaign.run()
    t_campaign = time.perf_counter() - t0
    frames = campaign.all_frames(campaign.last_round)
    n_steps = len(frames["step"]) * cfg.campaign.save_interval
    from latentbias.campaign.pocket import frames_openness

    biased = frames_openness(campaign, frames)
    cache = rundir / "unbiased_openness.json"
    if cache.is_file():
        ref = json.loads(cache.read_text())
        unbiased, wall = np.asarray(ref["openness"]), ref["wall_s"]
        if ref["steps"] != n_steps:
            raise SystemExit(f"{cache} holds an unbiased run of {ref['steps']} steps, the campaign simulated {n_steps}")
    else:
        xyz, wall = unbiased_run(campaign, n_steps, cfg.campaign.save_interval)
        unbiased = pocket_measure(campaign)(xyz)
        cache.write_text(json.dumps({"openness": unbiased.tolist(), "wall_s": wall, "steps": n_steps}))
    unit = cfg.pocket.unit
    ps = n_steps * cfg.md.timestep / 1000.0
    rows = [("unbiased", describe(unbiased)), ("pocket campaign (all rounds)", describe(biased)),
            ("pocket rounds only", describe(biased[frames["round"] > 0]))]
    print(f"{time.strftime('%Y-%m-%d')} · {platform.node()} · {platform.processor() or platform.machine()} · "
          f"latentbias {latentbias.__version__} · OpenMM {openmm.__version__} · platform {cfg.md.platform} "
          f"{cfg.md.platform_properties} · seed {cfg.md.seed} · {n_steps} steps = {ps:.1f} ps each")
    print()
    head = ["run"] + [f"{k} ({unit})" if k != "frames" else k for k in rows[0][1]]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
    else:
        print("  ".join(f"{h:>14s}" for h in head))
    for name, d in rows:
        vals = [f"{d['frames']:d}"] + [f"{d[k]:.4f}" for k in list(d)[1:]]
        print(("| " + " | ".join([name] + vals) + " |") if args.markdown else "  ".join(f"{v:>14s}" for v in [name] + vals))
    print()
    speed = campaign_speed(rundir)
    print(f"unbiased MD: {ps:.1f} ps in {wall:.0f} s wall = {ps / 1000 / wall * 86400:.3f} ns/day")
    for r, sim_ps, sec in speed:
        print(f"campaign round {r}: {sim_ps:.1f} ps in {sec:.0f} s wall = {sim_ps / 1000 / max(sec, 1) * 86400:.3f} ns/day")
    print(f"campaign wall time (this call, incl. training, openness, weights): {t_campaign:.0f} s")
    if args.figure:
        figure(Path(args.figure), campaign, frames, biased, unbiased)


if __name__ == "__main__":
    main()
