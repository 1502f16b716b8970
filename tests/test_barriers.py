"""minimax_barrier: exact on analytic surfaces, periodic wrapping, and equal to an independent level-set bisection."""

import numpy as np
import pytest
from scipy import ndimage

from latentbias.analysis.barriers import minimax_barrier, nearest_cell


def _grid(n=81, lo=-2.0, hi=2.0):
    x = np.linspace(lo, hi, n)
    return x, np.meshgrid(x, x, indexing="ij")


def test_double_well_saddle_and_basins():
    # F = h (x^2 - 1)^2 + k y^2 + c x: minima near x = -1 (F ~ -c) and x = +1 (F ~ +c), saddle at x = 0 (F = h)
    x, (xx, yy) = _grid()
    h, k, c = 20.0, 15.0, 2.0
    f = h * (xx**2 - 1) ** 2 + k * yy**2 + c * xx
    a, b = nearest_cell([x, x], (-1, 0)), nearest_cell([x, x], (1, 0))
    res = minimax_barrier(f, a, b)
    # on the grid the saddle is the lowest maximum along x of min over y of F: exactly representable here
    along = (h * (x**2 - 1) ** 2 + c * x)
    i0, i1 = np.argmin(np.abs(x + 1)), np.argmin(np.abs(x - 1))
    assert res.saddle_level == pytest.approx(along[i0:i1 + 1].max(), abs=1e-12)
    assert res.basin_a == pytest.approx(f.min(), abs=1e-12)
    assert res.basin_b == pytest.approx(f[x > 0].min(), abs=1e-12)
    assert res.forward == pytest.approx(h + c**2 / (16 * h) + c, abs=0.1)  # continuum value, grid spacing 0.05
    assert res.backward < res.forward
    # starting points off the minima give the same barrier (basin minima, not the start cells)
    res2 = minimax_barrier(f, nearest_cell([x, x], (-1.3, 0.5)), nearest_cell([x, x], (0.8, -0.4)))
    assert res2.forward == pytest.approx(res.forward) and res2.backward == pytest.approx(res.backward)


def test_lowest_pass_not_on_the_straight_line():
    # a wall at x = 0 of height 30 with a gap (height 8) at y = 1.5: the best path detours through the gap
    x, (xx, yy) = _grid()
    f = 5 * (xx**2 - 1) ** 2 + 30 * np.exp(-xx**2 / 0.05) * (1 - 0.75 * np.exp(-((yy - 1.5) ** 2) / 0.05))
    res = minimax_barrier(f, nearest_cell([x, x], (-1, 0)), nearest_cell([x, x], (1, 0)))
    assert abs(x[res.saddle_index[1]] - 1.5) < 0.1
    assert res.saddle_level < 15.0


def test_periodic_wrap_finds_the_pass_across_the_boundary():
    phi = np.arange(-180, 180, 5.0)
    pp, qq = np.meshgrid(phi, phi, indexing="ij")
    # minima near phi = -+100 deg (F = 9.17); F = 50 at phi = 0, only 30 at phi = +-180 (psi = 0)
    f = 25 + 15 * np.cos(np.radians(2 * pp)) + 10 * np.cos(np.radians(pp)) + 2 * (1 - np.cos(np.radians(qq)))
    a, b = nearest_cell([phi, phi], (-90, 0), (True, True)), nearest_cell([phi, phi], (90, 0), (True, True))
    closed = minimax_barrier(f, a, b, periodic=False)
    wrapped = minimax_barrier(f, a, b, periodic=True)
    j0 = int(np.flatnonzero(phi == 0)[0])
    assert closed.forward == pytest.approx(50.0 - f.min()) and closed.saddle_index == (j0, j0)
    assert wrapped.forward == pytest.approx(30.0 - f.min()) and wrapped.saddle_index == (0, j0)
    assert wrapped.forward < closed.forward
    assert nearest_cell([phi, phi], (179, 0), (True, True))[0] == 0  # 179 deg is nearest to -180


def _bisection_level(f, a, b, connectivity):
    """Independent reference: the lowest level at which a and b lie in one connected component of {F <= level}."""
    levels = np.unique(f[np.isfinite(f)])
    structure = np.ones((3, 3)) if connectivity == 8 else None
    lo, hi = 0, len(levels) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        lab, _ = ndimage.label(np.isfinite(f) & (f <= levels[mid]), structure=structure)
        if lab[a] and lab[a] == lab[b]:
            hi = mid
        else:
            lo = mid + 1
    return levels[lo]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_level_set_bisection_on_random_surfaces(seed, connectivity):
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(40, 50)), 2.0) * 50
    f[rng.random(f.shape) < 0.05] = np.nan  # unsampled cells are impassable
    cells = np.argwhere(np.isfinite(f))
    a, b = (tuple(cells[i]) for i in rng.choice(len(cells), 2, replace=False))
    res = minimax_barrier(f, a, b, connectivity=connectivity)
    assert res.saddle_level == _bisection_level(f, a, b, connectivity)
    assert res.basin_a <= f[a] and res.basin_b <= f[b] and res.forward >= 0 and res.backward >= 0


def test_disconnected_and_bad_input():
    f = np.zeros((5, 5))
    f[:, 2] = np.nan
    assert minimax_barrier(f, (0, 0), (0, 4)).saddle_level == np.inf
    with pytest.raises(ValueError, match="no finite"):
        minimax_barrier(f, (0, 2), (0, 4))
    with pytest.raises(ValueError, match="not a cell"):
        minimax_barrier(f, (9, 0), (0, 4))
    with pytest.raises(ValueError, match="2-D"):
        minimax_barrier(np.zeros(5), (0,), (1,))
