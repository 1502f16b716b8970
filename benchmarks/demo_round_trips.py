"""Tabulate finished ala2 demo runs (``examples/ala2_campaign.py --rundir RUNDIR --seeds ...``) for the converge
phase's latent round-trip rule (issue 8 items 3 and 6): per seed ΔF(C7ax − rest) ± the demo's stated 1σ, the
sampler's own count of round trips across the slowest split of its latent basins (minimum cut; whether the budget ended the run
first), φ-space transitions and C7ax entries (evaluation only: φ is never seen by the sampler), how the converge
phase ended, its length, the simulated time of the campaign, and which φ region each latent core holds (fraction
of the converge frames in core 0 / core 1 whose φ lies in C7ax, 0° < φ < 120°). Ends with the 1σ/2σ coverage of the
reference 11.73 kJ/mol.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/demo_round_trips.py RUNDIR [--seeds 2024 2025 ...] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REF_DF = 11.73


def tabulate(rundir: Path, seeds: list[int]) -> list[dict]:
    sys.path.insert(0, str(ROOT / "examples"))
    from ala2_campaign import c7ax_core, c7ax_entries, in_c7ax, phi_of, rest_core  # noqa: E402

    from latentbias.campaign.converge import _converge_frames
    from latentbias.campaign.estimate import campaign_basin_estimate, final_weights
    from latentbias.campaign.report import load_campaign
    from latentbias.campaign.roundtrips import LatentCores, latent_round_trips

    rows = []
    for seed in seeds:
        rd = rundir / f"seed_{seed}"
        if not (rd / "weights.json").is_file() or not json.loads((rd / "progress.json").read_text())["finished"]:
            rows.append({"seed": seed, "missing": True})
            continue
        campaign, last = load_campaign(rd)
        cfg = campaign.cfg
        dt_ns = cfg.md.timestep * 1e-6
        steps = [campaign.run_dir.round_segments(r) * cfg.campaign.checkpoint_interval for r in range(last + 1)]
        info = json.loads((rd / "weights.json").read_text())
        phi = phi_of(rd)
        table = final_weights(rd)
        used = np.isfinite(table["logweight"])
        row = {"seed": seed, "simulated_ns": float(sum(steps) * dt_ns), "converge_ns": info["converge_ps"] / 1000,
               "end": info["converge_end"], "latent": info.get("latent_round_trips"),
               "entries": c7ax_entries(phi[used]), "warning": info.get("warning")}
        wall = rd / "demo_wall_s.json"
        row["wall_min"] = json.loads(wall.read_text())["wall_s"] / 60 if wall.is_file() else float("nan")
        if in_c7ax(phi[used]).any():
            r = campaign_basin_estimate([rd], phi_of, lambda p: ~in_c7ax(p), in_c7ax, cfg.md.temperature,
                                        core_a=rest_core, core_b=c7ax_core).runs[0]
            row.update(dF=r["value"], err=r["error"], phi_transitions=r["transitions"])
        plan = campaign.run_dir.read_plan(last)
        if "round_trip_cores" in plan:  # φ content of the latent cores over the converge frames (all of them)
            cores = LatentCores.from_dict(plan["round_trip_cores"])
            conv = _converge_frames(campaign.run_dir, last, campaign.run_dir.round_segments(last))
            # the converge frames in time order; φ of the same frames (weights.csv order = segment order per round)
            sel = np.flatnonzero(table["round"] == last)
            order = np.lexsort((np.zeros(len(sel)), table["step"][sel]))
            lab = cores.assign(conv["z"])
            ax = in_c7ax(phi[sel][order])
            row["core_c7ax"] = [float(ax[lab == k].mean()) if np.any(lab == k) else float("nan")
                                for k in range(min(2, cores.n_basins))]
            row["latent_minima_kjmol"] = cores.free_energies.tolist()
            # transitions into and out of every latent basin's core (frames after the burn-in; all basins counted)
            t = conv["time_ps"]
            after = (t >= t.min() + cfg.converge.burn_in * (t.max() - t.min())) & (conv["scale"] > 0)
            every = latent_round_trips(cores, conv["z"][after], conv["walker"][after])
            row["all_basins_transitions"] = every["basin_transitions"]
            # C7ax share of every latent core (which core, if any, is C7ax)
            row["core_c7ax_all"] = [float(ax[lab == k].mean()) if np.any(lab == k) else float("nan")
                                    for k in range(cores.n_basins)]
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print("| seed | ΔF ± 1σ (kJ/mol) | latent round trips (needed) | φ transitions | C7ax entries | C7ax share of latent "
          "core 0 / core 1 | transitions into and out of every latent basin k (C7ax share of core k) | converge phase | "
          "simulated | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cover1 = cover2 = n = 0
    for r in rows:
        if r.get("missing"):
            print(f"| {r['seed']} | (not finished) ||||||||")
            continue
        lat = r["latent"]
        trips = "–" if lat is None else (f"{lat['round_trips']} ({lat['required']})"
                                          + ("" if lat["enough"] else " **budget ended first**"))
        df = f"{r['dF']:.2f} ± {r['err']:.2f}" if "dF" in r else "none (no C7ax frame used)"
        share = " / ".join(f"{x:.2f}" for x in r.get("core_c7ax", [])) or "–"
        every = ", ".join(f"{k}: {n} ({x:.2f})" for k, (n, x) in
                          enumerate(zip(r.get("all_basins_transitions", []), r.get("core_c7ax_all", [])))) or "–"
        if lat is not None and "bottleneck" in lat:
            trips += f", bottleneck {lat['bottleneck']} of {lat['counted']}"
        print(f"| {r['seed']} | {df} | {trips} | {r.get('phi_transitions', 0)} | {r['entries']} | {share} | {every} | "
              f"{r['end']}, {r['converge_ns']:.2f} ns | {r['simulated_ns']:.2f} ns | {r['wall_min']:.1f} min |")
        if "dF" in r:
            n += 1
            dev = abs(r["dF"] - REF_DF)
            cover1 += dev <= r["err"]
            cover2 += dev <= 2 * r["err"]
    vals = np.array([r["dF"] for r in rows if "dF" in r])
    if len(vals):
        print(f"\n1σ covers {REF_DF} in {cover1}/{n}, 2σ in {cover2}/{n}; |ΔF − {REF_DF}| ≤ 1 kJ/mol in "
              f"{int(np.sum(np.abs(vals - REF_DF) <= 1))}/{n}; mean {vals.mean():.2f}, sd "
              f"{vals.std(ddof=1) if len(vals) > 1 else float('nan'):.2f} kJ/mol over {n} seeds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rundir", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026, 2027, 2028, 2029])
    args = p.parse_args()
    rows = tabulate(args.rundir, args.seeds)
    (args.rundir / "round_trips_table.json").write_text(json.dumps(rows, indent=1, default=str))
    print_table(rows)


if __name__ == "__main__":
    main()
