"""Compressed Gaussian kernel density estimate on a bias grid, as OPES builds it (no OpenMM here).

A :class:`KernelDensity` holds kernels ``(centre c_k, widths σ_k, weight w_k)`` and keeps two sums up to date as
kernels are added, merged or removed:

* on the grid nodes g: ``S(g) = Σ_k w_k N(g; c_k, σ_k)``;
* at every kernel centre: ``S(c_j) = Σ_k w_k N(c_j; c_k, σ_k)``,

where ``N`` is a normalised diagonal Gaussian, evaluated with the minimum image along periodic axes (valid for
σ ≪ period). OPES needs both: the probability estimate ``P(s) = S(s)/Σw`` and the normalisation
``Z = (1/K) Σ_j P(c_j)`` over the kernel centres (Invernizzi & Parrinello, JPCL 2020, Eq. 6).

Compression (Invernizzi & Parrinello 2020, SI; PLUMED's ``COMPRESSION_THRESHOLD``): a new kernel is merged into
the nearest stored kernel when their distance, measured with the stored kernel's widths, is below a threshold;
the merged kernel may then be merged again with its own nearest neighbour (PLUMED's recursive merge). Merging
conserves the weight, the weighted mean and the weighted second moment of the two Gaussians. Unlike PLUMED, which
merges unnormalised heights ``w·Π(σ0/σ)``, weights are merged, so probability is conserved exactly when the two
widths differ.

Updates are incremental: a deposit changes the grid sum on the windows of the kernels it adds and removes, and the
centre sums by their values at every centre plus the changed kernel's own sum (cost ∝ the windows + the number of
kernels; nothing O(N²) outside a rebuild); a full rebuild every ``rebuild_interval`` updates removes the rounding
that subtractions accumulate. The deposit path avoids interpreter overhead without changing a double: the blocks of
recently added kernels are kept for their removal by a compression, the kernels a deposit adds and removes are
evaluated at all centres in one pass, sums over the d coordinates are taken axis by axis for many kernels (the order
numpy's reduce uses), and :meth:`KernelDensity.occupied_box` bounds the non-zero part of the grid sum, so that work
over the estimate (c(t), V) can skip the rest (``tests/test_opes_fastpath.py``; ``benchmarks/RESULTS.md``).

Truncation (``cutoff``, PLUMED's OPES ``KERNEL_CUTOFF``): with a cutoff c every kernel is
``N_c(s) = (exp(−½ r²) − exp(−½ c²)) / ((2π)^{d/2} Π σ)`` for a Mahalanobis distance r = |(s − c_k)/σ_k| < c and 0
beyond (truncated and shifted, not renormalised, as PLUMED's ``OPESmetad``), so adding or removing a kernel
changes the grid sum only on the box around its centre (cost ∝ the box, not the grid).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .grid import BiasGrid

__all__ = ["KernelDensity"]

_CHUNK = 256
#: blocks of recently added kernels kept for their removal by a compression (count; largest block, nodes)
_CACHED_BLOCKS = 8
_CACHED_BLOCK_SIZE = 1 << 18
#: from this many kernels on, sums over the d coordinates are taken axis by axis (x0 + x1 + x2, the order in which
#: numpy's add.reduce over a short last axis adds them: the same doubles) instead of with a reduce over that axis,
#: whose per-row cost dominates for many kernels
_AXIS_BY_AXIS = 128


class KernelDensity:
    """Kernels on the domain of a :class:`BiasGrid` with cached sums on the grid and at the kernel centres.

    The kernels are stored in two groups: ``own`` (this process deposits and compresses them) and ``fixed``
    (e.g. other walkers' kernels, replaced as a whole by :meth:`set_fixed`). The sums cover both.

    Parameters
    ----------
    grid : BiasGrid
    threshold : float
        Compression threshold (units of the stored kernel's σ); 0 disables compression.
    rebuild_interval : int
        Updates between full recomputations of the cached sums.
    cutoff : float, optional
        Kernel truncation (Mahalanobis distance in σ, > the threshold); None: untruncated Gaussians.
    """

    def __init__(self, grid: BiasGrid, threshold: float = 1.0, rebuild_interval: int = 200,
                 cutoff: float | None = None):
        if not threshold >= 0:
            raise ValueError(f"compression threshold must be >= 0, got {threshold}")
        if cutoff is not None and not (math.isfinite(cutoff) and cutoff > threshold and cutoff > 0):
            raise ValueError(f"kernel cutoff must be None or a finite number of widths above the compression "
                             f"threshold ({threshold}), got {cutoff}")
        self.cutoff = None if cutoff is None else float(cutoff)
        self._at_cutoff = 0.0 if cutoff is None else math.exp(-0.5 * float(cutoff) ** 2)
        self.grid = grid
        self.threshold = float(threshold)
        self.rebuild_interval = int(rebuild_interval)
        self.d = grid.ndim
        self._axes = grid.axes
        self._periods = np.array([v.maxValue - v.minValue if v.periodic else 0.0 for v in grid.variables])
        self._lows = np.array([v.minValue for v in grid.variables])
        # per-grid constants of the deposit path (Python floats: the same doubles as the numpy scalars they replace)
        self._per = self._periods > 0
        self._anyPeriodic = bool(self._per.any())
        self._perPeriods, self._perLows = self._periods[self._per], self._lows[self._per]
        self._axisInfo = [(axis, len(axis), float(axis[0]), float((axis[-1] - axis[0]) / (len(axis) - 1)),
                           float(self._periods[j])) for j, axis in enumerate(self._axes)]
        self._cut2 = None if cutoff is None else float(cutoff) ** 2
        self._sqrt2pi = math.sqrt(2.0 * math.pi)
        # the blocks (window, values) of the latest kernels added to the grid sum, keyed by their (centre, widths):
        # a compression removes a kernel that was usually added shortly before, and its block is then reused instead
        # of recomputed (the same doubles: kernel_window is deterministic)
        self._blocks: dict[bytes, tuple[tuple[slice, ...], np.ndarray]] = {}
        empty = np.zeros((0, self.d))
        self.centers, self.sigmas, self.weights, self.counts = empty.copy(), empty.copy(), np.zeros(0), np.zeros(0, int)
        self.fixed_centers, self.fixed_sigmas, self.fixed_weights = empty.copy(), empty.copy(), np.zeros(0)
        self.grid_sum = np.zeros(grid.shape)  # (the setter also sets the occupied box, see occupied_box)
        self.center_sum = np.zeros(0)  # own kernels first, then fixed
        self._updates = 0
        #: incremented whenever the sums are recomputed from scratch (:meth:`rebuild`)
        self.generation = 0
        #: when a list, every incremental change of the grid sum is appended to it as (center, sigma, weight) (a
        #: negative weight removes a kernel), so that a copy of the sum elsewhere (the Context's table) can follow
        #: with local updates; after a :meth:`rebuild` (see ``generation``) the copy must be replaced as a whole
        self.journal: list | None = None

    @property
    def updates_since_rebuild(self) -> int:
        """Incremental updates since the sums were last recomputed from scratch (saved with an OPES state, so a
        restarted run rebuilds at the same update as an uninterrupted one)."""
        return self._updates

    @updates_since_rebuild.setter
    def updates_since_rebuild(self, n: int) -> None:
        self._updates = int(n)

    @property
    def grid_sum(self) -> np.ndarray:
        """S on the grid nodes, shape=grid.shape (updated in place by deposits)."""
        return self._grid_sum

    @grid_sum.setter
    def grid_sum(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        if values.shape != tuple(self.grid.shape):
            raise ValueError(f"the grid sum must have the grid's shape {tuple(self.grid.shape)}, got {values.shape}")
        self._grid_sum = values
        # the bounding box of the non-zero nodes; deposits then widen it by the windows they write
        self._box = []
        nonzero = values != 0
        for j in range(values.ndim):
            nz = np.flatnonzero(nonzero.any(axis=tuple(k for k in range(values.ndim) if k != j)))
            self._box.append([int(nz[0]), int(nz[-1]) + 1] if len(nz) else [values.shape[j], 0])

    def occupied_box(self) -> tuple[slice, ...]:
        """Per-axis slices of a box outside which the grid sum is exactly 0: the non-zero nodes when the sum was last
        set as a whole (:meth:`rebuild`, a restart) widened by every kernel window written since. Whole-grid work that
        skips zero nodes (c(t), V where S > 0) can be done on the box alone with the same result."""
        return tuple(slice(lo, hi) if lo < hi else slice(0, 0) for lo, hi in self._box)

    def _widen_box(self, window: tuple[slice, ...]) -> None:
        for b, w, n in zip(self._box, window, self._grid_sum.shape):
            start, stop, _ = w.indices(n)
            if start < stop:
                if start < b[0]:
                    b[0] = start
                if stop > b[1]:
                    b[1] = stop

    # ----------------------------------------------------------------------------------------- geometry

    def wrap(self, points: np.ndarray) -> np.ndarray:
        """Points with periodic coordinates brought into [min, max)."""
        p = np.array(points, dtype=float)
        if self._anyPeriodic:
            per = self._per
            p[..., per] = self._perLows + np.mod(p[..., per] - self._perLows, self._perPeriods)
        return p

    def displacement(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """b − a with the minimum image along periodic axes (broadcasting over leading axes)."""
        dv = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
        if self._anyPeriodic:
            per = self._per
            dv[..., per] -= self._perPeriods * np.rint(dv[..., per] / self._perPeriods)
        return dv

    def kernel_window(self, center: np.ndarray, sigma: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
        """The kernel on the grid nodes where it can be non-zero: (per-axis slices, values on them).

        Untruncated: the whole grid (:meth:`kernel_on_grid`). Truncated: the nodes within ``cutoff`` σ of the
        centre along each axis (minimum image; the whole axis when the box wraps around a periodic axis), with
        the truncated, shifted kernel on them (0 where the Mahalanobis distance is ≥ cutoff).
        """
        if self.cutoff is None:
            return tuple(slice(None) for _ in self._axes), self.kernel_on_grid(center, sigma)
        # per axis in Python floats (the same doubles as numpy scalars give), then one numpy pass per step
        cut = self.cutoff
        cs = np.asarray(center, dtype=float).tolist()
        ss = np.asarray(sigma, dtype=float).tolist()
        window, scaled = [], []
        for (axis, n, first, spacing, period), cj, sj in zip(self._axisInfo, cs, ss):
            reach = cut * sj
            lo = max(0, math.floor((cj - reach - first) / spacing))
            hi = min(n, math.ceil((cj + reach - first) / spacing) + 1)
            if period > 0 and (lo == 0 or hi >= n):  # lo_z <= axis[0] gives lo = 0, hi_z >= axis[-1] hi = n
                lo, hi = 0, n  # the box reaches the seam: its first and last node are one point
            elif hi < lo:
                hi = lo
            dx = axis[lo:hi] - cj
            if period > 0:
                dx = dx - period * np.rint(dx / period)
            u = dx / sj
            if period > 0 and lo == 0 and hi == n:
                u[-1] = u[0]  # the last node is the first one
            window.append(slice(lo, hi))
            scaled.append(u * u)
        r2 = scaled[0]
        for part in scaled[1:]:
            r2 = np.add.outer(r2, part)
        norm = float(np.multiply.reduce(self._sqrt2pi * np.asarray(ss)))  # np.prod, without its wrapper
        block = np.where(r2 < self._cut2, np.exp(-0.5 * r2) - self._at_cutoff, 0.0) / norm
        return tuple(window), block

    def add_kernel_to(self, values: np.ndarray, center: np.ndarray, sigma: np.ndarray, weight: float) -> None:
        """``values += weight · N(g; center, sigma)`` on the kernel's window only (in place)."""
        window, block = self.kernel_window(center, sigma)
        values[window] += weight * block

    def kernel_on_grid(self, center: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Normalised Gaussian N(g; center, sigma) on the grid nodes, shape=grid.shape (truncated at ``cutoff``
        when set)."""
        if self.cutoff is not None:
            out = np.zeros(self.grid.shape)
            self.add_kernel_to(out, center, sigma, 1.0)
            return out
        profiles = []
        for j, axis in enumerate(self._axes):
            dx = axis - center[j]
            if self._periods[j] > 0:
                dx -= self._periods[j] * np.rint(dx / self._periods[j])
            prof = np.exp(-0.5 * (dx / sigma[j]) ** 2) / (math.sqrt(2.0 * math.pi) * sigma[j])
            if self._periods[j] > 0:
                prof[-1] = prof[0]  # the last node is the first one
            profiles.append(prof)
        out = profiles[0]
        for prof in profiles[1:]:
            out = np.multiply.outer(out, prof)
        return out

    def mixture_at(self, points: np.ndarray, centers: np.ndarray, sigmas: np.ndarray,
                   weights: np.ndarray) -> np.ndarray:
        """Σ_k w_k N(p; c_k, σ_k) at points, shape=(n, d) -> (n,)."""
        pts = np.atleast_2d(np.asarray(points, dtype=float))
        if len(pts) == 1 and len(centers) >= _AXIS_BY_AXIS:
            return self._mixture_at_point(pts, centers, sigmas, weights)
        out = np.zeros(len(pts))
        for start in range(0, len(centers), _CHUNK):
            c, s, w = centers[start:start + _CHUNK], sigmas[start:start + _CHUNK], weights[start:start + _CHUNK]
            dv = self.displacement(c[None, :, :], pts[:, None, :]) / s[None]
            norm = np.multiply.reduce(self._sqrt2pi * s, axis=1)  # np.prod, without its wrapper
            r2 = np.add.reduce(dv * dv, axis=2)  # np.sum, without its wrapper
            if self.cutoff is None:
                out += np.exp(-0.5 * r2) @ (w / norm)
            else:
                out += np.where(r2 < self._cut2, np.exp(-0.5 * r2) - self._at_cutoff, 0.0) @ (w / norm)
        return out

    def _scaled_r2(self, point_coords, center_coords, sigma_coords) -> np.ndarray:
        """Σ_j ((p_j − c_j) (minimum image) / σ_j)², axis by axis, for per-axis coordinate arrays that broadcast:
        the arithmetic of ``np.add.reduce((displacement(c, p) / σ) ** 2, axis=-1)`` (numpy reduces a short last axis
        left to right), without the reduce."""
        r2 = None
        for j in range(self.d):
            u = point_coords[j] - center_coords[j]
            period = self._axisInfo[j][4]
            if period > 0:
                u -= period * np.rint(u / period)
            u /= sigma_coords[j]
            u *= u
            if r2 is None:
                r2 = u
            else:
                r2 += u
        return r2

    def _norms(self, sigmas: np.ndarray) -> np.ndarray:
        """Π_j √(2π) σ_j per row of sigmas (n, d), left to right as ``np.multiply.reduce(√(2π) σ, axis=1)``."""
        scaled = self._sqrt2pi * sigmas
        norm = scaled[:, 0].copy()
        for j in range(1, self.d):
            norm *= scaled[:, j]
        return norm

    def _mixture_at_point(self, point: np.ndarray, centers: np.ndarray, sigmas: np.ndarray,
                          weights: np.ndarray) -> np.ndarray:
        """:meth:`mixture_at` of one point (shape=(1, d)) and many kernels: every kernel in one pass axis by axis,
        then the same chunked products (1, chunk) @ (chunk,) and their sum in the same order."""
        r2 = self._scaled_r2(point[0].tolist(), centers.T, sigmas.T)
        values = np.where(r2 < self._cut2, np.exp(-0.5 * r2) - self._at_cutoff, 0.0) if self.cutoff is not None \
            else np.exp(-0.5 * r2)
        factors = weights / self._norms(sigmas)
        out = np.zeros(1)
        for start in range(0, len(centers), _CHUNK):
            out += values[None, start:start + _CHUNK] @ factors[start:start + _CHUNK]
        return out

    def _kernels_at(self, points: np.ndarray, kernels: list) -> np.ndarray:
        """Unit-weight kernels (centre, σ, ·) at points, shape=(n, d) -> (n, K): column k is
        ``mixture_at(points, c_k[None], σ_k[None], np.ones(1))`` with the same arithmetic (one numpy pass per step
        for all K kernels a deposit adds and removes)."""
        c = np.array([k[0] for k in kernels], dtype=float)
        s = np.array([k[1] for k in kernels], dtype=float)
        if len(points) >= _AXIS_BY_AXIS:
            r2 = self._scaled_r2(points.T[:, :, None], c.T, s.T)
            inverse = 1.0 / self._norms(s)
            if self.cutoff is None:
                values = np.exp(-0.5 * r2)
            else:
                values = np.where(r2 < self._cut2, np.exp(-0.5 * r2) - self._at_cutoff, 0.0)
            values *= inverse
            return values
        dv = points[:, None, :] - c  # (n, K, d), b − a as displacement() takes it
        if self._anyPeriodic:
            per = self._per
            dv[..., per] -= self._perPeriods * np.rint(dv[..., per] / self._perPeriods)
        dv /= s
        r2 = np.add.reduce(dv * dv, axis=2)
        inverse = 1.0 / np.multiply.reduce(self._sqrt2pi * s, axis=1)  # = ones(1) / norm
        if self.cutoff is None:
            values = np.exp(-0.5 * r2)
        else:
            values = np.where(r2 < self._cut2, np.exp(-0.5 * r2) - self._at_cutoff, 0.0)
        values *= inverse  # a product with one term, as the (n, 1) @ (1,) of mixture_at
        return values

    # ----------------------------------------------------------------------------------------- kernels

    @property
    def all_centers(self) -> np.ndarray:
        return np.concatenate([self.centers, self.fixed_centers])

    @property
    def all_sigmas(self) -> np.ndarray:
        return np.concatenate([self.sigmas, self.fixed_sigmas])

    @property
    def all_weights(self) -> np.ndarray:
        return np.concatenate([self.weights, self.fixed_weights])

    @property
    def num_kernels(self) -> int:
        return len(self.weights) + len(self.fixed_weights)

    def rebuild(self) -> None:
        """Recompute the grid and centre sums from the kernels."""
        c, s, w = self.all_centers, self.all_sigmas, self.all_weights
        total = np.zeros(self.grid.shape)
        for k in range(len(w)):
            self.add_kernel_to(total, c[k], s[k], w[k])
        self.grid_sum = total
        self.center_sum = self.mixture_at(c, c, s, w) if len(w) else np.zeros(0)
        self._updates = 0
        self.generation += 1
        if self.journal is not None:
            self.journal.clear()

    def _nearest(self, center: np.ndarray, keep: np.ndarray | None = None, exclude: int = -1) -> int:
        """Index of the own kernel nearest to ``center`` (its own σ as metric) if within the threshold, else -1."""
        if self.threshold <= 0 or len(self.weights) == 0:
            return -1
        if len(self.weights) >= _AXIS_BY_AXIS:
            dist2 = self._scaled_r2(np.asarray(center, dtype=float).tolist(), self.centers.T, self.sigmas.T)
        else:
            dv = center - self.centers  # displacement(centers, center)
            if self._anyPeriodic:
                per = self._per
                dv[..., per] -= self._perPeriods * np.rint(dv[..., per] / self._perPeriods)
            dist2 = np.add.reduce((dv / self.sigmas) ** 2, axis=1)
        if keep is not None:
            dist2[~keep] = np.inf
        if 0 <= exclude < len(dist2):
            dist2[exclude] = np.inf
        k = int(dist2.argmin())
        return k if dist2[k] < self.threshold**2 else -1

    def _merged(self, k: int, c2: np.ndarray, s2: np.ndarray, w2: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Kernel k merged with (c2, s2, w2): weight, mean and second moment conserved."""
        c1, s1, w1 = self.centers[k], self.sigmas[k], self.weights[k]
        if not self._anyPeriodic:
            # the same IEEE operations per axis on Python floats (x**2 of numpy is x*x), without ~10 numpy calls
            w1f, w2f = float(w1), float(w2)
            w = w1f + w2f
            center, width = [], []
            for a, b, sa, sb in zip(c1.tolist(), np.asarray(c2, dtype=float).tolist(), s1.tolist(),
                                    np.asarray(s2, dtype=float).tolist()):
                delta = b - a
                shift = w2f * delta / w
                var = (w1f * (sa * sa) + w2f * (sb * sb + delta * delta)) / w - shift * shift
                center.append(a + shift)
                width.append(math.sqrt(var))
            return np.array(center), np.array(width), w1 + w2
        w = w1 + w2
        delta = self.displacement(c1, c2)  # c2 − c1 (minimum image)
        shift = w2 * delta / w
        var = (w1 * s1**2 + w2 * (s2**2 + delta**2)) / w - shift**2
        return self.wrap(c1 + shift), np.sqrt(var), w

    def add(self, center: Sequence[float], sigma: Sequence[float], weight: float) -> None:
        """Deposit one kernel (compressed into the nearest kernel when close enough)."""
        c = self.wrap(np.asarray(center, dtype=float))
        s = np.asarray(sigma, dtype=float)
        w = float(weight)
        if c.shape != (self.d,) or s.shape != (self.d,) or not (s > 0).all() or not (w > 0 and math.isfinite(w)):
            raise ValueError(f"bad kernel: center {center}, sigma {sigma}, weight {weight}")
        removed: list[tuple[np.ndarray, np.ndarray, float]] = []
        added: list[tuple[np.ndarray, np.ndarray, float]] = []
        n_own = len(self.weights)
        keep = None  # which own kernels stay (None: all)
        taker = self._nearest(c)
        if taker < 0:
            self.centers = np.vstack([self.centers, c])
            self.sigmas = np.vstack([self.sigmas, s])
            self.weights = np.append(self.weights, w)
            self.counts = np.append(self.counts, 1)
            changed = n_own
            added.append((c, s, w))
        else:
            removed.append((self.centers[taker].copy(), self.sigmas[taker].copy(), self.weights[taker]))
            self.centers[taker], self.sigmas[taker], self.weights[taker] = self._merged(taker, c, s, w)
            self.counts[taker] += 1
            giver = taker
            # recursive merge: the grown kernel may now overlap another one, which absorbs it
            while True:
                other = self._nearest(self.centers[giver], keep, exclude=giver)
                if other < 0:
                    break
                removed.append((self.centers[other].copy(), self.sigmas[other].copy(), self.weights[other]))
                cg, sg, wg = self.centers[giver].copy(), self.sigmas[giver].copy(), self.weights[giver]
                self.centers[other], self.sigmas[other], self.weights[other] = self._merged(other, cg, sg, wg)
                self.counts[other] += self.counts[giver]
                if keep is None:
                    keep = np.ones(n_own, bool)
                keep[giver] = False
                giver = other
            added.append((self.centers[giver].copy(), self.sigmas[giver].copy(), self.weights[giver]))
            changed = giver
        self._update_sums(removed, added, n_own, keep, changed)

    def _grid_add(self, center: np.ndarray, sigma: np.ndarray, weight: float) -> None:
        """``grid_sum += weight · N(g; center, sigma)`` on the kernel's window (:meth:`add_kernel_to`), the window's
        values taken from the block cache when this kernel was added recently; widens the occupied box."""
        key = center.tobytes() + sigma.tobytes()
        hit = self._blocks.pop(key, None)
        window, block = self.kernel_window(center, sigma) if hit is None else hit
        self._grid_sum[window] += weight * block
        self._widen_box(window)
        if weight > 0 and block.size <= _CACHED_BLOCK_SIZE:
            self._blocks[key] = (window, block)
            if len(self._blocks) > _CACHED_BLOCKS:
                del self._blocks[next(iter(self._blocks))]  # the oldest

    def _update_sums(self, removed, added, n_old_own: int, keep: np.ndarray | None, changed: int) -> None:
        """The sums after ``removed`` kernels were replaced by ``added`` ones: the grid sum on their windows, the
        centre sums by their values at every centre (O(number of kernels)), the changed kernel's own sum in full."""
        n_new_own = len(self.weights)  # before dropping the givers
        self._updates += 1
        if self._updates >= self.rebuild_interval:
            if keep is not None:
                self._drop(keep)
            self.rebuild()
            return
        for c, s, w in removed:
            self._grid_add(c, s, -w)
        for c, s, w in added:
            self._grid_add(c, s, w)
        if self.journal is not None:
            self.journal.extend([(c, s, -w) for c, s, w in removed] + list(added))
        # centre sums: old entries (own, then fixed), plus a slot for an appended kernel, less the givers
        old = self.center_sum
        if keep is None:
            if n_new_own > n_old_own:
                sums = np.concatenate([old[:n_old_own], [0.0], old[n_old_own:]])
            else:
                sums = old.copy()
        else:  # merged kernels dropped (nothing appended): their entries go, the changed index moves down
            full_keep = np.concatenate([keep, np.ones(len(self.fixed_weights), bool)])
            sums = old[full_keep]
            changed -= int(np.count_nonzero(~keep[:changed]))
            self._drop(keep)
        fixed = len(self.fixed_weights) > 0
        centers = self.all_centers if fixed else self.centers
        values = self._kernels_at(centers, removed + added)
        k = 0
        for _, _, w in removed:
            sums -= w * values[:, k]
            k += 1
        for _, _, w in added:
            sums += w * values[:, k]
            k += 1
        sums[[changed]] = self.mixture_at(centers[[changed]], centers, self.all_sigmas if fixed else self.sigmas,
                                          self.all_weights if fixed else self.weights)
        self.center_sum = sums

    def _drop(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        full = np.concatenate([keep, np.ones(len(self.weights) - len(keep), bool)])
        self.centers, self.sigmas = self.centers[full], self.sigmas[full]
        self.weights, self.counts = self.weights[full], self.counts[full]

    def set_fixed(self, centers: np.ndarray, sigmas: np.ndarray, weights: np.ndarray) -> None:
        """Replace the fixed kernels (e.g. those of other walkers) and rebuild the sums."""
        c = np.asarray(centers, dtype=float).reshape(-1, self.d)
        s = np.asarray(sigmas, dtype=float).reshape(-1, self.d)
        w = np.asarray(weights, dtype=float).reshape(-1)
        if not (len(c) == len(s) == len(w)) or np.any(s <= 0) or np.any(w < 0):
            raise ValueError("fixed kernels need matching centers/sigmas/weights, sigmas > 0, weights >= 0")
        self.fixed_centers, self.fixed_sigmas, self.fixed_weights = c, s, w
        self.rebuild()

    def set_own(self, centers: np.ndarray, sigmas: np.ndarray, weights: np.ndarray, counts: np.ndarray) -> None:
        """Replace the own kernels (restart) and rebuild the sums."""
        self.centers = np.asarray(centers, dtype=float).reshape(-1, self.d).copy()
        self.sigmas = np.asarray(sigmas, dtype=float).reshape(-1, self.d).copy()
        self.weights = np.asarray(weights, dtype=float).reshape(-1).copy()
        self.counts = np.asarray(counts, dtype=int).reshape(-1).copy()
        self.rebuild()
