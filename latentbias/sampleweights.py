"""Training-frame weights that let rarely visited regions count: cluster-balanced weights.

An adaptive campaign's frames are dominated by the basin it started in (alanine dipeptide: > 90 % C7eq after a
few exploration rounds). A reconstruction loss averaged over frames then spends almost all of the encoder's
capacity on that basin, and a region visited for a few hundred frames (C7ax) can be mapped onto latent values
that already belong to something else: a bias acting on that latent space cannot tell the region apart, and an
estimate reweighted along it mixes the two.

:func:`cluster_balanced_weights` clusters the standardized features with k-means and gives every frame the
weight 1 / max(n_c, min_count), with n_c the population of its cluster: every cluster with at least
``min_count`` frames carries the same total weight, whatever its population, so the loss is spread over the
regions the data cover rather than over the frames. ``min_count`` bounds the weight of a frame in a tiny
cluster (an isolated excursion), so that a handful of frames cannot dominate the fit. These are training
weights only: they shape which configurations the encoder resolves, not any free-energy estimate (no
Boltzmann meaning; the campaign's estimators never see them).
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.vq import kmeans2

from .validation import ensure_positive_int

__all__ = ["cluster_balanced_weights"]


def cluster_balanced_weights(
    features: np.ndarray, n_clusters: int, seed: int = 0, min_count: int = 10, n_init: int = 4
) -> np.ndarray:
    """Per-frame weights 1 / max(n_c, min_count), normalized to mean 1.

    Parameters
    ----------
    features : array_like, shape=(n_frames, n_features)
        Feature vectors (any units: each column is standardized to zero mean and unit variance first;
        constant columns are left out).
    n_clusters : int
        Number of k-means clusters (≥ 1; at most n_frames).
    seed : int, default 0
        Seed of the k-means++ initialisation (the weights are a deterministic function of features and seed).
    min_count : int, default 10
        Populations below this count as ``min_count``: the largest weight is at most
        max(n_c) / min_count times the smallest.
    n_init : int, default 4
        k-means restarts (k-means++ seeds drawn from one generator); the clustering of least inertia is kept.

    Returns
    -------
    numpy.ndarray, shape=(n_frames,)
        Positive weights with mean 1.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"features must have shape (n_frames, n_features), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf")
    n_clusters = ensure_positive_int(n_clusters, "n_clusters")
    min_count = ensure_positive_int(min_count, "min_count")
    if n_clusters > len(x):
        raise ValueError(f"n_clusters = {n_clusters} is more than the {len(x)} frames; lower it")
    sd = x.std(axis=0)
    keep = sd > 0
    if n_clusters == 1 or not keep.any():
        return np.ones(len(x))
    xs = (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]
    rng = np.random.default_rng(seed)
    best = (np.inf, None)
    for _ in range(ensure_positive_int(n_init, "n_init")):
        centroids, labels = kmeans2(xs, n_clusters, iter=30, minit="++", seed=rng)
        inertia = float(((xs - centroids[labels]) ** 2).sum())
        if inertia < best[0]:
            best = (inertia, labels)
    labels = best[1]
    counts = np.bincount(labels, minlength=n_clusters)
    w = 1.0 / np.maximum(counts[labels], min_count)
    return w / w.mean()
