"""Tests written for the survivors of the mutation sessions of the analysis modules ``barriers.py``, ``paths.py`` and
``pockets.py`` (TESTING.md, "Session of 2026-11-30 (helper mut15f)"). Each checks physics or geometry against an
independent reference: the minimax barrier against the percolation threshold of the level sets (scipy's connected
components), its invariance under the symmetries of the grid; the string against analytic minimum free-energy paths;
the cavity volume against hand-built cavities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from latentbias.analysis.barriers import minimax_barrier, nearest_cell

# ------------------------------------------------------------------------------------------------ minimax barrier


def _neighbour_pairs(shape, connectivity, periodic):
    """Flat index pairs of neighbouring cells (each pair once), with wrapping along the periodic axes."""
    n0, n1 = shape
    half = [(1, 0), (0, 1)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    i, j = np.indices(shape)
    pairs = []
    for di, dj in half:
        u, v = i + di, j + dj
        if periodic[0]:
            u = u % n0
        if periodic[1]:
            v = v % n1
        ok = (u >= 0) & (u < n0) & (v >= 0) & (v < n1)
        pairs.append(np.column_stack([(i * n1 + j)[ok], (u * n1 + v)[ok]]))
    return np.concatenate(pairs)


def _percolation_reference(f, a, b, connectivity=8, periodic=(False, False)):
    """Independent reference by definition: the saddle level is the lowest level L at which a and b lie in one
    connected component of {F <= L} (bisection over the distinct levels, components by scipy.sparse.csgraph); the
    basin of a is the lowest F of a's component of {F < L} (F[a] when a is the saddle cell itself)."""
    n = f.size
    flat = f.ravel()
    pairs = _neighbour_pairs(f.shape, connectivity, periodic)
    ka, kb = a[0] * f.shape[1] + a[1], b[0] * f.shape[1] + b[1]

    def labels(mask):
        keep = mask[pairs[:, 0]] & mask[pairs[:, 1]]
        p = pairs[keep]
        g = coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
        return connected_components(g, directed=False)[1]

    levels = np.unique(flat[np.isfinite(flat)])
    lo, hi = 0, len(levels)
    while lo < hi:
        mid = (lo + hi) // 2
        mask = np.isfinite(flat) & (flat <= levels[mid])
        lab = labels(mask)
        if mask[ka] and mask[kb] and lab[ka] == lab[kb]:
            hi = mid
        else:
            lo = mid + 1
    if lo == len(levels):
        return np.inf, None, None
    level = levels[lo]
    below = np.isfinite(flat) & (flat < level)
    lab = labels(below)

    def basin(k):
        return flat[k] if not below[k] else flat[below & (lab == lab[k])].min()

    return level, basin(ka), basin(kb)


def _check_against_reference(f, a, b, connectivity, periodic):
    res = minimax_barrier(f, a, b, periodic=periodic, connectivity=connectivity)
    level, basin_a, basin_b = _percolation_reference(f, a, b, connectivity, periodic)
    assert res.saddle_level == level, (a, b)
    assert f[res.saddle_index] == level  # distinct values: the saddle cell is the one cell at that level
    assert (res.basin_a, res.basin_b) == (basin_a, basin_b), (a, b)
    assert res.forward == level - basin_a and res.backward == level - basin_b


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("periodic", [(False, False), (True, False), (False, True), (True, True)])
def test_minimax_barrier_is_the_percolation_threshold_of_rough_surfaces(connectivity, periodic):
    """On a rough (uncorrelated) surface the best path winds through many cells, so every neighbour direction and
    every wrap matters: saddle level, saddle cell and both basin minima equal the percolation reference, for states
    in the four corners (the first and last cells of the grid) and at random cells, on a non-square grid."""
    rng = np.random.default_rng(11)
    f = rng.uniform(0.0, 50.0, (17, 23))
    n0, n1 = f.shape
    corners = [(0, 0), (n0 - 1, n1 - 1), (0, n1 - 1), (n0 - 1, 0)]
    pairs = [(corners[0], corners[1]), (corners[2], corners[3]), (corners[1], corners[0]), (corners[0], corners[2])]
    cells = [tuple(int(c) for c in rng.integers(0, (n0, n1))) for _ in range(24)]
    pairs += list(zip(cells[::2], cells[1::2]))
    pairs += [(corners[0], cells[0]), (cells[1], corners[1]), (corners[3], cells[2])]
    for a, b in pairs:
        if a != b:
            _check_against_reference(f, a, b, connectivity, periodic)


def _d4(f, cell):
    """The 8 symmetries of a square grid applied to a surface and a cell."""
    n = f.shape[0]
    out = []
    for k in range(4):
        g, c = f, cell
        for _ in range(k):  # rot90 counter-clockwise: (i, j) -> (n - 1 - j, i)
            g, c = np.rot90(g), (n - 1 - c[1], c[0])
        out.append((g, c))
        out.append((g.T, (c[1], c[0])))
    return out


@pytest.mark.parametrize("connectivity", [4, 8])
def test_minimax_barrier_is_invariant_under_the_symmetries_of_the_grid(connectivity):
    """Rotating or reflecting the grid (with the two states) changes neither the barrier nor the basins, and the
    saddle cell moves with the grid; on a periodic grid rolling the surface is a symmetry too."""
    rng = np.random.default_rng(5)
    f = rng.uniform(0.0, 30.0, (15, 15))
    for a, b in [((0, 0), (14, 14)), ((3, 11), (12, 2)), ((0, 14), (7, 7))]:
        ref = minimax_barrier(f, a, b, connectivity=connectivity)
        for (g, ga), (_, gb), (_, gs) in zip(_d4(f, a), _d4(f, b), _d4(f, ref.saddle_index)):
            res = minimax_barrier(g, ga, gb, connectivity=connectivity)
            assert (res.saddle_level, res.basin_a, res.basin_b) == (ref.saddle_level, ref.basin_a, ref.basin_b)
            assert res.saddle_index == gs
    g = rng.uniform(0.0, 30.0, (12, 16))
    a, b = (0, 0), (6, 9)
    for per in [(True, False), (False, True), (True, True)]:
        ref = minimax_barrier(g, a, b, periodic=per, connectivity=connectivity)
        for s0 in ([0, 5, 11] if per[0] else [0]):
            for s1 in ([0, 3, 15] if per[1] else [0]):
                rolled = np.roll(g, (s0, s1), axis=(0, 1))
                move = lambda c: ((c[0] + s0) % 12, (c[1] + s1) % 16)  # noqa: E731
                res = minimax_barrier(rolled, move(a), move(b), periodic=per, connectivity=connectivity)
                assert (res.saddle_level, res.basin_a, res.basin_b) == (ref.saddle_level, ref.basin_a, ref.basin_b)
                assert res.saddle_index == move(ref.saddle_index)


@pytest.mark.parametrize("flip", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("swap", [False, True])
def test_a_diagonal_channel_is_open_with_8_neighbours_and_closed_with_4(flip, swap):
    """A one-cell channel along a diagonal of a plateau at 100 (cells touching at corners only), with a pass of 7 in
    its middle: with corner neighbours the barrier is the pass (7 - 0 forward, 7 - 1 backward), with edge neighbours
    only it is the plateau."""
    n = 9
    f = np.full((n, n), 100.0)
    levels = np.array([0.0, 2.0, 3.0, 5.0, 7.0, 4.0, 3.5, 2.5, 1.0])
    f[np.arange(n), np.arange(n)] = levels
    a, b = (0, 0), (n - 1, n - 1)
    if flip[0]:
        f, a, b = f[::-1], (n - 1 - a[0], a[1]), (n - 1 - b[0], b[1])
    if flip[1]:
        f, a, b = f[:, ::-1], (a[0], n - 1 - a[1]), (b[0], n - 1 - b[1])
    if swap:
        a, b = b, a
    eight = minimax_barrier(f, a, b, connectivity=8)
    assert eight.saddle_level == 7.0
    assert {eight.forward, eight.backward} == {7.0, 6.0} and (eight.forward == 7.0) != swap
    assert minimax_barrier(f, a, b).saddle_level == 7.0  # 8 neighbours is the default
    four = minimax_barrier(f, a, b, connectivity=4)
    assert four.saddle_level == 100.0


def _three_basins(connectivity):
    """Three basins meeting at the centre cell (F = 5) of a plateau at 100: a's arm (minimum 1 at a), b's arm (0.5 at
    b) and a deeper third arm (-10). Arms along the grid axes for 4 neighbours, along the diagonals for 8 (cells of
    different arms must not touch)."""
    f = np.full((5, 5), 100.0)
    f[2, 2] = 5.0
    if connectivity == 4:
        f[2, :2], f[2, 3:], f[:2, 2] = [1.0, 2.0], [2.0, 0.5], [-10.0, 3.0]
        return f, (2, 0), (2, 4)
    f[0, 0], f[1, 1], f[3, 3], f[4, 4], f[1, 3], f[0, 4] = 1.0, 2.0, 2.0, 0.5, 3.0, -10.0
    return f, (0, 0), (4, 4)


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("connectivity", [4, 8])
def test_basins_exclude_a_third_basin_that_meets_at_the_saddle(k, connectivity):
    """The barriers seen from a and b are 5 - 1 = 4 and 5 - 0.5 = 4.5, not 5 - (-10): the third basin is not part
    of a's or b's component below the saddle level. The same in every orientation of the grid (i.e. whatever the
    order in which the saddle cell meets its neighbours); a state sitting on the saddle cell has no barrier
    forward."""
    f, a0, b0 = _three_basins(connectivity)
    g, a = _d4(f, a0)[k]
    _, b = _d4(f, b0)[k]
    _, s = _d4(f, (2, 2))[k]
    res = minimax_barrier(g, a, b, connectivity=connectivity)
    assert res.saddle_index == s and res.saddle_level == 5.0
    assert (res.basin_a, res.basin_b, res.forward, res.backward) == (1.0, 0.5, 4.0, 4.5)
    on = minimax_barrier(g, s, b, connectivity=connectivity)
    assert (on.saddle_level, on.basin_a, on.basin_b, on.forward, on.backward) == (5.0, 5.0, 0.5, 0.0, 4.5)
    back = minimax_barrier(g, b, s, connectivity=connectivity)
    assert (back.basin_a, back.basin_b, back.forward) == (0.5, 5.0, 4.5)


def test_disconnected_states_and_cells_outside_the_grid():
    """A wall of unsampled cells: no barrier (inf), saddle (-1, -1), the states' own F as basins (documented);
    indices outside the grid (negative ones included, which numpy would wrap) are refused on a non-square grid."""
    f = np.arange(15.0).reshape(3, 5)
    f[:, 2] = np.nan
    res = minimax_barrier(f, (0, 0), (2, 4))
    assert res.saddle_level == np.inf and res.saddle_index == (-1, -1)
    assert (res.basin_a, res.basin_b) == (0.0, 14.0)
    for cell in [(-1, 0), (0, -1), (3, 0), (0, 5), (-1, -1)]:
        with pytest.raises(ValueError, match="not a cell"):
            minimax_barrier(f, cell, (2, 4))
        with pytest.raises(ValueError, match="not a cell"):
            minimax_barrier(f, (2, 4), cell)
    assert minimax_barrier(f, (2, 4), (2, 4)).saddle_level == 14.0  # the last cell is a cell


def test_nearest_cell_on_periodic_and_bounded_axes():
    """Periodic axes: the nearest centre by circular distance (independent reference: angle differences wrapped to
    (-P/2, P/2]), the same for a point shifted by whole periods; bounded axes (the default): a point beyond the last
    centre belongs to the last cell, never to the first."""
    rng = np.random.default_rng(3)
    phi = np.arange(-180.0, 180.0, 5.0)  # P = 360
    s = np.arange(0.05, 2.0, 0.1)  # P = 2
    for axis in (phi, s):
        period = (axis[1] - axis[0]) * len(axis)
        for p in rng.uniform(axis[0] - period / 2, axis[-1] + period / 2, 200):
            wrapped = (axis - p + period / 2) % period - period / 2
            expect = int(np.argmin(np.abs(wrapped)))
            for shift in (0.0, period, -period, 2 * period):
                assert nearest_cell([axis], [p + shift], [True]) == (expect,), (p, shift)
    assert nearest_cell([s], [2.04]) == (19,)  # circularly it is nearer cell 0 (0.05 + 2.0)
    assert nearest_cell([s, phi], [-0.03, 178.0], [False, True]) == (0, 0)
    assert nearest_cell([s, phi], [-0.03, 178.0]) == (0, 71)


# --------------------------------------------------------------------------------------- string method, basins

from latentbias.analysis.paths import find_basins, minimum_free_energy_path, path_sensitivity  # noqa: E402


def _ring(x, y, k=40.0, h=12.0):
    """k (r - 1)^2 + h sin^2(theta): minima (±1, 0), saddles (0, ±1), F = h there; the MFEP is the unit circle."""
    r = np.hypot(x, y)
    return k * (r - 1.0) ** 2 + h * (y / np.maximum(r, 1e-12)) ** 2


def _ring_grid(n=61):
    x = np.linspace(-1.6, 1.6, n)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    return _ring(xx, yy), (x, x)


def test_string_on_the_ring_profile_arc_length_and_equal_spacing():
    """The converged string's free-energy profile is the analytic F along it (relative to the start node, within the
    bicubic interpolation error), its barrier is the profile's maximum (12 = h, at the saddle (0, 1)), the arc length
    is the cumulative chord length from 0 to the half circle's length pi, and the nodes are equally spaced in arc
    length (the string method's reparametrisation)."""
    fes, axes = _ring_grid()
    bowed = np.column_stack([np.linspace(-1, 1, 31), 0.3 * np.sin(np.linspace(0, np.pi, 31))])
    path = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=31, smooth=0.0, initial=bowed)
    assert path.converged and 1 < path.iterations < 20000
    exact = _ring(path.nodes[:, 0], path.nodes[:, 1])
    np.testing.assert_allclose(path.free_energy, exact - exact[0], atol=0.05)
    assert path.free_energy[0] == 0.0 and path.barrier == path.free_energy.max()
    assert path.barrier == pytest.approx(12.0, abs=0.1)
    top = path.nodes[np.argmax(path.free_energy)]
    assert np.hypot(top[0], top[1] - 1.0) < 0.06
    seg = np.linalg.norm(np.diff(path.nodes, axis=0), axis=1)
    np.testing.assert_allclose(path.arc_length, np.concatenate([[0.0], np.cumsum(seg)]), rtol=0, atol=1e-12)
    assert path.arc_length[-1] == pytest.approx(np.pi, rel=0.02)
    assert seg.std() / seg.mean() < 0.02
    assert path.info["smooth"] == 0.0 and path.info["step"] > 0


def test_string_slides_down_a_tilted_plane():
    """On a plane F = 3 x (no curvature: the default step falls back to its cap) every node slides downhill to the
    low edge x = 0 and stays there (clipped to the grid), with free ends; with fixed ends only the inner nodes move,
    and the string stays near the segment's line y = 0.5 (the spline's gradient across a plane is not exactly 0:
    1e-3 measured with the step cap)."""
    x = np.linspace(0.0, 1.0, 21)
    xx, _ = np.meshgrid(x, x, indexing="ij")
    fes = 3.0 * xx
    free = minimum_free_energy_path(fes, (x, x), (0.2, 0.5), (0.8, 0.5), n_nodes=9, smooth=0.0)
    assert free.converged
    np.testing.assert_allclose(free.nodes[:, 0], 0.0, atol=1e-9)
    assert np.all(free.free_energy <= 1e-9)
    fixed = minimum_free_energy_path(fes, (x, x), (0.2, 0.5), (0.8, 0.5), n_nodes=9, smooth=0.0, fixed_ends=True,
                                     max_iterations=50)
    np.testing.assert_allclose(fixed.nodes[[0, -1]], [(0.2, 0.5), (0.8, 0.5)], atol=1e-12)
    np.testing.assert_allclose(fixed.nodes[:, 1], 0.5, atol=0.01)
    up = minimum_free_energy_path(-fes, (x, x), (0.2, 0.5), (0.8, 0.5), n_nodes=9, smooth=0.0)
    np.testing.assert_allclose(up.nodes[:, 0], 1.0, atol=1e-9)  # tilted the other way: the high edge x = 1


def _double_well_with_a_hole():
    """5 (x^2 - 1)^2 + 3 y^2 on [-1.5, 1.5]^2 (minima (±1, 0), F <= 14.6 on the grid), unsampled (NaN) in a disc of
    radius 0.35 around (0, 1.1), where F would be ~8.6."""
    x = np.linspace(-1.5, 1.5, 41)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    fes = 5 * (xx**2 - 1) ** 2 + 3 * yy**2
    hole = np.hypot(xx, yy - 1.1) < 0.35
    fes[hole] = np.nan
    return fes, (x, x), hole


def test_unsampled_cells_are_barriers_not_basins():
    """Unsampled cells are raised above the highest sampled F: the two wells are the only basins (none appears in
    the unsampled hole), cells above max_free_energy get label -1 (the hole among them), and the lowest basin has
    label 0."""
    fes, axes, hole = _double_well_with_a_hole()
    basins = find_basins(fes, axes, smooth=1.0, min_depth=1.0)
    assert len(basins.minima) == 2
    np.testing.assert_allclose(np.sort(np.abs(basins.minima[:, 0])), [1.0, 1.0], atol=0.08)
    np.testing.assert_allclose(basins.minima[:, 1], 0.0, atol=0.08)
    assert basins.free_energies[0] == 0.0 and basins.free_energies[1] == pytest.approx(0.0, abs=0.2)
    cut = find_basins(fes, axes, smooth=0.0, min_depth=1.0, max_free_energy=6.0)
    assert set(np.unique(cut.labels)) == {-1, 0, 1}
    assert np.all(cut.labels[hole] == -1)
    sampled = np.where(hole, np.inf, fes - np.nanmin(fes))
    np.testing.assert_array_equal(cut.labels == -1, sampled > 6.0)
    lowest = tuple(np.unravel_index(np.nanargmin(fes), fes.shape))
    assert cut.labels[lowest] == 0


def test_fes_with_four_sampled_cells_is_enough():
    """At least 4 finite cells are needed (the message says so); exactly 4 are accepted."""
    fes = np.full((4, 4), np.nan)
    fes[1:3, 1:3] = [[1.0, 2.0], [3.0, 0.5]]
    axes = (np.arange(4.0), np.arange(4.0))
    basins = find_basins(fes, axes, smooth=0.0, min_depth=0.1)
    assert basins.minima.tolist() == [[2.0, 2.0]]
    fes[1, 1] = np.nan
    with pytest.raises(ValueError, match="fewer than 4 finite cells"):
        find_basins(fes, axes)


def test_path_sensitivity_without_errors_and_its_sample_spread():
    """Cells without an error estimate (NaN) are not perturbed: every sampled string is the reference string (to
    the convergence tolerance), no spread; with errors the barrier spread is the sample standard deviation of the sampled barriers."""
    fes, axes = _ring_grid(41)
    none = path_sensitivity(fes, np.full(fes.shape, np.nan), axes, (-1, 0.05), (1, 0.05), n_samples=2, n_nodes=15)
    # the resampled strings restart from the converged one and stop within the tolerance (1e-6 grid spacings)
    assert none["barrier_std"] < 1e-6 and none["node_spread"].max() < 1e-5
    np.testing.assert_allclose(none["barriers"], none["path"].barrier, atol=1e-6)
    noisy = path_sensitivity(fes, np.full(fes.shape, 1.0), axes, (-1, 0.05), (1, 0.05), n_samples=2, n_nodes=15)
    b = noisy["barriers"]
    assert noisy["barrier_std"] == pytest.approx(abs(b[1] - b[0]) / np.sqrt(2), rel=1e-12)  # ddof = 1
    assert noisy["barrier_std"] > 0


def test_string_refuses_start_or_end_of_the_wrong_dimension():
    fes, axes = _ring_grid(21)
    with pytest.raises(ValueError, match="does not match the axes"):
        minimum_free_energy_path(fes[:, :20], axes, (-1, 0), (1, 0))  # right number of axes, wrong length
    for start, end in (((-1, 0, 0), (1, 0)), ((-1, 0), (1, 0, 0))):
        with pytest.raises(ValueError, match=r"shape \(2,\)"):
            minimum_free_energy_path(fes, axes, start, end)


def test_path_sensitivity_of_one_sample_has_zero_spread():
    """One FES sample: the barrier spread is 0 (not negative); the sampled barrier is finite."""
    fes, axes = _ring_grid(41)
    sens = path_sensitivity(fes, np.full(fes.shape, 0.5), axes, (-1, 0.05), (1, 0.05), n_samples=1, n_nodes=15)
    assert sens["barrier_std"] == 0.0 and sens["barriers"].shape == (1,) and np.isfinite(sens["barriers"][0])


# ------------------------------------------------------------------------------------------------ cavity volume

from scipy import ndimage  # noqa: E402

from latentbias.analysis.pockets import CavityVolume, PocketRegion  # noqa: E402


def _reference_cavity(xyz, radii, lo, hi, centre, radius, step, probe_in, probe_out, removal, cutoff, surface):
    """The module docstring's definition, computed independently: exact atom distances for the probe-in occupancy
    (brute force), Euclidean distance transforms (scipy) for every growth, scipy's 26-connected labelling. Grid:
    spacing ``step`` from ``lo - probe_out`` over the region box enlarged by ``probe_out``; cavity points only in
    the region (box ``[lo, hi]``, or the ball of ``radius`` around ``centre``). Returns the cavity points (nm)."""
    origin = lo - probe_out
    shape = tuple(np.ceil((hi + probe_out - origin) / step).astype(int) + 1)
    pts = origin + np.indices(shape).reshape(3, -1).T * step
    occ = np.zeros(shape, dtype=bool)
    grid = [origin[k] + np.arange(shape[k]) * step for k in range(3)]
    for x, r in zip(xyz, radii):  # each atom on the block of grid points around it, exact distances
        if r <= 0:
            continue
        reach = r + probe_in
        sl = [slice(max(0, int(np.floor((x[k] - reach - origin[k]) / step))),
                    max(0, int(np.ceil((x[k] + reach - origin[k]) / step)) + 1)) for k in range(3)]
        gx, gy, gz = np.meshgrid(grid[0][sl[0]], grid[1][sl[1]], grid[2][sl[2]], indexing="ij")
        occ[tuple(sl)] |= (gx - x[0]) ** 2 + (gy - x[1]) ** 2 + (gz - x[2]) ** 2 <= reach**2
    free = ndimage.distance_transform_edt(occ) <= probe_in / step if surface == "SES" else ~occ
    occ_out = ndimage.distance_transform_edt(~occ) <= (probe_out - probe_in) / step
    bulk = ndimage.distance_transform_edt(occ_out) <= probe_out / step
    cavity = free & ~bulk
    if removal > 0:
        cavity &= ~(ndimage.distance_transform_edt(~bulk) <= removal / step)
    inside = np.all((pts >= lo - 1e-9 * step) & (pts <= hi + 1e-9 * step), axis=1).reshape(shape)
    if centre is not None:
        inside &= (((pts - centre) ** 2).sum(1) <= radius**2).reshape(shape)
    cavity &= inside
    labels, n = ndimage.label(cavity, structure=np.ones((3, 3, 3)))
    for k in range(1, n + 1):
        if (labels == k).sum() * step**3 < cutoff:
            cavity[labels == k] = False
    return pts[cavity.ravel()]


def _hollow_cluster(seed=0):
    """A 'protein' with a cavity: atoms of four radii (and two of radius 0, ignored) on a bumpy shell of radius
    ~0.8 nm with an opening on one side, a few atoms inside (fragments), and atoms scattered around it (some
    outside the grid, some reaching into it from outside)."""
    rng = np.random.default_rng(seed)
    n = 700
    k = np.arange(n) + 0.5
    polar, azim = np.arccos(1 - 2 * k / n), np.pi * (1 + 5**0.5) * k
    r = 0.8 + rng.normal(0, 0.02, n)
    shell = r[:, None] * np.c_[np.sin(polar) * np.cos(azim), np.sin(polar) * np.sin(azim), np.cos(polar)]
    shell = shell[shell[:, 0] < 0.68]  # a mouth of ~0.4 nm radius on the +x side
    inner = rng.uniform(-0.25, 0.25, (6, 3))
    outer = rng.normal(0, 1.0, (60, 3))
    outer = outer[np.linalg.norm(outer, axis=1) > 1.05]
    xyz = np.concatenate([shell, inner, outer, [[0.05, 0.0, 0.0], [0.0, -0.3, 0.1]]])
    radii = rng.choice([0.152, 0.155, 0.17, 0.18], len(xyz))
    radii[-2:] = 0.0
    return xyz + np.array([0.31, -0.17, 0.05]), radii, len(shell)


@pytest.mark.parametrize("surface", ["SES", "SAS"])
@pytest.mark.parametrize("kind", ["sphere", "box", "atoms_centre"])
def test_cavity_points_equal_the_definition_computed_independently(surface, kind):
    """Every cavity grid point, exactly, against :func:`_reference_cavity` (the published probe-in / probe-out
    definition with brute-force distances and scipy distance transforms), for a ball region, a residue box and a
    ball around the centroid of atoms, both surfaces, with the mouth layer removed and small fragments dropped;
    the volume is the point count times step^3; every frame of a trajectory is measured alike."""
    xyz, radii, n_shell = _hollow_cluster()
    step, probe_in, probe_out, removal, cutoff = 0.06, 0.13, 0.36, 0.13, 0.0008
    centre = np.array([0.31, -0.17, 0.05])
    if kind == "sphere":
        region = PocketRegion.from_center(0.61, center=centre)
    elif kind == "atoms_centre":
        region = PocketRegion.from_center(0.55, center_atoms=np.arange(n_shell))
    else:
        region = PocketRegion(atoms=np.arange(n_shell, n_shell + 6), padding=0.2)
    measure = CavityVolume(region, radii, step=step, probe_in=probe_in, probe_out=probe_out,
                           removal_distance=removal, volume_cutoff=cutoff, surface=surface.lower())
    if kind == "box":
        sel = xyz[n_shell:n_shell + 6]
        lo, hi, c, rad = sel.min(0) - 0.2, sel.max(0) + 0.2, None, None
    else:
        c = centre if kind == "sphere" else xyz[:n_shell].mean(0)
        rad = 0.61 if kind == "sphere" else 0.55
        lo, hi = c - rad, c + rad
    ref = _reference_cavity(xyz, radii, lo, hi, c, rad, step, probe_in, probe_out, removal, cutoff, surface)
    got = measure.cavity_points(xyz)
    assert len(ref) > 50  # a real cavity
    key = lambda p: set(map(tuple, np.rint(p / step * 1000).astype(np.int64)))  # noqa: E731
    assert key(got) == key(ref)
    assert measure.volume_frame(xyz) == len(ref) * step**3
    second = xyz.copy()
    second[: n_shell // 3] *= 1.05  # a second, different frame
    ref2 = _reference_cavity(second, radii, *((lo, hi) if kind != "atoms_centre" else
                                              (second[:n_shell].mean(0) - rad, second[:n_shell].mean(0) + rad)),
                             c if kind != "atoms_centre" else second[:n_shell].mean(0), rad, step, probe_in,
                             probe_out, removal, cutoff, surface) if kind != "box" else None
    vols = measure(np.stack([xyz, second]))
    assert vols.shape == (2,) and vols[0] == len(ref) * step**3
    if ref2 is not None:
        assert vols[1] == len(ref2) * step**3


def _tiny_topology():
    """Two residues (resSeq 7 and 9): C, N, O, H, S and a zinc (not in the radius table)."""
    import mdtraj as md

    top = md.Topology()
    chain = top.add_chain()
    for resseq, elements in ((7, ["C", "N", "O"]), (9, ["H", "S", "Zn"])):
        res = top.add_residue("ALA", chain, resSeq=resseq)
        for e in elements:
            top.add_atom(e.upper() + "1", md.element.get_by_symbol(e), res)
    return top


def test_atom_radii_residue_atoms_and_regions():
    """Bondi radii by element (an unknown element gets 0.17 nm; a custom table wins), for mdtraj and OpenMM
    topologies; residues by PDB number, 0-based index or selection; region boxes and balls and their input checks."""
    from latentbias.analysis.pockets import atom_radii, residue_atoms

    top = _tiny_topology()
    np.testing.assert_array_equal(atom_radii(top), [0.170, 0.155, 0.152, 0.120, 0.180, 0.170])
    np.testing.assert_array_equal(atom_radii(top.to_openmm()), atom_radii(top))
    np.testing.assert_array_equal(atom_radii(top, {"Zn": 0.139}), [0.17, 0.17, 0.17, 0.17, 0.17, 0.139])
    assert residue_atoms(top, [9]).tolist() == [3, 4, 5]
    assert residue_atoms(top, [1], by="index").tolist() == [3, 4, 5]
    assert residue_atoms(top, "element O").tolist() == [2]
    for bad, match in (([], "no residues"), ([8], r"not in the topology .*7\.\.9"), ("element Xx", "selection"),
                       ("resname GLY", "matches no atom")):
        with pytest.raises(ValueError, match=match):
            residue_atoms(top, bad)
    with pytest.raises(ValueError, match="by must be"):
        residue_atoms(top, [7], by="name")
    region = PocketRegion.from_residues(top, [7], padding=0.1)
    assert region.atoms.tolist() == [0, 1, 2] and region.padding == 0.1
    xyz = np.arange(18.0).reshape(6, 3) / 10
    lo, hi, centre = region.bounds(xyz)
    np.testing.assert_allclose(lo, [-0.1, 0.0, 0.1]) and np.testing.assert_allclose(hi, [0.7, 0.8, 0.9])
    assert centre is None
    assert PocketRegion.from_residues(top.to_openmm(), [9]).atoms.tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match="padding"):
        PocketRegion.from_residues(top, [7], padding=-0.01)
    ball = PocketRegion.from_center(0.3, center_atoms=[1, 4])
    lo, hi, centre = ball.bounds(xyz)
    np.testing.assert_allclose(centre, [0.75, 0.85, 0.95]) and np.testing.assert_allclose(hi - lo, 0.6)
    for kwargs, match in (({"radius": 0.0, "center": [0, 0, 0]}, "radius"), ({"radius": -1, "center": [0, 0, 0]},
                          "radius"), ({"radius": np.inf, "center": [0, 0, 0]}, "radius"), ({"radius": 0.3},
                          "exactly one"), ({"radius": 0.3, "center": [0, 0, 0], "center_atoms": [1]}, "exactly one"),
                          ({"radius": 0.3, "center": [0, 0]}, "center"), ({"radius": 0.3, "center": [0, np.nan, 0]},
                          "center"), ({"radius": 0.3, "center_atoms": []}, "empty")):
        with pytest.raises(ValueError, match=match):
            PocketRegion.from_center(**kwargs)
    radii = np.full(6, 0.17)
    CavityVolume(PocketRegion.from_center(0.3, center_atoms=[0, 5]), radii)  # the last atom is an atom
    for idx in ([0, 6], [-1, 2]):
        with pytest.raises(ValueError, match="beyond the 6 atoms"):
            CavityVolume(PocketRegion.from_center(0.3, center_atoms=idx), radii)
        with pytest.raises(ValueError, match="beyond the 6 atoms"):
            CavityVolume(PocketRegion(atoms=np.array(idx)), radii)


def test_cavity_volume_settings_limits():
    """Limits of the settings, at their edges: probe_in, removal_distance and volume_cutoff may be 0, step and
    probe_out may not; step up to 0.2 nm; radii up to 0.5 nm and >= 0; probe_out must exceed probe_in; the surface
    name in any case; the settings as reported."""
    region = PocketRegion.from_center(0.3, center=[0.0, 0.0, 0.0])
    radii = [0.17, 0.0, 0.5]
    m = CavityVolume(region, radii, step=0.2, probe_in=0.0, removal_distance=0.0, volume_cutoff=0.0, surface="sas")
    assert m.settings() == {"step_nm": 0.2, "probe_in_nm": 0.0, "probe_out_nm": 0.4, "removal_distance_nm": 0.0,
                            "volume_cutoff_nm3": 0.0, "surface": "SAS", "padding_nm": 0.0}
    for kwargs, match in (({"step": 0.0}, "step must be > 0"), ({"step": 0.2001}, "coarser"),
                          ({"probe_out": 0.0}, "probe_out must be > 0"), ({"probe_in": -1e-9}, "probe_in must be >= 0"),
                          ({"removal_distance": -1e-9}, "removal_distance"), ({"volume_cutoff": -1e-9}, "volume_cutoff"),
                          ({"step": np.nan}, "step"), ({"probe_in": 0.4}, "larger than probe_in"),
                          ({"surface": "vdw"}, "surface")):
        with pytest.raises(ValueError, match=match):
            CavityVolume(region, radii, **kwargs)
    for bad in ([0.17, -0.01, 0.1], [0.17, np.nan, 0.1], [0.17, 0.5001, 0.1]):
        with pytest.raises(ValueError, match="radii"):
            CavityVolume(region, bad)
    with pytest.raises(TypeError, match="PocketRegion"):
        CavityVolume((0, 0, 0), radii)
    with pytest.raises(ValueError, match="frames have 5 atoms but 3 radii"):
        CavityVolume(region, radii)(np.zeros((2, 5, 3)))


def test_frames_input_forms_and_group_distance():
    """One frame as a 2-D array, a Quantity in Å, bad shapes and NaN; group distances between mass-weighted
    centres (masses given, or from the elements of a Trajectory, equal for plain arrays) and the group checks."""
    import mdtraj as md
    import openmm.unit as u

    from latentbias.analysis.pockets import group_distance

    xyz = np.zeros((6, 3))
    xyz[1] = [1.0, 0.0, 0.0]
    xyz[4] = [0.0, 2.0, 0.0]
    xyz[5] = [0.0, 3.0, 0.0]
    # group a: atoms 0 and 1 with masses 1 and 3 -> centre x = 0.75; group b: atoms 4, 5 with masses 1, 1 -> y = 2.5
    masses = np.array([1.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    assert group_distance(xyz, [0, 1], [4, 5], masses=masses)[0] == pytest.approx(np.hypot(0.75, 2.5), rel=1e-14)
    assert group_distance(xyz, [0, 1], [4, 5])[0] == pytest.approx(np.hypot(0.5, 2.5), rel=1e-14)
    assert group_distance(u.Quantity(xyz * 10, u.angstrom), [1], [4])[0] == pytest.approx(np.sqrt(5.0), rel=1e-12)
    top = _tiny_topology()  # C (12.011) at x = 0, N (14.007) at x = 1
    traj = md.Trajectory(np.stack([xyz, 2 * xyz]).astype(np.float32), top)
    cx = 14.007 / (12.011 + 14.007)
    m = [a.element.mass for a in top.atoms]
    cy = (2 * m[4] + 3 * m[5]) / (m[4] + m[5])
    np.testing.assert_allclose(group_distance(traj, [0, 1], [4, 5]), [np.hypot(cx, cy), 2 * np.hypot(cx, cy)],
                               rtol=1e-6)
    for a, b, match in (([], [1], "group_a is empty"), ([0], [6], "group_b indexes atoms beyond the 6"),
                        ([-1], [1], "group_a indexes")):
        with pytest.raises(ValueError, match=match):
            group_distance(xyz, a, b)
    for bad in (np.zeros((2, 6, 2)), np.zeros((6,)), np.full((6, 3), np.nan)):
        with pytest.raises(ValueError, match="positions"):
            group_distance(bad, [0], [1])


def test_anchor_agreement_of_exact_and_monotone_anchors():
    """An anchor equal to the measure: correlations 1, RMSE 0; a shifted one: RMSE = the shift; a monotone
    nonlinear one: Spearman 1, Pearson below 1; at least 3 frames (3 accepted), equal lengths."""
    from latentbias.analysis.pockets import anchor_agreement

    v = np.array([0.2, 0.5, 0.1, 0.9, 0.4])
    exact = anchor_agreement(v, v)
    assert exact["pearson"] == pytest.approx(1.0) and exact["spearman"] == pytest.approx(1.0) and exact["rmse"] == 0.0
    assert exact["n_frames"] == 5
    shifted = anchor_agreement(v + 0.3, v)
    assert shifted["rmse"] == pytest.approx(0.3, rel=1e-12) and shifted["pearson"] == pytest.approx(1.0)
    curved = anchor_agreement(np.exp(5 * v), v)
    assert curved["spearman"] == pytest.approx(1.0) and curved["pearson"] < 0.99
    assert anchor_agreement(v[:3], v[:3])["n_frames"] == 3
    for z, w in ((v[:2], v[:2]), (v, v[:4])):
        with pytest.raises(ValueError, match=">= 3"):
            anchor_agreement(z, w)


def test_pocket_openness_kinds_sasa_and_pdb_on_a_small_molecule(tmp_path):
    """The per-frame column for each kind equals its measure (volume, mass-weighted distance, lining SASA against
    mdtraj's Shrake-Rupley of the whole molecule); plain arrays need a topology for volume and SASA; the SASA
    cutoff limit is 2 (0.2 + probe) nm; the cavity PDB numbers its pseudo-atoms after the molecule's atoms, in Å."""
    import mdtraj as md

    from latentbias.analysis.pockets import lining_sasa, pocket_openness, write_pocket_pdb, group_distance

    top = _tiny_topology()
    rng = np.random.default_rng(4)
    xyz = rng.uniform(0.0, 0.8, (3, 6, 3))
    traj = md.Trajectory(xyz.astype(np.float32), top)
    x32 = traj.xyz.astype(np.float64)
    full = md.shrake_rupley(traj, mode="atom")
    np.testing.assert_allclose(lining_sasa(traj, [0, 2]), full[:, [0, 2]].sum(1), rtol=1e-5)
    np.testing.assert_allclose(lining_sasa(traj, [0, 2], cutoff=0.68), full[:, [0, 2]].sum(1), rtol=1e-5)
    with pytest.raises(ValueError, match="too short .* use >= 0.68"):
        lining_sasa(traj, [0, 2], cutoff=0.679)
    for bad in ([], [6], [-1]):
        with pytest.raises(ValueError, match="non-empty indices"):
            lining_sasa(traj, bad)
    with pytest.raises(TypeError, match="mdtraj.Trajectory"):
        lining_sasa(x32, [0])
    region = PocketRegion.from_residues(top, [7], padding=0.2)
    sasa = pocket_openness(traj, region, kind="sasa")
    assert sasa.shape == (3, 1)
    np.testing.assert_allclose(sasa[:, 0], full[:, [0, 1, 2]].sum(1), rtol=1e-5)
    np.testing.assert_allclose(pocket_openness(x32, region, kind="sasa", topology=top), sasa, rtol=1e-6)
    vol = pocket_openness(traj, region, step=0.05)
    np.testing.assert_array_equal(vol[:, 0], CavityVolume(region, [0.17, 0.155, 0.152, 0.12, 0.18, 0.17],
                                                          step=0.05)(x32))
    np.testing.assert_array_equal(pocket_openness(x32, region, topology=top, step=0.05), vol)
    dist = pocket_openness(x32, region, kind="distance", groups=([0, 1], [4, 5]), topology=top)
    np.testing.assert_allclose(dist[:, 0], group_distance(traj, [0, 1], [4, 5]), rtol=1e-12)
    np.testing.assert_allclose(pocket_openness(x32, region, kind="distance", groups=([0, 1], [4, 5]))[:, 0],
                               group_distance(x32, [0, 1], [4, 5]), rtol=1e-12)  # no topology: equal masses
    for kwargs, match in (({"kind": "volume"}, "topology"), ({"kind": "sasa"}, "topology"),
                          ({"kind": "distance", "groups": ([0],)}, "groups")):
        with pytest.raises(ValueError, match=match):
            pocket_openness(x32, region, **kwargs)
    with pytest.raises(ValueError, match="residue region"):
        pocket_openness(traj, PocketRegion.from_center(0.3, center=[0, 0, 0]), kind="sasa")
    points = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    path = write_pocket_pdb(tmp_path / "p.pdb", top, x32[0], points)
    het = [ln for ln in path.read_text().splitlines() if ln.startswith("HETATM") and " CAV " in ln]
    assert [int(ln[6:11]) for ln in het] == [7, 8]
    assert het[1][30:54] == "   4.000   5.000   6.000" and het[0][21] == "Z"
    back = md.load(str(path))
    np.testing.assert_allclose(back.xyz[0, 6:], points, atol=1e-4)
    np.testing.assert_allclose(back.xyz[0, :6], x32[0], atol=1e-4)
    assert write_pocket_pdb(path, top, x32[0], points[:1], overwrite=True) == path
    assert md.load(str(path)).n_atoms == 7
    with pytest.raises(ValueError, match=r"shape \(6, 3\)"):
        write_pocket_pdb(tmp_path / "q.pdb", top, x32[0, :5], points)


def test_string_on_a_3d_ring_profile_is_the_analytic_free_energy():
    """3-D grid (tricubic interpolant): the string on the ring k (r - 1)^2 + h sin^2(theta) + 40 z^2 lies on the
    unit circle in z = 0 and its profile is the analytic F at its nodes (relative to the first), within the
    interpolation error (0.15 kJ/mol on this 0.107 nm grid); the barrier is h = 12."""
    x = np.linspace(-1.6, 1.6, 31)
    xx, yy, zz = np.meshgrid(x, x, x, indexing="ij")
    fes = _ring(xx, yy) + 40.0 * zz**2
    t = np.linspace(np.pi, 0.0, 21)
    bowed = np.column_stack([np.cos(t), 0.3 * np.sin(t), 0.1 * np.sin(t)])
    path = minimum_free_energy_path(fes, (x, x, x), (-1, 0, 0), (1, 0, 0), n_nodes=21, smooth=0.0, initial=bowed)
    assert path.converged
    exact = _ring(path.nodes[:, 0], path.nodes[:, 1]) + 40.0 * path.nodes[:, 2] ** 2
    np.testing.assert_allclose(path.free_energy, exact - exact[0], atol=0.15)
    assert path.barrier == pytest.approx(12.0, abs=0.15)
    assert np.abs(np.hypot(path.nodes[:, 0], path.nodes[:, 1]) - 1).max() < x[1] - x[0]
    assert np.abs(path.nodes[:, 2]).max() < 0.02
    # the interpolant passes through the grid values: with fixed ends on grid points the profile's end is exact
    ia, ib = (5, 15, 15), (25, 16, 14)
    fixed = minimum_free_energy_path(fes, (x, x, x), x[list(ia)], x[list(ib)], n_nodes=21, smooth=0.0,
                                     fixed_ends=True, max_iterations=5)
    assert fixed.free_energy[-1] == pytest.approx(fes[ib] - fes[ia], abs=1e-9)


def test_string_with_no_iterations_is_the_initial_string():
    """max_iterations=0: no iteration is run (0 reported, not converged) and the string is the initial one: the
    straight line with initial="line", the lowest-pass grid path by default."""
    from latentbias.analysis.paths import lowest_pass_path

    fes, axes = _ring_grid(21)
    path = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=7, max_iterations=0, initial="line")
    assert path.iterations == 0 and not path.converged
    np.testing.assert_array_equal(path.nodes, np.linspace((-1, 0), (1, 0), 7))
    default = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=7, max_iterations=0)
    np.testing.assert_array_equal(default.nodes, lowest_pass_path(fes, axes, (-1, 0), (1, 0), n_nodes=7)[0])


def test_iterations_compose_and_the_default_step():
    """One iteration, then one more from its result, is two iterations (and each run reports what it ran); the
    default step is 0.2 h^2 / max |second difference of F| (the docstring's stability bound)."""
    fes, axes = _ring_grid(41)
    bowed = np.column_stack([np.linspace(-1, 1, 11), 0.4 * np.sin(np.linspace(0, np.pi, 11))])
    one = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=11, smooth=0.0, initial=bowed,
                                   max_iterations=1, tolerance=0.0)
    again = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=11, smooth=0.0, initial=one.nodes,
                                     max_iterations=1, tolerance=0.0)
    two = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=11, smooth=0.0, initial=bowed,
                                   max_iterations=2, tolerance=0.0)
    assert (one.iterations, two.iterations) == (1, 2)
    np.testing.assert_allclose(again.nodes, two.nodes, rtol=0, atol=1e-12)
    assert np.abs(one.nodes - bowed).max() > 1e-4  # it moved
    h = axes[0][1] - axes[0][0]
    f = fes - fes.min()
    curv = max(np.abs(np.diff(f, 2, axis=k)).max() for k in range(2)) / h**2
    assert one.info["step"] == pytest.approx(0.2 / curv, rel=1e-12)
    shallow = minimum_free_energy_path(fes * 1e-4, axes, (-1, 0), (1, 0), n_nodes=11, smooth=0.0, max_iterations=0)
    assert shallow.info["step"] == pytest.approx(0.2 / (curv * 1e-4), rel=1e-9)  # a curvature below 1 too


def test_converged_string_does_not_depend_on_its_initial_parametrisation():
    """On the double well 5 (x^2 - 1)^2 + 3 y^2 (MFEP: the x axis, barrier 5), an initial string with every node
    but the last on the start point and an evenly spaced bowed one converge to the same equally spaced string."""
    x = np.linspace(-1.5, 1.5, 41)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    fes = 5 * (xx**2 - 1) ** 2 + 3 * yy**2
    bunched = np.repeat([[-1.0, 0.0]], 11, axis=0)
    bunched[-1] = [1.0, 0.0]
    bowed = np.column_stack([np.linspace(-1, 1, 11), 0.4 * np.sin(np.linspace(0, np.pi, 11))])
    paths = [minimum_free_energy_path(fes, (x, x), (-1, 0), (1, 0), n_nodes=11, smooth=0.0, initial=init)
             for init in (bowed, bunched)]
    for p in paths:
        seg = np.linalg.norm(np.diff(p.nodes, axis=0), axis=1)
        assert p.converged and seg.std() / seg.mean() < 0.02
        assert p.barrier == pytest.approx(5.0, abs=0.05)
        assert np.abs(p.nodes[:, 1]).max() < 0.02
    np.testing.assert_allclose(paths[0].nodes, paths[1].nodes, atol=0.02)


def _channel(g, x):
    """F(x, y) = g(x) + 200 y^2 on a grid: a 1-D landscape g in a narrow channel."""
    y = np.linspace(-0.3, 0.3, 7)
    return g[:, None] + 200 * y[None, :] ** 2, (x, y)


def test_shallow_minimum_joins_the_basin_across_its_lowest_saddle():
    """Three minima in a channel: A (F = 0), B (3) and C (1); saddles A|B at 4 and B|C at 3.5. With min_depth 2,
    B (0.5 below its lowest saddle) joins C across that saddle, not A across the higher one; C, 3 below the saddle
    it then shares with A, stays a basin. With min_depth above every barrier the whole channel is one basin."""
    x = np.linspace(-2.0, 2.0, 81)
    knots_x = [-2.0, -1.5, -0.8, 0.0, 0.6, 1.4, 2.0]
    knots_f = [2.0, 0.0, 4.0, 3.0, 3.5, 1.0, 2.5]
    g = np.interp(x, knots_x, knots_f)
    for kx, kf in zip(knots_x, knots_f):  # the extrema exactly on grid points, exactly at their values
        g[np.argmin(np.abs(x - kx))] = kf
    fes, axes = _channel(g, x)
    b = find_basins(fes, axes, smooth=0.0, min_depth=2.0)
    assert len(b.minima) == 2
    np.testing.assert_allclose(b.minima, [[-1.5, 0.0], [1.4, 0.0]], atol=1e-12)
    np.testing.assert_allclose(b.free_energies, [0.0, 1.0], atol=1e-12)
    mid = b.labels[:, 3]
    assert mid[np.argmin(np.abs(x - 0.0))] == 1  # B's minimum belongs to C's basin
    assert np.all(mid[x < -0.8] == 0) and np.all(mid[x > -0.8 + 0.05] == 1)
    one = find_basins(fes, axes, smooth=0.0, min_depth=10.0)
    assert len(one.minima) == 1 and np.all(one.labels == 0)
    # "below min_depth" is strict: C, exactly 3 below its saddle, stays for min_depth 3 and joins A above it
    assert len(find_basins(fes, axes, smooth=0.0, min_depth=3.0).minima) == 2
    assert len(find_basins(fes, axes, smooth=0.0, min_depth=3.0 + 1e-9).minima) == 1


def test_a_ring_of_shallow_minima_is_one_basin_when_min_depth_exceeds_every_saddle():
    """Minima around a ring (their basins are adjacent in a cycle, so one border is met after its two sides have
    already joined) and a well outside the ring: with min_depth above every barrier the surface is a single basin,
    labelled 0, with its minimum at the global minimum."""
    x = np.linspace(-2.4, 2.4, 61)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    r, th = np.hypot(xx, yy), np.arctan2(yy, xx)
    ring = 40 * (r - 1.2) ** 2 + 1.5 * np.cos(3 * th) + 0.8 * np.cos(th) + 0.3 * np.sin(2 * th)
    outside = 6.0 + 40 * ((xx + 2.0) ** 2 + (yy - 1.8) ** 2)
    fes = np.minimum(ring, outside)
    several = find_basins(fes, axes := (x, x), smooth=0.0, min_depth=0.5)
    assert len(several.minima) >= 4
    one = find_basins(fes, axes, smooth=0.0, min_depth=40.0)
    assert len(one.minima) == 1 and np.all(one.labels == 0)
    lowest = np.unravel_index(np.argmin(fes), fes.shape)
    np.testing.assert_array_equal(one.minima[0], [x[lowest[0]], x[lowest[1]]])


def test_basins_do_not_depend_on_the_zero_of_the_free_energy():
    """A free-energy surface is defined up to a constant: adding 100 kJ/mol changes neither the basins nor the
    cut-off cells (max_free_energy counts from the minimum) nor the relative free energies."""
    fes, axes, _ = _double_well_with_a_hole()
    fes = fes + 0.4  # a minimum away from 0
    for shift in (100.0, -37.0):
        a = find_basins(fes, axes, smooth=1.0, min_depth=1.0, max_free_energy=6.0)
        b = find_basins(fes + shift, axes, smooth=1.0, min_depth=1.0, max_free_energy=6.0)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.minima, b.minima)
        np.testing.assert_allclose(a.free_energies, b.free_energies, atol=1e-9)
        assert np.any(a.labels == -1) and np.any(a.labels == 1)


def test_converged_string_moves_less_than_the_tolerance_per_iteration():
    """``tolerance`` is in grid spacings: once converged, one more iteration moves no node by more than
    tolerance x spacing."""
    fes, axes = _ring_grid(41)
    h = axes[0][1] - axes[0][0]
    bowed = np.column_stack([np.linspace(-1, 1, 11), 0.4 * np.sin(np.linspace(0, np.pi, 11))])
    done = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=11, smooth=0.0, initial=bowed,
                                    tolerance=1e-4)
    assert done.converged
    more = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=11, smooth=0.0, initial=done.nodes,
                                    max_iterations=1, tolerance=0.0)
    assert np.abs(more.nodes - done.nodes).max() < 1e-4 * h


def test_a_string_at_rest_never_converges_with_zero_tolerance():
    """``tolerance`` is a strict bound ("below it"): on a flat FES a straight, evenly spaced string does not move
    at all, and with tolerance 0 it runs all its iterations without being declared converged."""
    x = np.linspace(0.0, 1.0, 11)
    p = minimum_free_energy_path(np.full((11, 11), 3.0), (x, x), (0, 0), (1, 0), n_nodes=5, smooth=0.0,
                                 tolerance=0.0, max_iterations=3, fixed_ends=True)
    assert p.iterations == 3 and not p.converged
    np.testing.assert_array_equal(p.nodes, np.linspace((0, 0), (1, 0), 5))


def test_without_merging_every_grid_minimum_is_a_basin_and_cells_follow_steepest_descent():
    """min_depth = 0 merges nothing: the basins are exactly the strict local minima of the grid (8 neighbours,
    found by scipy's minimum filter) and every cell carries the basin that its steepest-descent walk (to the lowest
    of its 8 neighbours while that is lower, followed cell by cell here) ends in."""
    x = np.linspace(-1.5, 1.5, 23)
    xx, yy = np.meshgrid(x, x + 0.013, indexing="ij")
    fes = 5 * (xx**2 - 1) ** 2 + 3 * yy**2 + 0.7 * np.sin(3.1 * xx + 2.3 * yy) + 0.11 * xx
    b = find_basins(fes, (x, x + 0.013), smooth=0.0, min_depth=0.0)
    footprint = np.ones((3, 3), dtype=bool)
    footprint[1, 1] = False
    neighbour_min = ndimage.minimum_filter(fes, footprint=footprint, mode="constant", cval=np.inf)
    minima = np.argwhere(fes < neighbour_min)
    assert len(minima) >= 2 and len(b.minima) == len(minima)
    coords = {tuple(m) for m in np.round(b.minima, 12)}
    assert coords == {(round(x[i], 12), round(x[j] + 0.013, 12)) for i, j in minima}
    n0, n1 = fes.shape
    for i in range(n0):
        for j in range(n1):
            ci, cj = i, j
            while True:
                nb = [(ci + di, cj + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                      if (di or dj) and 0 <= ci + di < n0 and 0 <= cj + dj < n1]
                low = min(nb, key=lambda c: fes[c])
                if fes[low] >= fes[ci, cj]:
                    break
                ci, cj = low
            assert b.labels[i, j] == b.labels[ci, cj]
    with pytest.raises(ValueError, match="at least 4 points"):
        find_basins(fes[:3], (x[:3], x))


def test_uneven_string_is_reparametrised_to_equal_arc_length():
    """On a flat FES a straight string of unit length with unevenly spaced nodes is redistributed to equal arc
    length in one iteration (the nodes do not otherwise move)."""
    x = np.linspace(0.0, 1.0, 11)
    uneven = np.column_stack([[0.0, 0.05, 0.1, 0.6, 1.0], np.full(5, 0.5)])
    p = minimum_free_energy_path(np.full((11, 11), 3.0), (x, x), (0, 0.5), (1, 0.5), n_nodes=5, smooth=0.0,
                                 initial=uneven, max_iterations=1, fixed_ends=True)
    np.testing.assert_allclose(p.nodes, np.linspace((0, 0.5), (1, 0.5), 5), atol=1e-12)


def test_max_free_energy_keeps_cells_exactly_at_the_limit():
    """Cells more than max_free_energy above the minimum get -1; a cell exactly at the limit keeps its basin."""
    fes, axes, _ = _double_well_with_a_hole()
    rel = fes - np.nanmin(fes)
    cell = (20, 20)
    b = find_basins(fes, axes, smooth=0.0, min_depth=1.0, max_free_energy=float(rel[cell]))
    assert b.labels[cell] >= 0
    assert np.all(b.labels[rel > rel[cell]] == -1) and np.all(b.labels[rel <= rel[cell]] >= 0)


def test_free_energy_between_grid_points_is_exact_for_a_cubic_surface():
    """The 2-D interpolant is bicubic: a FES that is a cubic polynomial in each coordinate is reproduced exactly
    between grid points, so the profile of any string equals the analytic F at its nodes (to rounding)."""
    x = np.linspace(-2.0, 2.0, 21)
    cubic = lambda x, y: x**3 - 3 * x + 0.5 * (y**3 - 3 * y) + 0.3 * x * y  # noqa: E731
    xx, yy = np.meshgrid(x, x, indexing="ij")
    p = minimum_free_energy_path(cubic(xx, yy), (x, x), (-1.13, -1.05), (0.93, 1.07), n_nodes=9, smooth=0.0,
                                 max_iterations=1, fixed_ends=True)
    exact = cubic(p.nodes[:, 0], p.nodes[:, 1])
    np.testing.assert_allclose(p.free_energy, exact - exact[0], atol=1e-9)


def test_radius_table_is_bondis_and_pdb_serials_wrap_at_five_digits(tmp_path):
    """The van der Waals radii are Bondi's (J. Phys. Chem. 68, 441, 1964; H 1.20 Å), in nm; the cavity PDB's atom
    serial numbers wrap modulo 100000 so that they stay in their 5-column field."""
    from latentbias.analysis.pockets import BONDI_RADII_NM, write_pocket_pdb

    bondi_angstrom = {"H": 1.20, "C": 1.70, "N": 1.55, "O": 1.52, "S": 1.80, "P": 1.80, "F": 1.47, "Cl": 1.75,
                      "Br": 1.85, "I": 1.98, "Se": 1.90}
    assert BONDI_RADII_NM == pytest.approx({k: v / 10 for k, v in bondi_angstrom.items()}, abs=1e-12)
    top = _tiny_topology()
    points = np.zeros((99_995, 3))
    path = write_pocket_pdb(tmp_path / "many.pdb", top, np.zeros((6, 3)), points)
    het = [ln for ln in path.read_text().splitlines() if ln.startswith("HETATM") and " CAV " in ln]
    assert len(het) == 99_995 and het[0][6:11] == "    7" and het[-1][6:11] == "    1"
    assert {len(ln) for ln in het} == {len(het[0])}


def test_cavity_points_with_a_removal_distance_beyond_the_probe_out():
    """A removal distance (0.45 nm) larger than the probe-out (0.36 nm) needs bulk beyond the grid block's start:
    still every cavity point equal to the independent definition."""
    xyz, radii, _ = _hollow_cluster()
    c = np.array([0.31, -0.17, 0.05])
    measure = CavityVolume(PocketRegion.from_center(0.61, center=c), radii, step=0.06, probe_in=0.13,
                           probe_out=0.36, removal_distance=0.45, volume_cutoff=0.0008)
    ref = _reference_cavity(xyz, radii, c - 0.61, c + 0.61, c, 0.61, 0.06, 0.13, 0.36, 0.45, 0.0008, "SES")
    got = measure.cavity_points(xyz)
    assert len(ref) > 50 and len(got) == len(ref)
    np.testing.assert_allclose(np.sort(got, axis=0), np.sort(ref, axis=0), atol=1e-9)


@pytest.mark.parametrize("spread", [(0.25, 0.15, 0.06), (0.25, 0.0, 0.4)])
@pytest.mark.parametrize("surface", ["SES", "SAS"])
def test_cavity_points_equal_the_definition_in_an_elongated_box(surface, spread):
    """A box region of three different extents (lining atoms spread ±0.25, ±0.15 and ±0.06 nm along x, y, z, or
    ±0.25, 0 and ±0.4 nm; padding 0.15 nm): the grid block is not a cube, so every per-axis index must be its own
    axis'; every cavity point equal to the independent definition (helper mut15g: survivors of the full
    ``analysis_pockets`` session)."""
    xyz, radii, n_shell = _hollow_cluster()
    lining = np.array([n_shell + k for k in range(6)])
    xyz = xyz.copy()
    centre = np.array([0.31, -0.17, 0.05])
    sx, sy, sz = spread
    xyz[lining] = centre + np.array([[-sx, 0.0, 0.0], [sx, 0.02 * sy, 0.01], [0.0, -sy, 0.0], [0.01, sy, 0.02],
                                     [0.0, 0.0, -sz], [0.02, 0.01 * sy, sz]])
    region = PocketRegion(atoms=lining, padding=0.15)
    step, probe_in, probe_out, removal, cutoff = 0.06, 0.13, 0.36, 0.13, 0.0008
    measure = CavityVolume(region, radii, step=step, probe_in=probe_in, probe_out=probe_out,
                           removal_distance=removal, volume_cutoff=cutoff, surface=surface.lower())
    lo, hi = xyz[lining].min(0) - 0.15, xyz[lining].max(0) + 0.15
    assert len(set(np.round((hi - lo) / step, 6))) == 3  # three different extents
    ref = _reference_cavity(xyz, radii, lo, hi, None, None, step, probe_in, probe_out, removal, cutoff, surface)
    got = measure.cavity_points(xyz)
    assert len(ref) > 20
    key = lambda p: set(map(tuple, np.rint(p / step * 1000).astype(np.int64)))  # noqa: E731
    assert key(got) == key(ref) and len(got) == len(ref)


def test_a_pocket_region_is_immutable():
    """A measure keeps the region it was built with (its padding is reported by ``settings()``): a region's fields
    cannot be reassigned afterwards."""
    import dataclasses

    region = PocketRegion.from_center(0.6, center=np.zeros(3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        region.radius = 1.0
    box = PocketRegion(atoms=np.arange(3), padding=0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.padding = 0.5


def test_cavity_settings_are_keyword_only():
    """``step``, the probe radii and the other settings are all lengths or volumes in nm: they must be named, so a
    positional number (a step given where a probe radius was meant) is refused, not silently taken."""
    xyz, radii, _ = _hollow_cluster()
    region = PocketRegion.from_center(0.5, center=np.zeros(3))
    with pytest.raises(TypeError):
        CavityVolume(region, radii, 0.06)
    with pytest.raises(TypeError):
        CavityVolume(region, radii, 0.06, 0.14)
    assert CavityVolume(region=region, radii=radii, step=0.06).step == 0.06


def test_cavity_points_on_the_sphere_of_a_ball_region_belong_to_it():
    """A ball region includes its surface (distance ≤ radius, as the definition): with a step, probes, radius and
    centre exact in binary (step 1/16 nm, radius 6 steps, centre on a grid point), grid points lie exactly on the
    sphere, and the cavity points equal the independent definition, those on the sphere included."""
    xyz, radii, _ = _hollow_cluster()
    c = np.array([0.3125, -0.1875, 0.0625])
    step, probe_in, probe_out, radius = 0.0625, 0.125, 0.375, 0.375
    measure = CavityVolume(PocketRegion.from_center(radius, center=c), radii, step=step, probe_in=probe_in,
                           probe_out=probe_out, removal_distance=0.0, volume_cutoff=0.0)
    ref = _reference_cavity(xyz, radii, c - radius, c + radius, c, radius, step, probe_in, probe_out, 0.0, 0.0,
                            "SES")
    on_sphere = ((ref - c) ** 2).sum(1) == radius**2
    assert on_sphere.sum() >= 2  # the case this test is about
    got = measure.cavity_points(xyz)
    key = lambda p: set(map(tuple, np.rint(p / step * 1000).astype(np.int64)))  # noqa: E731
    assert key(got) == key(ref) and len(got) == len(ref)


def test_a_grid_point_at_exactly_the_probe_in_distance_is_occupied():
    """Occupied means within r_vdW + probe_in, the distance included. With everything exact in binary (step 1/16 nm,
    probe-in 2 steps, an extra atom of radius 3.5 steps, the largest: reach 5.5 steps, an exact half-integer) and the
    atom half a step off a grid plane, grid points lie at exactly the reach: the SAS cavity (free = not occupied)
    equals the independent definition, so those points are not cavity points."""
    xyz, radii, _ = _hollow_cluster()
    c = np.array([0.3125, -0.1875, 0.0625])
    step, probe_in, probe_out, radius = 0.0625, 0.125, 0.375, 0.5
    atom = c + np.array([2 * step + step / 2, 0.0, 0.0])  # half a step off the planes x = const
    xyz = np.concatenate([xyz, [atom]])
    radii = np.concatenate([radii, [0.21875]])
    measure = CavityVolume(PocketRegion.from_center(radius, center=c), radii, step=step, probe_in=probe_in,
                           probe_out=probe_out, removal_distance=0.0, volume_cutoff=0.0, surface="sas")
    ref = _reference_cavity(xyz, radii, c - radius, c + radius, c, radius, step, probe_in, probe_out, 0.0, 0.0,
                            "SAS")
    at_reach = np.isclose(((ref - atom) ** 2).sum(1), (5.5 * step) ** 2, rtol=0, atol=1e-15)
    without = _reference_cavity(xyz[:-1], radii[:-1], c - radius, c + radius, c, radius, step, probe_in, probe_out,
                                0.0, 0.0, "SAS")
    exact = ((without - atom) ** 2).sum(1) == (5.5 * step) ** 2
    assert exact.sum() >= 2 and not at_reach.any()  # points at the reach exist and the definition occupies them
    got = measure.cavity_points(xyz)
    key = lambda p: set(map(tuple, np.rint(p / step * 1000).astype(np.int64)))  # noqa: E731
    assert key(got) == key(ref) and len(got) == len(ref)


def test_pocket_openness_takes_its_documented_names_and_keyword_options():
    """``trajectory`` and ``region`` may be named (as documented); ``kind``, ``groups`` and ``topology`` must be
    named (a positional ``groups`` for a distance would otherwise be taken as the kind)."""
    from latentbias.analysis.pockets import pocket_openness

    top = _tiny_topology()
    xyz = np.random.default_rng(4).uniform(0.0, 0.8, (3, 6, 3))
    region = PocketRegion.from_residues(top, [7], padding=0.2)
    by_name = pocket_openness(trajectory=xyz, region=region, kind="distance", groups=([0, 1], [4, 5]), topology=top)
    np.testing.assert_array_equal(by_name, pocket_openness(xyz, region, kind="distance", groups=([0, 1], [4, 5]),
                                                           topology=top))
    with pytest.raises(TypeError):
        pocket_openness(xyz, region, "distance", ([0, 1], [4, 5]), top)


def test_an_atom_at_a_sub_voxel_corner_occupies_exactly_its_sphere():
    """The stamping bins an atom's offset from its nearest grid point; an offset at a corner of its bin lies √3/(2b)
    voxel from the bin centre, the most any offset can. Binary-exact setup: step 1/16 nm, reach 6.046875 steps, an
    atom half a step off the grid planes in x, y and z (a bin corner), placed so that the grid point (3.5, 3.5, 3.5)
    steps away (6.062 steps: outside its sphere, although its distance from the bin centre, 5.954, is within the
    reach minus √2/(2b)) is a cavity point; the SAS cavity equals the independent definition (exact distances)."""
    xyz, radii, _ = _hollow_cluster()
    c = np.array([0.3125, -0.1875, 0.0625])
    step, probe_in, probe_out, radius = 0.0625, 0.125, 0.375, 0.5
    args = (c - radius, c + radius, c, radius, step, probe_in, probe_out, 0.0, 0.0, "SAS")
    origin = c - radius - probe_out
    before = _reference_cavity(xyz, radii, *args)
    index = np.rint((before - origin) / step).astype(int)
    odd = before[np.all(index % 2 == 1, axis=1)]  # the atom's grid coordinate is then odd + 0.5: rint rounds up
    corner = odd[np.argmin(((odd - c) ** 2).sum(1))]
    atom = corner - 3.5 * step
    xyz = np.concatenate([xyz, [atom]])
    radii = np.concatenate([radii, [0.2529296875]])
    measure = CavityVolume(PocketRegion.from_center(radius, center=c), radii, step=step, probe_in=probe_in,
                           probe_out=probe_out, removal_distance=0.0, volume_cutoff=0.0, surface="sas")
    ref = _reference_cavity(xyz, radii, *args)
    assert np.any(np.all(np.abs(ref - corner) < 1e-9, axis=1))  # the point this test is about is a cavity point
    got = measure.cavity_points(xyz)
    key = lambda p: set(map(tuple, np.rint(p / step * 1000).astype(np.int64)))  # noqa: E731
    assert key(got) == key(ref) and len(got) == len(ref)
