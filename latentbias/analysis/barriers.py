"""The lowest (minimax) barrier between two states of a gridded free-energy surface.

Among all paths on the grid that join cell ``a`` to cell ``b``, the minimax path is the one whose highest cell is
lowest; that cell is the saddle (the lowest pass between the two basins). It is found exactly by flooding: cells are
added in order of increasing F, each joined (union-find) to its already-flooded neighbours; the level at which the
components of ``a`` and ``b`` first merge is the saddle level. The barrier seen from ``a`` is the saddle level minus
the lowest F of ``a``'s component just before the merge (the minimum of the basin ``a`` lies in), so ``a`` and ``b``
need not sit exactly on the minima.

This is the barrier a 1-D free-energy profile along the best reaction path can be compared with (up to the entropy
of the directions across the path). Grid neighbours are 8-connected by default; periodic axes (angles) wrap.
Unsampled cells (NaN / inf) are never flooded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["MinimaxBarrier", "minimax_barrier", "nearest_cell"]


@dataclass
class MinimaxBarrier:
    """Result of :func:`minimax_barrier` (free energies in the FES's unit, kJ/mol here).

    Attributes
    ----------
    saddle_level : float
        F at the saddle (the highest cell of the best path); inf when ``a`` and ``b`` are not connected.
    saddle_index : tuple of int
        Grid index of the saddle cell; (-1, -1) when ``a`` and ``b`` are not connected.
    basin_a, basin_b : float
        Lowest F of the basins of ``a`` and ``b`` (their components just below the saddle level, without any other
        basin the saddle cell also joins); F of the cell itself when ``a`` or ``b`` is the saddle cell; F of ``a``
        and ``b`` when they are not connected.
    forward, backward : float
        ``saddle_level - basin_a`` and ``saddle_level - basin_b``.
    """

    saddle_level: float
    saddle_index: tuple[int, ...]
    basin_a: float
    basin_b: float

    @property
    def forward(self) -> float:
        return self.saddle_level - self.basin_a

    @property
    def backward(self) -> float:
        return self.saddle_level - self.basin_b


def nearest_cell(axes: Sequence[np.ndarray], point: Any, periodic: Sequence[bool] | None = None) -> tuple[int, ...]:
    """Index of the grid cell whose centre is nearest to ``point`` along each axis (periodic axes wrap).

    Parameters
    ----------
    axes : sequence of numpy.ndarray
        Cell centres per axis (uniform spacing).
    point : array_like, shape=(len(axes),)
    periodic : sequence of bool, optional
    """
    p = np.asarray(point, dtype=float).reshape(-1)
    if p.shape != (len(axes),):
        raise ValueError(f"point must have {len(axes)} coordinates, got {p.shape}")
    per = [False] * len(axes) if periodic is None else list(periodic)
    out = []
    for x, v, wrap in zip(axes, p, per):
        x = np.asarray(x, dtype=float)
        d = np.abs(x - v)
        if wrap:
            period = (x[1] - x[0]) * len(x)
            d = d % period  # points outside the axis' first period (e.g. 200 deg on a -180..180 axis) wrap too
            d = np.minimum(d, period - d)
        out.append(int(np.argmin(d)))
    return tuple(out)


def minimax_barrier(fes: Any, a: Sequence[int], b: Sequence[int], periodic: Sequence[bool] | bool = False,
                    connectivity: int = 8) -> MinimaxBarrier:
    """Lowest barrier between cells ``a`` and ``b`` of a 2-D grid by flooding (exact on the grid).

    Parameters
    ----------
    fes : array_like, shape=(n0, n1)
        Free energy per cell (NaN or inf: unsampled, impassable).
    a, b : tuple of int
        Grid indices of the two states (e.g. from :func:`nearest_cell`).
    periodic : bool or (bool, bool), default False
        Whether each axis wraps around (e.g. φ/ψ grids covering a full turn).
    connectivity : {4, 8}, default 8
        Neighbours of a cell: edge-sharing (4) or also corner-sharing (8).

    Returns
    -------
    MinimaxBarrier
    """
    f = np.asarray(fes, dtype=float)
    if f.ndim != 2:
        raise ValueError(f"fes must be a 2-D grid, got shape {f.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    per = (bool(periodic),) * 2 if np.ndim(periodic) == 0 else tuple(bool(p) for p in periodic)
    if len(per) != 2:
        raise ValueError("periodic must be a bool or two bools")
    n0, n1 = f.shape
    ia, ib = (tuple(int(i) for i in c) for c in (a, b))
    for name, c in (("a", ia), ("b", ib)):
        if len(c) != 2 or not (0 <= c[0] < n0 and 0 <= c[1] < n1):
            raise ValueError(f"{name}={c} is not a cell of a {f.shape} grid")
        if not np.isfinite(f[c]):
            raise ValueError(f"cell {name}={c} has no finite free energy (unsampled)")
    flat = f.ravel()
    finite = np.isfinite(flat)
    order = np.argsort(np.where(finite, flat, np.inf), kind="stable")[: int(finite.sum())]
    parent = np.full(flat.size, -1, dtype=np.int64)  # -1: not flooded yet
    lowest = flat.copy()  # lowest F of each root's component

    def root(k: int) -> int:
        r = k
        while parent[r] != r:
            r = parent[r]
        while parent[k] != r:  # path compression
            parent[k], k = r, parent[k]
        return r

    shifts = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    if connectivity == 8:
        shifts += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    ka, kb = ia[0] * n1 + ia[1], ib[0] * n1 + ib[1]
    if ka == kb:
        return MinimaxBarrier(float(flat[ka]), ia, float(flat[ka]), float(flat[ka]))
    for k in order:
        parent[k] = k
        i, j = divmod(int(k), n1)
        # the components this cell touches, as they stand before it floods (their lowest F are the basins)
        touched = set()
        for di, dj in shifts:
            u, v = i + di, j + dj
            if per[0]:
                u %= n0
            if per[1]:
                v %= n1
            if not (0 <= u < n0 and 0 <= v < n1):
                continue
            q = u * n1 + v
            if parent[q] < 0:
                continue
            touched.add(root(q))
        ra = int(k) if ka == k else (root(ka) if parent[ka] >= 0 else -1)
        rb = int(k) if kb == k else (root(kb) if parent[kb] >= 0 else -1)
        if (ra == k or ra in touched) and (rb == k or rb in touched):  # this cell joins the two basins: the saddle
            return MinimaxBarrier(float(flat[k]), (i, j), float(lowest[ra]), float(lowest[rb]))
        for r in touched:
            parent[r] = k
            lowest[k] = min(lowest[k], lowest[r])
    return MinimaxBarrier(float("inf"), (-1, -1), float(flat[ka]), float(flat[kb]))
