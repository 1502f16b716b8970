"""Tests that kill mutants of ``latentbias/analysis/fes.py`` which survived the module's fast selection (issue 15).

Every reference is exact by construction (frames placed so that each bin's or block's count is known, closed-form
-kT ln(p / width), Student t from scipy), never a re-run of the implementation's formula. TESTING.md lists the
mutants each test kills.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from latentbias.analysis import basin_free_energy_difference, basin_free_energy_estimate, free_energy_surface

R_KJMOL = 0.00831446261815324  # kJ/(mol K), CODATA 2018 (the value OpenMM uses)


def _midpoints(lo: float, hi: float, n: int) -> np.ndarray:
    """n frames at the midpoints of n equal sub-cells of [lo, hi] (none on an edge)."""
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


def test_uniform_density_on_unequal_bins_is_flat():
    """A uniform density has F = 0 in every bin whatever the bin widths: 1000 frames on a uniform grid of [0, 1] and
    edges 0, 0.1, 0.4, 1 put exactly 100, 300, 600 frames in bins of width 0.1, 0.3, 0.6, so
    p/width = 1 in each. Forgetting the bin volume gives F = -kT ln(p), which differs by kT ln 6 = 4.5 kJ/mol.
    The same in 2-D with unequal widths in both dimensions (volumes are outer products of the widths)."""
    temperature = 310.0
    x = _midpoints(0.0, 1.0, 1000)
    fes = free_energy_surface(x, bins=[0.0, 0.1, 0.4, 1.0], temperature=temperature)
    np.testing.assert_allclose(fes.free_energy, 0.0, atol=1e-9)
    np.testing.assert_allclose(fes.probability, [0.1, 0.3, 0.6], rtol=1e-12)
    np.testing.assert_allclose(fes.centers[0], [0.05, 0.25, 0.7], rtol=1e-12)  # bin midpoints

    gx, gy = np.meshgrid(_midpoints(0.0, 1.0, 100), _midpoints(0.0, 2.0, 100), indexing="ij")
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    fes2 = free_energy_surface(xy, bins=[[0.0, 0.2, 1.0], [0.0, 0.5, 0.8, 2.0]], temperature=temperature)
    np.testing.assert_allclose(fes2.free_energy, 0.0, atol=1e-9)
    widths = np.outer([0.2, 0.8], [0.5, 0.3, 1.2])
    np.testing.assert_allclose(fes2.probability, widths / 2.0, rtol=1e-12)


def test_block_error_counts_a_block_whose_total_weight_is_below_one():
    """Weights are exp(logw - max logw): a block whose frames all carry weight e^-5 has total weight < 1 but is a
    block like any other (p_b is normalised within the block). Three blocks of 40 frames put 10, 20, 30 frames in
    bin 0; the second has log-weight -5: error = std(F_b, ddof=1)/sqrt(3) over all three, to rel 1e-12."""
    kt = R_KJMOL * 300.0
    c = [10, 20, 30]
    cv = np.concatenate([np.where(np.arange(40) < cb, 0.25, 0.75) for cb in c])
    logw = np.concatenate([np.zeros(40), np.full(40, -5.0), np.zeros(40)])
    fes = free_energy_surface(cv, logw, bins=2, range=(0, 1), n_blocks=3, error_method="blocks")
    f_b = -kt * np.log(np.array(c) / 40 / 0.5)
    assert fes.error[0] == pytest.approx(np.std(f_b, ddof=1) / np.sqrt(3), rel=1e-12)


def test_replica_error_of_the_fes_is_the_student_t_spread_of_the_replicas_own_histograms():
    """Four replicas of 40 frames put 8, 14, 20, 26 frames in bin 0 of (0, 0.5, 1): each replica's F in bin i is
    -kT ln(n_i / 40 / 0.5), and the error is t_3(0.8413) s / sqrt(4) of those four values (the replica route of
    issue 15's error model). Bin 0 (the lowest index) must be counted like every other bin."""
    temperature = 290.0
    kt = R_KJMOL * temperature
    c = np.array([8, 14, 20, 26])
    m = np.array([40, 60, 40, 80])  # frames per replica
    cv = np.concatenate([np.where(np.arange(mb) < cb, 0.25, 0.75) for cb, mb in zip(c, m)])
    replicas = np.repeat(np.arange(4), m)
    # log-weights are defined up to a constant: +400 (e^400 overflows if not shifted by the maximum) changes nothing
    fes = free_energy_surface(cv, np.full(len(cv), 400.0), bins=2, range=(0, 1), temperature=temperature,
                              replicas=replicas)
    assert fes.error_method == "replicas"
    t1 = stats.t.ppf(stats.norm.cdf(1.0), 3)
    for b, n in ((0, c), (1, m - c)):
        f = -kt * np.log(n / m / 0.5)
        assert fes.error[b] == pytest.approx(t1 * np.std(f, ddof=1) / 2.0, rel=1e-10)
    # two replicas are enough for the replica route ("auto" picks it; t with 1 degree of freedom)
    two = replicas < 2
    for method in ("auto", "replicas"):
        fes2 = free_energy_surface(cv[two], bins=2, range=(0, 1), temperature=temperature, replicas=replicas[two],
                                   error_method=method)
        f = -kt * np.log(c[:2] / m[:2] / 0.5)
        assert fes2.error_method == "replicas"
        assert fes2.error[0] == pytest.approx(stats.t.ppf(stats.norm.cdf(1.0), 1) * abs(f[1] - f[0]) / 2.0,
                                              rel=1e-10)


def test_basin_block_error_skips_blocks_that_miss_a_basin():
    """Blocks that never visit A or B carry no estimate of dF: six blocks of 40 frames holding 8, 12, 40, 20, 1, 0
    frames in A: the error is std(dF_b, ddof=1)/sqrt(4) over blocks 0, 1, 3, 4 (one frame in A is an estimate)."""
    temperature = 280.0
    kt = R_KJMOL * temperature
    a = np.array([8, 12, 40, 20, 1, 0])  # block 2 only in A, block 5 only in B, block 4 one frame in A
    cv = np.concatenate([np.where(np.arange(40) < ab, -1.0, 1.0) for ab in a])
    with np.errstate(divide="ignore"):
        _, err = basin_free_energy_difference(cv, None, cv < 0, cv > 0, temperature=temperature, n_blocks=6)
    used = a[(a < 40) & (a > 0)]
    per_block = -kt * np.log((40 - used) / used)
    assert err == pytest.approx(np.std(per_block, ddof=1) / np.sqrt(len(used)), rel=1e-12)


def test_range_and_constant_cv_messages_name_the_fix():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    with pytest.raises(ValueError, match="lo < hi"):
        free_energy_surface(x, bins=4, range=(0.5, 0.5))  # an empty range is not a histogram range
    with pytest.raises(ValueError, match=r"range must be \(lo, hi\) for a 1-D CV"):
        free_energy_surface(x, bins=4, range=((0, 1), (0, 1)))
    with pytest.raises(ValueError, match=r"range must be \(\(lo0, hi0\), \(lo1, hi1\)\) for a 2-D CV"):
        free_energy_surface(rng.normal(size=(200, 2)), bins=4, range=(0, 1))
    flat = np.column_stack([np.ones(200), rng.normal(size=200), np.full(200, 2.0)])  # dimensions 0 and 2 constant
    with pytest.raises(ValueError, match=r"max == min in dimension 0\); pass range"):
        free_energy_surface(flat, bins=4)


def test_input_checks_of_bins_observable_and_error_method():
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        free_energy_surface(x, bins=0)
    assert free_energy_surface(x, bins=[5]).free_energy.shape == (5,)  # [n] for a 1-D CV is a bin count
    with pytest.raises(ValueError, match="bin edges of dimension 0 must be"):
        free_energy_surface(rng.normal(size=(200, 2)), bins=[[0.5], [0.0, 1.0]])
    a, b = x < 0, x > 0
    with pytest.raises(ValueError, match="observable must have shape"):
        basin_free_energy_estimate(x, None, a, b, observable=np.zeros(199), n_bootstrap=10)
    est = basin_free_energy_estimate(x, None, a, b, observable=x, n_bootstrap=10)  # a 1-D observable is one column
    assert np.isfinite(est.error)
    with pytest.raises(ValueError, match="no 'blocks' method"):
        basin_free_energy_estimate(x, None, a, b, error_method="blocks")
    with pytest.raises(ValueError, match="one log-weight per index"):
        free_energy_surface(x, bins=4, states=np.zeros(200, int), reweight=lambda idx: np.zeros(len(idx) + 1),
                            n_bootstrap=5)
    # states alone select the bootstrap; a reweighter returning the same log-weights gives the same error bars
    logw = -0.5 * x**2
    boot = free_energy_surface(x, logw, bins=4, range=(-1, 1), states=np.zeros(200, int), n_bootstrap=20)
    assert boot.error_method != "blocks"
    same = free_energy_surface(x, logw, bins=4, range=(-1, 1), states=np.zeros(200, int), n_bootstrap=20,
                               reweight=lambda idx: logw[idx])
    np.testing.assert_allclose(same.error, boot.error, rtol=1e-12)


def test_basin_estimates_with_small_weights_defaults_and_replicas():
    """Basin A holds 40 frames of log-weight -5 (total weight 40 e^-5 < 1 after the shift by the maximum, which
    sits in frames outside both basins), B 20 frames of weight 1: dF = -kT ln(20 / (40 e^-5)) exactly, at the
    default 300 K; with B empty the message names B. Replica errors of dF are Student t over the replicas."""
    kt = R_KJMOL * 300.0
    cv = np.r_[np.full(40, -1.0), np.full(20, 1.0), np.zeros(10)]
    logw = np.r_[np.full(40, -5.0), np.zeros(20), np.zeros(10)]
    a, b = cv < 0, cv > 0
    expected = -kt * np.log(20 / (40 * np.exp(-5.0)))
    df, _ = basin_free_energy_difference(cv, logw, a, b)
    assert df == pytest.approx(expected, rel=1e-12)
    est = basin_free_energy_estimate(cv, logw, a, b, n_bootstrap=20)
    assert est.value == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="basin B has no frames"):
        basin_free_energy_difference(cv, logw, a, np.zeros(70, bool))
    with pytest.raises(ValueError, match="basin A has no frames"):
        basin_free_energy_difference(cv, logw, np.zeros(70, bool), b)
    # default n_blocks = 5: five contiguous blocks of 40 frames with 8, 12, 15, 20, 22 in A
    counts = np.array([8, 12, 15, 20, 22])
    x = np.concatenate([np.where(np.arange(40) < n, -1.0, 1.0) for n in counts])
    _, err = basin_free_energy_difference(x, None, x < 0, x > 0)
    per_block = -kt * np.log((40 - counts) / counts)
    assert err == pytest.approx(np.std(per_block, ddof=1) / np.sqrt(5), rel=1e-12)
    # replicas: each replica's dF from its own counts, error t_4(0.8413) s / sqrt(5)
    rep = np.repeat(np.arange(5), 40)
    est = basin_free_energy_estimate(x, None, x < 0, x > 0, replicas=rep, error_method="replicas")
    assert est.method == "replicas"
    t1 = stats.t.ppf(stats.norm.cdf(1.0), 4)
    assert est.error == pytest.approx(t1 * np.std(per_block, ddof=1) / np.sqrt(5), rel=1e-10)


def test_min_count_is_inclusive_and_two_blocks_give_an_error():
    """A bin with exactly min_count frames is valid; with two blocks the error is |F_1 - F_2| / 2 (std with n - 1
    over two values, divided by sqrt(2))."""
    kt = R_KJMOL * 300.0
    cv = np.r_[np.full(3, 0.25), np.full(37, 0.75), np.full(9, 0.25), np.full(31, 0.75)]
    fes = free_energy_surface(cv, bins=2, range=(0, 1), min_count=12, n_blocks=2)
    assert np.all(np.isfinite(fes.free_energy))
    f = -kt * np.log(np.array([3, 9]) / 40 / 0.5)
    assert fes.error[0] == pytest.approx(abs(f[1] - f[0]) / 2.0, rel=1e-12)
