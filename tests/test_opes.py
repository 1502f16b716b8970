"""Latent OPES: kernel bookkeeping, the bias formula, analytic free energies (1-D, 2-D), forces, restart, walkers."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from openmm import unit

from latentbias.analysis import free_energy_surface, kt_kjmol
from latentbias.bias import CustomCVBackend, LatentOPES, LatentVariable
from latentbias.bias.grid import BiasGrid
from latentbias.bias.kernels import KernelDensity

from test_export_forces import bare_system, check_finite_differences, make_context
from test_metadynamics import rmse_below
from toy import (DOUBLE_WELL_1D, MULTI_WELL_2D, bin_averaged_fes, bin_averaged_fes_2d, double_well_1d, identity_model,
                 multi_well_2d, particle_simulation, particle_system)

TESTS = Path(__file__).resolve().parent
KT = kt_kjmol(300.0)
VAR_1D = dict(index=0, minValue=-1.0, maxValue=1.0, biasWidth=0.05, gridWidth=201)


# ------------------------------------------------------------------------------------------- kernel density


@pytest.mark.parametrize("periodic", [False, True])
def test_kernel_density_incremental_sums_equal_a_rebuild(periodic):
    """Incremental grid/centre sums (with compression and recursive merges) equal a full recomputation, and
    merging conserves the total weight and the number of samples."""
    rng = np.random.default_rng(3)
    grid = BiasGrid([LatentVariable(0, -math.pi, math.pi, 0.3, periodic=periodic, gridWidth=40),
                     LatentVariable(1, -1, 1, 0.1, periodic=periodic, gridWidth=30)])
    kde = KernelDensity(grid, threshold=1.0, rebuild_interval=10**9)
    total_w = 0.0
    for _ in range(400):
        w = float(np.exp(rng.normal()))
        kde.add(rng.normal(0, [1.5, 0.4]), np.full(2, 0.15) * rng.uniform(0.5, 1.5), w)
        total_w += w
    assert kde.num_kernels < 200  # compression happened
    assert kde.weights.sum() == pytest.approx(total_w, rel=1e-12) and kde.counts.sum() == 400
    grid_sum, center_sum = kde.grid_sum.copy(), kde.center_sum.copy()
    kde.rebuild()
    np.testing.assert_allclose(grid_sum, kde.grid_sum, rtol=0, atol=1e-10 * kde.grid_sum.max())
    np.testing.assert_allclose(center_sum, kde.center_sum, rtol=0, atol=1e-10 * kde.center_sum.max())
    if periodic:
        np.testing.assert_array_equal(kde.grid_sum[-1], kde.grid_sum[0])


def test_merge_conserves_weight_mean_and_variance():
    grid = BiasGrid([LatentVariable(0, -1, 1, 0.1, gridWidth=50)])
    kde = KernelDensity(grid, threshold=2.0)
    kde.add([0.0], [0.1], 1.0)
    kde.add([0.1], [0.2], 3.0)
    assert kde.num_kernels == 1
    mean = (0.0 * 1 + 0.1 * 3) / 4
    second = (1 * (0.1**2 + 0.0) + 3 * (0.2**2 + 0.1**2)) / 4
    assert kde.centers[0, 0] == pytest.approx(mean) and kde.weights[0] == 4.0
    assert kde.sigmas[0, 0] == pytest.approx(math.sqrt(second - mean**2))


# ------------------------------------------------------------------------------------------- the bias itself


def make_1d(tmp_path, seed=1, explore=False, backend=None, x0=-0.5, **kw):
    model = tmp_path / "x.pt"
    if not model.exists():
        identity_model(model, 1, 1)
    system = particle_system(DOUBLE_WELL_1D)
    kw.setdefault("barrier", 20.0)
    kw.setdefault("pace", 100)
    opes = LatentOPES(system, model, [LatentVariable(**VAR_1D)], 300.0, explore=explore, backend=backend, **kw)
    return opes, particle_simulation(system, [x0], seed=seed)


@pytest.mark.parametrize("explore", [False, True])
def test_bias_follows_the_opes_formula(tmp_path, explore):
    """V on the grid = α kT ln(P/Z + ε) recomputed independently from the kernels; flat −ΔE before any kernel;
    γ = βΔE and ε = exp(−βΔE/α) by default; kernel weights exp(βV) (METAD) or 1 (explore)."""
    opes, sim = make_1d(tmp_path, explore=explore)
    gamma = 20.0 / KT
    alpha = gamma - 1 if explore else 1 - 1 / gamma
    assert opes.biasFactor == pytest.approx(gamma)
    np.testing.assert_array_equal(opes.getBias(), np.full(opes.grid.shape, -20.0))
    assert opes.ct() == -20.0
    opes.step(sim, 5000)
    k = opes.kde
    x = opes.getGridAxes()[0]
    c, s, w = k.all_centers[:, 0], k.all_sigmas[:, 0], k.all_weights

    # kernels truncated and shifted at PLUMED's default KERNEL_CUTOFF, sqrt(2 βΔE/α) (explore: sqrt(2 βΔE))
    cut = np.sqrt(2 * 20.0 / KT) if explore else np.sqrt(2 * 20.0 / KT / alpha)
    assert opes.kde.cutoff == pytest.approx(cut)

    def p(points):
        u2 = ((points[:, None] - c) / s) ** 2
        kern = np.where(u2 < cut**2, np.exp(-0.5 * u2) - np.exp(-0.5 * cut**2), 0.0)
        return np.sum(w * kern / (np.sqrt(2 * np.pi) * s), axis=1) / w.sum()

    zed = np.mean(p(c))
    expected = alpha * KT * np.log(p(x) / zed + np.exp(-20.0 / (alpha * KT)))
    np.testing.assert_allclose(opes.getBias(), expected, rtol=0, atol=1e-9)
    rec = opes.getRecords()
    assert len(rec["step"]) == 50 and opes.numDeposits == 50
    if explore:
        assert k.weights.sum() == pytest.approx(50.0)
    else:  # the weights are exp(βV) of the recorded bias, summed over merged samples
        assert k.weights.sum() == pytest.approx(np.exp(rec["bias_kjmol"] / KT).sum(), rel=1e-9)
    # the recorded bias is the acting (spline) bias at z, close to the grid's linear interpolation
    np.testing.assert_allclose(rec["logweight"], (rec["bias_kjmol"] + rec["wall_kjmol"] - rec["ct_kjmol"]) / KT)
    # σ shrinks with N_eff (Silverman): the next kernel is narrower than σ0
    assert opes.getSigma()[0] < 0.05


def test_three_latent_dimensions_formula_and_forces(tmp_path):
    """d = 3 (native backend when built): V on the grid equals the independent formula and the
    forces match central differences."""
    model = identity_model(tmp_path / "xyz.pt", 1, 3)
    system = particle_system("10*(4*x^2-1)^2 + 20*(y^2+z^2)")
    variables = [LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=31), LatentVariable(1, -1.0, 1.0, 0.1, gridWidth=25),
                 LatentVariable(2, -1.0, 1.0, 0.1, gridWidth=21)]
    opes = LatentOPES(system, model, variables, 300.0, barrier=15.0, pace=50, compressionThreshold=0.5)
    sim = particle_simulation(system, [-0.5, 0.0, 0.0], seed=3)
    opes.step(sim, 2000)
    k = opes.kde
    c, s, w = k.all_centers, k.all_sigmas, k.all_weights
    axes = np.meshgrid(*opes.getGridAxes(), indexing="ij")
    pts = np.stack([a.ravel() for a in axes], axis=1)

    alpha = 1 - 1 / opes.biasFactor
    cut = np.sqrt(2 * 15.0 / KT / alpha)  # PLUMED's default KERNEL_CUTOFF (Mahalanobis distance, shifted kernel)
    assert opes.kde.cutoff == pytest.approx(cut)

    def p(points):
        r2 = np.sum(((points[:, None, :] - c[None]) / s[None]) ** 2, axis=2)
        g = np.where(r2 < cut**2, np.exp(-0.5 * r2) - np.exp(-0.5 * cut**2), 0.0)
        return g @ (w / np.prod(np.sqrt(2 * np.pi) * s, axis=1)) / w.sum()

    expected = alpha * KT * np.log(p(pts) / np.mean(p(c)) + np.exp(-15.0 / (alpha * KT)))
    np.testing.assert_allclose(opes.getBias().ravel(), expected, rtol=0, atol=1e-9)
    group = 1 << opes.backend.force_group
    check_finite_differences(sim.context, np.array([[-0.45, 0.05, -0.03]]), group, h=1e-6, rtol=1e-4)


def test_records_file_and_units(tmp_path):
    opes, sim = make_1d(tmp_path, recordFile=tmp_path / "kernels.csv")
    opes.step(sim, 3000)
    lines = (tmp_path / "kernels.csv").read_text().splitlines()
    assert lines[0].startswith("#") and "kJ/mol" in lines[0] and "OPES-METAD" in lines[0]
    assert lines[1] == "step,time_ps,z0,bias_kjmol,wall_kjmol,ct_kjmol,rct_kjmol,logweight"
    table = np.loadtxt(tmp_path / "kernels.csv", delimiter=",", skiprows=2)
    rec = opes.getRecords()
    np.testing.assert_allclose(table[:, 2], rec["z"][:, 0], rtol=1e-8)
    np.testing.assert_allclose(table[:, -1], rec["logweight"], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(table[:, 1], 0.004 * rec["step"], rtol=1e-6)
    with pytest.raises(FileExistsError, match="appendRecord"):
        make_1d(tmp_path, recordFile=tmp_path / "kernels.csv")


@pytest.mark.parametrize("backend", [None, CustomCVBackend])
def test_opes_bias_forces_match_finite_differences(tmp_path, backend):
    """Forces of the OPES grid bias (after 40 kernels, 2-D, both backends) vs central differences, Reference."""
    model = identity_model(tmp_path / "xy.pt", 1, 2)
    system = particle_system(MULTI_WELL_2D)
    variables = [LatentVariable(0, -1.2, 1.2, 0.08, gridWidth=61), LatentVariable(1, -1.2, 1.2, 0.08, gridWidth=61)]
    opes = LatentOPES(system, model, variables, 300.0, barrier=15.0, pace=50, backend=backend)
    sim = particle_simulation(system, [0.6, 0.3], seed=2)
    opes.step(sim, 2000)
    assert opes.numKernels > 5
    group = 1 << opes.backend.force_group
    ctx = sim.context
    for x0 in ([0.55, 0.32, 0.01], [0.3, -0.1, 0.0], [-0.61, 0.27, 0.02]):
        xyz = np.array([x0])
        ctx.setPositions(xyz)
        e = ctx.getState(getEnergy=True, groups=group).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert e == pytest.approx(opes.biasAt(np.array([x0[:2]]))[0], abs=0.2)  # spline vs linear interpolation
        check_finite_differences(ctx, xyz, group, h=1e-6, rtol=1e-4)


def test_walls_beyond_the_grid_edges(tmp_path):
    model = identity_model(tmp_path / "x.pt", 1, 1)
    system = bare_system(1)
    opes = LatentOPES(system, model, [LatentVariable(0, -0.5, 0.5, 0.05)], 300.0, barrier=10.0, pace=10,
                      wallForceConstant=2000.0)
    ctx, _ = make_context(system, np.array([[0.7, 0, 0]]), "Reference")
    opes.updateContext(ctx)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert e == pytest.approx(-10.0 + 0.5 * 2000 * 0.2**2, rel=1e-9)
    check_finite_differences(ctx, np.array([[0.5 + 1e-3, 0.0, 0.0]]), -1, h=1e-6, rtol=1e-3)


def test_kernels_narrower_than_the_grid_spacing_are_warned_about_once(tmp_path, caplog):
    """σ shrinks as N_eff grows; once it drops below the grid spacing the acting bias (a spline through the grid)
    cannot follow single kernels: one warning, naming the widths and the grid points needed. A grid 5× finer than
    σ0 stays quiet over the same deposits."""
    import logging

    identity_model(tmp_path / "x.pt", 1, 1)
    for width, expect in ((201, 0), (41, 1)):  # spacing 0.01 and 0.05 with σ0 = 0.05
        caplog.clear()
        system = particle_system(DOUBLE_WELL_1D)
        opes = LatentOPES(system, tmp_path / "x.pt", [LatentVariable(**{**VAR_1D, "gridWidth": width})], 300.0,
                          barrier=20.0, pace=10)
        sim = particle_simulation(system, [-0.5], seed=3)
        widths, check = [], opes._warnIfGridTooCoarse  # the width of every deposit, as the check sees it
        opes._warnIfGridTooCoarse = lambda sigma: (widths.append(float(sigma[0])), check(sigma))
        with caplog.at_level(logging.WARNING, logger="latentbias.bias.opes"):
            opes.step(sim, 300)
        assert opes.numDeposits == 30 and len(widths) == 30
        hits = [r.getMessage() for r in caplog.records if "below the grid spacing" in r.getMessage()]
        assert len(hits) == expect, hits
        if expect:  # the first deposit narrower than the spacing; points for a spacing <= its width over [-1, 1]
            k = next(i for i, w in enumerate(widths) if w < 0.05)
            points = int(np.ceil(2.0 / widths[k])) + 1
            assert 2.0 / (points - 1) <= widths[k] < 2.0 / (points - 2)
            assert f"grid spacing [0.05] after {k} deposits" in hits[0], hits[0]
            assert f"about [{points}] per variable" in hits[0], hits[0]
        assert opes.getSigma()[0] < 0.05


def test_adaptive_sigma_measures_the_unbiased_fluctuation(tmp_path):
    """Harmonic well 50 x² (kJ/mol, nm): unbiased std = sqrt(kT/100) = 0.158 nm. No kernel before the stride;
    σ0 from the first 20 000 steps within 15 %."""
    model = identity_model(tmp_path / "x.pt", 1, 1)
    system = particle_system("50*(x^2+y^2+z^2)")
    opes = LatentOPES(system, model, [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)], 300.0, barrier=10.0,
                      pace=100, adaptiveSigmaStride=20_000)
    sim = particle_simulation(system, [0.0], seed=4)
    opes.step(sim, 19_900)
    assert opes.numDeposits == 0 and opes.numKernels == 0
    opes.step(sim, 100)
    assert opes.numDeposits == 1
    assert opes._sigma0[0] == pytest.approx(math.sqrt(KT / 100.0), rel=0.15)


# ------------------------------------------------------------------------------------------- analytic FES


def run_1d(tmp_path, seed, steps, explore=False):
    """OPES on the 1-D double well (barrier 10 kJ/mol); returns (RMSE of F from the final bias, RMSE of the
    c(t)-reweighted histogram of the recorded frames, first 20 % discarded), kJ/mol, where F_ref < 15 kJ/mol."""
    opes, sim = make_1d(tmp_path, seed=seed, explore=explore)
    opes.step(sim, steps)
    x = opes.getGridAxes()[0]
    f_bias = opes.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)
    rmse_bias = rmse_below(f_bias, double_well_1d(x), 15.0)
    rec = opes.getRecords()
    start = len(rec["step"]) // 5
    fes = free_energy_surface(rec["z"][start:, 0], opes.getLogWeights("ct")[start:], bins=36, range=(-0.9, 0.9),
                              temperature=300.0)
    ref = bin_averaged_fes(double_well_1d, fes.edges[0])
    assert np.isfinite(fes.free_energy[ref < 12]).all()
    return rmse_bias, rmse_below(fes.free_energy, ref, 15.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_1d_double_well_opes_metad_short(tmp_path, seed):
    """Default suite: 250 000 steps (1 ns, ~10 s). Tolerance: RMSE <= 1 kJ/mol (bias and reweighting)."""
    rmse_bias, rmse_rw = run_1d(tmp_path, seed, 250_000)
    assert rmse_bias <= 1.0 and rmse_rw <= 1.0


def test_1d_double_well_opes_explore_short(tmp_path):
    """Default suite, OPES-explore: 250 000 steps. Tolerance: RMSE <= 1 kJ/mol from reweighting, <= 2 kJ/mol from
    the bias: F = −γ/(γ−1)·V estimates F through ln p^WT, whose noise γ (= 8 here) multiplies (JCTC 2022 recommends
    the reweighted estimate in explore mode). Spread over seeds 1-6 at this length (issue 10 item 6): 0.31-0.80
    kJ/mol on the default Hermite route (this seed 0.80, mean 0.51), 0.34-0.82 with ``contextUpdate="refit"``
    (mean 0.48), 0.36-1.00 with ``contextUpdate="local"``."""
    rmse_bias, rmse_rw = run_1d(tmp_path, 3, 250_000, explore=True)
    assert rmse_rw <= 1.0 and rmse_bias <= 2.0, (rmse_bias, rmse_rw)


@pytest.mark.slow
@pytest.mark.parametrize("explore", [False, True])
@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_1d_double_well_opes_long(tmp_path, seed, explore):
    """1M steps (4 ns) per seed, five seeds per variant: RMSE <= 1 kJ/mol from the bias and from reweighting."""
    rmse_bias, rmse_rw = run_1d(tmp_path, seed, 1_000_000, explore=explore)
    assert rmse_bias <= 1.0 and rmse_rw <= 1.0


def run_2d(tmp_path, seed, steps, explore=False):
    """OPES on the 2-D three-well potential (identity encoder on x, y; friction 1/ps; σ0 = 0.12 nm, which Silverman
    shrinking takes to ~0.04 nm): RMSE (kJ/mol) of F from the final bias where F_ref < 15 kJ/mol, and of the
    c(t)-reweighted 16x16 histogram where F_ref < 12 kJ/mol."""
    model = identity_model(tmp_path / "xy.pt", 1, 2)
    system = particle_system(MULTI_WELL_2D)
    variables = [LatentVariable(0, -1.2, 1.2, 0.12, gridWidth=97), LatentVariable(1, -1.2, 1.2, 0.12, gridWidth=97)]
    opes = LatentOPES(system, model, variables, 300.0, barrier=25.0, pace=100, explore=explore)
    sim = particle_simulation(system, [0.6, 0.3], seed=seed, friction=1.0)
    opes.step(sim, steps)
    gx, gy = np.meshgrid(*opes.getGridAxes(), indexing="ij")
    rmse_bias = rmse_below(opes.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole), multi_well_2d(gx, gy), 15.0)
    rec = opes.getRecords()
    start = len(rec["step"]) // 5
    fes = free_energy_surface(rec["z"][start:], opes.getLogWeights("ct")[start:], bins=(16, 16),
                              range=((-1.2, 1.2), (-1.2, 1.2)), temperature=300.0)
    ref = bin_averaged_fes_2d(multi_well_2d, fes.edges[0], fes.edges[1])
    return rmse_bias, rmse_below(fes.free_energy, ref, 12.0)


def test_2d_multiwell_opes_short(tmp_path):
    """Default suite: 300 000 steps (1.2 ns). Tolerance: RMSE <= 1.5 kJ/mol from the bias (F < 15 kJ/mol) and from
    the 16x16 reweighted histogram (F < 12 kJ/mol). The error falls as 1/sqrt(t) (seed 5, bias: 1.98, 1.28, 1.08
    kJ/mol after 0.1, 0.2, 0.3M steps): the slow test runs 1.2M steps to RMSE <= 1 kJ/mol."""
    rmse_bias, rmse_rw = run_2d(tmp_path, 5, 300_000)
    assert rmse_bias <= 1.5 and rmse_rw <= 1.5, (rmse_bias, rmse_rw)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_2d_multiwell_opes_long(tmp_path, seed):
    """1.2M steps (4.8 ns) per seed: RMSE <= 1 kJ/mol from the bias and from reweighting."""
    rmse_bias, rmse_rw = run_2d(tmp_path, seed, 1_200_000)
    assert rmse_bias <= 1.0 and rmse_rw <= 1.0


# ------------------------------------------------------------------------------------------- restart, walkers


@pytest.mark.parametrize("adaptive", [None, 500])
def test_restart_continues_with_identical_bias(tmp_path, adaptive):
    """2N steps straight vs N steps, save (state + OpenMM checkpoint), restore into new objects, N more."""
    opes, sim = make_1d(tmp_path, seed=7, adaptiveSigmaStride=adaptive)
    opes.step(sim, 4000)
    opes.saveState(tmp_path / "state")
    checkpoint = sim.context.createCheckpoint()
    opes.step(sim, 4000)

    opes2, sim2 = make_1d(tmp_path, seed=99, adaptiveSigmaStride=adaptive)
    opes2.loadState(tmp_path / "state")
    sim2.context.loadCheckpoint(checkpoint)
    opes2.step(sim2, 4000)
    np.testing.assert_array_equal(opes2.getBias(), opes.getBias())
    assert opes2.numDeposits == opes.numDeposits and opes2.numKernels == opes.numKernels
    for key in ("step", "bias_kjmol", "ct_kjmol", "rct_kjmol"):
        np.testing.assert_array_equal(opes2.getRecords()[key], opes.getRecords()[key])


def test_load_state_refuses_mismatch_and_torn_files(tmp_path):
    opes, sim = make_1d(tmp_path)
    opes.step(sim, 1000)
    opes.saveState(tmp_path / "s")
    other, _ = make_1d(tmp_path, barrier=30.0)
    with pytest.raises(ValueError, match="barrier"):
        other.loadState(tmp_path / "s")
    npz = tmp_path / "s.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(ValueError, match="does not match"):
        opes.loadState(tmp_path / "s")


WALKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from latentbias.bias import LatentOPES, LatentVariable
    from toy import DOUBLE_WELL_1D, particle_simulation, particle_system
    name, seed, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    system = particle_system(DOUBLE_WELL_1D)
    opes = LatentOPES(system, folder + "/x.pt", [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=201)], 300.0,
                      barrier=20.0, pace=50, saveFrequency=500, biasDir=folder + "/bias", walkerId=name)
    sim = particle_simulation(system, [-0.5 if seed == 1 else 0.5], seed=seed)
    import os, time
    open(folder + "/" + name + ".ready", "w").close()  # start together, so that the walkers really overlap
    while not all(os.path.exists(folder + "/" + w + ".ready") for w in ("A", "B")):
        time.sleep(0.05)
    opes.step(sim, 10000)
    np.save(folder + "/" + name + "_bias.npy", opes.getBias())
    np.save(folder + "/" + name + "_own.npy", opes.kde.weights)
    """
)


def test_two_walker_processes_share_kernels(tmp_path):
    identity_model(tmp_path / "x.pt", 1, 1)
    script = tmp_path / "walker.py"
    script.write_text(WALKER.format(tests=str(TESTS)))
    procs = [subprocess.Popen([sys.executable, str(script), name, str(seed), str(tmp_path)], stderr=subprocess.PIPE,
                              text=True) for name, seed in (("A", 1), ("B", 2))]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    files = sorted(p.name for p in (tmp_path / "bias").iterdir())
    assert files == ["opes_A.npz", "opes_B.npz"]
    # a new walker's estimate is the union of both walkers' kernels and weight sums
    system = particle_system(DOUBLE_WELL_1D)
    c = LatentOPES(system, tmp_path / "x.pt", [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=201)], 300.0,
                   barrier=20.0, pace=50, saveFrequency=500, biasDir=tmp_path / "bias", walkerId="C")
    a_own, b_own = np.load(tmp_path / "A_own.npy"), np.load(tmp_path / "B_own.npy")
    assert c.numKernels == len(a_own) + len(b_own)
    assert c._totalCount == 1 + 2 * 200
    np.testing.assert_allclose(np.sort(c.kde.fixed_weights), np.sort(np.concatenate([a_own, b_own])))
    # both walkers started in different wells, and each bias covers both (the other walker's kernels count)
    x = c.getGridAxes()[0]
    for name in ("A", "B"):
        bias = np.load(tmp_path / f"{name}_bias.npy")
        assert bias[np.argmin(abs(x + 0.5))] > -10.0 and bias[np.argmin(abs(x - 0.5))] > -10.0


def test_walkers_with_different_settings_are_refused(tmp_path):
    opes, sim = make_1d(tmp_path, saveFrequency=500, biasDir=tmp_path / "bias", walkerId="A")
    opes.step(sim, 500)
    with pytest.raises(ValueError, match="different settings"):
        make_1d(tmp_path, barrier=30.0, saveFrequency=500, biasDir=tmp_path / "bias", walkerId="B")


def test_bad_opes_input(tmp_path):
    model = identity_model(tmp_path / "x.pt", 1, 1)
    v = [LatentVariable(0, -1, 1, 0.1)]
    with pytest.raises(ValueError, match="biasFactor"):
        LatentOPES(bare_system(1), model, v, 300, barrier=1.0, pace=10)  # βΔE < 1
    with pytest.raises(ValueError, match="barrier"):
        LatentOPES(bare_system(1), model, v, 300, barrier=-5.0, pace=10)
    with pytest.raises(ValueError, match="pace"):
        LatentOPES(bare_system(1), model, v, 300, barrier=20.0, pace=0)
    with pytest.raises(ValueError, match="saveFrequency and biasDir"):
        LatentOPES(bare_system(1), model, v, 300, barrier=20.0, pace=10, saveFrequency=100)
    with pytest.raises(ValueError, match="sigmaSampleInterval"):
        LatentOPES(bare_system(1), model, v, 300, barrier=20.0, pace=10, adaptiveSigmaStride=100,
                   sigmaSampleInterval=3)
    with pytest.raises(ValueError, match="latent_dim=1"):
        LatentOPES(bare_system(1), model, [LatentVariable(1, -1, 1, 0.1)], 300, barrier=20.0, pace=10)


# ------------------------------------------------------------------------------------------- published peer


@pytest.mark.slow
def test_same_free_energy_as_openmm_opes_on_alanine_dipeptide():
    """LatentOPES vs openmm-opes 0.2.0 on ala2 vacuum φ/ψ (``benchmarks/opes_vs_peer.py``: 300 K, barrier 40 kJ/mol,
    pace 1 ps, σ0 0.15 rad), 20 seeds per code, 1 ns per run; LatentOPES' φ/ψ from CustomTorsionForces (the CV
    module gives the same energies and forces to 1e-13, test_opes_vs_peer.py). ΔF(C7ax − rest) from the bias and
    from c(t) reweighting:

    * equivalence (TOST at 5 %) of the two codes' means within ±1.25 kJ/mol for both estimators. The margin is
      what 20 seeds can show: with the measured seed-to-seed sd ≈ 1.0–1.25 kJ/mol the 90 % interval of the
      difference is ≈ ±0.6 kJ/mol wide, so two identical samplers pass with ≈ 93 % probability at ±1.25 and
      cannot be shown equivalent at ±0.5 (RESULTS.md, 2026-11-30). The algorithms' exact agreement is the fast
      replay test in test_opes_vs_peer.py;
    * both codes' means within 1 kJ/mol (+ 2 standard errors) of the long-metadynamics reference 11.73 kJ/mol.

    On the 2-core VM (Reference platform, same seeds) this reproduces the benchmark's runs: 90 % intervals
    [−0.88, +0.33] (bias) and [−0.92, +0.15] (reweighting). About 30 min on one idle core (40 runs of ~45 s)."""
    pytest.importorskip("openmm_opes")
    import importlib.util

    spec = importlib.util.spec_from_file_location("opes_vs_peer", TESTS.parent / "benchmarks" / "opes_vs_peer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [bench.run(code, seed, 1.0, cv="torsion") for code in ("latent", "peer") for seed in range(1, 21)]
    res = bench.compare(rows, margin=1.25)
    for key in ("dF_bias", "dF_rw"):
        c = res[("latent/torsion", key, "peer")]
        assert c["equivalent"], (key, c)
        for label in ("latent/torsion", "peer"):
            r = res[(label, key, "reference")]
            assert abs(r["diff"]) <= 1.0 + 2 * r["se"], (label, key, r)


def test_state_saved_before_kernel_truncation_resumes_untruncated(tmp_path, caplog):
    """A state written before OPES kernels could be truncated (its settings have no ``kernelCutoff``) holds
    untruncated kernel sums. A default-built LatentOPES must continue it exactly as it was run (a campaign started
    with an older latentbias resumes), with a warning, not refuse it or mix truncated kernels into it."""
    from latentbias.io import load_json, write_json

    opes, sim = make_1d(tmp_path, seed=7, kernelCutoff=None)
    opes.step(sim, 2000)
    opes.saveState(tmp_path / "old")
    checkpoint = sim.context.createCheckpoint()
    opes.step(sim, 2000)
    meta = tmp_path / "old.json"
    info = load_json(meta)
    del info["settings"]["kernelCutoff"]
    write_json(meta, info, checksum=True)

    resumed, sim2 = make_1d(tmp_path, seed=99)  # default kernelCutoff
    assert resumed.kde.cutoff is not None
    with caplog.at_level("WARNING", logger="latentbias"):
        resumed.loadState(tmp_path / "old")
    assert "untruncated" in caplog.text and "old.json" in caplog.text
    assert resumed.kde.cutoff is None
    sim2.context.loadCheckpoint(checkpoint)
    resumed.step(sim2, 2000)
    np.testing.assert_array_equal(resumed.getBias(), opes.getBias())
    assert resumed.numKernels == opes.numKernels
