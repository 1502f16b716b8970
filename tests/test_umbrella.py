"""Umbrella sampling along latent coordinates + MBAR against analytic free energies; paths; resume."""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.bias import LatentRestraint, LatentUmbrellaSampling, UmbrellaResult, path_coordinate, straight_path

from test_metadynamics import rmse_below
from toy import DOUBLE_WELL_1D, bin_averaged_fes, bin_averaged_fes_2d, MULTI_WELL_2D, double_well_1d, identity_model, multi_well_2d, particle_simulation, particle_system


def test_straight_path_and_path_coordinate():
    path = straight_path([0.0, 0.0], [3.0, 4.0], 6)
    assert path.shape == (6, 2)
    np.testing.assert_allclose(path[1], [0.6, 0.8])
    s = path_coordinate([[0.0, 0.0], [3.0, 4.0], [1.5, 2.0], [-0.6, -0.8], [3.6, 4.8], [4.0, -3.0]], path)
    np.testing.assert_allclose(s, [0.0, 5.0, 2.5, -1.0, 6.0, 0.0], atol=1e-12)
    bent = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(path_coordinate([[1.0, 0.5], [0.5, -0.1], [1.1, 1.5]], bent), [1.5, 0.5, 2.5])
    with pytest.raises(ValueError, match="at least 2"):
        straight_path([0], [1], 1)


def run_1d_umbrella(tmp_path, windows=None, output_dir=None, seed=3):
    model = tmp_path / "x.pt"
    if not model.exists():
        identity_model(model, 1, 1)
    system = particle_system(DOUBLE_WELL_1D)
    restraint = LatentRestraint(model, system, centers=[-0.8], forceConstants=[0.0])
    sim = particle_simulation(system, [-0.8], seed=seed)
    centers = straight_path([-0.8], [0.8], 17)
    us = LatentUmbrellaSampling(sim, restraint, centers, 500.0, 300.0, outputDir=output_dir)
    return us.run(stepsPerWindow=6000, sampleInterval=20, equilibrationSteps=500, windows=windows, progress=False)


def test_1d_umbrella_mbar_matches_analytic(tmp_path):
    """17 windows, k = 500 kJ/mol/nm^2, 300 samples each: RMSE <= 1 kJ/mol where F < 15 kJ/mol."""
    result = run_1d_umbrella(tmp_path)
    assert result.n_samples.tolist() == [300] * 17
    logw, f_k, df_k = result.mbar()
    assert np.all(np.isfinite(f_k)) and np.all(df_k[1:] > 0)
    fes = result.free_energy_along_path(bins=32)
    ref = bin_averaged_fes(double_well_1d, -0.8 + fes.edges[0])  # arc length 0 is the first window, x = -0.8
    ok = np.isfinite(fes.free_energy)
    assert ok.all()
    assert rmse_below(fes.free_energy, ref, 15.0) <= 1.0
    assert np.all(np.isfinite(fes.error[ok & (fes.free_energy < 10)]))


def test_umbrella_resume_and_split_across_processes(tmp_path):
    out = tmp_path / "us"
    first = run_1d_umbrella(tmp_path, windows=range(0, 17, 2), output_dir=out)
    assert first is None  # odd windows missing
    done = sorted(p.name for p in out.glob("window_*.npz"))
    assert len(done) == 9
    stamp = (out / "window_000.npz").stat().st_mtime_ns
    result = run_1d_umbrella(tmp_path, output_dir=out, seed=4)  # 'another process' runs the rest; done ones skipped
    assert (out / "window_000.npz").stat().st_mtime_ns == stamp
    assert isinstance(result, UmbrellaResult) and len(result.z) == 17
    loaded = UmbrellaResult.load(out)
    np.testing.assert_array_equal(loaded.all_z, result.all_z)
    with pytest.raises(ValueError, match="different windows"):
        system = particle_system(DOUBLE_WELL_1D)
        r = LatentRestraint(tmp_path / "x.pt", system, centers=[0.0], forceConstants=[0.0])
        LatentUmbrellaSampling(particle_simulation(system, [0.0]), r, straight_path([-1], [1], 5), 100.0, 300.0,
                               outputDir=out)


def test_2d_umbrella_grid_mbar_matches_analytic(tmp_path):
    """9x9 windows (24 ps each) on the 2-D three-well potential, k = 300 kJ/mol/nm^2, 14x14 bins: RMSE <= 1 kJ/mol
    where F < 15 kJ/mol (against the exact bin-averaged FES)."""
    model = identity_model(tmp_path / "xy.pt", 1, 2)
    system = particle_system(MULTI_WELL_2D)
    restraint = LatentRestraint(model, system, centers=[0.0, 0.0], forceConstants=[0.0, 0.0])
    sim = particle_simulation(system, [0.0, 0.0], seed=11)
    g = np.linspace(-1.0, 1.0, 9)
    centers = np.array([[x, y] for i, x in enumerate(g) for y in (g if i % 2 == 0 else g[::-1])])  # serpentine
    us = LatentUmbrellaSampling(sim, restraint, centers, 300.0, 300.0)
    result = us.run(stepsPerWindow=6000, sampleInterval=40, equilibrationSteps=300, progress=False)
    fes = result.free_energy_2d(bins=14, range=[[-1.1, 1.1], [-1.1, 1.1]], n_bootstrap=20)  # errors not checked here
    ref = bin_averaged_fes_2d(multi_well_2d, *fes.edges)
    ok = np.isfinite(fes.free_energy)
    assert ok[ref - ref.min() < 15].mean() > 0.95
    assert rmse_below(np.where(ok, fes.free_energy, np.nan), ref, 15.0) <= 1.0


def test_path_coordinate_periodic_minimum_image():
    """On a dimension of period 2π a sample at −3.0 rad lies 0.2833 rad beyond 3.0 on a path 2.6 → 3.6 rad."""
    path = straight_path([2.6], [3.6], 6)
    two_pi = 2.0 * np.pi
    s = path_coordinate([[-3.0], [2.8], [3.6 - two_pi]], path, period=[two_pi])
    np.testing.assert_allclose(s, [2.0 * np.pi - 3.0 - 2.6, 0.2, 1.0], atol=1e-12)
    assert path_coordinate([[-3.0]], path)[0] < 0  # without the period the wrapped sample falls off the path
    wrapped = np.array([[2.6], [3.0], [-3.083185307179586]])  # the same path given wrapped
    np.testing.assert_allclose(path_coordinate([[-3.0]], wrapped, period=[two_pi]),
                               path_coordinate([[-3.0]], path[[0, 2, 4]], period=[two_pi]), atol=1e-12)
    with pytest.raises(ValueError, match="period"):
        path_coordinate([[0.0]], path, period=[-1.0])


def test_periodic_umbrella_on_flat_landscape_gives_flat_profile():
    """Flat landscape, 11 windows from 2.6 to 3.6 rad on a periodic latent dimension (period 2π, samples wrapped
    into [−π, π) as an encoder returns them), k = 200 kJ/mol/rad², 400 exact samples per window: the MBAR profile
    along the path is flat (|F| ≤ 3σ + 0.1 kJ/mol in every bin) with no NaN (issue 8 d: the old path coordinate
    dropped wrapped samples and returned NaN beyond π)."""
    rng = np.random.default_rng(4)
    kt = 0.00831446261815324 * 300.0
    centers = np.linspace(2.6, 3.6, 11)[:, None]
    k = 200.0
    z = [np.mod(c + rng.normal(0.0, np.sqrt(kt / k), (400, 1)) + np.pi, 2 * np.pi) - np.pi for c in centers]
    restraint = {"dims": [0], "centers": [0.0], "force_constants": [0.0], "lower_walls": [-np.inf],
                 "upper_walls": [np.inf], "wall_force_constant": [0.0], "period": [2 * np.pi]}
    result = UmbrellaResult(centers, np.full_like(centers, k), z, 300.0, restraint)
    assert np.any(result.all_z > 3.1) and np.any(result.all_z < -3.1)  # samples do wrap
    fes = result.free_energy_along_path(bins=10, n_bootstrap=50)
    assert np.all(np.isfinite(fes.free_energy)) and np.all(np.isfinite(fes.error))
    f = fes.free_energy - np.average(fes.free_energy, weights=1 / fes.error**2)
    assert np.all(np.abs(f) <= 3 * fes.error + 0.1), f
    assert np.ptp(fes.free_energy) < 1.0
