"""Tests that kill mutants of ``latentbias/analysis/fes.py`` which survived the module's fast selection (issue 15).

Every reference is exact by construction (frames placed so that each bin's or block's count is known, closed-form
-kT ln(p / width), Student t from scipy), never a re-run of the implementation's formula. TESTING.md lists the
mutants each test kills.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from latentbias.analysis import basin_free_energy_difference, free_energy_surface

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
    cv = np.concatenate([np.where(np.arange(40) < cb, 0.25, 0.75) for cb in c])
    replicas = np.repeat(np.arange(4), 40)
    fes = free_energy_surface(cv, bins=2, range=(0, 1), temperature=temperature, replicas=replicas)
    assert fes.error_method == "replicas"
    t1 = stats.t.ppf(stats.norm.cdf(1.0), 3)
    for b, n in ((0, c), (1, 40 - c)):
        f = -kt * np.log(n / 40 / 0.5)
        assert fes.error[b] == pytest.approx(t1 * np.std(f, ddof=1) / 2.0, rel=1e-10)


def test_basin_block_error_skips_blocks_that_miss_a_basin():
    """Blocks that never visit B carry no estimate of dF: with five blocks of 40 frames holding 8, 12, 40, 20, 22
    frames in A (block 2 only in A) the error is std(dF_b, ddof=1)/sqrt(4) over the other four, to rel 1e-12."""
    temperature = 280.0
    kt = R_KJMOL * temperature
    a = np.array([8, 12, 40, 20, 22])
    cv = np.concatenate([np.where(np.arange(40) < ab, -1.0, 1.0) for ab in a])
    with np.errstate(divide="ignore"):
        _, err = basin_free_energy_difference(cv, None, cv < 0, cv > 0, temperature=temperature, n_blocks=5)
    used = a[a < 40]
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
