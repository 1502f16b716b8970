"""Tabulate finished ala2 demo runs (``examples/ala2_campaign.py --rundir RUNDIR --seeds ...``) for the converge
phase's latent round-trip rule (issue 8 items 3 and 6): per seed ΔF(C7ax − rest) ± the demo's stated 1σ, the
sampler's own count of round trips across the slowest split of its latent basins (minimum cut; whether the budget ended the run
first), φ-space transitions and C7ax entries (evaluation only: φ is never seen by the sampler), how the converge
phase ended, its length, the simulated time of the campaign, and which φ region each latent core holds (fraction
of the converge frames in core 0 / core 1 whose φ lies in C7ax, 0° < φ < 120°); with the structural count
(``[converge] structural_states``), its round trips and the C7ax share of its bottleneck microstates' cores. Ends with the 1σ/2σ coverage of the
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
        if "structural_states" in plan:  # which φ region the structural bottleneck is (microstates re-clustered)
            row.update(_structural_bottleneck(campaign, last, plan, phi[sel][order]))
        row["structural"] = info.get("structural_round_trips")
        rows.append(row)
    return rows


def _structural_bottleneck(campaign, last: int, plan: dict, phi_conv: np.ndarray) -> dict:
    """C7ax share of the converge frames (all of them, time order) in the cores of the structural bottleneck
    microstates and of the other microstates taking part, as the converge phase's last check clustered them."""
    sys.path.insert(0, str(ROOT / "examples"))
    from ala2_campaign import in_c7ax  # noqa: E402

    from latentbias.campaign import structuralstates as ss
    from latentbias.campaign.converge import _converge_frames, _used
    from latentbias.campaign.weights import converge_logweights

    cfg, rd = campaign.cfg, campaign.run_dir
    conv = _converge_frames(rd, last, rd.round_segments(last))
    use = _used(cfg, conv)
    stored = rd.read_npz(rd.round_dir(last) / plan["structural_states"]["file"])
    xc = ss._features(campaign.featurizer(), conv)
    x = np.concatenate([stored["features"], xc])
    n0 = len(stored["features"])
    lw = converge_logweights(conv, cfg.md.temperature, use)
    st = ss.microstates(x, [(np.arange(len(x)) < n0, np.concatenate([stored["logweight"], np.full(len(xc), -np.inf)])),
                            (np.arange(len(x)) >= n0, np.concatenate([np.full(n0, -np.inf), lw]))],
                        int(plan["structural_states"]["n_states"]), ss._SEED)
    part = st.taking_part(cfg.md.temperature, cfg.converge.fes_cutoff, cfg.converge.basin_min_frames)
    out = ss.structural_round_trips(st, xc[use], conv["walker"][use], part)
    core = st.assign(xc)
    ax = in_c7ax(phi_conv)
    bott = np.isin(core, out["bottleneck"])
    rest = np.isin(core, [k for k in part if k not in out["bottleneck"]])
    c7ax_states = [k for k in part if np.any(core == k) and ax[core == k].mean() > 0.5]
    return {"struct_bottleneck_c7ax": float(ax[bott].mean()) if bott.any() else float("nan"),
            "struct_rest_c7ax": float(ax[rest].mean()) if rest.any() else float("nan"),
            "struct_c7ax_states": len(c7ax_states), "struct_counted": len(part)}


def print_table(rows: list[dict]) -> None:
    print("| seed | ΔF ± 1σ (kJ/mol) | \\|ΔF − ref\\| | latent round trips (needed) | structural round trips (needed); "
          "C7ax share of the bottleneck / other microstates' cores; microstates (C7ax) | φ transitions | C7ax entries "
          "| C7ax share of latent core 0 / core 1 | transitions into and out of every latent basin k (C7ax share of "
          "core k) | converge phase | simulated | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
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
        st = r.get("structural")
        struct = "–" if st is None else (
            f"{st['round_trips']} ({st['required']})" + ("" if st["enough"] else " **budget ended first**")
            + f"; {r.get('struct_bottleneck_c7ax', float('nan')):.2f} / {r.get('struct_rest_c7ax', float('nan')):.2f}"
            + f"; {r.get('struct_counted', '?')} ({r.get('struct_c7ax_states', '?')})")
        dev = f"{abs(r['dF'] - REF_DF):.2f}" if "dF" in r else "–"
        print(f"| {r['seed']} | {df} | {dev} | {trips} | {struct} | {r.get('phi_transitions', 0)} | {r['entries']} | "
              f"{share} | {every} | {r['end']}, {r['converge_ns']:.2f} ns | {r['simulated_ns']:.2f} ns | "
              f"{r['wall_min']:.1f} min |")
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
