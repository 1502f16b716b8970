"""Tests that kill mutants of ``latentbias/analysis/fes.py`` which survived the module's fast selection (issue 15).

Every reference is exact by construction (frames placed so that each bin's or block's count is known, closed-form
-kT ln(p / width), Student t from scipy), never a re-run of the implementation's formula. TESTING.md lists the
mutants each test kills.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from latentbias.analysis import basin_free_energy_difference, basin_free_energy_estimate, free_energy_surface
from latentbias.analysis.fes import block_labels

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


# --- kill15a (2026-11-30): the "not yet killed (killable)" survivors of mut15b's fes session --------------------


def test_frames_exactly_on_the_edges_belong_to_the_first_and_last_bins():
    """numpy's convention (the docstring's): bins are half-open [e_i, e_i+1) except the last, which is closed. Frames
    placed exactly on the first edge (3), an interior edge (5) and the last edge (7), plus one inside each bin, give
    counts (4, 13) and probabilities (4/17, 13/17) exactly; with the default range (the data's min and max) the
    extreme frames lie on the edges by construction and every frame is counted (probability sums to 1)."""
    temperature = 320.0
    kt = R_KJMOL * temperature
    cv = np.r_[np.zeros(3), np.full(5, 0.5), np.ones(7), 0.25, 0.75]
    for bins, rng in ((2, (0.0, 1.0)), ([0.0, 0.5, 1.0], None), (2, None)):
        fes = free_energy_surface(cv, bins=bins, range=rng, temperature=temperature, n_blocks=2)
        np.testing.assert_array_equal(fes.counts, [4, 13])
        np.testing.assert_allclose(fes.probability, [4 / 17, 13 / 17], rtol=1e-14)
        np.testing.assert_allclose(fes.free_energy, [kt * np.log(13 / 4), 0.0], atol=1e-12)
    # 2-D: the corner (1, 1) is in the last bin of both dimensions, (0, 0) in the first
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    fes2 = free_energy_surface(xy, bins=2, range=((0, 1), (0, 1)), n_blocks=1, temperature=temperature)
    np.testing.assert_array_equal(fes2.counts, [[1, 1], [3, 2]])
    # equal bin volumes: F = kT ln(n_max / n); a one-frame bin is a valid estimate at the default min_count of 1
    np.testing.assert_allclose(fes2.free_energy, kt * np.log(3.0 / np.array([[1, 1], [3, 2]])), atol=1e-12)


def test_log_weights_are_defined_up_to_a_constant_in_basin_estimates():
    """w ∝ exp(logw): adding 400 (e^800 overflows a double unless the maximum is subtracted first) or subtracting
    400 changes no ΔF. 30 frames in A with log-weight 0, 10 in B with log-weight ln 2: ΔF = -kT ln(20/30)."""
    temperature = 305.0
    kt = R_KJMOL * temperature
    cv = np.r_[np.full(30, -1.0), np.full(10, 1.0)]
    base = np.r_[np.zeros(30), np.full(10, np.log(2.0))]
    expected = -kt * np.log(20.0 / 30.0)
    for shift in (400.0, -400.0):
        df, _ = basin_free_energy_difference(cv, base + shift, cv < 0, cv > 0, temperature=temperature,
                                             n_blocks=2, error_method="blocks")
        assert df == pytest.approx(expected, rel=1e-12)
        est = basin_free_energy_estimate(cv, base + shift, cv < 0, cv > 0, temperature=temperature, n_bootstrap=10)
        assert est.value == pytest.approx(expected, rel=1e-12)


def test_basin_block_error_uses_blocks_with_a_single_frame_in_a_basin():
    """A rare basin: four blocks of 10 frames hold one frame in B and 3, 5, 7, 9 in A. Each block's ΔF_b is
    -kT ln(1/n_A) (total weight of B in the block exactly 1) and the error is std(ΔF_b, ddof=1)/√4."""
    kt = R_KJMOL * 300.0
    n_a = np.array([3, 5, 7, 9])
    cv = np.concatenate([np.r_[np.full(k, -1.0), 1.0, np.zeros(9 - k)] for k in n_a])
    df, err = basin_free_energy_difference(cv, None, cv < 0, cv > 0, n_blocks=4, error_method="blocks")
    assert df == pytest.approx(-kt * np.log(4 / n_a.sum()), rel=1e-12)
    per_block = -kt * np.log(1.0 / n_a)
    assert err == pytest.approx(np.std(per_block, ddof=1) / 2.0, rel=1e-12)


def test_basin_estimate_with_one_frame_in_b_and_replicas_missing_a_basin():
    """One frame in B (weight 1 after the shift by the maximum) and 19 in A: ΔF = kT ln 19, a finite estimate.
    Replicas that miss a basin carry no estimate of ΔF: they are left out of the Student t spread silently (no
    RuntimeWarning from a log of 0 or a division by 0), whichever basin they miss."""
    kt = R_KJMOL * 300.0
    cv = np.r_[np.full(19, -1.0), 1.0]
    est = basin_free_energy_estimate(cv, None, cv < 0, cv > 0, n_bootstrap=10)
    assert est.value == pytest.approx(kt * np.log(19.0), rel=1e-12)
    # replicas 0-2 visit both basins (A: 4, 6, 8 of 10 frames), replica 3 only A, replica 4 only B
    n_a = [4, 6, 8, 10, 0]
    x = np.concatenate([np.where(np.arange(10) < k, -1.0, 1.0) for k in n_a])
    rep = np.repeat(np.arange(5), 10)
    for missing in (3, 4):
        keep = (rep != 7 - missing)  # drop the other one-basin replica: one replica missing A or B at a time
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            est = basin_free_energy_estimate(x[keep], None, x[keep] < 0, x[keep] > 0, replicas=rep[keep],
                                             error_method="replicas")
        per = -kt * np.log((10 - np.array([4, 6, 8])) / np.array([4, 6, 8]))
        t1 = stats.t.ppf(stats.norm.cdf(1.0), 2)
        assert est.error == pytest.approx(t1 * np.std(per, ddof=1) / np.sqrt(3), rel=1e-10)
        assert est.n_independent == 4


def test_bins_whose_frames_all_have_zero_weight_carry_no_probability():
    """Frames inside the range whose weight is 0 relative to a frame outside it (log-weights −1000 vs 0: e^-1000
    is 0 in double precision) leave no bin with non-zero weight: refused with the message naming the fix, not a
    surface of NaN."""
    cv = np.r_[np.linspace(0.1, 0.9, 20), 5.0]
    logw = np.r_[np.full(20, -1000.0), 0.0]
    with pytest.raises(ValueError, match="no bin has at least min_count=1 frames with non-zero weight"):
        free_energy_surface(cv, logw, bins=4, range=(0, 1), n_blocks=2)


def test_a_single_replica_label_is_not_a_replica_estimate():
    """One distinct replica label cannot give a spread of replicas: "auto" falls back to the block error (exact
    standard error over the two blocks, |F_1 − F_2|/2), and error_method="replicas" is refused."""
    kt = R_KJMOL * 300.0
    cv = np.r_[np.full(10, 0.25), np.full(30, 0.75), np.full(20, 0.25), np.full(20, 0.75)]
    one = np.zeros(80, dtype=np.int64)
    fes = free_energy_surface(cv, bins=2, range=(0, 1), n_blocks=2, replicas=one)
    assert fes.error_method == "blocks"
    f = -kt * np.log(np.array([10, 20]) / 40 / 0.5)
    assert fes.error[0] == pytest.approx(abs(f[1] - f[0]) / 2.0, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 distinct replicas"):
        free_energy_surface(cv, bins=2, range=(0, 1), replicas=one, error_method="replicas")
    with pytest.raises(ValueError, match="at least 2 distinct replicas"):
        basin_free_energy_estimate(cv, None, cv < 0.5, cv > 0.5, replicas=one, error_method="replicas")


def test_input_messages_name_the_frame_count_and_refuse_non_integers():
    x = np.linspace(-1, 1, 7)
    with pytest.raises(ValueError, match=r"in_b must have shape \(7,\)"):
        basin_free_energy_difference(x, None, x < 0, np.ones(6, bool))
    with pytest.raises(ValueError, match=r"in_a must have shape \(7,\)"):
        basin_free_energy_estimate(x, None, np.ones((7, 2), bool), x > 0)
    for bad in ([10.0, 5.0], np.array([[10, 5]]), [10, -1]):
        with pytest.raises(ValueError, match="n_samples must be a non-negative int"):
            block_labels(bad, 2)
    for bad in (1.5, True, 0):
        with pytest.raises(ValueError, match="min_count must be a positive integer"):
            free_energy_surface(x, bins=2, min_count=bad)


def test_two_edges_for_a_1d_cv_are_one_bin():
    """bins=[lo, hi] for a 1-D CV is one bin of width hi − lo: p is the fraction of frames inside, F = 0 (its own
    minimum), counts the frames inside (numpy's histogram with the same edges)."""
    x = np.linspace(-1.0, 2.0, 31)
    fes = free_energy_surface(x, bins=[0.0, 1.0], n_blocks=1)
    ref, _ = np.histogram(x, bins=[0.0, 1.0])
    np.testing.assert_array_equal(fes.counts, ref)
    np.testing.assert_allclose(fes.probability, ref / 31, rtol=1e-14)
    np.testing.assert_allclose(fes.free_energy, [0.0], atol=0)
    assert [e.tolist() for e in fes.edges] == [[0.0, 1.0]]


def test_basin_difference_with_a_reweighter_reports_the_reweighted_value():
    """With ``reweight`` the value is the estimate from reweight(all frames) (the weights re-solved on the full
    data), not from ``logweights``: frames sampled uniformly with log-weights −βU given only through the reweighter
    give ΔF = −kT ln(Σ_B e^{−βU} / Σ_A e^{−βU}) exactly."""
    temperature = 300.0
    kt = R_KJMOL * temperature
    x = np.linspace(-1.0, 1.0, 41)
    u = 5.0 * x + 3.0 * x**2  # kJ/mol
    logw = -u / kt
    a, b = x < -0.2, x > 0.2
    expected = -kt * np.log(np.exp(logw[b]).sum() / np.exp(logw[a]).sum())
    df, err = basin_free_energy_difference(x, None, a, b, temperature=temperature, states=np.zeros(41, np.int64),
                                           reweight=lambda idx: logw[idx], n_bootstrap=20)
    assert df == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(err)


def _ar1_switching(n: int, seed: int) -> np.ndarray:
    """A slowly switching ±1 series (two-state Markov chain, stay probability 0.95, so ρ = 0.9 and g = 19)."""
    rng = np.random.default_rng(seed)
    s = np.empty(n)
    s[0] = 1.0
    flips = rng.random(n) < 0.05
    for i in range(1, n):
        s[i] = -s[i - 1] if flips[i] else s[i - 1]
    return s


def test_bootstrap_block_length_comes_from_the_basin_indicator_and_the_cv():
    """The bootstrap's statistical inefficiency is pymbar's g of the basin indicator 1_B − 1_A (basin ΔF) and of the
    CV itself (FES, when no ``observable`` is given): a two-state chain that stays 20 frames on average gives g ≫ 1,
    and the FES's default equals passing ``observable=cv`` explicitly."""
    from pymbar import timeseries

    s = _ar1_switching(2000, 3)
    cv = s + 0.1 * np.random.default_rng(4).normal(size=s.size)
    a, b = cv < 0, cv > 0
    g_ref = float(timeseries.statistical_inefficiency((b.astype(float) - a.astype(float)), fast=False))
    assert g_ref > 5
    est = basin_free_energy_estimate(cv, None, a, b, n_bootstrap=20)
    assert float(np.max(est.statistical_inefficiency)) == pytest.approx(g_ref, rel=1e-12)
    states = np.zeros(cv.size, dtype=np.int64)
    default = free_energy_surface(cv, bins=4, states=states, n_bootstrap=20)
    explicit = free_energy_surface(cv, bins=4, states=states, n_bootstrap=20, observable=cv)
    np.testing.assert_array_equal(default.error, explicit.error)
    g_cv = float(timeseries.statistical_inefficiency(cv, fast=False))
    length = min(int(np.ceil(3.0 * g_cv)), cv.size // 5)
    assert default.n_blocks == -(-cv.size // length)


def test_a_bin_visited_by_one_block_has_nan_error_silently():
    """The block error needs two blocks with samples in the bin: a bin visited only in block 0 has error NaN, and no
    RuntimeWarning (0/0) is raised for it."""
    cv = np.r_[np.full(5, 0.25), np.full(15, 0.75), np.full(20, 0.75)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fes = free_energy_surface(cv, bins=2, range=(0, 1), n_blocks=2)
    assert np.isnan(fes.error[0]) and np.isfinite(fes.free_energy[0])
    assert fes.error[1] == pytest.approx(abs(R_KJMOL * 300.0 * np.log(15 / 20)) / 2.0, rel=1e-12)


def test_basin_difference_bootstrap_with_the_default_seed_is_reproducible():
    """The bootstrap route of basin_free_energy_difference with its default seed: a finite error, the same on a
    second call, and the exact ΔF."""
    kt = R_KJMOL * 300.0
    s = _ar1_switching(400, 5)
    states = np.repeat([0, 1], 200)
    r1 = basin_free_energy_difference(s, None, s < 0, s > 0, states=states, n_bootstrap=20)
    r2 = basin_free_energy_difference(s, None, s < 0, s > 0, states=states, n_bootstrap=20)
    assert r1 == r2 and np.isfinite(r1[1])
    assert r1[0] == pytest.approx(-kt * np.log(np.sum(s > 0) / np.sum(s < 0)), rel=1e-12)
