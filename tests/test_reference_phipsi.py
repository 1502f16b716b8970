"""examples/reference/phipsi_metadynamics.py: its estimators against analytic results, and a short run end to end.

The long runs (≥ 2 × 20 ns per system) are made on a machine with many cores (benchmarks/gpu/run.sh); here the
estimators are checked on distributions whose ΔF(C7ax − rest) is known by quadrature.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("phipsi_metadynamics", ROOT / "examples" / "reference" / "phipsi_metadynamics.py")
pm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pm)

KT = pm.KB * 300.0


def model_fes(phi, psi):
    """A φ/ψ surface with a deep C7eq-like minimum and a shallow C7ax-like one (kJ/mol)."""
    return (-12.0 * np.exp(-((phi + 1.4) ** 2 + (psi - 1.2) ** 2) / 0.5)
            - 8.0 * np.exp(-((phi - 1.2) ** 2 + (psi + 1.0) ** 2) / 0.4) + 3.0 * np.cos(phi))


def exact_delta_f(n=2000):
    """ΔF(0 < φ < 120°) − rest by a fine midpoint rule on the torus."""
    x = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    p = np.exp(-model_fes(x[:, None], x[None, :]) / KT)
    a = (x > 0) & (x < np.radians(120))
    return -KT * math.log(p[a].sum() / p[~a].sum())


def test_delta_f_from_fes_matches_quadrature():
    axes = pm.grid_axes(73)  # 5 degrees, as the runs use
    fes = model_fes(axes[:, None], axes[None, :])
    got = pm.delta_f_from_fes(fes - fes.min(), axes, KT)
    assert got == pytest.approx(exact_delta_f(), abs=0.05)


def test_fes_from_converged_bias_and_ct():
    gamma = 8.0
    axes = pm.grid_axes(73)
    fes = model_fes(axes[:, None], axes[None, :])
    bias = -(1 - 1 / gamma) * (fes - fes.max())  # converged well-tempered bias (≥ 0)
    np.testing.assert_allclose(pm.fes_from_bias(bias, gamma), fes - fes.min(), atol=1e-10)
    # c = β⁻¹ ln(∫exp(γ/(γ−1)·βV) / ∫exp(βV/(γ−1))): with V = −(1−1/γ)(F − Fmax) this is
    # β⁻¹ ln(∫exp(−β(F−Fmax)) / ∫exp(−β(F−Fmax)/γ))
    f = fes - fes.max()
    expected = KT * (math.log(np.exp(-f / KT).sum()) - math.log(np.exp(-f / (gamma * KT)).sum()))
    assert pm.ct_of_bias(bias, gamma, KT) == pytest.approx(expected, rel=1e-12)


def test_reweighting_recovers_delta_f():
    """Frames drawn from the biased ensemble exp(−β(F+V)) with the converged bias, weighted by exp(β(V − c))."""
    gamma = 8.0
    rng = np.random.default_rng(0)
    n = 400
    x = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    f = model_fes(x[:, None], x[None, :])
    v = -(1 - 1 / gamma) * (f - f.max())
    p = np.exp(-(f + v - (f + v).min()) / KT).ravel()
    idx = rng.choice(p.size, size=40000, p=p / p.sum())
    i, j = np.unravel_index(idx, f.shape)
    c = pm.ct_of_bias(v, gamma, KT)
    frames = np.column_stack([np.linspace(0.5, 10, idx.size), x[i], x[j], v[i, j], np.full(idx.size, c)])
    got = pm.delta_f_reweight(frames, KT, discard_ns=0.0)
    assert got == pytest.approx(exact_delta_f(), abs=0.15)  # ~0.05 kJ/mol statistical error at 40k frames
    # frames before discard_ns are left out
    assert math.isnan(pm.delta_f_reweight(frames, KT, discard_ns=100.0))


def test_c7ax_edge_points_count_half():
    w = pm.c7ax_weights(np.radians(np.array([-5.0, 0.0, 5.0, 115.0, 120.0, 125.0])))
    np.testing.assert_array_equal(w, [0, 0.5, 1, 1, 0.5, 0])


def test_short_run_and_summary(tmp_path):
    for seed in (1, 2):
        pm.main(["run", "--system", "gly_amber14", "--ns", "0.004", "--seed", str(seed), "--equil-steps", "100",
                 "--record-ps", "2", "--discard-ns", "0", "--outdir", str(tmp_path / "runs")])
    res = json.loads((tmp_path / "runs" / "gly_amber14_s1.json").read_text())
    assert res["simulated_ns"] == pytest.approx(0.004)
    assert res["final"] and math.isfinite(res["dF_c7ax_minus_rest_fes_kjmol"])
    d = np.load(tmp_path / "runs" / "gly_amber14_s1_fes.npz")
    assert d["fes_kjmol"].shape == (72, 72) and d["frames"].shape == (4, 5)
    assert d["fes_kjmol"].min() == 0.0
    # the bias grows from zero: V(s, t) recorded before each deposit starts at 0
    assert d["frames"][0, 3] == pytest.approx(0.0, abs=1e-9) and d["frames"][-1, 3] > 0
    pm.main(["summary", *map(str, sorted((tmp_path / "runs").glob("*_fes.npz"))), "--outdir", str(tmp_path / "sum")])
    s = json.loads((tmp_path / "sum" / "gly_amber14_phipsi_dF.json").read_text())
    assert s["n_runs"] == 2 and len(s["runs"]) == 2
    assert (tmp_path / "sum" / "gly_amber14_phipsi_fes.csv").read_text().startswith("phi_deg,psi_deg,fes_kjmol,spread")
