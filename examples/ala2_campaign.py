"""The main demo: an adaptive latent-space campaign on alanine dipeptide that finds C7ax without being told φ/ψ,
then a converge phase whose frames give ΔF(C7ax − rest) with an error bar.

Runs (or resumes) ``examples/ala2_campaign.toml`` once per seed (default one seed, 2024; several run in parallel,
one per core): round 0 is unbiased in C7eq, 4 exploration rounds run well-tempered metadynamics in the latent space
of an encoder retrained on all frames so far (aligned heavy-atom coordinates only), then OPES in the frozen last
encoder runs for 7.9 ns (the rest of the 10 ns budget; its latent and structural round-trip counts and the drift
of its estimate are reported). Using φ only for evaluation, it prints when C7ax (0° < φ < 120°) was first
reached, each campaign's ΔF = F(C7ax) − F(rest) with its error (the largest of block bootstrap, round-trip
bootstrap and two-state bound 2kT/√K), the reweighted φ/ψ FES against the reference (RMSE and coverage), the
combined value (with several seeds: the spread of the independent campaigns, Student t), and writes each
campaign's report with φ/ψ FES.

Run:  python examples/ala2_campaign.py [--rundir runs/ala2] [--seeds 2024 ...] [--jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PHI = "phi:dihedral:4,6,8,14"   # evaluation only: the sampler never sees these
PSI = "psi:dihedral:6,8,14,16"
REFERENCE_FES = HERE / "reference" / "ala2_ff96_phipsi_fes.npz"  # the same runs' FES, [phi, psi] on 5-degree cells
REFERENCE_DF_FILE = HERE / "reference" / "ala2_ff96_phipsi_dF.json"  # 4 x 20 ns openmm.app.Metadynamics on phi/psi


def in_c7ax(phi: np.ndarray) -> np.ndarray:
    return (phi > 0) & (phi < 120)


def c7ax_core(phi: np.ndarray) -> np.ndarray:
    return (phi > 20) & (phi < 100)


def rest_core(phi: np.ndarray) -> np.ndarray:
    return phi < -40


def c7ax_entries(phi: np.ndarray) -> int:
    """Independent C7ax visits in a time-ordered series of φ (degrees): entries into the core 20° < φ < 100° after
    the last stay in the core φ < −40° (core sets, so recrossings of the barrier do not count). ΔF is only as good
    as this number: a run with 3 visits holds ~3 independent samples of the C7ax population, whatever its frame
    count, and its block-bootstrap error does not know it (benchmarks/RESULTS.md, 2026-11-30 demoacc)."""
    state, entries = None, 0
    for x in phi:
        if 20 < x < 100:
            entries += state == "rest"
            state = "ax"
        elif x < -40:
            state = "rest"
    return int(entries)


def run_one(config: str, rundir: str, seed: int, quiet: bool) -> None:
    from latentbias.campaign import Campaign, load_config

    cfg = load_config(config)
    cfg = dataclasses.replace(cfg, md=dataclasses.replace(cfg.md, seed=seed))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [seed {seed}] %(message)s", datefmt="%H:%M:%S")
    t0 = time.perf_counter()
    Campaign(cfg, rundir, progress=not quiet).run()
    Path(rundir, "demo_wall_s.json").write_text(json.dumps({"wall_s": time.perf_counter() - t0}))


def phi_of(rundir: str | Path) -> np.ndarray:
    """φ in degrees of every frame of a campaign (evaluation only)."""
    return phipsi_of(rundir)[:, 0]


def phipsi_of(rundir: str | Path) -> np.ndarray:
    """(n_frames, 2) φ, ψ in degrees of every frame of a campaign (evaluation only)."""
    from latentbias.campaign.report import load_campaign, compute_cvs, parse_cv_spec

    campaign, last = load_campaign(Path(rundir))
    cvs = compute_cvs(campaign, last, [parse_cv_spec(PHI), parse_cv_spec(PSI)])
    return np.stack([cvs["phi"], cvs["psi"]], axis=1)


def fes_against_reference(angles: list[np.ndarray], logweights: list[np.ndarray], temperature: float) -> str:
    """The reweighted φ/ψ FES of one or more campaigns against the reference (issue 8's measure: 15° bins, region
    below 25 kJ/mol, best offset removed; latentbias.analysis.compare_periodic_fes)."""
    from latentbias.analysis import compare_periodic_fes

    ref = np.load(REFERENCE_FES)
    return str(compare_periodic_fes(angles, logweights, ref["fes_kjmol"], ref["phi_deg"], temperature))


def summarize(rundirs: list[Path], temperature: float) -> None:
    from latentbias.campaign.estimate import campaign_basin_estimate, final_weights
    from latentbias.campaign.report import load_campaign, parse_cv_spec, write_report

    print()
    total_ns = 0.0
    fes_runs: list[tuple[np.ndarray, np.ndarray]] = []
    angles_of: dict[str, np.ndarray] = {}  # φ/ψ of each campaign, computed once
    for rundir in rundirs:
        campaign, last = load_campaign(rundir)
        frames = campaign.all_frames(last)
        cfg = campaign.cfg
        dt_ns = cfg.md.timestep * 1e-6
        steps = [campaign.run_dir.round_segments(r) * cfg.campaign.checkpoint_interval for r in range(last + 1)]
        offset = np.cumsum([0] + steps[:-1])
        simulated = (offset[frames["round"]] + frames["step"]) * dt_ns
        total_ns += sum(steps) * dt_ns
        angles = angles_of[str(rundir)] = phipsi_of(rundir)
        phi = angles[:, 0]
        hit = np.flatnonzero(in_c7ax(phi))
        weights = json.loads((rundir / "weights.json").read_text())
        wall = json.loads((rundir / "demo_wall_s.json").read_text())["wall_s"] if (rundir / "demo_wall_s.json").is_file() else float("nan")
        first = (f"C7ax first reached in round {frames['round'][hit[0]]} at {simulated[hit[0]]:.3f} ns" if len(hit)
                 else "C7ax never reached")
        print(f"{rundir}: {sum(steps) * dt_ns:.2f} ns simulated in {wall / 60:.1f} min; {first}; converge phase "
              f"{weights.get('converge_ps', 0) / 1000:.2f} ns ({weights.get('converge_end', '-')}), "
              f"{weights['frames_used']} frames in the estimate")
        if "warning" in weights:
            print(f"    WARNING: {weights['warning']}")
        for a in weights.get("converge_attempts", [])[:-1]:  # attempts that went back to retraining
            print(f"    converge attempt in round {a['round']} (encoder of round {a['model_round']}): ended after "
                  f"{a['ps']:.0f} ps, {a['ended']} (OOD fraction up to {a['max_segment_ood_fraction']:.2f}); "
                  f"its frames are not in the estimate")
        # the estimate against simulated time (converge frames after the burn-in, up to t)
        table = final_weights(rundir)
        used = np.flatnonzero(np.isfinite(table["logweight"]))
        row = []
        for frac in (0.25, 0.5, 0.75, 1.0):
            sel = used[: max(2, int(frac * len(used)))]
            w = np.exp(table["logweight"][sel] - table["logweight"][sel].max())
            b = in_c7ax(phi[sel])
            kt = 0.0083144626 * temperature
            df = -kt * np.log(w[b].sum() / w[~b].sum()) if w[b].sum() > 0 else float("nan")
            row.append(f"{table['time_ps'][sel[-1]] / 1000:.2f} ns: {df:.1f}")
        print("    dF(C7ax - rest) against converge-phase time: " + ", ".join(row))
        print(f"    independent C7ax visits in the estimate (core-set entries, phi for evaluation only): "
              f"{c7ax_entries(phi[used])}")
        fes_runs.append((angles, table["logweight"]))
        print(f"    reweighted phi/psi FES against the reference: "
              f"{fes_against_reference([angles], [table['logweight']], temperature)}")
        w_used = np.exp(table["logweight"][used] - table["logweight"][used].max())
        c7 = in_c7ax(phi[used])
        if w_used[c7].sum() > 0:  # does the encoder describe C7ax? (phi for evaluation only; benchmarks/RESULTS.md)
            share = w_used[c7 & (table["ood"][used] > 0)].sum() / w_used[c7].sum()
            print(f"    C7ax's weight in frames its encoder never saw (out of distribution): {100 * share:.0f} %"
                  + (" -- more than half: the latent space does not describe C7ax (do not trust latent paths or "
                     "basins there; the reweighted estimate itself stays valid)" if share > 0.5 else ""))
        write_report(rundir, cvs=[parse_cv_spec(PHI), parse_cv_spec(PSI)])
    def phi_cached(rundir: str | Path) -> np.ndarray:
        return angles_of[str(rundir)][:, 0]

    usable = []
    for rundir, (_, logweight) in zip(rundirs, fes_runs):  # a campaign whose converge phase never visited C7ax
        if in_c7ax(phi_cached(rundir)[np.isfinite(logweight)]).any():  # has no estimate of its own
            usable.append(rundir)
        else:
            print(f"  {rundir}: no converge-phase frame in C7ax: no estimate (left out of the combined value)")
    if not usable:
        print("\nno campaign sampled C7ax in its converge phase: no dF; increase rounds or [converge] max_steps")
        return
    result = campaign_basin_estimate(usable, phi_cached, lambda p: ~in_c7ax(p), in_c7ax, temperature,
                                     core_a=rest_core, core_b=c7ax_core)
    for r in result.runs:
        how = f"block bootstrap {r['bootstrap_error']:.2f} over {r['blocks']} blocks of {r['frames_used']} frames"
        if r["transitions"] is not None:  # OPES/metadynamics converge phase: visits count too (the larger error)
            how += (f"; {r['transitions']} transitions: round-trip bootstrap {r['round_trip_error']:.2f} over "
                    f"{r['round_trips']} stretches, two-state bound 2kT/sqrt(K) {r['two_state_error']:.2f}")
        print(f"  {r['rundir']}: dF = {r['value']:.2f} +- {r['error']:.2f} kJ/mol ({how})")
        lrt = r["latent_round_trips"]
        if lrt is not None:  # the sampler's own count (latent basins; no phi/psi)
            print(f"    latent round trips across the slowest split of the latent basins (minimum cut): "
                  f"{lrt['round_trips']} (needed {lrt['required']}; bottleneck basin(s) {lrt.get('bottleneck', '?')} "
                  f"of {lrt.get('counted', '?')} taking part, {lrt['basins']} latent basins)"
                  + ("" if lrt["enough"] else " -- NOT ENOUGH: the budget ended the converge phase first"))
        srt = r.get("structural_round_trips")
        if srt is not None:  # the sampler's count on input-feature microstates (states the latent space may merge)
            print(f"    structural round trips across the slowest split of {len(srt['counted'])} input-feature "
                  f"microstates (minimum cut): {srt['round_trips']} (needed {srt['required']})"
                  + ("" if srt["enough"] else " -- NOT ENOUGH: the budget ended the converge phase first"))
        if r.get("sampler_transitions") is not None:
            print(f"    two-state bound uses K = min({r['transitions']} phi transitions, the sampler's smaller count "
                  f"{r['sampler_transitions']})")
    est = result.estimate
    if est.method == "replicas":
        how = f"spread of {est.n_independent} independent campaigns (Student t, {est.dof:.0f} dof)"
    else:  # one campaign: the largest of its block bootstrap and what its number of C7ax visits allows
        r = result.runs[0]
        how = f"one campaign, {r['blocks']} bootstrap blocks"
        if r["transitions"] is not None:
            how += (f", {r['transitions']} transitions C7eq/C5 <-> C7ax in {r['round_trips']} round trips; the error "
                    "is the largest of block bootstrap, round-trip bootstrap and two-state bound")
    print(f"\ndF = F(C7ax: 0 < phi < 120 deg) - F(rest) = {est.value:.2f} +- {est.error:.2f} kJ/mol "
          f"({how}); {total_ns:.2f} ns simulated in all")
    ref = json.loads(REFERENCE_DF_FILE.read_text())
    ref_df, ref_sem = ref["dF_c7ax_minus_rest_fes_mean_kjmol"], ref["dF_c7ax_minus_rest_fes_sem_kjmol"]
    print(f"reference ({ref['n_runs']} x {ref['simulated_ns_total'] / ref['n_runs']:g} ns openmm.app.Metadynamics on "
          f"phi/psi, examples/reference): {ref_df:.2f} +- {ref_sem:.2f} kJ/mol; difference {est.value - ref_df:+.2f} kJ/mol")
    if len(fes_runs) > 1:
        print(f"reweighted phi/psi FES of the {len(fes_runs)} campaigns together (each weighted equally) against the "
              f"reference: {fes_against_reference([a for a, _ in fes_runs], [w for _, w in fes_runs], temperature)}")
    print("(FES: 15 deg bins over the region where the reference is below 25 kJ/mol, best constant offset removed; "
          "issue 8's target is RMSE <= 1.5 kJ/mol; with 0.25 ps converge frames seeds 2024-2026 gave 1.19, 2.98, "
          "1.45: README, Demo results)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "ala2_campaign.toml"))
    parser.add_argument("--rundir", default="runs/ala2", help="parent folder: one seed_<seed> run per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024],
                        help="one campaign per seed; the default config spends the 10 ns budget in one campaign")
    parser.add_argument("--jobs", type=int, default=2, help="campaigns run at once (one core each)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single is not None:
        run_one(args.config, str(Path(args.rundir) / f"seed_{args.single}"), args.single, args.quiet)
        return
    t0 = time.perf_counter()
    pending = list(args.seeds)
    running: list[subprocess.Popen] = []
    env_cmd = [sys.executable, __file__, "--config", args.config, "--rundir", args.rundir, "--quiet"]
    # one core per campaign, and one BLAS thread: numpy's thread count changes the last bits of some sums, which MD
    # amplifies (seed 2024 diverged after 1.38 M converge steps between OMP_NUM_THREADS=1 and the default), so
    # pinning it makes a seed's campaign the same whatever the caller's environment
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    while pending or running:
        while pending and len(running) < args.jobs:
            running.append(subprocess.Popen(env_cmd + ["--single", str(pending.pop(0))], env=env))
        time.sleep(2)
        for p in list(running):
            if p.poll() is not None:
                running.remove(p)
                if p.returncode:
                    raise SystemExit(f"campaign {p.args[-1]} failed (exit {p.returncode}); see its campaign.log")
    print(f"\n{len(args.seeds)} campaign(s) finished in {(time.perf_counter() - t0) / 60:.1f} min wall time")
    from latentbias.campaign import load_config

    summarize([Path(args.rundir) / f"seed_{s}" for s in args.seeds], load_config(args.config).md.temperature)


if __name__ == "__main__":
    main()
