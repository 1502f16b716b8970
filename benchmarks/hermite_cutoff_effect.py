"""The kink of a truncated OPES kernel at its cutoff, and what each Context interpolant makes of it.

An OPES kernel truncated at r = c and shifted down by its value there (PLUMED's KERNEL_CUTOFF, the default of
``LatentOPES``) falls to zero continuously, but its first derivative jumps there by c e^{−c²/2}/σ of its peak; so
does V = (α/β) ln(S/N + ε) — by (α/β)·(that jump)/(S + εN), i.e. by up to ~(α/β) c/σ where the kernel dominates S.
The Hermite table (``contextUpdate="hermite"``) holds the smooth part's derivative on the last node inside and zero
outside: its C1 patch spreads the kink over that cell. This script measures, on one 1-D kernel (identity encoder,
Reference), the error of each interpolant against the exact V at 4000 points, separately in the two cells around
the cut (|r − c| < one spacing) and elsewhere: ``hermite`` (V's Hermite patch through its exact node values and
derivatives, the Context's energy), ``refit`` (OpenMM's spline of V at the nodes), ``local`` (ln of OpenMM's spline
of S). Settings: barrier 30 kJ/mol, 300 K, OPES-METAD (α = 1 − 1/γ, γ = βΔE), default cutoff √(2βΔE/α), N = the
kernel's own mean over its centre (a lone kernel), σ = 1, 2, 4 grid spacings.

Run:  python benchmarks/hermite_cutoff_effect.py
"""

from __future__ import annotations

import datetime
import math
import os
import platform as pyplatform
import sys
import tempfile
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

import latentbias as lb
from latentbias.bias import LatentVariable
from latentbias.bias.densitygrid import DensityGridLink
from latentbias.bias.fused import FusedBackend
from latentbias.bias.grid import BiasGrid
from latentbias.bias.kernels import KernelDensity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opes_local_accuracy import spline_values  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from toy import identity_model  # noqa: E402


def main() -> None:
    kt = 300 * 0.0083144626
    barrier = 30.0
    gamma = barrier / kt
    alpha = 1 - 1 / gamma
    a, eps = alpha * kt, math.exp(-barrier / (alpha * kt))
    cutoff = math.sqrt(2 * barrier / (alpha * kt))
    print(f"{datetime.date.today()} · {pyplatform.node()} · load {os.getloadavg()[0]:.1f} · openmm {openmm.__version__}"
          f" · latentbias {lb.__version__} · Reference · a = α/β = {a:.3f} kJ/mol, ε = {eps:.3g}, cutoff c = "
          f"{cutoff:.3f} σ")
    model = Path(tempfile.mkdtemp()) / "id1.pt"
    identity_model(model, 1, 1)
    print("| σ / spacing | kink of V at the cut, kJ/mol/σ | route | max error near the cut | rms near | "
          "max error elsewhere | rms elsewhere |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for ratio in (1.0, 2.0, 4.0):
        n = 201
        spacing = 2.0 / (n - 1)
        sigma = ratio * spacing
        variable = LatentVariable(0, -1.0, 1.0, sigma, gridWidth=n)
        grid = BiasGrid([variable])
        system = openmm.System()
        system.addParticle(1.0)
        backend = FusedBackend(model, system, grid, 1000.0, forceGroup=1)
        kde = KernelDensity(grid, threshold=1.0, cutoff=cutoff)
        link = DensityGridLink(backend, kde, a, eps, interpolation="hermite")
        center = 0.0123
        kde.add(np.array([center]), np.array([sigma]), 1.0)
        zed = float(np.mean(kde.center_sum))
        integrator = openmm.VerletIntegrator(0.001)
        ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions([[0.0, 0.0, 0.0]])
        link.push(zed, ctx)
        pts = np.linspace(center - (cutoff + 2) * sigma, center + (cutoff + 2) * sigma, 4000)[:, None]
        exact_s = kde.mixture_at(pts, kde.all_centers, kde.all_sigmas, kde.all_weights)
        exact = a * np.log(np.maximum(exact_s, 0.0) / zed + eps)
        hermite = []
        for p in pts:
            ctx.setPositions([[float(p[0]), 0.0, 0.0]])
            hermite.append(ctx.getState(getEnergy=True, groups={1}).getPotentialEnergy()
                           .value_in_unit(unit.kilojoule_per_mole))
        hermite = np.array(hermite)
        v_nodes = a * np.log(np.maximum(kde.grid_sum, 0.0) / zed + eps)
        refit = spline_values(grid, v_nodes, pts, "T")
        local = spline_values(grid, kde.grid_sum, pts, f"{a!r}*log(max(T, 0)/{zed!r} + {eps!r})")
        r = np.abs(pts[:, 0] - center) / sigma
        near = np.abs(r - cutoff) * sigma < spacing
        peak = 1.0 / (math.sqrt(2 * math.pi) * sigma)
        jump_s = peak * cutoff * math.exp(-0.5 * cutoff**2) / sigma
        kink = a * jump_s / (eps * zed) * sigma  # V' jumps by a S'/(S + εN) with S = 0 at the cut; per σ
        for name, v in (("hermite", hermite), ("refit", refit), ("local", local)):
            err = v - exact
            print(f"| {ratio:.0f} | {kink:.2f} | {name} | {np.abs(err[near]).max():.4f} | "
                  f"{np.sqrt(np.mean(err[near] ** 2)):.4f} | {np.abs(err[~near]).max():.4f} | "
                  f"{np.sqrt(np.mean(err[~near] ** 2)):.4f} |", flush=True)
    print("errors in kJ/mol against V of the exact truncated kernel (kT = 2.494 kJ/mol).")


if __name__ == "__main__":
    main()
