"""Tests written for mutants that survived cosmic-ray (TESTING.md lists each one and the test that kills it).

Mostly edge cases of the estimators' input contracts: zero-weight frames, single frames, empty input, counts that
are not integers, and the uncertainties that come with MBAR's free energies.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from latentbias.analysis import effective_sample_size, kt_kjmol, mbar_logweights, normalize_logweights
from latentbias.analysis.reweight import well_tempered_ct


# ------------------------------------------------------------------------------------- analysis/reweight.py


def test_zero_weight_frames_do_not_change_normalisation_or_ess():
    """-inf log-weights are frames of zero weight: they are allowed and change nothing."""
    logw = np.array([0.2, -np.inf, -1.0, 0.7, -np.inf])
    finite = logw[np.isfinite(logw)]
    w = normalize_logweights(logw)
    assert w[1] == 0.0 and w[4] == 0.0
    np.testing.assert_allclose(w[np.isfinite(logw)], normalize_logweights(finite), rtol=1e-15)
    assert effective_sample_size(logw) == pytest.approx(effective_sample_size(finite), rel=1e-14)
    p = np.exp(finite) / np.exp(finite).sum()
    assert effective_sample_size(finite) == pytest.approx(1.0 / np.sum(p**2), rel=1e-14)


def test_single_frame_and_empty_or_all_zero_weights():
    np.testing.assert_array_equal(normalize_logweights([3.7]), [1.0])
    assert effective_sample_size([-2.0]) == pytest.approx(1.0, rel=1e-15)
    for bad in ([], [-np.inf, -np.inf]):
        with pytest.raises(ValueError, match="at least one finite"):
            normalize_logweights(bad)
        with pytest.raises(ValueError, match="at least one finite"):
            effective_sample_size(bad)


def test_well_tempered_ct_of_a_one_cell_grid_is_the_bias_and_empty_grid_raises():
    """With a single cell both sums have one term: c = (1/beta) ln(exp(g/(g-1) beta V) / exp(beta V/(g-1))) = V."""
    for gamma in (1.5, 5.0, math.inf):
        assert well_tempered_ct([7.5], 300.0, gamma) == pytest.approx(7.5, rel=1e-13)
    with pytest.raises(ValueError, match="empty"):
        well_tempered_ct([], 300.0, 5.0)


def _two_state_data():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(-0.2, 0.1, 30), rng.normal(0.2, 0.1, 50)])
    u = np.vstack([50.0 * (x + 0.2) ** 2, 50.0 * (x - 0.2) ** 2])
    return x, u


def test_mbar_counts_must_be_integers_non_negative_and_one_per_state():
    _, u = _two_state_data()
    with pytest.raises(ValueError, match="integer"):
        mbar_logweights(u, [29.5, 50.5])
    logw, _, _ = mbar_logweights(u, np.array([30.0, 50.0]))  # integral floats are fine
    assert np.all(np.isfinite(logw))
    with pytest.raises(ValueError, match="non-negative"):
        mbar_logweights(u[:, :2], [-1, 3])
    with pytest.raises(ValueError, match="one count per state"):
        mbar_logweights(u, [20, 30, 30])  # right total, wrong number of states
    with pytest.raises(ValueError, match="one count per state"):
        mbar_logweights(u, [[30, 50]])


def test_mbar_uncertainties_are_relative_to_state_zero_as_pymbar():
    """df_k is the uncertainty of f_k - f_0: zero for state 0, pymbar's dDelta_f[0, k] otherwise."""
    from pymbar import MBAR

    from latentbias.analysis.reweight import quiet_pymbar

    _, u = _two_state_data()
    u = np.vstack([u, 30.0 * (np.concatenate([np.zeros(30), np.ones(50)]) * 0.1)])  # a third, zero-count state
    n_k = np.array([30, 50, 0])
    _, f_k, df_k = mbar_logweights(u, n_k)
    with quiet_pymbar():
        ref = MBAR(u, n_k, solver_protocol="robust").compute_free_energy_differences()
    assert df_k[0] == 0.0
    np.testing.assert_allclose(df_k, ref["dDelta_f"][0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(f_k, ref["Delta_f"][0], rtol=1e-8, atol=1e-10)
    assert kt_kjmol(300.0) * df_k[1] > 0


# ---------------------------------------------------------------------------------------------- geometry.py


def test_rigid_frames_are_right_handed_orthonormal_and_equivariant():
    """Backbone frames (used by the FAPE loss) for a batch of residues: orthonormal columns, det +1, e1 along
    CA->C, e2 in the N-CA-C plane on N's side, origin CA; rotating the input rotates the frames (R(Qx) = Q R(x))."""
    import torch

    from latentbias.geometry import rigid_frames

    rng = np.random.default_rng(4)
    n, ca, c = (torch.as_tensor(rng.standard_normal((3, 5, 3))) for _ in range(3))  # (batch, residues, 3)
    rot, origin = rigid_frames(n, ca, c, eps=0.0)
    assert rot.shape == (3, 5, 3, 3) and origin.shape == (3, 5, 3)
    eye = torch.eye(3, dtype=torch.float64).expand(3, 5, 3, 3)
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(3, 5, dtype=torch.float64), rtol=0, atol=1e-12)
    e1, e2 = rot[..., 0], rot[..., 1]
    torch.testing.assert_close(e1, (c - ca) / torch.linalg.norm(c - ca, dim=-1, keepdim=True), rtol=0, atol=1e-12)
    normal = torch.linalg.cross(c - ca, n - ca)
    assert torch.all(torch.abs((e2 * normal).sum(-1)) < 1e-12) and torch.all((e2 * (n - ca)).sum(-1) > 0)
    torch.testing.assert_close(origin, ca)
    q = torch.as_tensor(np.linalg.qr(rng.standard_normal((3, 3)))[0])
    q = q if torch.linalg.det(q) > 0 else -q
    rot_q, _ = rigid_frames(n @ q.T, ca @ q.T, c @ q.T, eps=0.0)
    torch.testing.assert_close(rot_q, q @ rot, rtol=0, atol=1e-12)
    # the default regulariser (eps = 1e-8 nm^2 under the square roots) changes nothing at the 1e-7 level
    rot_default, _ = rigid_frames(n, ca, c)
    torch.testing.assert_close(rot_default, rot, rtol=0, atol=1e-7)


def test_rigid_frames_stay_finite_for_degenerate_residues():
    """The eps under the square roots exists for degenerate input (coincident atoms, as in a collapsed decoder
    output): frames and their gradients must stay finite there instead of NaN poisoning a FAPE loss."""
    import torch

    from latentbias.geometry import rigid_frames

    ca = torch.zeros(2, 3, dtype=torch.float64)
    n = torch.tensor([[0.1, 0.05, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)  # N == CA
    c = torch.tensor([[0.0, 0.0, 0.0], [0.15, 0.0, 0.02]], dtype=torch.float64, requires_grad=True)  # C == CA
    rot, _ = rigid_frames(n, ca, c)
    assert torch.all(torch.isfinite(rot))
    rot.sum().backward()
    assert torch.all(torch.isfinite(n.grad)) and torch.all(torch.isfinite(c.grad))


# ------------------------------------------------------------------------------------------ analysis/fes.py


def test_fes_block_with_zero_weight_does_not_stop_the_other_blocks():
    """A block whose frames all have zero weight (-inf log-weight) is skipped; the blocks after it still count.
    Blocks 0, 2, 3 put 10, 20, 30 of 40 frames in bin 0: error = std(F_b, ddof=1)/sqrt(3) over those three."""
    from latentbias.analysis import free_energy_surface

    kt = kt_kjmol(300.0)
    counts = {0: 10, 2: 20, 3: 30}
    cv, logw = [], []
    for b in range(4):
        c = counts.get(b, 40)
        cv.append(np.where(np.arange(40) < c, 0.25, 0.75))
        logw.append(np.full(40, -np.inf if b == 1 else 0.0))
    fes = free_energy_surface(np.concatenate(cv), np.concatenate(logw), bins=2, range=(0, 1), n_blocks=4)
    f_b = -kt * np.log(np.array([10, 20, 30]) / 40 / 0.5)
    assert fes.error[0] == pytest.approx(np.std(f_b, ddof=1) / np.sqrt(3), rel=1e-12)


def test_fes_input_checks_and_defaults():
    from latentbias.analysis import free_energy_surface

    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    with pytest.raises(ValueError, match="min_count"):
        free_energy_surface(x, min_count=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        free_energy_surface(x, bins=[-1.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="strictly increasing|invalid bins"):
        free_energy_surface(x, bins=[[-1.0, 1.0, 0.5]])
    with pytest.raises(ValueError, match="range must be"):
        free_energy_surface(rng.normal(size=(500, 2)), bins=4, range=(-1, 1))  # a 1-D range for a 2-D CV
    xy = rng.normal(size=(500, 2))
    fes = free_energy_surface(xy, bins=[4, 5])  # per-dimension bin counts, range from the data
    assert fes.free_energy.shape == (4, 5)
    np.testing.assert_allclose([fes.edges[0][0], fes.edges[0][-1]], [xy[:, 0].min(), xy[:, 0].max()])
    assert free_energy_surface(x).free_energy.shape == (50,)  # documented default: 50 bins
    assert free_energy_surface(x, bins=1).free_energy.shape == (1,)  # one bin (two edges) is a valid grid
    one = free_energy_surface(x, bins=4, range=[(-1.0, 1.0)])  # ((lo, hi),) is accepted for a 1-D CV too
    np.testing.assert_array_equal(one.edges[0], np.linspace(-1.0, 1.0, 5))
    with pytest.raises(ValueError, match="lo < hi"):
        free_energy_surface(x, bins=4, range=(1.0, -1.0))
    with pytest.raises(ValueError, match="finite"):
        free_energy_surface(x, bins=[-np.inf, 0.0, 1.0])


def test_block_labels_skip_empty_segments():
    from latentbias.analysis.fes import block_labels

    np.testing.assert_array_equal(block_labels([0, 4, 0, 2], 2), [0, 0, 1, 1, 0, 1])


def test_basin_difference_default_temperature_and_overlap_warning(caplog):
    import logging

    from latentbias.analysis import basin_free_energy_difference

    cv = np.repeat([-1.0, 1.0], [30, 10])
    df, _ = basin_free_energy_difference(cv, None, cv < 0, cv > 0)
    assert df == pytest.approx(-kt_kjmol(300.0) * np.log(10 / 30), rel=1e-12)  # default 300 K
    single = np.repeat([-1.0, 1.0], [30, 1])  # a basin holding one frame is a valid (if noisy) estimate
    df1, _ = basin_free_energy_difference(single, None, single < 0, single > 0, n_blocks=1)
    assert df1 == pytest.approx(-kt_kjmol(300.0) * np.log(1 / 30), rel=1e-12)
    log = logging.getLogger("latentbias.analysis.fes")  # the package logger may not propagate to the root
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="latentbias.analysis.fes"):
            basin_free_energy_difference(cv, None, cv < 0, cv > 0)
            assert "both basins" not in caplog.text
            basin_free_energy_difference(cv, None, cv < 2.0, cv > 0)  # the 10 frames at +1 are in both
            assert "10 frames are in both basins" in caplog.text
    finally:
        log.removeHandler(caplog.handler)



# ---------------------------------------------------------------------------------- campaign/weights.py


def _pymbar_target_weights(u_kn, n_k):
    """pymbar's W_nk of an unbiased column (u = 0) added as a state with N = 0."""
    from pymbar import MBAR

    from latentbias.analysis.reweight import quiet_pymbar

    with quiet_pymbar():
        mbar = MBAR(np.vstack([u_kn, np.zeros(u_kn.shape[1])]), np.append(n_k, 0), solver_protocol="robust")
    return np.asarray(mbar.weights())[:, -1]


def test_metad_bias_state_defaults_to_the_unscaled_grid_and_periodic_axes_have_no_walls():
    """BiasState("metad") without a scale is the bias as deposited (scale 1): at the nodes it equals the grid
    values exactly. A periodic latent variable is wrapped, never walled: z and z + period have the same energy."""
    from latentbias.bias.grid import BiasGrid, LatentVariable
    from latentbias.campaign.weights import BiasState

    v = LatentVariable(0, -1.0, 1.0, 0.2, gridWidth=9)
    values = np.random.default_rng(1).uniform(0.0, 10.0, 9)
    state = BiasState("metad", 0, variables=[v.toDict()], grid=values, wall_k=500.0)
    np.testing.assert_allclose(state.energy(v.axis[:, None]), values, rtol=1e-13)
    assert state.energy(np.array([[1.2]]))[0] == pytest.approx(values[-1] + 0.5 * 500.0 * 0.2**2, rel=1e-12)
    assert state.energy(np.array([[-1.5]]))[0] == pytest.approx(values[0] + 0.5 * 500.0 * 0.5**2, rel=1e-12)
    nowall = BiasState("metad", 0, variables=[v.toDict()], grid=values)  # no wall unless one is given
    np.testing.assert_allclose(nowall.energy(np.array([[1.7], [-3.0]])), values[[-1, 0]], rtol=1e-13)
    p = LatentVariable(0, -np.pi, np.pi, 0.3, periodic=True, gridWidth=25)
    pv = 5.0 * BiasGrid([p]).gaussian([2.9])
    pstate = BiasState("metad", 0, variables=[p.toDict()], grid=pv, wall_k=500.0, scale=0.5)
    z = np.random.default_rng(2).uniform(-np.pi, np.pi, (40, 1))
    e = pstate.energy(z)
    np.testing.assert_allclose(pstate.energy(z + 2 * np.pi), e, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pstate.energy(z - 4 * np.pi), e, rtol=1e-10, atol=1e-12)
    assert e.max() <= 0.5 * 5.0 + 1e-12  # scaled, and no wall anywhere


def test_restraint_bias_state_is_half_k_squared_distance_over_latent_dimensions():
    from latentbias.campaign.weights import BiasState

    state = BiasState("restraint", 0, center=np.array([0.3, -0.2]), k=800.0)
    z = np.array([[0.3, -0.2], [0.5, -0.2], [0.0, 0.2], [1.3, 0.8]])
    np.testing.assert_allclose(state.energy(z), [0.0, 16.0, 0.5 * 800.0 * (0.09 + 0.16), 800.0], rtol=1e-12)
    np.testing.assert_array_equal(BiasState("unbiased").energy(z), np.zeros(4))
    # a restraint without a force constant exerts no bias (not an inverted one)
    np.testing.assert_array_equal(BiasState("restraint", 0, center=np.array([0.3, -0.2])).energy(z), np.zeros(4))


@pytest.mark.parametrize("n_k", [(300, 40, 120, 80), (0, 60, 0, 250), (200, 0, 0, 50)],
                         ids=["four-states", "two-biased", "unbiased-and-metad"])
def test_cross_round_mbar_with_an_unbiased_state_and_unequal_counts_equals_pymbar(n_k):
    """Frames of the unbiased state (state 0, U0 = k0 x^2/2), of two restraint states of different encoders
    (z_r = a_r x) and of one metadynamics state, with unequal N_k (two to four of them holding frames), and
    frames kept out (-1). The log-weights in the unbiased ensemble must equal pymbar's W_nk (rel 1e-6) on
    u_kn = beta V_k(z_k(x_n)) built by hand, the kept-out frames must get -inf, and no encoder is asked for the
    unbiased state (there is none: encode(-1) raises)."""
    from latentbias.bias.grid import LatentVariable
    from latentbias.campaign.weights import BiasState, cross_round_logweights

    T = 320.0
    kt = kt_kjmol(T)
    k0 = 150.0
    rng = np.random.default_rng(11)
    scales = {0: 1.0, 1: 2.0}  # encoders of rounds 0 and 1: z = a x
    v = LatentVariable(0, -0.8, 0.8, 0.1, gridWidth=17)
    grid_values = 4.0 * np.cos(np.pi * v.axis / 0.8) + 4.0
    states = [BiasState("unbiased"), BiasState("restraint", 0, np.array([0.25]), 400.0),
              BiasState("restraint", 1, np.array([-0.3]), 100.0),
              BiasState("metad", 1, variables=[v.toDict()], grid=grid_values, wall_k=300.0, scale=0.7)]
    x = []
    for s, n in enumerate(n_k):
        # restraint states are Gaussian in x; the metadynamics state's frames are drawn from the unbiased one
        # (MBAR needs exact equations here, not exact samples)
        if states[s].kind == "restraint":
            a, kk, c = scales[states[s].model_round], states[s].k, states[s].center[0]
            prec = k0 + kk * a * a
            x.append(rng.normal(kk * a * c / prec, math.sqrt(kt / prec), n))
        else:
            x.append(rng.normal(0.0, math.sqrt(kt / k0), n))
    x = np.concatenate(x)
    state_of = np.repeat(np.arange(4), n_k)
    excluded = rng.choice(len(x), 25, replace=False)
    state_of[excluded] = -1
    perm = rng.permutation(len(x))  # frames of the states interleaved
    x, state_of = x[perm], state_of[perm]
    encoders = {r: (x * a)[:, None] for r, a in scales.items()}
    logw, info = cross_round_logweights(states, state_of, lambda q: encoders[q], T)
    keep = state_of >= 0
    assert np.all(np.isneginf(logw[~keep]))
    used = [s for s in range(4) if n_k[s]]
    u = np.vstack([states[s].energy(encoders.get(states[s].model_round, np.zeros((len(x), 1))))[keep] / kt
                   for s in used])
    counts = np.bincount(state_of[keep], minlength=4)[used]
    order = np.argsort(state_of[keep], kind="stable")
    ref = np.empty(int(keep.sum()))
    ref[order] = _pymbar_target_weights(u[:, order], counts)
    np.testing.assert_allclose(np.exp(logw[keep]), ref, rtol=1e-6, atol=1e-14)
    assert info["n_k"] == counts.tolist() and len(info["f_k"]) == len(used)
    assert info["ess"] == pytest.approx(1.0 / np.sum(ref**2), rel=1e-5)


def test_a_single_bias_state_is_reweighted_by_exp_beta_v():
    """Frames of one metadynamics state only: w_n ∝ exp(+βV(z_n)) (normalised), f = [0], ESS = 1/Σw²; with a
    restraint state alone likewise; no frame in the estimate gives all -inf and an ESS of 0."""
    from latentbias.bias.grid import LatentVariable
    from latentbias.campaign.weights import BiasState, cross_round_logweights

    T = 300.0
    v = LatentVariable(1, -1.0, 1.0, 0.1, gridWidth=11)
    st = BiasState("metad", 2, variables=[v.toDict()], grid=np.linspace(0.0, 6.0, 11), wall_k=100.0)
    z = np.random.default_rng(4).uniform(-1.2, 1.2, (30, 2))
    state_of = np.ones(30, dtype=int)
    state_of[:3] = -1
    logw, info = cross_round_logweights([BiasState("unbiased"), st], state_of, lambda q: {2: z}[q], T)
    e = st.energy(z[3:])
    w = np.exp(e / kt_kjmol(T))
    np.testing.assert_allclose(np.exp(logw[3:]), w / w.sum(), rtol=1e-12)
    assert np.all(np.isneginf(logw[:3]))
    assert info["f_k"] == [0.0] and info["df_k"] == [0.0] and info["n_k"] == [27]
    assert info["ess"] == pytest.approx(1.0 / np.sum((w / w.sum()) ** 2), rel=1e-12)
    none, info0 = cross_round_logweights([BiasState("unbiased"), st], -np.ones(30, dtype=int), lambda q: z, T)
    assert np.all(np.isneginf(none)) and info0["ess"] == 0.0


def test_converge_logweights_are_beta_bias_minus_ct_normalised_over_the_used_frames():
    from latentbias.campaign.weights import converge_logweights

    T = 350.0
    rng = np.random.default_rng(5)
    frames = {"bias_kjmol": rng.uniform(0, 20, 12), "ct_kjmol": np.sort(rng.uniform(0, 10, 12))}
    use = np.ones(12, dtype=bool)
    use[[0, 5]] = False
    logw = converge_logweights(frames, T, use)
    a = (frames["bias_kjmol"] - frames["ct_kjmol"]) / kt_kjmol(T)
    w = np.exp(a[use])
    np.testing.assert_allclose(np.exp(logw[use]), w / w.sum(), rtol=1e-12)
    assert np.all(np.isneginf(logw[~use]))
    all_used = converge_logweights(frames, T)
    np.testing.assert_allclose(np.exp(all_used), np.exp(a) / np.exp(a).sum(), rtol=1e-12)
    assert np.all(np.isneginf(converge_logweights(frames, T, np.zeros(12, dtype=bool))))


# ------------------------------------------------------------------------------------------ bias/grid.py


def _node_energy(grid, values, point):
    """Energy (kJ/mol) of OpenMM's tabulated function of ``grid`` holding ``values``, evaluated at ``point`` (one
    particle whose x, y, z are the latent coordinates), in a Reference-platform Context."""
    import openmm

    names = ["x1", "y1", "z1"][: grid.ndim]
    force = openmm.CustomCompoundBondForce(1, f"bias({', '.join(names)})")
    force.addTabulatedFunction("bias", grid.make_function(values))
    force.addBond([0], [])
    system = openmm.System()
    system.addParticle(1.0)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    pos = np.zeros((1, 3))
    pos[0, : grid.ndim] = point
    context.setPositions(pos)
    return context.getState(getEnergy=True).getPotentialEnergy()._value, force, context


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_openmm_tabulated_bias_equals_the_grid_values_at_every_node(ndim):
    """OpenMM's Continuous{1,2,3}DFunction (a spline through the nodes) built by make_function must return values[i, j,
    k] at (axis0[i], axis1[j], axis2[k]): the flattening order, the shape and the limits all enter. After
    set_function_parameters with other values the same holds for those (kJ/mol, to 1e-9)."""
    from latentbias.bias.grid import BiasGrid, LatentVariable

    widths = [5, 4, 6][:ndim]  # node spacing 0.5 (exact in binary), axes of different lengths
    grid = BiasGrid([LatentVariable(j, -1.0 + 0.25 * j, -1.0 + 0.25 * j + 0.5 * (n - 1), 0.3, gridWidth=n)
                     for j, n in enumerate(widths)])
    assert grid.shape == tuple(widths) and grid.ndim == ndim
    rng = np.random.default_rng(ndim)
    values = rng.uniform(-5.0, 5.0, grid.shape)
    nodes = [idx for idx in np.ndindex(*grid.shape) if all(0 < i < n - 1 for i, n in zip(idx, widths))]
    nodes += [tuple(0 for _ in widths)]  # the lower corner
    axes = grid.axes
    for idx in nodes:
        point = [axes[j][i] for j, i in enumerate(idx)]
        e, force, context = _node_energy(grid, values, point)
        assert e == pytest.approx(values[idx], abs=1e-9), idx
    # new values through set_function_parameters
    values2 = rng.uniform(-5.0, 5.0, grid.shape)
    grid.set_function_parameters(force.getTabulatedFunction(0), values2)
    force.updateParametersInContext(context)
    for idx in nodes[:5]:
        pos = np.zeros((1, 3))
        pos[0, :ndim] = [axes[j][i] for j, i in enumerate(idx)]
        context.setPositions(pos)
        assert context.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(values2[idx], abs=1e-9)


def test_openmm_tabulated_bias_of_a_periodic_variable_repeats_with_the_period():
    from latentbias.bias.grid import BiasGrid, LatentVariable

    v = LatentVariable(0, -2.0, 2.0, 0.4, periodic=True, gridWidth=9)
    grid = BiasGrid([v])
    values = grid.gaussian([1.8]) * 3.0
    for i in (1, 3, 6):
        x = v.axis[i]
        e0 = _node_energy(grid, values, [x])[0]
        assert e0 == pytest.approx(values[i], abs=1e-9)
        assert _node_energy(grid, values, [x + 4.0])[0] == pytest.approx(e0, abs=1e-9)
    assert grid.periodic is True


def test_gaussian_on_the_grid_is_the_product_of_per_axis_gaussians_with_minimum_image():
    from latentbias.bias.grid import BiasGrid, LatentVariable

    a = LatentVariable(0, -1.0, 2.0, 0.3, gridWidth=31)
    b = LatentVariable(2, -np.pi, np.pi, 0.5, periodic=True, gridWidth=41)
    grid = BiasGrid([a, b])
    centre = (0.4, 3.0)  # near +pi: its image at 3.0 - 2 pi must be felt near -pi
    g = grid.gaussian(centre)
    xa, xb = np.meshgrid(a.axis, b.axis, indexing="ij")
    db = xb - centre[1]
    db = np.where(db > np.pi, db - 2 * np.pi, np.where(db < -np.pi, db + 2 * np.pi, db))
    expected = np.exp(-0.5 * ((xa - centre[0]) / 0.3) ** 2) * np.exp(-0.5 * (db / 0.5) ** 2)
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(g[:, -1], g[:, 0])  # the periodic plane duplicates exactly


def test_interpolate_is_exact_for_multilinear_functions_clamps_outside_and_wraps_periodic_axes():
    """Multilinear interpolation reproduces f = c + a x + b y + d x y exactly anywhere inside the grid; outside a
    non-periodic grid the point is clamped to the edge; periodic coordinates are wrapped by the period."""
    from latentbias.bias.grid import BiasGrid, LatentVariable

    a = LatentVariable(0, -1.0, 1.0, 0.2, gridWidth=11)
    b = LatentVariable(1, 0.5, 2.5, 0.2, gridWidth=7)
    grid = BiasGrid([a, b])
    f = lambda x, y: 1.5 - 2.0 * x + 0.7 * y + 3.0 * x * y  # noqa: E731
    xa, xb = np.meshgrid(a.axis, b.axis, indexing="ij")
    values = f(xa, xb)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-1, 1, 50), rng.uniform(0.5, 2.5, 50)])
    np.testing.assert_allclose(grid.interpolate(pts, values), f(pts[:, 0], pts[:, 1]), rtol=1e-12, atol=1e-12)
    out = np.array([[-3.0, 1.0], [2.0, 3.5], [0.3, -7.0]])
    clamped = np.array([[-1.0, 1.0], [1.0, 2.5], [0.3, 0.5]])
    np.testing.assert_allclose(grid.interpolate(out, values), f(clamped[:, 0], clamped[:, 1]), rtol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        grid.interpolate(pts[:, :1], values)
    # periodic (a range not centred on 0, period 4): the nodes give the node values, and one period further is
    # the same point
    p = LatentVariable(0, -1.0, 3.0, 0.3, periodic=True, gridWidth=17)
    pgrid = BiasGrid([p])
    pv = np.cos(np.pi * p.axis / 2.0)
    np.testing.assert_allclose(pgrid.interpolate(p.axis[:-1, None], pv), pv[:-1], rtol=1e-12, atol=1e-12)
    x = rng.uniform(-1, 3, 20)
    np.testing.assert_allclose(pgrid.interpolate((x + 4.0)[:, None], pv), pgrid.interpolate(x[:, None], pv),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pgrid.interpolate((x - 8.0)[:, None], pv), pgrid.interpolate(x[:, None], pv),
                               rtol=1e-12, atol=1e-12)


def test_latent_variable_default_grid_width_and_validation():
    """Default gridWidth = ceil(5 (max - min) / width) (openmm.app.BiasVariable's rule); bad input is refused."""
    from latentbias.bias.grid import LatentVariable

    v = LatentVariable(1, -1.0, 2.0, 0.25)
    assert v.gridWidth == 60 and v.index == 1 and v.periodic is False
    np.testing.assert_array_equal(v.axis, np.linspace(-1.0, 2.0, 60))
    assert LatentVariable(0, 0.0, 1.0, 0.3).gridWidth == 17  # ceil(16.67)
    assert LatentVariable(0, 0.0, 1.0, 0.3, gridWidth=4).gridWidth == 4  # the smallest allowed
    assert LatentVariable(np.int64(2), 0, 1, 0.1).index == 2
    for bad in (dict(index=-1), dict(index=True), dict(index=1.5), dict(minValue=1.0, gridWidth=10),
                dict(minValue=2.0),
                dict(maxValue=np.inf), dict(minValue=np.nan), dict(biasWidth=0.0), dict(biasWidth=-0.1),
                dict(biasWidth=np.nan), dict(periodic="yes"), dict(gridWidth=3)):
        kw = dict(index=0, minValue=0.0, maxValue=1.0, biasWidth=0.1) | bad
        with pytest.raises(ValueError, match="LatentVariable"):
            LatentVariable(**kw)
    with pytest.raises(ValueError, match="need minValue < maxValue"):  # an empty range, whatever the grid width
        LatentVariable(0, 1.0, 1.0, 0.1, gridWidth=10)


def test_latent_variable_from_samples_covers_the_range_with_margin():
    from latentbias.bias.grid import LatentVariable

    v = LatentVariable.fromSamples(3, [0.5, -1.5, 0.0, 2.5], margin=0.25, widthFraction=0.1, periodic=False)
    assert (v.index, v.minValue, v.maxValue, v.biasWidth) == (3, -2.5, 3.5, pytest.approx(0.4))
    d = LatentVariable.fromSamples(0, [1.0, 3.0])  # defaults: margin 0.3, width 0.05 of the range
    assert (d.minValue, d.maxValue, d.biasWidth) == (pytest.approx(0.4), pytest.approx(3.6), pytest.approx(0.1))
    c = LatentVariable.fromSamples(0, [2.0, 2.0], gridWidth=8)  # constant samples: a 1e-6 span, not an error
    assert c.maxValue - c.minValue == pytest.approx(0.6e-6, rel=1e-6) and c.gridWidth == 8
    for bad in ([1.0], [], [0.0, np.nan], [0.0, np.inf]):
        with pytest.raises(ValueError, match="at least two finite"):
            LatentVariable.fromSamples(0, bad)


def test_latent_variable_from_model_uses_the_stored_training_range_of_z(ala2, tmp_path):
    """from_model takes the grid from the model file's z_range (default margin 30 %, width 5 % of the range); an
    index outside the model's latent dimensions or a file without z_range is refused, naming the file."""
    import latentbias as lb
    from latentbias.bias.grid import LatentVariable

    from conftest import perturbed_frames, random_latent_model
    from toy import identity_model

    _, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), top.n_atoms,
                                perturbed_frames(xyz, 20))
    path = lb.save_model(model, tmp_path / "zr.pt", dtype="float64", z_range={"min": [-1.0, 0.5], "max": [2.0, 0.9]})
    v = LatentVariable.fromModel(1, path, gridWidth=12)
    assert (v.index, v.gridWidth) == (1, 12)
    assert (v.minValue, v.maxValue, v.biasWidth) == (pytest.approx(0.38), pytest.approx(1.02), pytest.approx(0.02))
    w = LatentVariable.fromModel(0, path, margin=0.1, widthFraction=0.2)
    assert (w.minValue, w.maxValue, w.biasWidth) == (pytest.approx(-1.3), pytest.approx(2.3), pytest.approx(0.6))
    for bad in (-1, 2):
        with pytest.raises(ValueError, match=r"index must be in \[0, 2\)"):
            LatentVariable.fromModel(bad, path)
    plain = identity_model(tmp_path / "plain.pt", 1, 2)
    with pytest.raises(ValueError, match=re.escape(str(plain)) + ".*stores no training range"):
        LatentVariable.fromModel(0, plain)


def test_bias_grid_needs_one_to_three_distinct_components_and_one_periodicity():
    from latentbias.bias.grid import BiasGrid, LatentVariable

    v = [LatentVariable(i, 0.0, 1.0, 0.2) for i in range(4)]
    for ok in (v[:1], v[:2], v[:3]):
        assert BiasGrid(ok).ndim == len(ok)
    for bad in ([], v):
        with pytest.raises(ValueError, match="1, 2 or 3"):
            BiasGrid(bad)
    with pytest.raises(ValueError, match="only once"):
        BiasGrid([v[0], LatentVariable(0, 2.0, 3.0, 0.2)])
    mixed = BiasGrid([v[0], LatentVariable(1, -np.pi, np.pi, 0.2, periodic=True)])
    with pytest.raises(ValueError, match="mix periodic"):
        mixed.periodic
    assert BiasGrid(v[:2]).periodic is False
    grid = BiasGrid(v[:2])
    with pytest.raises(ValueError, match="shape"):
        grid.table_values(np.zeros((grid.shape[1], grid.shape[0] + 1)))
    bad = np.zeros(grid.shape)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        grid.table_values(bad)


def test_check_variables_against_the_model():
    from types import SimpleNamespace

    from latentbias.bias.grid import LatentVariable, check_variables

    model = SimpleNamespace(latent_dim=2, periodic=[None, (-np.pi, np.pi)])
    ok = [LatentVariable(0, 0.0, 1.0, 0.1), LatentVariable(1, -np.pi, np.pi, 0.2, periodic=True)]
    assert check_variables(model, ok) == ok
    with pytest.raises(TypeError, match="LatentVariable objects"):
        check_variables(model, [ok[0], {"index": 1}])
    with pytest.raises(ValueError, match="latent_dim=2"):
        check_variables(model, [LatentVariable(2, 0.0, 1.0, 0.1)])
    for wrong in (LatentVariable(1, -np.pi, np.pi, 0.2), LatentVariable(1, -3.0, 3.0, 0.2, periodic=True)):
        with pytest.raises(ValueError, match="periodic on"):
            check_variables(model, [wrong])
    # the message gives the declaration to use
    fix = re.escape(f"LatentVariable(periodic=True, minValue={-np.pi}, maxValue={np.pi})")
    with pytest.raises(ValueError, match=fix):
        check_variables(model, [LatentVariable(1, -np.pi, np.pi, 0.2)])


# ------------------------------------------------------------- analysis/constants.py, analysis/_validation.py


def test_kt_is_openmm_molar_gas_constant_times_temperature_and_bad_temperatures_are_refused():
    from openmm import unit

    from latentbias.analysis.constants import kt_kjmol, temperature_kelvin

    r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    for t in (1e-3, 273.15, 300.0, 1000.0):
        assert kt_kjmol(t) == pytest.approx(r * t, rel=1e-12)
    assert kt_kjmol(300.0) == pytest.approx(2.494338785445972, rel=1e-12)
    assert kt_kjmol(310.0 * unit.kelvin) == pytest.approx(r * 310.0, rel=1e-12)
    assert temperature_kelvin(np.float32(250.0)) == 250.0
    for bad in (0.0, -5.0, math.inf, math.nan, "300 K", None, 1.0 * unit.nanometer):
        with pytest.raises(ValueError, match="temperature"):
            temperature_kelvin(bad)
    with pytest.raises(ValueError, match="T_target"):
        temperature_kelvin(-1.0, name="T_target")


def test_ensure_1d_float_rejects_wrong_shapes_lengths_and_non_finite_values():
    from latentbias.analysis._validation import ensure_1d_float

    out = ensure_1d_float([1, 2, 3], "bias", 3)
    assert out.dtype == np.float64 and out.shape == (3,)
    assert ensure_1d_float([1.0, 2.0], "bias").shape == (2,)  # any length without n
    with pytest.raises(ValueError, match="bias must be a 1-D array"):
        ensure_1d_float([[1.0, 2.0]], "bias")
    with pytest.raises(ValueError, match="bias has 2 values but there are 3 frames"):
        ensure_1d_float([1.0, 2.0], "bias", 3)
    with pytest.raises(ValueError, match="contains 2 non-finite"):
        ensure_1d_float([np.nan, 1.0, np.inf], "bias")
    with pytest.raises(ValueError, match="contains 1 non-finite"):
        ensure_1d_float([-np.inf, 1.0], "bias")
    ok = ensure_1d_float([-np.inf, 1.0], "logw", allow_neg_inf=True)
    assert ok[0] == -np.inf
    for bad in ([np.inf, 0.0], [np.nan, 0.0]):  # +inf and NaN are never allowed
        with pytest.raises(ValueError, match="contains 1 non-finite"):
            ensure_1d_float(bad, "logw", allow_neg_inf=True)


def test_ensure_logweights_uniform_default_zero_weight_frames_and_all_zero_weights():
    from latentbias.analysis._validation import ensure_logweights

    np.testing.assert_array_equal(ensure_logweights(None, 4), np.zeros(4))
    np.testing.assert_array_equal(ensure_logweights([0.5, -np.inf], 2), [0.5, -np.inf])
    assert ensure_logweights([], 0).shape == (0,)  # no frames: nothing to refuse
    for bad in ([-np.inf], [-np.inf, -np.inf, -np.inf]):
        with pytest.raises(ValueError, match="all -inf"):
            ensure_logweights(bad, len(bad))
    with pytest.raises(ValueError, match="3 frames"):
        ensure_logweights([0.0, 1.0], 3)


def test_ensure_cv_shapes_dimensions_and_non_finite_frames():
    from latentbias.analysis._validation import ensure_cv

    assert ensure_cv([1.0, 2.0, 3.0]).shape == (3, 1)
    assert ensure_cv(np.zeros((4, 2))).shape == (4, 2)
    assert ensure_cv(np.zeros((4, 5)), max_dim=None).shape == (4, 5)
    assert ensure_cv(np.zeros((4, 3)), max_dim=3).shape == (4, 3)
    assert ensure_cv(np.zeros((4, 1)), max_dim=1).shape == (4, 1)
    with pytest.raises(ValueError, match=r"cv must have shape \(n_frames,\) or \(n_frames, 2\)"):
        ensure_cv(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"z must have shape \(n_frames, d\) with d <= 3 .*got shape \(4, 4\)"):
        ensure_cv(np.zeros((4, 4)), "z", max_dim=3)
    with pytest.raises(ValueError, match=r"\(n_frames,\) or \(n_frames, d\)"):
        ensure_cv(np.zeros((2, 2, 2)), max_dim=None)
    for bad in (np.zeros((4, 0)), np.zeros((2, 2, 2)), np.float64(1.0)):
        with pytest.raises(ValueError, match="must have shape"):
            ensure_cv(bad)
    with pytest.raises(ValueError, match="has no frames"):
        ensure_cv(np.zeros((0, 2)))
    cv = np.zeros((5, 2))
    cv[1, 0], cv[3, 0], cv[4, 0], cv[4, 1] = np.nan, np.inf, -np.inf, np.nan  # 3 frames (rows), 2 columns
    with pytest.raises(ValueError, match="in 3 frames"):
        ensure_cv(cv)


def test_ensure_n_blocks_is_a_positive_integer_not_above_the_frame_count():
    from latentbias.analysis._validation import ensure_n_blocks

    assert ensure_n_blocks(1, 10) == 1 and ensure_n_blocks(10, 10) == 10 and ensure_n_blocks(np.int64(3), 5) == 3
    for bad in (0, -2, True, 2.0, "4"):
        with pytest.raises(ValueError, match="positive integer"):
            ensure_n_blocks(bad, 10)
    with pytest.raises(ValueError, match="larger than the number of frames"):
        ensure_n_blocks(11, 10)


def test_ensure_block_labels_contiguous_equal_blocks_or_given_labels():
    from latentbias.analysis._validation import ensure_block_labels

    labels, n = ensure_block_labels(None, 10, 3)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # floor(3 i / 10)
    assert n == 3 and labels.dtype == np.int64
    labels, n = ensure_block_labels(None, 12, 4)
    np.testing.assert_array_equal(np.bincount(labels), [3, 3, 3, 3])
    labels, n = ensure_block_labels(np.array([7, 7, 2, 9, 2]), 5, 99)
    np.testing.assert_array_equal(labels, [1, 1, 0, 2, 0])
    assert n == 3 and labels.dtype == np.int64
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        ensure_block_labels(np.zeros(4, dtype=int), 5, 2)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        ensure_block_labels(np.zeros((5, 1), dtype=int), 5, 2)
    with pytest.raises(ValueError, match="integer block labels"):
        ensure_block_labels(np.zeros(5), 5, 2)
