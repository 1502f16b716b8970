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
