"""How stiff the final latent bias of finished ala/gly campaigns is, and how folded their encoder (issue 12,
``[model] jacobian_penalty``).

For each ``RUNDIR:system`` (a finished ``examples/ala_gly_compare.toml`` campaign, e.g. from
``benchmarks/mutant_ddg.py``) it loads the frozen converge-phase OPES bias and encoder (as
``benchmarks/timestep_latent_bias.py`` does) and the frames of the last four converge segments, and prints:

- the largest per-atom bias force over those frames (median / 99th percentile / max, kJ/mol/nm);
- omega_max of the bias (``latentbias.bias.stiffness.check_timestep``: power iteration on the mass-weighted Hessian
  of the bias forces at the 3 frames of largest bias force, 1/ps) against the force field's at the same frames,
  and omega * dt at 2 fs;
- the encoder's Cartesian Jacobian |dz_k/dr_i| (largest over latent dimensions k and atoms i per frame, in latent
  ranges per nm, the range being the converge grid's extent of z_k: OPES kernel widths are fractions of it), median
  / 99th percentile / max over the frames;
- the fold measure of the shared encoder (``latentbias.jacobian_penalty.fold_measure``) on its own training frames,
  as stored in ``shared/round_NNN/model.json`` when the run was made with a version that records it;
- the number of stiffness warnings the campaign logged (both systems: the multi-system log).

    OMP_NUM_THREADS=1 python benchmarks/jacobian_penalty_stiffness.py /tmp/runs/seed1:ala /tmp/runs/seed1:gly
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def encoder_jacobian(model_file: Path, frames: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Per frame, max over latent dimensions k and atoms i of |dz_k/dr_i| / range_k (1/nm), shape=(n_frames,)."""
    import torch

    m = torch.jit.load(str(model_file))
    out = []
    for x in frames:
        pos = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        z = m(pos).reshape(-1)
        per_dim = []
        for k in range(len(z)):
            (g,) = torch.autograd.grad(z[k], pos, retain_graph=True)
            per_dim.append(float(g.norm(dim=-1).max()) / ranges[k])
        out.append(max(per_dim))
    return np.array(out)


def measure(spec: str, dt_fs: float = 2.0) -> dict:
    import openmm as mm
    from openmm import app

    from latentbias.bias.stiffness import check_timestep, group_force_magnitudes
    from timestep_latent_bias import load_bias

    system, top, opes, starts, name, plan = load_bias(spec)
    group = opes.backend.force_group
    sim = app.Simulation(top, system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    opes.updateContext(sim.context)
    starts = np.asarray(starts, dtype=float)
    fmax = group_force_magnitudes(sim.context, starts, {group})
    bias = check_timestep(sim.context, starts, {group}, dt_fs, n_frames=3)
    ff = check_timestep(sim.context, starts[np.argsort(fmax)[::-1][:3]], {0}, dt_fs, n_frames=3, limit=10.0)
    rundir, system_name = spec.rsplit(":", 1)
    member = Path(rundir) / "systems" / system_name
    last = max(int(p.name[6:]) for p in member.glob("round_*") if (p / "plan.json").is_file())
    model_round = plan.get("model_round", last - 1)
    ranges = np.array([v["maxValue"] - v["minValue"] for v in plan["variables"]])
    jac = encoder_jacobian(member / f"round_{model_round:03d}" / "model.pt", starts, ranges)
    shared = Path(rundir) / "shared" / f"round_{model_round:03d}" / "model.json"
    fold = json.loads(shared.read_text()).get("fold") if shared.is_file() else None
    log = Path(rundir) / "campaign.log"
    warnings = log.read_text().count("latentbias.bias.stiffness") if log.is_file() else None
    return {"spec": spec, "force": (np.median(fmax), np.percentile(fmax, 99), fmax.max()), "omega": bias["omega"],
            "omega_ff": ff["omega"], "omega_dt": bias["omega_dt"], "jac": (np.median(jac), np.percentile(jac, 99),
            jac.max()), "fold": fold, "warnings": warnings, "sigma": np.asarray(opes.getSigma()) / ranges}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+", help="RUNDIR:system of finished ala_gly_compare campaigns")
    ap.add_argument("--dt", type=float, default=2.0, help="time step for omega*dt, fs")
    args = ap.parse_args()
    print("| run:system | max bias force per atom: median / 99th / max (kJ/mol/nm) | omega_max bias (1/ps) | "
          "omega_max ff, same frames | omega*dt | encoder |dz/dr| per latent range: median / 99th / max (1/nm) | "
          "kernel sigma / range | shared encoder fold g: median / q99 / max | stiffness warnings (run) |")
    print("|---|---|---:|---:|---:|---|---|---|---:|")
    for spec in args.specs:
        r = measure(spec, args.dt)
        f, j = r["force"], r["jac"]
        fold = "n/a" if not r["fold"] else f"{r['fold']['median']:.2f} / {r['fold']['q99']:.1f} / {r['fold']['max']:.1f}"
        print(f"| {spec} | {f[0]:.0f} / {f[1]:.0f} / {f[2]:.0f} | {r['omega']:.0f} | {r['omega_ff']:.0f} | "
              f"{r['omega_dt']:.2f} | {j[0]:.2f} / {j[1]:.2f} / {j[2]:.2f} | "
              f"{', '.join(f'{s:.3f}' for s in r['sigma'])} | {fold} | {r['warnings']} |", flush=True)


if __name__ == "__main__":
    main()
