"""Minimum free-energy paths (issue 11 item 2): basins and the string method on 2-D surfaces with known paths."""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.analysis.paths import find_basins, minimum_free_energy_path, path_sensitivity


def ring(x, y, k=40.0, r0=1.0, h=12.0):
    """k (r - r0)^2 + h sin^2(theta): minima at (±r0, 0), saddles at (0, ±r0); the MFEP is the circle r = r0."""
    r = np.hypot(x, y)
    return k * (r - r0) ** 2 + h * (y / np.maximum(r, 1e-12)) ** 2


def muller_brown(x, y):
    A, a, b, c = [-200, -100, -170, 15], [-1, -1, -6.5, 0.7], [0, 0, 11, 0.6], [-10, -10, -6.5, 0.7]
    x0, y0 = [1, 0, -0.5, -1], [0, 0.5, 1.5, 1]
    return sum(A[i] * np.exp(a[i] * (x - x0[i]) ** 2 + b[i] * (x - x0[i]) * (y - y0[i]) + c[i] * (y - y0[i]) ** 2)
               for i in range(4))


def grid(fun, lo, hi, n):
    x, y = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    f = fun(xx, yy)
    return f - f.min(), (x, y)


def test_string_on_a_ring_follows_the_circle():
    """The converged string lies within one grid spacing of the analytic MFEP (r = r0)."""
    fes, axes = grid(ring, (-1.6, -1.6), (1.6, 1.6), 81)
    spacing = axes[0][1] - axes[0][0]
    bowed = np.column_stack([np.linspace(-1, 1, 41), 0.3 * np.sin(np.linspace(0, np.pi, 41))])
    path = minimum_free_energy_path(fes, axes, (-1, 0), (1, 0), n_nodes=41, smooth=0.0, initial=bowed)
    assert path.converged
    r = np.hypot(path.nodes[:, 0], path.nodes[:, 1])
    assert np.abs(r - 1.0).max() < spacing
    assert path.nodes[:, 1].min() > -spacing  # the upper half (where the initial string was)
    assert path.barrier == pytest.approx(12.0, abs=0.5)


def _analytic_string(n_nodes=201):
    """Reference MFEP of the Müller-Brown surface: the same string iteration on the analytic gradient."""
    h = 1e-6
    nodes = np.linspace((-0.558, 1.442), (0.623, 0.028), n_nodes)
    for _ in range(40000):
        gx = (muller_brown(nodes[:, 0] + h, nodes[:, 1]) - muller_brown(nodes[:, 0] - h, nodes[:, 1])) / (2 * h)
        gy = (muller_brown(nodes[:, 0], nodes[:, 1] + h) - muller_brown(nodes[:, 0], nodes[:, 1] - h)) / (2 * h)
        new = nodes - 2e-5 * np.column_stack([gx, gy])
        s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(new, axis=0), axis=1))])
        t = np.linspace(0, s[-1], n_nodes)
        new = np.column_stack([np.interp(t, s, new[:, 0]), np.interp(t, s, new[:, 1])])
        if np.abs(new - nodes).max() < 1e-9:
            break
        nodes = new
    return nodes


def test_string_on_a_noisy_gridded_muller_brown_surface():
    """On a gridded surface with noise (like a reweighted FES), after smoothing, every node lies within one grid
    spacing of the analytic-gradient reference path; the three minima are found as basins."""
    fes, axes = grid(muller_brown, (-1.5, -0.5), (1.2, 2.0), 91)
    spacing = max(axes[0][1] - axes[0][0], axes[1][1] - axes[1][0])
    noisy = fes + np.random.default_rng(0).normal(0, 1.0, fes.shape)
    noisy[fes > 250] = np.nan  # unsampled high region
    basins = find_basins(noisy, axes, smooth=1.5, min_depth=5.0, max_free_energy=200)
    assert len(basins.minima) == 3
    for m in [(-0.558, 1.442), (0.623, 0.028), (-0.050, 0.467)]:
        assert np.min(np.linalg.norm(basins.minima - m, axis=1)) < 2 * spacing
    path = minimum_free_energy_path(noisy, axes, basins.minima[0], basins.minima[1], n_nodes=40, smooth=1.5)
    ref = _analytic_string()
    dist = np.array([np.min(np.linalg.norm(ref - p, axis=1)) for p in path.nodes])
    assert dist.max() < spacing, dist.max()


def test_path_sensitivity_grows_with_the_error():
    fes, axes = grid(ring, (-1.6, -1.6), (1.6, 1.6), 61)
    small = path_sensitivity(fes, np.full(fes.shape, 0.1), axes, (-1, 0.05), (1, 0.05), n_samples=5, smooth=1.0)
    large = path_sensitivity(fes, np.full(fes.shape, 2.0), axes, (-1, 0.05), (1, 0.05), n_samples=5, smooth=1.0)
    assert large["barrier_std"] > small["barrier_std"]
    assert large["node_spread"].mean() > small["node_spread"].mean()


def _tilt():
    """A fixed rotation taking (x, y, z) to the ring's frame (u, v, w): every axis of the grid is involved."""
    q, r = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def tilted_ring(x, y, z, q, k=40.0, r0=1.0, h=12.0, kw=40.0):
    """The ring of :func:`ring` in the plane w = 0 of the rotated frame (u, v, w) = q (x, y, z), plus kw w^2:
    minima at q^T (±r0, 0, 0), saddles at q^T (0, ±r0, 0); the MFEP is the circle u^2 + v^2 = r0^2, w = 0
    (the Euclidean metric is rotation invariant, so the 2-D ring's MFEP rotates with it)."""
    u, v, w = (q[i, 0] * x + q[i, 1] * y + q[i, 2] * z for i in range(3))
    return ring(u, v, k, r0, h) + kw * w**2


def test_string_on_a_tilted_3d_ring_follows_the_circle():
    """3-D latent space: on a gridded FES whose MFEP is a circle in a plane tilted against every grid axis, the
    basins are the two minima and the converged string (noise-free and with noise + smoothing) lies within one grid
    spacing of the analytic circle; its barrier is h."""
    q = _tilt()
    n = 41
    axes = [np.linspace(-1.6, 1.6, n)] * 3
    spacing = axes[0][1] - axes[0][0]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij")
    fes = tilted_ring(xx, yy, zz, q)
    fes -= fes.min()
    minima = np.array([q.T @ [-1.0, 0.0, 0.0], q.T @ [1.0, 0.0, 0.0]])
    basins = find_basins(fes, axes, smooth=0.0, min_depth=2.0)
    assert len(basins.minima) == 2
    for m in minima:
        assert np.min(np.linalg.norm(basins.minima - m, axis=1)) < 1.5 * spacing
    t = np.linspace(np.pi, 0.0, 31)
    bowed = np.column_stack([np.cos(t), 0.3 * np.sin(t), np.zeros_like(t)]) @ q  # rows: q^T (u, v, 0)

    def off_circle(nodes):
        u, v, w = (nodes @ q.T).T
        return np.hypot(np.hypot(u, v) - 1.0, w), v

    path = minimum_free_energy_path(fes, axes, minima[0], minima[1], n_nodes=31, smooth=0.0, initial=bowed)
    assert path.converged and path.nodes.shape == (31, 3)
    dist, v = off_circle(path.nodes)
    assert dist.max() < spacing, dist.max()
    assert v.min() > -spacing  # the half of the ring the initial string was on
    assert path.barrier == pytest.approx(12.0, abs=0.5)
    noisy = fes + np.random.default_rng(1).normal(0.0, 1.0, fes.shape)
    path = minimum_free_energy_path(noisy, axes, minima[0], minima[1], n_nodes=31, smooth=1.0, initial=bowed)
    dist, _ = off_circle(path.nodes)
    assert dist.max() < spacing, dist.max()
    sens = path_sensitivity(fes, np.full(fes.shape, 1.0), axes, minima[0], minima[1], n_samples=3, smooth=1.0,
                            initial=bowed, n_nodes=31)
    assert sens["node_spread"].shape == (31,) and np.isfinite(sens["barrier_std"])


def test_paths_refuse_grids_beyond_3d_and_mismatched_points():
    fes4 = np.zeros((5, 5, 5, 5))
    with pytest.raises(ValueError, match="more than 3 dimensions"):
        minimum_free_energy_path(fes4, [np.arange(5.0)] * 4, np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="more than 3 dimensions"):
        find_basins(fes4, [np.arange(5.0)] * 4)
    fes, axes = grid(ring, (-1.6, -1.6), (1.6, 1.6), 21)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        minimum_free_energy_path(fes, axes, (-1, 0, 0), (1, 0, 0))
    with pytest.raises(ValueError, match="does not match the axes"):
        minimum_free_energy_path(fes, axes[:1], (-1, 0), (1, 0))


def test_free_energy_surface_of_a_3d_gaussian():
    """The latent FES of a 3-D latent space: F of independent normal samples against the exact bin-averaged
    F = -kT ln(P(bin) / volume) (product of normal CDF differences). Bins with >= 50 frames: the 1-sigma block
    errors cover the exact value in 55-80 % of bins, 2 sigma in >= 88 % (10 blocks: t tails); bins with >= 300
    frames are within 0.6 kJ/mol (~4 sigma)."""
    from scipy.stats import norm

    from latentbias.analysis import free_energy_surface
    from latentbias.analysis.constants import kt_kjmol

    rng = np.random.default_rng(4)
    x = rng.normal(0.0, [1.0, 0.5, 0.8], (60000, 3))
    fes = free_energy_surface(x, bins=8, range=[(-2, 2), (-1, 1), (-1.6, 1.6)], temperature=300.0, n_blocks=10)
    assert fes.free_energy.shape == (8, 8, 8)
    prob = np.ones((8, 8, 8))
    for k, s in enumerate([1.0, 0.5, 0.8]):
        e = fes.edges[k]
        p = np.diff(norm.cdf(e / s)) / np.diff(e)
        prob = prob * p.reshape([-1 if j == k else 1 for j in range(3)])
    exact = -kt_kjmol(300.0) * np.log(prob)
    ok = fes.counts >= 50
    diff = fes.free_energy - exact
    diff = diff - np.average(diff[ok], weights=fes.counts[ok])  # both are defined up to a constant
    r = np.abs(diff[ok]) / fes.error[ok]
    assert ok.sum() > 300 and 0.55 < np.mean(r < 1) < 0.8 and np.mean(r < 2) >= 0.88
    assert (fes.counts >= 300).sum() >= 8 and np.abs(diff[fes.counts >= 300]).max() < 0.6


def two_passes(x, y, a=30.0, b=5.0):
    """Minima at (±1, 0). The straight line between them crosses a pass of 30 kJ/mol at (0, 0); a second pass at
    (0, 1.175) is only 13.05 kJ/mol high (exact: minimum over y of F(0, y))."""
    return a * (x ** 2 - 1) ** 2 * (1 - 0.8 * np.exp(-(y - 1.2) ** 2 / 0.1)) + b * y ** 2


def test_string_crosses_the_lowest_of_two_passes():
    """The default string starts on the lowest-pass grid path and converges to the MFEP through the lower pass;
    started on the straight line it stays in the higher valley (so the test can tell the two apart)."""
    x, y = np.linspace(-1.8, 1.8, 73), np.linspace(-1.5, 2.2, 75)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    fes = two_passes(xx, yy)
    fes -= fes.min()
    ys = np.linspace(-1.5, 2.2, 20001)
    exact = two_passes(0.0, ys).min()
    spacing = y[1] - y[0]
    low = minimum_free_energy_path(fes, (x, y), (-1, 0), (1, 0), n_nodes=31, smooth=0.0)
    assert low.converged and low.info["initial"] == "lowest-pass"
    assert low.barrier == pytest.approx(exact, abs=0.2)
    top = low.nodes[np.argmax(low.free_energy)]
    assert np.hypot(top[0], top[1] - ys[np.argmin(two_passes(0.0, ys))]) < spacing
    line = minimum_free_energy_path(fes, (x, y), (-1, 0), (1, 0), n_nodes=31, smooth=0.0, initial="line")
    assert line.barrier == pytest.approx(30.0, abs=0.2)
    with pytest.raises(ValueError, match="lowest-pass"):
        minimum_free_energy_path(fes, (x, y), (-1, 0), (1, 0), initial="bent")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lowest_pass_path_matches_the_flooding_minimax(seed):
    """On rough random surfaces the grid path's barrier (bisection on sublevel-set connectivity) equals the minimax
    barrier found by flooding (latentbias.analysis.barriers.minimax_barrier, an independent union-find), and no
    cell on the path is higher than that value."""
    from latentbias.analysis.barriers import minimax_barrier
    from latentbias.analysis.paths import lowest_pass_path

    f = np.random.default_rng(seed).random((23, 19)) * 10.0
    axes = (np.arange(23) * 0.5, np.arange(19) * 0.25)
    nodes, barrier = lowest_pass_path(f, axes, (0.0, 0.0), (11.0, 4.5), n_nodes=200, smooth=0.0)
    flood = minimax_barrier(f - f.min(), (0, 0), (22, 18), connectivity=8)
    minimax = flood.saddle_level
    assert barrier == pytest.approx(minimax - (f[0, 0] - f.min()))
    assert np.allclose(nodes[0], (0, 0)) and np.allclose(nodes[-1], (11.0, 4.5))
    cells = np.rint(nodes / (0.5, 0.25)).astype(int)
    on_path = (f - f.min())[cells[:, 0], cells[:, 1]]
    assert on_path.max() <= minimax + 1e-12


def test_lowest_pass_path_in_three_dimensions():
    """A 3-D surface whose only low pass is off the straight line."""
    from latentbias.analysis.paths import lowest_pass_path

    g = np.linspace(-1.5, 1.5, 31)
    xx, yy, zz = np.meshgrid(g, g, g, indexing="ij")
    f = 30 * (xx ** 2 - 1) ** 2 * (1 - 0.9 * np.exp(-((yy - 1) ** 2 + (zz + 1) ** 2) / 0.05)) + 2 * (yy ** 2 + zz ** 2)
    nodes, barrier = lowest_pass_path(f, (g, g, g), (-1, 0, 0), (1, 0, 0), n_nodes=41, smooth=0.0)
    mid = nodes[np.argmin(np.abs(nodes[:, 0]))]
    assert np.hypot(mid[1] - 1, mid[2] + 1) < 0.25
    assert barrier < 10.0
