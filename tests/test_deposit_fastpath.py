"""The deposit's fast path computes exactly what the axis-by-axis code computed (issue 10 item 6, helper metad10).

A metadynamics deposit evaluates the Gaussian's per-axis factors for all axes in one numpy pass
(``BiasGrid._flat_factors``), finds their support from one ``flatnonzero`` (``BiasGrid._flat_support``) and updates
the two c(t) sums of both terms at once (``RunningCt.update``). These tests compare each, bit for bit, with the
axis-by-axis implementation they replace (kept here as the reference), on 1-3-D grids, periodic, non-periodic and
mixed, truncated and untruncated, for centres inside, at and beyond the edges and several periods away.
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest

from latentbias.analysis.reweight import well_tempered_ct
from latentbias.bias.ctcache import RunningCt
from latentbias.bias.cutoff import METAD_DEFAULT_CUTOFF, truncated_gaussian
from latentbias.bias.grid import BiasGrid, LatentVariable


def reference_factors(grid: BiasGrid, position) -> list[np.ndarray]:
    """The axis-by-axis factors, as BiasGrid.gaussian_factors computed them before the fast path."""
    per_axis = []
    for x, v, axis in zip(position, grid.variables, grid.axes):
        delta = axis - float(x)
        if v.periodic:
            period = v.maxValue - v.minValue
            delta = delta - period * np.round(delta / period)
        if grid.kernelCutoff is None:
            g = np.exp(-0.5 * (delta / v.biasWidth) ** 2)
        else:
            g = truncated_gaussian(delta / v.biasWidth, grid.kernelCutoff)
        if v.periodic:
            g[-1] = g[0]
        per_axis.append(g)
    return per_axis


def reference_deposit(grid: BiasGrid, values: np.ndarray, position, height: float):
    """values += height * outer(factors) as BiasGrid.deposit did (support only for truncated Gaussians)."""
    factors = reference_factors(grid, position)
    if grid.kernelCutoff is None:
        values += height * reduce(np.multiply.outer, factors)
        return None
    window = BiasGrid.support(factors)
    values[window] += height * reduce(np.multiply.outer, [f[w] for f, w in zip(factors, window)])
    return window


GRIDS = {
    "1d": [LatentVariable(0, -1.0, 2.0, 0.1, gridWidth=61)],
    "1d periodic": [LatentVariable(0, -np.pi, np.pi, 0.3, periodic=True, gridWidth=40)],
    "2d mixed": [LatentVariable(0, -1.0, 1.0, 0.3, periodic=True, gridWidth=21),
                 LatentVariable(1, 0.0, 10.0, 0.4, gridWidth=101)],
    "3d": [LatentVariable(i, -3.0, 3.0, 0.3, gridWidth=32) for i in range(3)],
    "3d periodic": [LatentVariable(i, -1.0, 2.0, 0.25, periodic=True, gridWidth=n) for i, n in enumerate((17, 24, 9))],
    "3d mixed": [LatentVariable(0, 0.0, 1.0, 0.05, gridWidth=30),
                 LatentVariable(1, -np.pi, np.pi, 0.4, periodic=True, gridWidth=25),
                 LatentVariable(2, -2.0, 2.0, 0.7, gridWidth=12)],
}


def centres(grid: BiasGrid, rng, n=40):
    """Random centres inside and beyond the grid, on nodes, at edges and several periods away."""
    lows = np.array([v.minValue for v in grid.variables])
    highs = np.array([v.maxValue for v in grid.variables])
    span = highs - lows
    out = [lows, highs, lows - 0.5 * span, highs + 3 * span, 0.5 * (lows + highs)]
    out += [np.array([a[i] for a, i in zip(grid.axes, rng.integers(0, grid.shape))]) for _ in range(5)]
    out += list(rng.uniform(lows - 2 * span, highs + 2 * span, size=(n, len(lows))))
    return out


@pytest.mark.parametrize("cutoff", [METAD_DEFAULT_CUTOFF, None, 1.5])
@pytest.mark.parametrize("name", sorted(GRIDS))
def test_factors_support_and_deposit_are_bitwise_the_axis_by_axis_code(name, cutoff):
    grid = BiasGrid(GRIDS[name], kernelCutoff=cutoff)
    rng = np.random.default_rng(len(name))
    fast, slow = np.zeros(grid.shape), np.zeros(grid.shape)
    for k, centre in enumerate(centres(grid, rng)):
        ref = reference_factors(grid, centre)
        got = grid.gaussian_factors(centre)
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
            assert not np.signbit(a[a == 0]).any()  # zeros are +0.0, as np.where wrote them
        flat, _ = grid._flat_factors(centre)
        assert grid._flat_support(flat) == BiasGrid.support(ref)
        height = float(rng.uniform(0.1, 3.0))
        window = reference_deposit(grid, slow, centre, height)
        _, got_window = grid.deposit(fast, centre, height, np.empty(grid.shape))
        assert got_window == window, k
        np.testing.assert_array_equal(fast, slow)
    assert np.any(fast > 0)


def test_a_centre_with_the_wrong_number_of_coordinates_is_refused():
    grid = BiasGrid(GRIDS["3d"])
    with pytest.raises(ValueError, match="3 coordinates"):
        grid.gaussian_factors([0.0, 0.0])


@pytest.mark.parametrize("name", ["2d mixed", "3d", "3d periodic"])
@pytest.mark.parametrize("scale", [1.0, 0.4])
def test_running_ct_with_both_terms_at_once_equals_the_full_log_sum_exp(name, scale):
    """The window update of both c(t) terms in one array: c_s(t) == well_tempered_ct to rel 1e-13 after every
    truncated deposit (windows small and large compared with the grid)."""
    grid = BiasGrid(GRIDS[name], kernelCutoff=METAD_DEFAULT_CUTOFF)
    rng = np.random.default_rng(3)
    bias = np.zeros(grid.shape)
    running = RunningCt(300.0, 8.0)
    for k, centre in enumerate(centres(grid, rng, n=60)):
        assert running.value(bias, scale) == pytest.approx(well_tempered_ct(bias, 300.0, 8.0, scale=scale),
                                                           rel=1e-13, abs=1e-12), k
        height = float(rng.uniform(0.5, 3.0))
        _, window = grid.deposit(bias, centre, height)
        running.update(bias, window, height)


def test_a_cutoff_set_after_construction_is_used_and_checked():
    """``grid.kernelCutoff = c`` after construction (as test_native_plugin does) truncates the factors exactly as a
    grid built with that cutoff; an invalid value is refused by name."""
    grid = BiasGrid(GRIDS["3d mixed"])
    grid.kernelCutoff = 2.0
    rng = np.random.default_rng(11)
    for centre in centres(grid, rng, n=10):
        for a, b in zip(grid.gaussian_factors(centre), reference_factors(grid, centre)):
            np.testing.assert_array_equal(a, b)
    grid.kernelCutoff = None
    np.testing.assert_array_equal(grid.gaussian_factors([0.5, 0.0, 0.0])[2],
                                  np.exp(-0.5 * ((grid.axes[2] - 0.0) / 0.7) ** 2))
    with pytest.raises(ValueError, match="kernelCutoff"):
        grid.kernelCutoff = 0.5
