"""Per umbrella window of a finished ala2 campaign with an umbrella converge phase: centre, MBAR free energy f_k
(kJ/mol), frames, fraction in C7ax (0 < phi < 120 deg) and the phi range sampled (does a window sample the barrier?).

Usage: python benchmarks/umbrella_windows_phi.py RUNDIR [RUNDIR ...]   (phi is used for evaluation only)
"""
import numpy as np, json, sys, mdtraj as md
from pathlib import Path
from latentbias.campaign.estimate import final_weights
for rd in sys.argv[1:]:
    rd = Path(rd)
    last = max(int(p.name[-3:]) for p in rd.glob("round_*"))
    t = md.load(str(rd / f"round_{last:03d}/frames.dcd"), top=str(rd / f"round_{last:03d}/topology.pdb"))
    phi = np.degrees(md.compute_dihedrals(t, [[4, 6, 8, 14]])[:, 0])
    from latentbias.campaign.rundir import RunDir
    R = RunDir(rd); n = R.round_segments(last)
    target = np.concatenate([R.read_segment(last, k)["target"] for k in range(n)])
    z = np.concatenate([R.read_segment(last, k)["z"] for k in range(n)])
    plan = R.read_plan(last)
    info = json.loads((rd / "weights.json").read_text())
    fk = np.array(info["umbrella"]["f_k"]) * 2.494
    c7ax = (phi > 0) & (phi < 120)
    print(rd.name, "centres/k", np.round(plan["force_constants"], 1))
    for w in range(len(plan["centers"])):
        s = target == w
        print(f"  window {w:2d} centre {np.round(plan['centers'][w], 2)} f={fk[w]:6.1f} frames {s.sum():4d} C7ax {c7ax[s].mean():.2f} phi range [{phi[s].min():.0f},{phi[s].max():.0f}] start_frame {plan['start_frames'][w]}")
