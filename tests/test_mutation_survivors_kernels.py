"""The kernel density of OPES (``latentbias/bias/kernels.py``) in the cases the earlier tests never reached
(issue 15, survivors of the ``bias_kernels`` mutation session; helper mut15g).

Every sum is checked against the mixture written out from its definition (module docstring of ``kernels.py``):
``S(g) = Σ_k w_k N_c(g; c_k, σ_k)`` with ``N_c(s) = (exp(−r²/2) − exp(−c²/2)) / ((2π)^{d/2} Π σ)`` for a
Mahalanobis distance r < c and exactly 0 beyond, minimum image along periodic axes. The cases: z in any units
(kernel widths and grid spacings above 1, periods below 1 — the density must not care what unit z has), coarse
grids and kernels centred beyond a grid edge or covering the whole grid, the exact zero at the cutoff, the seam of a
periodic axis whose period is below 1, a recursive merge into the first stored kernel, negative fixed weights.
Tolerance 1e-12 of the largest value (double precision; the sums are short).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentbias.bias import LatentVariable
from latentbias.bias.grid import BiasGrid
from latentbias.bias.kernels import KernelDensity


def mixture(points, kernels, cutoff, period=0.0):
    """Σ_k w_k N_c(p; c_k, σ_k) in one dimension, written out (minimum image when ``period`` > 0)."""
    x = np.asarray(points, dtype=float)
    out = np.zeros(len(x))
    for c, s, w in kernels:
        dx = x - c
        if period:
            dx = dx - period * np.round(dx / period)
        r2 = (dx / s) ** 2
        g = np.exp(-0.5 * r2) if cutoff is None else np.where(r2 < cutoff**2, np.exp(-0.5 * r2)
                                                                - math.exp(-0.5 * cutoff**2), 0.0)
        out += w * g / (math.sqrt(2 * math.pi) * s)
    return out


#: kernels in units where the grid is [-1, 1] (non-periodic): one covering the whole grid at cutoff 2.5 (reach 1.5
#: from −0.5: its value at the far node +1 is exactly the cut, 0), two inside, one centred beyond the upper edge
#: whose reach ends just inside it (the node at +1 lies 2.46 σ away: 0.0046 of the peak), one near the lower edge
KERNELS = [(-0.5, 0.6, 1.0), (0.2, 0.15, 2.0), (1.246, 0.1, 1.5), (-0.93, 0.12, 0.7), (0.55, 0.2, 0.4)]
#: the same for a periodic axis [-1, 1) (widths well below the period; the one beyond the edge wraps)
KERNELS_PERIODIC = [(-0.5, 0.3, 1.0), (0.2, 0.15, 2.0), (1.246, 0.1, 1.5), (-0.93, 0.12, 0.7), (0.97, 0.2, 0.4)]


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("unit", [0.1, 10.0])
def test_kernel_sums_hold_in_any_units_of_z(unit, periodic):
    """The same kernels and grid with z in units 10× smaller or larger (grid [−u, u], 17 nodes; widths, spacing
    and period scaled): the grid sums and the centre sums equal the truncated mixture at cutoff 2.5 written out
    (its values scale as 1/u, a density). In the large unit the widths (1.2–6) and the spacing (1.25) exceed 1,
    in the small one the period (0.2) is below 1; centres come back wrapped into [min, max)."""
    cutoff = 2.5
    grid = BiasGrid([LatentVariable(0, -unit, unit, 0.1 * unit, periodic=periodic, gridWidth=17)])
    kde = KernelDensity(grid, threshold=0.0, rebuild_interval=10**6, cutoff=cutoff)
    kernels = [(c * unit, s * unit, w) for c, s, w in (KERNELS_PERIODIC if periodic else KERNELS)]
    for c, s, w in kernels:
        kde.add([c], [s], w)
    period = 2 * unit if periodic else 0.0
    nodes = grid.axes[0]
    expected = mixture(nodes, kernels, cutoff, period)
    scale = expected.max()
    np.testing.assert_allclose(kde.grid_sum, expected, rtol=0, atol=1e-12 * scale)
    centres = np.array([c for c, _, _ in kernels])
    if periodic:
        centres = -unit + np.mod(centres + unit, 2 * unit)  # 12.46 → −7.54, 0.1246 → −0.0754
    np.testing.assert_allclose(kde.centers[:, 0], centres, rtol=0, atol=1e-12 * unit)
    if periodic:
        assert np.all((kde.centers >= -unit) & (kde.centers < unit))
    np.testing.assert_allclose(kde.center_sum, mixture(centres, kernels, cutoff, period), rtol=0, atol=1e-12 * scale)
    if periodic:
        assert kde.grid_sum[-1] == kde.grid_sum[0]


@pytest.mark.parametrize("cutoff", [1.5, 3.0])
@pytest.mark.parametrize("n", [4, 5, 9])
def test_truncated_sums_on_coarse_grids_with_kernels_beyond_the_edges(n, cutoff):
    """Grids of 4 to 9 nodes on [0, 1] (spacing 1/3 to 1/8; a grid needs at least 4): kernels inside, astride an edge, centred beyond either
    edge with their reach ending just inside it, and one covering the whole grid; the grid sum is the truncated
    mixture at every node, whatever the resolution."""
    grid = BiasGrid([LatentVariable(0, 0.0, 1.0, 0.1, gridWidth=n)])
    kde = KernelDensity(grid, threshold=0.0, rebuild_interval=10**6, cutoff=cutoff)
    spacing = 1.0 / (n - 1)
    s = 0.1
    kernels = [(0.3, 0.2, 1.0), (0.0, 0.15, 0.5), (0.61, 0.05, 2.0),
               (1.0 + cutoff * s - 0.05 * spacing, s, 1.3),  # reach ends 1/20 of a spacing inside the last node
               (-cutoff * s + 0.02 * spacing, s, 0.8),  # the same below the first node
               (0.35, 1.0 / cutoff + 0.1, 0.6)]  # covers the whole grid
    for c, sg, w in kernels:
        kde.add([c], [sg], w)
    expected = mixture(grid.axes[0], kernels, cutoff)
    np.testing.assert_allclose(kde.grid_sum, expected, rtol=0, atol=1e-12 * expected.max())
    assert kde.grid_sum[-1] > 0 and kde.grid_sum[0] > 0


@pytest.mark.parametrize("cutoff", [None, 2.5])
def test_a_periodic_axis_of_period_below_one(cutoff):
    """Periodic axis [0.1, 0.8) (period 0.7, 29 nodes): a centre beyond the range is wrapped into it (0.95 → 0.25);
    two kernels 0.04 apart through the seam (0.8 σ) merge into one at the weighted mean of their minimum images,
    wrapped (0.81 → 0.11), with the second moment conserved; the grid and centre sums are the mixture with minimum
    images, and the last node, the first one again, has exactly the first node's sum (for the kernel at 0.318…, the
    minimum images of the two nodes round differently)."""
    grid = BiasGrid([LatentVariable(0, 0.1, 0.8, 0.05, periodic=True, gridWidth=29)])
    kde = KernelDensity(grid, threshold=1.0, rebuild_interval=10**6, cutoff=cutoff)
    period = 0.7
    for c, s, w in ((0.95, 0.05, 1.0), (0.78, 0.05, 1.0), (0.12, 0.05, 3.0),
                    (0.3182820164073399, 0.1558316122431439, 0.5)):
        kde.add([c], [s], w)
    assert kde.num_kernels == 3 and list(kde.counts) == [1, 2, 1]
    mean = (1.0 * 0.78 + 3.0 * 0.82) / 4.0
    var = (1.0 * (0.05**2 + 0.78**2) + 3.0 * (0.05**2 + 0.82**2)) / 4.0 - mean**2
    np.testing.assert_allclose(kde.centers[:, 0], [0.25, mean - period, 0.3182820164073399], rtol=0, atol=1e-12)
    assert kde.sigmas[1, 0] == pytest.approx(math.sqrt(var), rel=1e-9) and kde.weights[1] == 4.0
    kernels = [(c, s, w) for c, s, w in zip(kde.centers[:, 0], kde.sigmas[:, 0], kde.weights)]
    expected = mixture(grid.axes[0], kernels, cutoff, period)
    np.testing.assert_allclose(kde.grid_sum, expected, rtol=0, atol=1e-12 * expected.max())
    np.testing.assert_allclose(kde.center_sum, mixture(kde.centers[:, 0], kernels, cutoff, period), rtol=0,
                               atol=1e-12 * expected.max())
    assert kde.grid_sum[-1] == kde.grid_sum[0]
    alone = KernelDensity(grid, threshold=0.0, rebuild_interval=10**6, cutoff=cutoff)
    alone.add([0.3182820164073399], [0.1558316122431439], 1.0)
    assert alone.grid_sum[-1] == alone.grid_sum[0] > 0
    np.testing.assert_array_equal(alone.kernel_on_grid(np.array([0.3182820164073399]), np.array([0.1558316122431439])),
                                  alone.grid_sum)


def test_kernel_on_grid_is_the_unit_weight_truncated_kernel():
    """``kernel_on_grid`` with a cutoff: the normalised kernel of weight 1, truncated and shifted (not the kernel
    times another weight, not zero)."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=41)])
    kde = KernelDensity(grid, threshold=0.0, cutoff=2.0)
    got = kde.kernel_on_grid(np.array([0.13]), np.array([0.2]))
    np.testing.assert_allclose(got, mixture(grid.axes[0], [(0.13, 0.2, 1.0)], 2.0), rtol=0, atol=1e-14)
    assert got.max() == pytest.approx((1 - math.exp(-2.0)) / (math.sqrt(2 * math.pi) * 0.2), rel=0.05)


@pytest.mark.parametrize("cutoff", [1.2025535559421732, 2.6805853027283018])
def test_truncated_kernel_is_exactly_zero_at_the_cutoff(cutoff):
    """A node (and a point) exactly ``cutoff`` σ from a kernel gets exactly 0 (r ≥ c, documented), also for the
    cutoffs where numpy's exp(−c²/2) and the one of Python's math module differ in the last bit (so r ≤ c would
    leave ±1e-17 there). Grid [−c, c] with 5 nodes, kernel at 0 with σ = 1: the end nodes are at r = c exactly."""
    grid = BiasGrid([LatentVariable(0, -cutoff, cutoff, 0.5, gridWidth=5)])
    kde = KernelDensity(grid, threshold=0.0, rebuild_interval=10**6, cutoff=cutoff)
    kde.add([0.0], [1.0], 1.0)
    assert grid.axes[0][0] == -cutoff and grid.axes[0][-1] == cutoff
    assert kde.grid_sum[0] == 0.0 and kde.grid_sum[-1] == 0.0 and np.all(kde.grid_sum[1:-1] > 0)
    at = kde.mixture_at(np.array([[cutoff], [-cutoff]]), np.zeros((1, 1)), np.ones((1, 1)), np.ones(1))
    assert at[0] == 0.0 and at[1] == 0.0


def test_recursive_merge_into_the_first_stored_kernel():
    """Kernels at 0 and 0.15 (σ 0.1, 1.5 σ apart, threshold 1: kept apart). A heavy kernel (weight 10) at 0.09 joins
    the nearer one (0.15: 0.6 σ); the grown kernel, at 0.0955, lies 0.955 σ from the first stored kernel, which
    must absorb it (the recursion may end in kernel 0 as in any other): one kernel with the weight, mean and second
    moment of all three."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=81)])
    kde = KernelDensity(grid, threshold=1.0, rebuild_interval=10**6)
    data = [(0.0, 0.1, 1.0), (0.15, 0.1, 1.0), (0.09, 0.1, 10.0)]
    for c, s, w in data:
        kde.add([c], [s], w)
    wt = sum(w for _, _, w in data)
    mean = sum(w * c for c, _, w in data) / wt
    second = sum(w * (s * s + c * c) for c, s, w in data) / wt
    assert kde.num_kernels == 1 and list(kde.counts) == [3]
    assert kde.weights[0] == pytest.approx(wt, rel=1e-15)
    assert kde.centers[0, 0] == pytest.approx(mean, abs=1e-12)
    assert kde.sigmas[0, 0] == pytest.approx(math.sqrt(second - mean**2), rel=1e-12)
    expected = mixture(grid.axes[0], [(mean, math.sqrt(second - mean**2), wt)], None)
    np.testing.assert_allclose(kde.grid_sum, expected, rtol=0, atol=1e-12 * expected.max())


def test_fixed_kernels_of_negative_weight_are_refused():
    """Weights of other walkers' kernels are ≥ 0 (a probability); −0.5 and −1e-300 are refused, 0 accepted."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=41)])
    kde = KernelDensity(grid)
    for bad in (-0.5, -1e-300):
        with pytest.raises(ValueError, match="weights >= 0"):
            kde.set_fixed(np.array([[0.0]]), np.array([[0.1]]), np.array([bad]))
    kde.set_fixed(np.array([[0.0]]), np.array([[0.1]]), np.array([0.0]))
    assert kde.num_kernels == 1 and not kde.grid_sum.any()


def test_a_kernel_of_the_wrong_dimension_is_refused():
    """On a 1-D grid a kernel needs one centre coordinate and one width: a 2-D centre with a 1-D width, or the
    reverse, is refused naming the kernel (not broadcast into the sums)."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=41)])
    kde = KernelDensity(grid, cutoff=3.0)
    for centre, sigma in (([0.0, 0.5], [0.1]), ([0.0], [0.1, 0.1]), ([[0.0]], [0.1])):
        with pytest.raises(ValueError, match="bad kernel"):
            kde.add(centre, sigma, 1.0)
    assert kde.num_kernels == 0 and not kde.grid_sum.any()


def test_a_kernel_exactly_at_the_compression_threshold_is_kept_apart():
    """Compression merges kernels closer than the threshold (module docstring: "below a threshold"): with σ = 1/8
    and threshold 1, a kernel exactly 1/8 away (distance 1 σ, exact in binary) stays a kernel of its own; one
    slightly closer is merged."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=41)])
    kde = KernelDensity(grid, threshold=1.0, rebuild_interval=10**6)
    kde.add([0.0], [0.125], 1.0)
    kde.add([0.125], [0.125], 1.0)
    assert kde.num_kernels == 2 and list(kde.counts) == [1, 1]
    kde.add([-0.12], [0.125], 1.0)
    assert kde.num_kernels == 2 and list(kde.counts) == [2, 1]
