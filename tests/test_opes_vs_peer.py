"""LatentOPES against the published peer openmm-opes 0.2.0, deterministically (the statistical ala2 comparison is
``benchmarks/opes_vs_peer.py`` and the slow test in test_opes.py).

* Replay: both samplers deposit at the same sequence of CV points (set by positions, no dynamics), each weighting
  its kernels by its own acting bias; after every deposit their bias grids, c(t) and kernel counts must agree.
  This compares the whole OPES-METAD algorithm (Silverman shrink with N_eff, ε regularisation, Z_n over the
  kernel centres, prefactor 1 − 1/γ, compression, c(t)) with no trajectory chaos in between.
* The benchmark's torsion backend (φ/ψ from ``CustomTorsionForce``) gives the same latent values, bias energy and
  forces as the TorchScript φ/ψ CV module it stands in for.
* The benchmark's Welch interval and TOST agree with scipy's Welch t-test.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest

import latentbias as lb  # noqa: F401  (torch before openmm)
import openmm
from openmm import app, unit

from latentbias.bias import LatentOPES, LatentVariable
from latentbias.cvs import save_dihedral_cv

TESTS = Path(__file__).resolve().parent


def load_bench():
    spec = importlib.util.spec_from_file_location("opes_vs_peer", TESTS.parent / "benchmarks" / "opes_vs_peer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


QUADS = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])


def dihedral_positions(angles):
    """8 atoms, two independent torsions (0-1-2-3, 4-5-6-7) whose dihedral angles are ``angles`` (rad), nm."""
    pos = []
    for k, theta in enumerate(angles):
        o = np.array([0.0, 0.0, 3.0 * k])
        pos += [o + [0.15, 0.0, 0.0], o, o + [0.0, 0.0, 0.15],
                o + [0.15 * math.cos(theta), 0.15 * math.sin(theta), 0.15]]
    return np.array(pos)


class Frozen:
    """A Simulation stand-in whose positions are set by hand: ``context`` and ``currentStep`` are all the
    samplers' deposition routines read."""

    def __init__(self, system):
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        self.currentStep = 0


def replay(n_deposits, seed=5, barrier=40.0, sigma=0.15, compression=1.0, grid=61):
    """Both samplers deposit at the same n_deposits points; yields (latent, peer, points so far) after each."""
    pytest.importorskip("openmm_opes")
    from openmm_opes import OPES

    bench = load_bench()
    folder = Path(tempfile.mkdtemp())
    model = save_dihedral_cv(QUADS, 8, folder / "two_torsions.pt")

    def system():
        s = openmm.System()
        for _ in range(8):
            s.addParticle(12.0)
        return s

    s_lat, s_peer = system(), system()
    variables = [LatentVariable(i, -math.pi, math.pi, sigma, periodic=True, gridWidth=grid) for i in range(2)]
    # openmm-opes evaluates untruncated Gaussians: the matching setting is kernelCutoff=None
    latent = LatentOPES(s_lat, model, variables, 300.0, barrier=barrier, pace=1, compressionThreshold=compression,
                        backend=bench.torsion_backend(QUADS), kernelCutoff=None)
    peer_vars = []
    for q in QUADS:
        f = openmm.CustomTorsionForce("theta")
        f.addTorsion(*[int(i) for i in q], [])
        peer_vars.append(app.BiasVariable(f, -math.pi, math.pi, sigma, True, grid))
    peer = OPES(s_peer, peer_vars, 300.0 * unit.kelvin, barrier * unit.kilojoule_per_mole, 1, None,
                compressionThreshold=compression)
    sim_lat, sim_peer = Frozen(s_lat), Frozen(s_peer)
    latent.updateContext(sim_lat.context)
    # points: a random walk that lingers in two basins and hops between them (overlapping kernels, merges)
    rng = np.random.default_rng(seed)
    basins = np.array([[-1.4, 1.2], [1.0, -0.8]])
    point, b = basins[0].copy(), 0
    for k in range(n_deposits):
        if rng.random() < 0.05:
            b = 1 - b
        point = point + 0.3 * (basins[b] - point) + rng.normal(0.0, 0.12, 2)
        point = (point + math.pi) % (2 * math.pi) - math.pi
        pos = dihedral_positions(point)
        for sim in (sim_lat, sim_peer):
            sim.context.setPositions(pos)
            sim.currentStep = k + 1
        z = latent.getCollectiveVariables(sim_lat)
        assert np.allclose(z, np.asarray(peer.getCollectiveVariables(sim_peer)), atol=1e-12)
        latent._deposit(sim_lat)
        peer._onInterval(sim_peer)
        yield latent, peer


@pytest.mark.parametrize("compression", [0.0, 1.0])
def test_replayed_deposits_give_the_same_bias_as_openmm_opes(compression):
    """Same points, same settings: after each of 150 deposits the two bias grids agree to 1e-5 kJ/mol, c(t) and
    PLUMED's rct to 1e-6 kJ/mol and the number of (compressed) kernels exactly (measured: ≤ 2.3e-6 kJ/mol on the
    grid, from N_eff: the peer counts a prior weight 1 in Σw and Σw², LatentOPES PLUMED's exp(−βΔE) sample). Without compression every kernel is kept; with
    threshold 1σ most deposits are merged (checked: fewer kernels than deposits)."""
    n = 150
    for k, (latent, peer) in enumerate(replay(n, compression=compression)):
        v_lat = latent.getBias()
        v_peer = np.asarray(peer.getBias().value_in_unit(unit.kilojoule_per_mole)).T  # peer grids are [psi, phi]
        assert np.abs(v_lat - v_peer).max() < 1e-5, (k, np.abs(v_lat - v_peer).max())
        ct_peer = peer.getCt().value_in_unit(unit.kilojoule_per_mole)
        assert abs(latent.ct() - ct_peer) < 1e-6, (k, latent.ct(), ct_peer)
        assert latent.numKernels == peer.getNumKernels(), k
        rct_peer = peer.getCt("running").value_in_unit(unit.kilojoule_per_mole)
        assert abs(latent.rct() - rct_peer) < 1e-6 * max(1.0, abs(rct_peer)), (k, latent.rct(), rct_peer)
    assert (latent.numKernels < n) == (compression > 0)
    # the bias moved far from its flat start: the comparison is not between two flat grids
    assert v_lat.max() - v_lat.min() > 0.5 * latent.barrier


def test_torsion_backend_equals_the_dihedral_cv_module_on_alanine_dipeptide():
    """The benchmark's stand-in CV (CustomTorsionForce φ/ψ) gives the CV module's z, and with the same bias grid
    the same bias energy and forces, to round-off (measured ≤ 1e-13: the native LatentBiasForce spline and
    OpenMM's periodic Continuous2DFunction are the same interpolant), on perturbed ala2 configurations."""
    bench = load_bench()
    folder = tempfile.mkdtemp()
    rng = np.random.default_rng(2)
    # a table of V pushed into both backends: the refit route (on the local route the native table holds P)
    samplers = {cv: bench.Latent(1, folder, cv=cv, contextUpdate="refit") for cv in ("module", "torsion")}
    grid = samplers["module"].opes.grid
    phi, psi = np.meshgrid(*grid.axes, indexing="ij")
    values = 12.0 * np.cos(phi - 0.4) * np.sin(2 * psi + 0.3) - 5.0 * np.cos(psi)  # smooth, periodic
    values[-1, :], values[:, -1] = values[0, :], values[:, 0]  # the last node repeats the first exactly
    positions = samplers["module"].sim.context.getState(getPositions=True).getPositions(asNumpy=True)
    for trial in range(3):
        pos = positions + rng.normal(0.0, 0.02, positions.shape) * unit.nanometer
        out = {}
        for cv, s in samplers.items():
            s.opes.backend.set_grid(values, s.sim.context)
            s.sim.context.setPositions(pos)
            group = s.opes.backend.force_group
            state = s.sim.context.getState(getEnergy=True, getForces=True, groups={group})
            out[cv] = (s.opes.getCollectiveVariables(s.sim),
                       state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                       state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        assert np.abs(out["module"][0] - out["torsion"][0]).max() < 1e-12
        assert abs(out["module"][1] - out["torsion"][1]) < 1e-9, (out["module"][1], out["torsion"][1])
        assert np.abs(out["module"][2] - out["torsion"][2]).max() < 1e-9  # forces up to ~140 kJ/mol/nm here


def test_welch_interval_and_tost_match_scipy():
    from scipy import stats

    bench = load_bench()
    rng = np.random.default_rng(0)
    x, y = rng.normal(12.0, 0.8, 12), rng.normal(11.8, 1.3, 9)
    w = bench.welch(x, y, margin=0.5)
    ref = stats.ttest_ind(x, y, equal_var=False)
    assert w["p_two_sided"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert w["df"] == pytest.approx(ref.df, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert w["ci95"] == pytest.approx((ci.low, ci.high), rel=1e-10)
    ci90 = ref.confidence_interval(0.90)
    assert w["ci90"] == pytest.approx((ci90.low, ci90.high), rel=1e-10)
    # TOST at 5 %: equivalence shown iff the 90 % interval lies inside the margin
    for margin in (0.3, 0.5, 1.0, 2.0, 4.0):
        w = bench.welch(x, y, margin=margin)
        assert w["equivalent"] == (-margin < w["ci90"][0] and w["ci90"][1] < margin)
