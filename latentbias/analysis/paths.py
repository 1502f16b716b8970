"""Minimum free-energy paths on a gridded 2-D free-energy surface: basins and the zero-temperature string method.

:func:`find_basins` locates the minima of a (smoothed) FES and assigns every grid cell to the basin its steepest
descent ends in. :func:`minimum_free_energy_path` runs the simplified zero-temperature string method (E, Ren &
Vanden-Eijnden, J. Chem. Phys. 126, 164103, 2007): nodes move down the gradient of the FES, then are redistributed
at equal arc length, until the string stops moving. The converged string follows the minimum free-energy path (MFEP)
between two states, along which the FES gradient is tangent to the path. Its free-energy profile gives the barrier.

The FES comes from reweighting and is noisy where sampling is thin and undefined (NaN) where nothing was sampled:
it is smoothed with a Gaussian filter of ``smooth`` grid spacings, unsampled cells are raised above the highest
sampled value by ``unsampled_penalty`` so that the string avoids them, and the gradient is evaluated with bicubic
splines of the smoothed grid. :func:`path_sensitivity` reruns the string on FES samples drawn from the per-cell
standard errors to show how much the path and its barrier depend on the uncertainty of the FES.

Units: the FES in kJ/mol; path coordinates in the units of the grid axes (latent units, or a CV's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["Basins", "FreeEnergyPath", "find_basins", "minimum_free_energy_path", "path_sensitivity"]


def _prepared(fes: np.ndarray, smooth: float, unsampled_penalty: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = np.array(fes, dtype=float)
    if f.ndim != 2:
        raise ValueError(f"the FES must be a 2-D grid, got shape {f.shape}")
    finite = np.isfinite(f)
    if finite.sum() < 4:
        raise ValueError("the FES has fewer than 4 finite cells: nothing to find a path on")
    f[~finite] = f[finite].max() + unsampled_penalty
    if smooth > 0:
        f = gaussian_filter(f, smooth, mode="nearest")
    return f - f.min()


@dataclass
class Basins:
    """Minima of a gridded FES and the basin (index into ``minima``) of every cell (-1: above ``max_free_energy``).

    Attributes
    ----------
    minima : numpy.ndarray, shape=(n_basins, 2)
        Coordinates of the minima (grid axes' units), ordered by free energy (lowest first).
    free_energies : numpy.ndarray, shape=(n_basins,)
        Smoothed FES at the minima, kJ/mol, relative to the lowest.
    labels : numpy.ndarray of int, shape=fes.shape
    """

    minima: np.ndarray
    free_energies: np.ndarray
    labels: np.ndarray


def find_basins(fes: np.ndarray, axes: Sequence[np.ndarray], smooth: float = 1.0, min_depth: float = 2.0,
                max_free_energy: float | None = None, unsampled_penalty: float = 10.0) -> Basins:
    """Basins of a 2-D FES by steepest descent on the smoothed grid (8-neighbour), shallow minima merged.

    Parameters
    ----------
    fes : numpy.ndarray, shape=(n0, n1), kJ/mol (NaN = unsampled)
    axes : two arrays of grid-point coordinates, shapes (n0,) and (n1,)
    smooth : float
        Gaussian smoothing, in grid spacings.
    min_depth : float
        A minimum whose barrier to a deeper basin (lowest saddle on their shared border) is below this (kJ/mol)
        is merged into that basin.
    max_free_energy : float, optional
        Cells above it get label -1.
    """
    f = _prepared(fes, smooth, unsampled_penalty)
    n0, n1 = f.shape
    padded = np.pad(f, 1, constant_values=np.inf)
    shifts = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
    neigh = np.stack([padded[1 + a:n0 + 1 + a, 1 + b:n1 + 1 + b] for a, b in shifts])
    best = neigh.argmin(0)
    lower = neigh.min(0) < f
    ii, jj = np.meshgrid(np.arange(n0), np.arange(n1), indexing="ij")
    target = np.where(lower, (ii + np.array([s[0] for s in shifts])[best]) * n1
                      + jj + np.array([s[1] for s in shifts])[best], ii * n1 + jj).ravel()
    for _ in range(n0 + n1):  # pointer jumping to the sink
        nxt = target[target]
        if np.array_equal(nxt, target):
            break
        target = nxt
    sinks, labels = np.unique(target, return_inverse=True)
    labels = labels.reshape(f.shape)
    values = f.ravel()[sinks]
    # Persistence merging: walk the saddles between adjacent basins from the lowest up; a basin whose depth below
    # the saddle is under min_depth joins the deeper one (union-find keeps each root's minimum).
    saddles: dict[tuple[int, int], float] = {}
    for a, c in shifts:
        if (a, c) <= (0, 0):
            continue  # each neighbour pair once
        l1 = labels[max(0, -a):n0 - max(0, a), max(0, -c):n1 - max(0, c)]
        l2 = labels[max(0, a):n0 + min(0, a) or None, max(0, c):n1 + min(0, c) or None]
        f1 = f[max(0, -a):n0 - max(0, a), max(0, -c):n1 - max(0, c)]
        f2 = f[max(0, a):n0 + min(0, a) or None, max(0, c):n1 + min(0, c) or None]
        differ = l1 != l2
        for p, q, h in zip(l1[differ], l2[differ], np.maximum(f1, f2)[differ]):
            key = (min(p, q), max(p, q))
            if h < saddles.get(key, np.inf):
                saddles[key] = float(h)
    parent = list(range(len(sinks)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for (p, q), h in sorted(saddles.items(), key=lambda kv: kv[1]):
        rp, rq = root(p), root(q)
        if rp == rq:
            continue
        deep, shallow = (rp, rq) if values[rp] <= values[rq] else (rq, rp)
        if h - values[shallow] < min_depth:
            parent[shallow] = deep
    roots = np.array([root(k) for k in range(len(sinks))])
    kept = np.unique(roots)
    labels = np.searchsorted(kept, roots)[labels]
    sinks, values = sinks[kept], values[kept]
    values = f.ravel()[sinks]
    order = np.argsort(values)
    remap = np.empty(len(order), dtype=int)
    remap[order] = np.arange(len(order))
    labels = remap[labels]
    if max_free_energy is not None:
        labels = np.where(f <= max_free_energy, labels, -1)
    i0, i1 = np.unravel_index(sinks[order], f.shape)
    minima = np.column_stack([np.asarray(axes[0])[i0], np.asarray(axes[1])[i1]])
    return Basins(minima, values[order] - values[order][0], labels)


@dataclass
class FreeEnergyPath:
    """A converged string.

    Attributes
    ----------
    nodes : numpy.ndarray, shape=(n_nodes, 2)
        Node coordinates (grid axes' units), from the start state to the end state.
    arc_length : numpy.ndarray, shape=(n_nodes,)
        Cumulative arc length (axes' units; anisotropic axes are not rescaled).
    free_energy : numpy.ndarray, shape=(n_nodes,)
        Smoothed FES along the path, kJ/mol, relative to the start node.
    barrier : float
        max(free_energy) − free_energy[0], kJ/mol (forward barrier).
    iterations : int
    converged : bool
    """

    nodes: np.ndarray
    arc_length: np.ndarray
    free_energy: np.ndarray
    barrier: float
    iterations: int
    converged: bool
    info: dict[str, Any] = field(default_factory=dict)


def _reparametrize(nodes: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(nodes, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return nodes
    target = np.linspace(0.0, s[-1], len(nodes))
    return np.column_stack([np.interp(target, s, nodes[:, k]) for k in range(nodes.shape[1])])


def minimum_free_energy_path(fes: np.ndarray, axes: Sequence[np.ndarray], start: Any, end: Any, n_nodes: int = 40,
                             smooth: float = 1.0, step: float | None = None, max_iterations: int = 20000,
                             tolerance: float = 1e-6, fixed_ends: bool = False, unsampled_penalty: float = 10.0,
                             initial: np.ndarray | None = None) -> FreeEnergyPath:
    """Zero-temperature string between two points of a 2-D FES.

    Parameters
    ----------
    fes : numpy.ndarray, shape=(n0, n1), kJ/mol (NaN = unsampled)
    axes : two arrays, shapes (n0,) and (n1,), uniform spacing
    start, end : array_like, shape=(2,)
        States (e.g. :attr:`Basins.minima` entries, or the latent coordinates of frames). With ``fixed_ends=False``
        the end nodes relax to the nearest minimum.
    n_nodes : int
    smooth : float
        Gaussian smoothing of the FES, grid spacings.
    step : float, optional
        Gradient step (axes' units² per kJ/mol); default 0.2 × spacing² / (max |∇²F| estimate).
    tolerance : float
        Stop when the largest node displacement per iteration, in grid spacings, is below it.
    initial : numpy.ndarray, shape=(n_nodes, 2), optional
        Initial string (default: the straight line from start to end).
    """
    from scipy.interpolate import RectBivariateSpline

    x, y = (np.asarray(a, dtype=float) for a in axes)
    f = _prepared(fes, smooth, unsampled_penalty)
    if f.shape != (len(x), len(y)):
        raise ValueError(f"fes shape {f.shape} does not match the axes ({len(x)}, {len(y)})")
    spline = RectBivariateSpline(x, y, f, kx=3, ky=3)
    h = np.array([x[1] - x[0], y[1] - y[0]])
    lo, hi = np.array([x[0], y[0]]), np.array([x[-1], y[-1]])
    if step is None:
        curv = max(np.abs(np.diff(f, 2, axis=0)).max() / h[0] ** 2, np.abs(np.diff(f, 2, axis=1)).max() / h[1] ** 2)
        step = 0.2 / max(curv, 1e-12)
    a, b = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    nodes = np.linspace(a, b, n_nodes) if initial is None else np.array(initial, dtype=float)
    if nodes.shape != (n_nodes, 2):
        raise ValueError(f"initial string must have shape ({n_nodes}, 2)")
    converged = False
    it = 0
    for it in range(1, max_iterations + 1):
        grad = np.column_stack([spline.ev(nodes[:, 0], nodes[:, 1], dx=1), spline.ev(nodes[:, 0], nodes[:, 1], dy=1)])
        moved = nodes - step * grad
        if fixed_ends:
            moved[0], moved[-1] = a, b
        moved = np.clip(_reparametrize(np.clip(moved, lo, hi)), lo, hi)
        shift = np.max(np.abs(moved - nodes) / h)
        nodes = moved
        if shift < tolerance:
            converged = True
            break
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(nodes, axis=0), axis=1))])
    prof = spline.ev(nodes[:, 0], nodes[:, 1])
    prof = prof - prof[0]
    return FreeEnergyPath(nodes, s, prof, float(prof.max()), it, converged, {"step": step, "smooth": smooth})


def path_sensitivity(fes: np.ndarray, error: np.ndarray, axes: Sequence[np.ndarray], start: Any, end: Any,
                     n_samples: int = 20, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Spread of the MFEP and its barrier over FES samples ``fes + error × N(0, 1)`` (cells independent).

    Returns
    -------
    dict
        ``path`` (on the mean FES), ``node_spread`` (per node, RMS distance of the sampled nodes from it, axes'
        units, shape=(n_nodes,)), ``barriers`` (kJ/mol, shape=(n_samples,)), ``barrier_std``.
    """
    rng = np.random.default_rng(seed)
    ref = minimum_free_energy_path(fes, axes, start, end, **kwargs)
    err = np.nan_to_num(np.asarray(error, dtype=float), nan=0.0)
    sampled, barriers = [], []
    for _ in range(n_samples):
        noisy = np.asarray(fes, dtype=float) + err * rng.standard_normal(np.shape(fes))
        p = minimum_free_energy_path(noisy, axes, start, end, initial=ref.nodes, **kwargs)
        sampled.append(p.nodes)
        barriers.append(p.barrier)
    spread = np.sqrt(np.mean([np.sum((s - ref.nodes) ** 2, axis=1) for s in sampled], axis=0))
    return {"path": ref, "node_spread": spread, "barriers": np.array(barriers),
            "barrier_std": float(np.std(barriers, ddof=1)) if n_samples > 1 else 0.0}
