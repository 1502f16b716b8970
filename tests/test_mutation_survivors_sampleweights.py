"""Exact cluster-balanced weights on well-separated clusters of known populations (issue 15, mutation testing,
helper mut15e): w ∝ 1 / max(n_c, min_count), mean 1 (rel 1e-12); clustering on standardized columns (a structured
column in small units is found beside noise in large units; constant columns are left out); input limits."""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.sampleweights import cluster_balanced_weights


def _clusters(sizes, seed=0, scale=1.0, noise=0.01):
    """Tight clusters at the corners of a simplex (distance ~10 between centres, spread 0.01), in units ``scale``."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(len(sizes), max(len(sizes), 2))
    x = np.concatenate([c + noise * rng.normal(size=(n, centres.shape[1])) for c, n in zip(centres, sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return scale * x, labels


def _expected(sizes, min_count):
    w = np.concatenate([np.full(n, 1.0 / max(n, min_count)) for n in sizes])
    return w / w.mean()


@pytest.mark.parametrize("min_count", [1, 10, 30])
def test_weights_are_inverse_populations_bounded_by_min_count(min_count):
    sizes = [60, 25, 4]
    x, _ = _clusters(sizes, seed=1)
    w = cluster_balanced_weights(x, 3, seed=2, min_count=min_count)
    np.testing.assert_allclose(w, _expected(sizes, min_count), rtol=1e-12)
    assert w.mean() == pytest.approx(1.0, rel=1e-12)


def test_default_min_count_is_ten():
    sizes = [60, 25, 4]
    x, _ = _clusters(sizes, seed=3)
    np.testing.assert_allclose(cluster_balanced_weights(x, 3), _expected(sizes, 10), rtol=1e-12)


def test_columns_are_standardized_and_constant_ones_left_out():
    """Two groups along a column in mm-scale units (sd ~ 1e-3) beside a noise column in large units (sd 100) and a
    constant column: standardized, the two groups are the clusters (a split of the noise column would lower the
    inertia by 1 − 2/π per frame instead of ~1)."""
    rng = np.random.default_rng(5)
    sizes = [70, 20]
    group = np.repeat([0.0, 2e-3], sizes) + 1e-5 * rng.normal(size=90)
    x = np.column_stack([group, 100.0 * rng.normal(size=90), np.full(90, 7.0)])
    w = cluster_balanced_weights(x, 2, seed=0, min_count=1)
    np.testing.assert_allclose(w, _expected(sizes, 1), rtol=1e-12)
    # the same data shifted by a constant vector give the same weights
    np.testing.assert_allclose(cluster_balanced_weights(x + [3.0, -500.0, 1.0], 2, seed=0, min_count=1), w,
                               rtol=1e-12)


def test_input_limits():
    x, _ = _clusters([3, 1], seed=0)
    np.testing.assert_allclose(cluster_balanced_weights(x, 4, min_count=1), np.ones(4), rtol=1e-12)  # k = n_frames
    assert cluster_balanced_weights(np.array([[1.0, 2.0]]), 1).tolist() == [1.0]  # a single frame
    with pytest.raises(ValueError, match="shape"):
        cluster_balanced_weights(np.zeros((0, 3)), 1)
    with pytest.raises(ValueError, match="more than the 4 frames"):
        cluster_balanced_weights(x, 5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="min_count"):
            cluster_balanced_weights(x, 2, min_count=bad)
        with pytest.raises(ValueError, match="n_init"):
            cluster_balanced_weights(x, 2, n_init=bad)


def _optimal_partition_weights(x, sizes, k):
    """Weights of the least-inertia partition of tight clusters into k groups, by brute force over the k^n_c
    assignments of whole clusters (their spread, 0.05 of ~10, adds the same within-cluster sum to every partition),
    on the standardized columns."""
    import itertools

    xs = (x - x.mean(0)) / x.std(0)
    lab = np.repeat(np.arange(len(sizes)), sizes)
    n = np.asarray(sizes, dtype=float)
    cen = np.array([xs[lab == i].mean(0) for i in range(len(sizes))])
    best = (np.inf, None)
    for assign in itertools.product(range(k), repeat=len(sizes)):
        a = np.array(assign)
        if len(set(assign)) < k:
            continue
        cost = 0.0
        for g in range(k):
            m = a == g
            c = (cen[m] * n[m, None]).sum(0) / n[m].sum()
            cost += float((n[m] * ((cen[m] - c) ** 2).sum(1)).sum())
        if cost < best[0] - 1e-9:
            best = (cost, a)
    group = best[1][lab]
    w = 1.0 / np.bincount(group)[group]
    return w / w.mean()


def test_the_restart_of_least_inertia_is_kept():
    """Six tight clusters grouped into three: k-means restarts reach different local minima; with 20 restarts the
    kept clustering is the least-inertia partition found by brute force (for three seeds)."""
    rng = np.random.default_rng(100)
    sizes = list(rng.integers(10, 40, size=6))
    centres = rng.uniform(-10, 10, size=(6, 2))
    x = np.concatenate([c + 0.05 * rng.normal(size=(n, 2)) for c, n in zip(centres, sizes)])
    expected = _optimal_partition_weights(x, sizes, 3)
    for seed in range(3):
        np.testing.assert_allclose(cluster_balanced_weights(x, 3, seed=seed, min_count=1, n_init=20), expected,
                                   rtol=1e-12)
