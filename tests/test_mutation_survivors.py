"""Tests written for mutants that survived cosmic-ray (TESTING.md lists each one and the test that kills it).

Mostly edge cases of the estimators' input contracts: zero-weight frames, single frames, empty input, counts that
are not integers, and the uncertainties that come with MBAR's free energies.
"""

from __future__ import annotations

import math

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

    from latentbias.analysis.reweight import _quiet_pymbar

    _, u = _two_state_data()
    u = np.vstack([u, 30.0 * (np.concatenate([np.zeros(30), np.ones(50)]) * 0.1)])  # a third, zero-count state
    n_k = np.array([30, 50, 0])
    _, f_k, df_k = mbar_logweights(u, n_k)
    with _quiet_pymbar():
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
