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
