"""RMSE of a campaign's reweighted phi/psi FES against the reference (examples/reference/ala2_ff96_phipsi_fes.npz).

Usage: COARSE=3 python benchmarks/demo_fes_rmse.py RUNDIR [RUNDIR ...]   (COARSE: reference 5-degree bins merged
COARSE x COARSE, Boltzmann-averaged; frames with logweight = -inf are left out; the best constant offset is
removed; the region is where the coarse reference is below 25 kJ/mol, and the coverage says how much of it the
run sampled).
"""
import numpy as np, mdtraj as md, glob, sys
ref = np.load("examples/reference/ala2_ff96_phipsi_fes.npz")
phi_ax, psi_ax, F = ref["phi_deg"], ref["psi_deg"], ref["fes_kjmol"]
kt = 0.00831446261815324 * 300
# bin edges: 72 bins of 5 deg centred like the reference grid points (periodic: drop the duplicated last point)
centers = phi_ax[:-1] if np.isclose(phi_ax[-1] - phi_ax[0], 360) else phi_ax
n = len(centers); w = 360.0 / n
Fr = F[:n, :n]
import os
COARSE = int(os.environ.get('COARSE', '1'))
for rd in sys.argv[1:]:
    phis, psis, lws = [], [], []
    for r in sorted(glob.glob(rd + "/round_*")):
        t = md.load(r + "/frames.dcd", top=r + "/topology.pdb")
        phi = np.degrees(md.compute_dihedrals(t, [[4, 6, 8, 14]])[:, 0]); psi = np.degrees(md.compute_dihedrals(t, [[6, 8, 14, 16]])[:, 0])
        lines = open(r + "/frames.csv").read().splitlines(); hdr = lines[1].split(","); tab = {k: np.array([float(l.split(",")[i]) for l in lines[2:]]) for i, k in enumerate(hdr)}
        phis.append(phi); psis.append(psi); lws.append(tab["logweight"])
    phi, psi, lw = map(np.concatenate, (phis, psis, lws))
    ok = np.isfinite(lw)
    wgt = np.exp(lw[ok] - lw[ok].max())
    ip = np.floor((phi[ok] - (centers[0] - w / 2)) / w).astype(int) % n
    iq = np.floor((psi[ok] - (centers[0] - w / 2)) / w).astype(int) % n
    H = np.zeros((n, n)); np.add.at(H, (ip, iq), wgt)
    c = COARSE
    H = H.reshape(n // c, c, n // c, c).sum((1, 3))
    Frc = -kt * np.log(np.exp(-(Fr - Fr.min()) / kt).reshape(n // c, c, n // c, c).mean((1, 3)))
    with np.errstate(divide="ignore"):
        Fe = -kt * np.log(H / H.sum())
    mask = np.isfinite(Fe) & (Frc - Frc.min() < 25)
    d = (Fe - Frc)[mask]; d -= d.mean()  # optimal constant offset
    cover = mask.sum() / (Frc - Frc.min() < 25).sum()
    print(rd, "frames used", ok.sum(), "RMSE %.2f kJ/mol over %.0f %% of the region below 25 kJ/mol" % (np.sqrt((d**2).mean()), 100 * cover))
