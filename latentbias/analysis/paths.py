"""Minimum free-energy paths on a gridded 2-D or 3-D free-energy surface: basins and the zero-temperature string
method.

:func:`find_basins` locates the minima of a (smoothed) FES and assigns every grid cell to the basin its steepest
descent ends in. :func:`minimum_free_energy_path` runs the simplified zero-temperature string method (E, Ren &
Vanden-Eijnden, J. Chem. Phys. 126, 164103, 2007): nodes move down the gradient of the FES, then are redistributed
at equal arc length, until the string stops moving. The converged string follows the minimum free-energy path (MFEP)
between two states, along which the FES gradient is tangent to the path. Its free-energy profile gives the barrier.
A string is a local method: it relaxes into the valley it starts in. It therefore starts, by default, on the grid
path through the lowest pass between the two states (:func:`lowest_pass_path`, the minimax path), so that of the
MFEPs a surface with several passes has, the string finds the one with the lowest barrier.

The FES comes from reweighting and is noisy where sampling is thin and undefined (NaN) where nothing was sampled:
it is smoothed with a Gaussian filter of ``smooth`` grid spacings, unsampled cells are raised above the highest
sampled value by ``unsampled_penalty`` so that the string avoids them, and the gradient is evaluated with bicubic
splines of the smoothed grid (2-D), or, in 3-D, as the tricubic-spline interpolant of the grid's central-difference
gradient (second order in the grid spacing). Grids of more than three dimensions are refused: a histogram FES needs
bins^d cells and samples in all of them. :func:`path_sensitivity` reruns the string on FES samples drawn from the per-cell
standard errors to show how much the path and its barrier depend on the uncertainty of the FES.

Units: the FES in kJ/mol; path coordinates in the units of the grid axes (latent units, or a CV's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["Basins", "FreeEnergyPath", "find_basins", "lowest_pass_path", "minimum_free_energy_path",
           "path_sensitivity"]


MAX_DIM = 3


def prepared_fes(fes: np.ndarray, smooth: float, unsampled_penalty: float) -> np.ndarray:
    """A 2-D/3-D FES (kJ/mol) ready for path finding: unsampled cells set to the highest sampled value plus
    ``unsampled_penalty``, Gaussian-smoothed by ``smooth`` bins, shifted to a minimum of 0. Same shape as ``fes``."""
    from scipy.ndimage import gaussian_filter

    f = np.array(fes, dtype=float)
    if f.ndim not in (2, 3):
        raise ValueError(f"the FES must be a 2-D or 3-D grid, got shape {f.shape}"
                         + (" (a gridded FES in more than 3 dimensions needs bins^d cells: project it on at most 3 "
                            "coordinates)" if f.ndim > MAX_DIM else ""))
    finite = np.isfinite(f)
    if finite.sum() < 4:
        raise ValueError("the FES has fewer than 4 finite cells: nothing to find a path on")
    f[~finite] = f[finite].max() + unsampled_penalty
    if smooth > 0:
        f = gaussian_filter(f, smooth, mode="nearest")
    return f - f.min()


def _check_axes(f: np.ndarray, axes: Sequence[np.ndarray]) -> list[np.ndarray]:
    ax = [np.asarray(a, dtype=float) for a in axes]
    if len(ax) != f.ndim or tuple(len(a) for a in ax) != f.shape:
        raise ValueError(f"fes shape {f.shape} does not match the axes {tuple(len(a) for a in ax)}: give one array of "
                         "grid-point coordinates per dimension")
    if any(len(a) < 4 for a in ax):
        raise ValueError(f"the FES grid needs at least 4 points per dimension, got shape {f.shape}")
    return ax


def _pair_slices(shift: Sequence[int], shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices selecting every cell x (first) and its neighbour x + shift (second) inside the grid."""
    first = tuple(slice(max(0, -a), n - max(0, a)) for a, n in zip(shift, shape))
    second = tuple(slice(max(0, a), n + min(0, a)) for a, n in zip(shift, shape))
    return first, second


@dataclass
class Basins:
    """Minima of a gridded FES and the basin (index into ``minima``) of every cell (-1: above ``max_free_energy``).

    Attributes
    ----------
    minima : numpy.ndarray, shape=(n_basins, d)
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
    """Basins of a 2-D or 3-D FES by steepest descent on the smoothed grid (8 or 26 neighbours), shallow minima
    merged.

    Parameters
    ----------
    fes : numpy.ndarray, shape=(n0, n1) or (n0, n1, n2), kJ/mol (NaN = unsampled)
    axes : one array of grid-point coordinates per dimension, shapes (n0,), (n1,) [, (n2,)]
    smooth : float, default 1.0
        Gaussian smoothing, in grid spacings.
    min_depth : float, default 2.0
        A minimum whose barrier to a deeper basin (lowest saddle on their shared border) is below this (kJ/mol)
        is merged into that basin.
    max_free_energy : float, optional
        Cells whose smoothed F is more than this above the FES's minimum (kJ/mol) get label -1.
    unsampled_penalty : float, default 10.0
        Unsampled (NaN) cells are set this far above the highest sampled F (kJ/mol) before smoothing.
    """
    import itertools

    f = prepared_fes(fes, smooth, unsampled_penalty)
    axes = _check_axes(f, axes)
    shape, ndim = f.shape, f.ndim
    padded = np.pad(f, 1, constant_values=np.inf)
    shifts = [s for s in itertools.product((-1, 0, 1), repeat=ndim) if any(s)]
    neigh = np.stack([padded[tuple(slice(1 + a, n + 1 + a) for a, n in zip(s, shape))] for s in shifts])
    best = neigh.argmin(0)
    lower = neigh.min(0) < f
    index = np.indices(shape)
    step = np.array(shifts)[best]  # (cells..., ndim) the steepest-descent neighbour's offset
    dest = [np.where(lower, index[k] + step[..., k], index[k]) for k in range(ndim)]
    target = np.ravel_multi_index(dest, shape).ravel()
    for _ in range(sum(shape)):  # pointer jumping to the sink
        nxt = target[target]
        if np.array_equal(nxt, target):
            break
        target = nxt
    sinks, labels = np.unique(target, return_inverse=True)
    labels = labels.reshape(shape)
    values = f.ravel()[sinks]
    # Persistence merging: walk the saddles between adjacent basins from the lowest up; a basin whose depth below
    # the saddle is under min_depth joins the deeper one (union-find keeps each root's minimum).
    saddles: dict[tuple[int, int], float] = {}
    for s in shifts:
        if s <= tuple([0] * ndim):
            continue  # each neighbour pair once
        first, second = _pair_slices(s, shape)
        l1, l2, f1, f2 = labels[first], labels[second], f[first], f[second]
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
    cells = np.unravel_index(sinks[order], f.shape)
    minima = np.column_stack([axes[k][cells[k]] for k in range(ndim)])
    return Basins(minima, values[order] - values[order][0], labels)


@dataclass
class FreeEnergyPath:
    """A converged string.

    Attributes
    ----------
    nodes : numpy.ndarray, shape=(n_nodes, d)
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
    return _resample(nodes, len(nodes))


class _GridFunction:
    """Smooth interpolant of a gridded F and of its gradient: bicubic splines in 2-D; in 3-D the tricubic B-spline
    interpolants (``scipy.ndimage``) of F and of its central-difference gradient. Points in axis units."""

    def __init__(self, f: np.ndarray, axes: list[np.ndarray]) -> None:
        self.ndim = f.ndim
        self.origin = np.array([a[0] for a in axes])
        self.h = np.array([a[1] - a[0] for a in axes])
        if self.ndim == 2:
            from scipy.interpolate import RectBivariateSpline

            self._spline = RectBivariateSpline(axes[0], axes[1], f, kx=3, ky=3)
        else:
            from scipy.ndimage import spline_filter

            grads = np.gradient(f, *self.h)
            self._coef = [spline_filter(g, order=3, mode="nearest") for g in [f, *grads]]

    def _map(self, coef: np.ndarray, points: np.ndarray) -> np.ndarray:
        from scipy.ndimage import map_coordinates

        idx = ((points - self.origin) / self.h).T
        return map_coordinates(coef, idx, order=3, mode="nearest", prefilter=False)

    def value(self, points: np.ndarray) -> np.ndarray:
        if self.ndim == 2:
            return self._spline.ev(points[:, 0], points[:, 1])
        return self._map(self._coef[0], points)

    def gradient(self, points: np.ndarray) -> np.ndarray:
        if self.ndim == 2:
            return np.column_stack([self._spline.ev(points[:, 0], points[:, 1], dx=1),
                                    self._spline.ev(points[:, 0], points[:, 1], dy=1)])
        return np.column_stack([self._map(c, points) for c in self._coef[1:]])


def _cell(point: np.ndarray, axes: list[np.ndarray]) -> tuple[int, ...]:
    return tuple(int(np.argmin(np.abs(a - v))) for a, v in zip(axes, point))


def _resample(polyline: np.ndarray, n_nodes: int) -> np.ndarray:
    """``n_nodes`` points at equal arc length along a polyline of any number of points, shape=(m, d)."""
    seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return np.repeat(polyline[:1], n_nodes, axis=0).astype(float)
    target = np.linspace(0.0, s[-1], n_nodes)
    return np.column_stack([np.interp(target, s, polyline[:, k]) for k in range(polyline.shape[1])])


def lowest_pass_path(fes: np.ndarray, axes: Sequence[np.ndarray], start: Any, end: Any, n_nodes: int = 40,
                     smooth: float = 1.0, unsampled_penalty: float = 10.0) -> tuple[np.ndarray, float]:
    """The grid path between two points whose highest free energy is lowest (the minimax, or lowest-pass, path).

    Of all paths through grid cells (steps to any of the 3^d − 1 neighbouring cells) from the cell of ``start`` to
    the cell of ``end``, the lowest pass is the one whose highest cell is lowest: its barrier is the smallest
    threshold t at which the two cells lie in one connected component of {F ≤ t}, found by bisection over the
    sorted values of F. Within that component the path returned is the shortest one (Dijkstra, Euclidean steps
    in the axes' units). It starts the string (:func:`minimum_free_energy_path`): a string started on the straight
    line between the states relaxes into the nearest valley, which on a surface with several passes need not be
    the lowest one. On 2-D grids the barrier equals that of :func:`latentbias.analysis.barriers.minimax_barrier`
    (flooding; tested equal), which gives no path.

    Parameters
    ----------
    fes : numpy.ndarray, shape=(n0, n1) or (n0, n1, n2), kJ/mol (NaN = unsampled)
    axes : one array of grid-point coordinates per dimension, shapes (n_i,), uniform spacing
    start, end : array_like, shape=(d,)
    n_nodes : int, default 40
        Points returned, at equal arc length along the grid path (its first and last are ``start`` and ``end``).
    smooth : float, default 1.0
        Gaussian smoothing of the FES, grid spacings (as for the string).
    unsampled_penalty : float, default 10.0
        kJ/mol above the highest sampled value for unsampled cells (as for the string).

    Returns
    -------
    nodes : numpy.ndarray, shape=(n_nodes, d)
    barrier : float
        Highest smoothed F along the grid path minus F at the start cell, kJ/mol.
    """
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    f = prepared_fes(fes, smooth, unsampled_penalty)
    ax = _check_axes(f, axes)
    d = f.ndim
    a, b = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    if a.shape != (d,) or b.shape != (d,):
        raise ValueError(f"start and end must be points of the {d}-D FES (shape ({d},)), got {a.shape} and {b.shape}")
    ia, ib = _cell(a, ax), _cell(b, ax)
    connectivity = ndimage.generate_binary_structure(d, d)
    levels = np.unique(f[f >= max(f[ia], f[ib])])
    lo, hi = 0, len(levels) - 1  # levels[hi] (the maximum) connects everything
    while lo < hi:
        mid = (lo + hi) // 2
        labels, _ = ndimage.label(f <= levels[mid], structure=connectivity)
        if labels[ia] == labels[ib]:
            hi = mid
        else:
            lo = mid + 1
    threshold = levels[lo]
    inside = f <= threshold
    h = np.array([x[1] - x[0] for x in ax])
    flat = np.arange(f.size).reshape(f.shape)
    rows, cols, lengths = [], [], []
    for shift in np.ndindex(*(3,) * d):
        off = np.array(shift) - 1
        if not off.any():
            continue
        here, there = _pair_slices(off, f.shape)
        both = inside[here] & inside[there]
        rows.append(flat[here][both])
        cols.append(flat[there][both])
        lengths.append(np.full(int(both.sum()), float(np.linalg.norm(off * h))))
    graph = coo_matrix((np.concatenate(lengths), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(f.size, f.size)).tocsr()
    _, pred = dijkstra(graph, indices=int(flat[ia]), return_predecessors=True)
    cells = [int(flat[ib])]
    while cells[-1] != int(flat[ia]):
        cells.append(int(pred[cells[-1]]))
    idx = np.array(np.unravel_index(np.array(cells[::-1]), f.shape)).T
    polyline = np.column_stack([ax[k][idx[:, k]] for k in range(d)])
    polyline = np.vstack([a, polyline[1:-1], b]) if len(polyline) > 2 else np.vstack([a, b])
    return _resample(polyline, int(n_nodes)), float(threshold - f[ia])


def minimum_free_energy_path(fes: np.ndarray, axes: Sequence[np.ndarray], start: Any, end: Any, n_nodes: int = 40,
                             smooth: float = 1.0, step: float | None = None, max_iterations: int = 20000,
                             tolerance: float = 1e-6, fixed_ends: bool = False, unsampled_penalty: float = 10.0,
                             initial: np.ndarray | str = "lowest-pass") -> FreeEnergyPath:
    """Zero-temperature string between two points of a 2-D or 3-D FES.

    Parameters
    ----------
    fes : numpy.ndarray, shape=(n0, n1) or (n0, n1, n2), kJ/mol (NaN = unsampled)
    axes : one array of grid-point coordinates per dimension, shapes (n_i,), uniform spacing
    start, end : array_like, shape=(d,)
        States (e.g. :attr:`Basins.minima` entries, or the latent coordinates of frames). With ``fixed_ends=False``
        the end nodes relax to the nearest minimum.
    n_nodes : int, default 40
    smooth : float, default 1.0
        Gaussian smoothing of the FES, grid spacings.
    step : float, optional
        Gradient step (axes' units² per kJ/mol); default 0.2 × spacing² / (max |∇²F| estimate).
    max_iterations : int, default 20000
        Iterations at most (``converged`` is False when they run out).
    tolerance : float, default 1e-6
        Stop when the largest node displacement per iteration, in grid spacings, is below it.
    fixed_ends : bool, default False
        Keep the end nodes at ``start`` and ``end`` instead of letting them relax.
    unsampled_penalty : float, default 10.0
        Unsampled (NaN) cells are set this far above the highest sampled F (kJ/mol) before smoothing.
    initial : numpy.ndarray, shape=(n_nodes, d), or {"lowest-pass", "line"}, default "lowest-pass"
        Initial string: given nodes; ``"lowest-pass"``, the grid path through the lowest pass between the two states
        (:func:`lowest_pass_path`), so that the string relaxes into the valley of the lowest barrier; ``"line"``,
        the straight line from start to end (the string then finds the MFEP of the nearest valley, which on a
        surface with several passes can cross a higher one).
    """
    f = prepared_fes(fes, smooth, unsampled_penalty)
    ax = _check_axes(f, axes)
    d = f.ndim
    grid = _GridFunction(f, ax)
    h = grid.h
    lo, hi = np.array([a[0] for a in ax]), np.array([a[-1] for a in ax])
    if step is None:
        curv = max(np.abs(np.diff(f, 2, axis=k)).max() / h[k] ** 2 for k in range(d))
        step = 0.2 / max(curv, 1e-12)
    a, b = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    if a.shape != (d,) or b.shape != (d,):
        raise ValueError(f"start and end must be points of the {d}-D FES (shape ({d},)), got {a.shape} and {b.shape}")
    pass_barrier = None
    if isinstance(initial, str):
        if initial == "lowest-pass":
            nodes, pass_barrier = lowest_pass_path(fes, axes, a, b, n_nodes, smooth, unsampled_penalty)
        elif initial == "line":
            nodes = np.linspace(a, b, n_nodes)
        else:
            raise ValueError(f"initial must be 'lowest-pass', 'line' or an array of nodes, got {initial!r}")
        how = initial
    else:
        nodes, how = np.array(initial, dtype=float), "given"
    if nodes.shape != (n_nodes, d):
        raise ValueError(f"initial string must have shape ({n_nodes}, {d})")
    converged = False
    it = 0
    for it in range(1, max_iterations + 1):
        moved = nodes - step * grid.gradient(nodes)
        if fixed_ends:
            moved[0], moved[-1] = a, b
        moved = np.clip(_reparametrize(np.clip(moved, lo, hi)), lo, hi)
        shift = np.max(np.abs(moved - nodes) / h)
        nodes = moved
        if shift < tolerance:
            converged = True
            break
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(nodes, axis=0), axis=1))])
    prof = grid.value(nodes)
    prof = prof - prof[0]
    info = {"step": step, "smooth": smooth, "initial": how}
    if pass_barrier is not None:
        info["lowest_pass_barrier"] = pass_barrier
    return FreeEnergyPath(nodes, s, prof, float(prof.max()), it, converged, info)


def path_sensitivity(fes: np.ndarray, error: np.ndarray, axes: Sequence[np.ndarray], start: Any, end: Any,
                     n_samples: int = 20, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Spread of the MFEP and its barrier over FES samples ``fes + error × N(0, 1)`` (cells independent).

    Parameters
    ----------
    fes : numpy.ndarray, shape=(n0, n1) or (n0, n1, n2), kJ/mol (NaN = unsampled)
    error : numpy.ndarray, same shape as ``fes``
        Per-cell standard error, kJ/mol (NaN counts as 0).
    axes : one array of grid-point coordinates per dimension
    start, end : array_like, shape=(d,)
    n_samples : int, default 20
        FES samples drawn.
    seed : int, default 0
        Seed of the normal deviates.
    **kwargs
        Passed to :func:`minimum_free_energy_path`.

    Returns
    -------
    dict
        ``path`` (on the mean FES), ``node_spread`` (per node, RMS distance of the sampled nodes from it, axes'
        units, shape=(n_nodes,)), ``barriers`` (kJ/mol, shape=(n_samples,)), ``barrier_std`` (their sample standard
        deviation, ddof = 1; 0 for one sample).
    """
    rng = np.random.default_rng(seed)
    ref = minimum_free_energy_path(fes, axes, start, end, **kwargs)
    kwargs.pop("initial", None)  # the resampled strings start from the reference path
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
