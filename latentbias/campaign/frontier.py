"""Frontier seeding: the least-visited points on the edge of the sampled latent region (MESA-like targets)."""

from __future__ import annotations

import numpy as np

__all__ = ["frontier_targets"]


def frontier_targets(z: np.ndarray, n_targets: int, bins: int = 20, step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pick targets just beyond the sparse edge of the sampled latent region.

    The latent samples are histogrammed (``bins`` per dimension over their range). Edge bins are occupied bins
    with at least one empty (or out-of-range) neighbour; among them the least visited are taken, spread out by
    farthest-point selection. Each target is the edge bin's centre moved ``step`` bin widths away from the data
    centroid, i.e. into unexplored space.

    Parameters
    ----------
    z : numpy.ndarray, shape=(n, d)
    n_targets : int
    bins : int
    step : float

    Returns
    -------
    targets : numpy.ndarray, shape=(n_targets, d)
    nearest : numpy.ndarray of int, shape=(n_targets,)
        Index of the sampled frame closest to each target (a starting configuration).
    """
    z = np.asarray(z, dtype=float)
    n, d = z.shape
    lo, hi = z.min(0), z.max(0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    idx = np.clip(((z - lo) / width).astype(int), 0, bins - 1)
    counts = np.zeros((bins,) * d, dtype=int)
    np.add.at(counts, tuple(idx.T), 1)
    occupied = np.argwhere(counts > 0)
    edge, edge_counts = [], []
    for cell in occupied:
        is_edge = False
        for axis in range(d):
            for delta in (-1, 1):
                nb = cell.copy()
                nb[axis] += delta
                if nb[axis] < 0 or nb[axis] >= bins or counts[tuple(nb)] == 0:
                    is_edge = True
        if is_edge:
            edge.append(cell)
            edge_counts.append(counts[tuple(cell)])
    edge = np.array(edge)
    order = np.argsort(np.array(edge_counts), kind="stable")
    # candidates: the sparsest half of the edge, then farthest-point spreading
    pool = edge[order[: max(n_targets, len(order) // 2)]]
    centres = lo + (pool + 0.5) * width
    chosen = [0]
    while len(chosen) < min(n_targets, len(centres)):
        dist = np.min(np.linalg.norm(((centres[:, None] - centres[chosen][None]) / width), axis=2), axis=1)
        chosen.append(int(np.argmax(dist)))
    centres = centres[chosen]
    centroid = z.mean(0)
    direction = centres - centroid
    direction /= np.maximum(np.linalg.norm(direction / width, axis=1, keepdims=True), 1e-12)
    targets = centres + step * direction
    while len(targets) < n_targets:  # fewer edge cells than targets: repeat the list
        targets = np.concatenate([targets, targets[: n_targets - len(targets)]])
    nearest = np.argmin(np.linalg.norm(z[None] - targets[:, None], axis=2), axis=1)
    return targets, nearest
