"""Fast exact tests of ``latentbias/bias/umbrella.py`` (issue 15): the first part of the module's mutation selection.

References: the restraint energy ½ k (z − c)² in closed form, pymbar's own MBAR on a u_kn built by hand, exact
Gaussian window samples on a flat landscape (ΔF = −kT ln(P_B/P_A) of the flat density), and the Context's own
state (step counter, particle position read by an identity encoder) for ``run``.
"""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.bias import LatentRestraint, LatentUmbrellaSampling, UmbrellaResult, path_coordinate, straight_path

from toy import identity_model, particle_simulation, particle_system

R_KJMOL = 0.00831446261815324


def _flat_result(seed=2, n=300):
    """Three windows k = 150 kJ/mol/z² at c = -0.2, 0, 0.2 (not periodic), exact samples of exp(-β ½ k (z − c)²)
    on a flat landscape, plus a free second latent component."""
    rng = np.random.default_rng(seed)
    kt = R_KJMOL * 310.0
    centers = np.array([[-0.2], [0.0], [0.2]])
    k = 150.0
    z = [np.column_stack([c + rng.normal(0.0, np.sqrt(kt / k), n), rng.normal(size=n)]) for c in centers[:, 0]]
    restraint = {"dims": [0], "centers": [0.0], "force_constants": [0.0], "lower_walls": [-np.inf],
                 "upper_walls": [np.inf], "wall_force_constant": [0.0], "period": [0.0]}
    return UmbrellaResult(centers, np.full_like(centers, k), z, 310.0, restraint), kt, k


def test_reduced_potentials_and_mbar_equal_pymbar_on_closed_form_energies():
    from pymbar import MBAR

    res, kt, k = _flat_result()
    assert res.n_samples.tolist() == [300, 300, 300]
    np.testing.assert_array_equal(res.window_of_sample, np.repeat([0, 1, 2], 300))
    np.testing.assert_array_equal(res.period, [0.0])
    z = res.all_z[:, 0]
    u = np.stack([0.5 * k * (z - c) ** 2 / kt for c in (-0.2, 0.0, 0.2)])
    np.testing.assert_allclose(res.reduced_potentials(), u, rtol=1e-12)
    logw, f_k, df_k = res.mbar()
    mbar = MBAR(u, [300, 300, 300])
    f_ref = mbar.compute_free_energy_differences()["Delta_f"][0]
    np.testing.assert_allclose(f_k, f_ref, atol=1e-6)
    w_ref = np.exp(-np.log(np.sum(300 * np.exp(f_ref[:, None] - u), axis=0)))
    np.testing.assert_allclose(np.exp(logw), w_ref / w_ref.sum(), rtol=1e-5)
    assert df_k[0] == 0.0 and np.all(df_k[1:] > 0)
    with pytest.raises(ValueError, match="no samples"):
        UmbrellaResult(res.centers, res.force_constants, [res.z[0], res.z[1], np.zeros((0, 2))], 310.0,
                       res.restraint).mbar()


def test_flat_landscape_difference_and_profile_along_the_path():
    """On a flat landscape the MBAR density of z is uniform where the windows overlap: ΔF between [-0.25, -0.05)
    and [0.05, 0.25) is 0 within 3σ (bootstrap) + 0.05 kJ/mol, and the profile along the centres is flat."""
    res, kt, _ = _flat_result(seed=5, n=400)
    est = res.free_energy_difference(lambda z: (z[:, 0] >= -0.25) & (z[:, 0] < -0.05),
                                     lambda z: (z[:, 0] >= 0.05) & (z[:, 0] < 0.25), n_bootstrap=40)
    assert np.isfinite(est.error) and 0 < est.error < 1.0
    assert abs(est.value) <= 3 * est.error + 0.05
    s, length = res.path_coordinate()
    assert length == pytest.approx(0.4, rel=1e-12)
    np.testing.assert_allclose(s, res.all_z[:, 0] + 0.2, atol=1e-12)  # arc length from the first centre
    fes = res.free_energy_along_path(bins=4, n_bootstrap=30)
    assert fes.edges[0][0] == 0.0 and fes.edges[0][-1] == pytest.approx(0.4)
    assert np.all(np.isfinite(fes.error)) and np.all(np.abs(fes.free_energy) <= 3 * fes.error + 0.1)
    fes2 = res.free_energy_2d(dims=(0, 1), bins=3, range=[[-0.2, 0.2], [-1.0, 1.0]], n_bootstrap=20)
    assert fes2.free_energy.shape == (3, 3) and np.all(np.isfinite(fes2.free_energy))


def test_periodic_observable_is_cos_sin_and_period_shape():
    res, _, _ = _flat_result()
    np.testing.assert_array_equal(res._observable()[:, 0], res.all_z[:, 0])
    periodic = UmbrellaResult(res.centers, res.force_constants, res.z, 310.0, {**res.restraint, "period": [2.0]})
    obs = periodic._observable()
    phase = np.pi * res.all_z[:, 0]
    np.testing.assert_allclose(obs, np.column_stack([np.cos(phase), np.sin(phase)]), rtol=1e-12, atol=1e-15)
    no_period = {k: v for k, v in res.restraint.items() if k != "period"}
    np.testing.assert_array_equal(UmbrellaResult(res.centers, res.force_constants, res.z, 310.0, no_period).period,
                                  [0.0])


def test_straight_path_and_path_coordinate_checks():
    np.testing.assert_allclose(straight_path([1.0], [2.0], 2), [[1.0], [2.0]])
    with pytest.raises(ValueError, match="same length"):
        straight_path([0.0], [1.0, 2.0], 3)
    with pytest.raises(ValueError, match="repeated"):
        path_coordinate([[0.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match=r"shape \(m >= 2, 1\)"):
        path_coordinate([[0.0]], [[1.0]])
    with pytest.raises(ValueError, match="half a period"):
        path_coordinate([[0.0]], [[0.0], [3.0]], period=[6.0])  # exactly half: ambiguous direction
    with pytest.raises(ValueError, match="period must hold 1 values"):
        path_coordinate([[0.0]], [[0.0], [0.2], [0.4]], period=[1.0, 2.0])
    with pytest.raises(ValueError, match="half a period"):
        path_coordinate([[0.0]], [[0.0], [0.5]], period=[1.0])
    # period 1: a sample at 0.95 is 0.05 before a path 0.1 -> 0.3 ... -> 0.2 before its start
    np.testing.assert_allclose(path_coordinate([[0.95]], [[0.1], [0.2], [0.3]], period=[1.0]), [-0.15], atol=1e-12)
    # points before the start of a bent path extrapolate its first segment
    bent = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
    np.testing.assert_allclose(path_coordinate([[-0.5, 0.0], [1.0, 1.5]], bent), [-0.5, 2.5], atol=1e-12)
    # a period of 0 on one dimension leaves it Euclidean while the other wraps
    s = path_coordinate([[0.1, 2.9]], [[0.0, 2.5], [0.0, 3.5]], period=[0.0, 2 * np.pi])
    np.testing.assert_allclose(s, [0.4], atol=1e-12)


def test_run_records_every_sample_of_every_window_and_resumes(tmp_path):
    """Three windows, 5 samples of 4 steps after 6 equilibration steps each: the recorded steps are the Context's
    step counter, z is the particle's x (identity encoder), each window's samples sit around its own centre
    (k = 5000 kJ/mol/nm²: σ = 0.022 nm), and a rerun with the same outputDir skips every finished window."""
    model = identity_model(tmp_path / "x.pt", 1, 1)
    system = particle_system("0")
    restraint = LatentRestraint(model, system, centers=[0.0], forceConstants=[0.0])
    sim = particle_simulation(system, [-0.3], seed=2)
    centers = straight_path([-0.3], [0.3], 3)
    out = tmp_path / "us"
    us = LatentUmbrellaSampling(sim, restraint, centers, 5000.0, 300.0, outputDir=out)
    with pytest.raises(ValueError, match="at least sampleInterval"):
        us.run(stepsPerWindow=3, sampleInterval=4, progress=False)
    res = us.run(stepsPerWindow=20, sampleInterval=4, equilibrationSteps=6, progress=False)
    assert isinstance(res, UmbrellaResult) and res.n_samples.tolist() == [5, 5, 5]
    np.testing.assert_array_equal(np.concatenate(res.steps), [10, 14, 18, 22, 26, 36, 40, 44, 48, 52,
                                                              62, 66, 70, 74, 78])
    for zk, c in zip(res.z, centers[:, 0]):
        assert abs(zk[-1, 0] - c) < 0.15
    np.testing.assert_allclose(res.force_constants, 5000.0)
    assert sim.currentStep == 78
    again = LatentUmbrellaSampling(sim, restraint, centers, 5000.0, 300.0, outputDir=out)
    res2 = again.run(stepsPerWindow=20, sampleInterval=4, progress=False)
    assert sim.currentStep == 78  # nothing left to run
    np.testing.assert_array_equal(res2.all_z, res.all_z)
    alone = LatentUmbrellaSampling(sim, restraint, centers, 5000.0, 300.0)
    assert alone.run(stepsPerWindow=4, sampleInterval=4, windows=[1], progress=False) is None  # windows 0, 2 missing
    # without outputDir and without equilibration: 2 samples of 4 steps per window, returned in window order
    start = sim.currentStep
    res3 = alone.run(stepsPerWindow=8, sampleInterval=4, progress=False)
    np.testing.assert_array_equal(np.concatenate(res3.steps), start + np.arange(4, 25, 4))
    assert [zk.shape for zk in res3.z] == [(2, 1)] * 3
    assert abs(res3.z[2][-1, 0] - sim.context.getState(getPositions=True).getPositions(asNumpy=True)[0][0]._value) < 1e-6
    weak = LatentUmbrellaSampling(sim, restraint, centers, 0.5, 300.0)  # any positive force constant is allowed
    np.testing.assert_allclose(weak.forceConstants, 0.5)
    with pytest.raises(ValueError, match="positive"):
        LatentUmbrellaSampling(sim, restraint, centers, 0.0, 300.0)
    with pytest.raises(ValueError, match=r"centers must have shape \(K, 1\)"):
        LatentUmbrellaSampling(sim, restraint, [[0.0, 1.0]], 5000.0, 300.0)


# ------------------------------------------------------------------ issue 15, second sitting (helper kill15b)

def test_segments_along_a_non_periodic_dimension_have_no_length_limit():
    """Only periodic dimensions limit a segment to half their period: a path 5 units long along a non-periodic
    z0 (longer than half of z1's period 2π) is fine, and a point on it projects to its arc length; a segment of half
    z1's period (ambiguous direction) is refused."""
    path = [[0.0, 0.0], [5.0, 0.0]]
    s = path_coordinate([[2.0, 0.3], [4.5, -0.2]], path, period=[0.0, 2 * np.pi])
    np.testing.assert_allclose(s, [2.0, 4.5], atol=1e-12)
    with pytest.raises(ValueError, match="half a period"):
        path_coordinate([[0.0, 0.0]], [[0.0, 0.0], [0.0, np.pi]], period=[0.0, 2 * np.pi])


def test_periodic_observable_is_continuous_across_the_wrap_for_a_short_period():
    """On a dimension of period 0.5 (any period > 0, including those ≤ 1), samples at z = ±0.249 are 0.002 apart
    through the wrap: their observables must be close (a jump of 0.498 would be a discontinuity), and z and z + P
    (0.749 and 0.249) give the same observable."""
    res, _, _ = _flat_result()
    z = [np.array([[0.249, 0.0], [-0.249, 0.0], [0.749, 0.0]])] * 3
    periodic = UmbrellaResult(res.centers, res.force_constants, z, 310.0, {**res.restraint, "period": [0.5]})
    obs = periodic._observable()
    assert np.linalg.norm(obs[0] - obs[1]) < 2 * np.pi * 0.002 / 0.5 + 1e-9
    np.testing.assert_allclose(obs[2], obs[0], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(obs, axis=1), 1.0, rtol=1e-12)


def test_path_shape_message_names_the_latent_dimension():
    """Three 1-D points and a one-vertex path: the message asks for a path of shape (m >= 2, 1), d = 1 the
    points' dimension (not their number, 3)."""
    with pytest.raises(ValueError, match=r"shape \(m >= 2, 1\)"):
        path_coordinate([[0.0], [0.1], [0.2]], [[1.0]])
    with pytest.raises(ValueError, match=r"shape \(m >= 2, 2\)"):
        path_coordinate([[0.0, 0.0], [0.1, 0.1], [0.2, 0.2]], [[1.0], [2.0]])


def test_a_nested_output_dir_is_created(tmp_path):
    model = identity_model(tmp_path / "x.pt", 1, 1)
    system = particle_system("0")
    restraint = LatentRestraint(model, system, centers=[0.0], forceConstants=[0.0])
    sim = particle_simulation(system, [0.0], seed=2)
    out = tmp_path / "a" / "b" / "us"
    LatentUmbrellaSampling(sim, restraint, [[0.0]], 5000.0, 300.0, outputDir=out)
    assert (out / "umbrella.json").is_file()
