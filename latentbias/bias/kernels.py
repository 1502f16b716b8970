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

Updates are incremental (cost ∝ grid size + number of kernels); a full rebuild every ``rebuild_interval`` updates
removes the rounding that subtractions accumulate.

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
        empty = np.zeros((0, self.d))
        self.centers, self.sigmas, self.weights, self.counts = empty.copy(), empty.copy(), np.zeros(0), np.zeros(0, int)
        self.fixed_centers, self.fixed_sigmas, self.fixed_weights = empty.copy(), empty.copy(), np.zeros(0)
        self.grid_sum = np.zeros(grid.shape)
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

    # ----------------------------------------------------------------------------------------- geometry

    def wrap(self, points: np.ndarray) -> np.ndarray:
        """Points with periodic coordinates brought into [min, max)."""
        p = np.array(points, dtype=float)
        per = self._periods > 0
        if per.any():
            p[..., per] = self._lows[per] + np.mod(p[..., per] - self._lows[per], self._periods[per])
        return p

    def displacement(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """b − a with the minimum image along periodic axes (broadcasting over leading axes)."""
        dv = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
        per = self._periods > 0
        if per.any():
            dv[..., per] -= self._periods[per] * np.rint(dv[..., per] / self._periods[per])
        return dv

    def kernel_window(self, center: np.ndarray, sigma: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
        """The kernel on the grid nodes where it can be non-zero: (per-axis slices, values on them).

        Untruncated: the whole grid (:meth:`kernel_on_grid`). Truncated: the nodes within ``cutoff`` σ of the
        centre along each axis (minimum image; the whole axis when the box wraps around a periodic axis), with
        the truncated, shifted kernel on them (0 where the Mahalanobis distance is ≥ cutoff).
        """
        if self.cutoff is None:
            return tuple(slice(None) for _ in self._axes), self.kernel_on_grid(center, sigma)
        window, scaled = [], []
        for j, axis in enumerate(self._axes):
            n = len(axis)
            period = self._periods[j]
            reach = self.cutoff * sigma[j]
            lo_z, hi_z = center[j] - reach, center[j] + reach
            spacing = (axis[-1] - axis[0]) / (n - 1)
            lo = max(0, math.floor((lo_z - axis[0]) / spacing))
            hi = min(n, math.ceil((hi_z - axis[0]) / spacing) + 1)
            win = slice(lo, max(lo, hi))
            if period > 0 and (lo == 0 or hi >= n):  # lo_z <= axis[0] gives lo = 0, hi_z >= axis[-1] hi = n
                win = slice(0, n)  # the box reaches the seam: its first and last node are one point
            dx = axis[win] - center[j]
            if period > 0:
                dx = dx - period * np.rint(dx / period)
            u = dx / sigma[j]
            if period > 0 and win.stop == n and win.start == 0:
                u[-1] = u[0]  # the last node is the first one
            window.append(win)
            scaled.append(u * u)
        r2 = scaled[0]
        for part in scaled[1:]:
            r2 = np.add.outer(r2, part)
        norm = float(np.prod(math.sqrt(2.0 * math.pi) * np.asarray(sigma)))
        block = np.where(r2 < self.cutoff**2, np.exp(-0.5 * r2) - self._at_cutoff, 0.0) / norm
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
        out = np.zeros(len(pts))
        for start in range(0, len(centers), _CHUNK):
            c, s, w = centers[start:start + _CHUNK], sigmas[start:start + _CHUNK], weights[start:start + _CHUNK]
            dv = self.displacement(c[None, :, :], pts[:, None, :]) / s[None]
            norm = np.prod(math.sqrt(2.0 * math.pi) * s, axis=1)
            r2 = np.sum(dv * dv, axis=2)
            if self.cutoff is None:
                out += np.exp(-0.5 * r2) @ (w / norm)
            else:
                out += np.where(r2 < self.cutoff**2, np.exp(-0.5 * r2) - self._at_cutoff, 0.0) @ (w / norm)
        return out

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
        dist2 = np.sum((self.displacement(self.centers, center) / self.sigmas) ** 2, axis=1)
        if keep is not None:
            dist2[~keep] = np.inf
        if 0 <= exclude < len(dist2):
            dist2[exclude] = np.inf
        k = int(np.argmin(dist2))
        return k if dist2[k] < self.threshold**2 else -1

    def _merged(self, k: int, c2: np.ndarray, s2: np.ndarray, w2: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Kernel k merged with (c2, s2, w2): weight, mean and second moment conserved."""
        c1, s1, w1 = self.centers[k], self.sigmas[k], self.weights[k]
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
        if c.shape != (self.d,) or s.shape != (self.d,) or not np.all(s > 0) or not (w > 0 and math.isfinite(w)):
            raise ValueError(f"bad kernel: center {center}, sigma {sigma}, weight {weight}")
        removed: list[tuple[np.ndarray, np.ndarray, float]] = []
        added: list[tuple[np.ndarray, np.ndarray, float]] = []
        n_own = len(self.weights)
        keep = np.ones(n_own, bool)
        taker = self._nearest(c)
        if taker < 0:
            self.centers = np.vstack([self.centers, c])
            self.sigmas = np.vstack([self.sigmas, s])
            self.weights = np.append(self.weights, w)
            self.counts = np.append(self.counts, 1)
            changed = [n_own]
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
                keep[giver] = False
                giver = other
            added.append((self.centers[giver].copy(), self.sigmas[giver].copy(), self.weights[giver]))
            changed = [giver]
        self._update_sums(removed, added, keep, changed)

    def _update_sums(self, removed, added, keep: np.ndarray, changed: list[int]) -> None:
        n_old_own = len(keep)
        n_new_own = len(self.weights)  # before dropping the givers
        self._updates += 1
        if self._updates >= self.rebuild_interval:
            self._drop(keep)
            self.rebuild()
            return
        for c, s, w in removed:
            self.add_kernel_to(self.grid_sum, c, s, -w)
        for c, s, w in added:
            self.add_kernel_to(self.grid_sum, c, s, w)
        if self.journal is not None:
            self.journal.extend([(c, s, -w) for c, s, w in removed] + list(added))
        # centre sums: old entries (own, then fixed), plus a slot for an appended kernel
        old = self.center_sum
        if n_new_own > n_old_own:
            old = np.concatenate([old[:n_old_own], [0.0], old[n_old_own:]])
        full_keep = np.concatenate([keep, np.ones(n_new_own - n_old_own, bool), np.ones(len(self.fixed_weights), bool)])
        self._drop(keep)
        # map the changed own index to its position after dropping the givers
        new_index = np.cumsum(full_keep) - 1
        changed_new = [int(new_index[i]) for i in changed]
        centers = self.all_centers
        sums = old[full_keep]
        for c, s, w in removed:
            sums -= w * self.mixture_at(centers, c[None], s[None], np.ones(1))
        for c, s, w in added:
            sums += w * self.mixture_at(centers, c[None], s[None], np.ones(1))
        if changed_new:
            sums[changed_new] = self.mixture_at(centers[changed_new], centers, self.all_sigmas, self.all_weights)
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
