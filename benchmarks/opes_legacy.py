"""The OPES deposit path as it was before the fast path of helper opespy10 (kept here only, for
``deposit_cost.py --method opes``: old and new side by side, and the check that both give the same runs).

:class:`LegacyKernelDensity` and :class:`LegacyOPES` are the code of ``latentbias/bias/kernels.py`` and
``latentbias/bias/opes.py`` at commit 1a6a814, copied verbatim (method by method) onto subclasses of today's classes.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from latentbias.bias import LatentOPES
from latentbias.bias.kernels import _CHUNK, KernelDensity

logger = logging.getLogger("latentbias.bias.opes")


class LegacyKernelDensity(KernelDensity):
    """KernelDensity with the deposit path of before the fast path."""

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


class LegacyOPES(LatentOPES):
    """LatentOPES with the deposit path (c(t), V on the grid, records) and KernelDensity of before the fast path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kde = self.kde
        self.kde = LegacyKernelDensity(self.grid, kde.threshold, kde.rebuild_interval, cutoff=kde.cutoff)
        if self._densityLink is not None:
            self._densityLink.attach(self.kde)
        self._refreshBias()

    def _computeBiasGrid(self) -> np.ndarray:
        if self.kde.num_kernels == 0:
            return np.full(self.grid.shape, -self.barrier)
        return self._biasFromSums(self.kde.grid_sum, self._normalization())  # the normalisation Σw cancels in P/Z

    def ct(self) -> float:
        """c(t) (kJ/mol) of the current bias: −kT ln⟨e^{−βV}⟩ over P_n (METAD) or kT ln⟨e^{βV}⟩ over p^WT_n
        (explore), on the grid; −ΔE (the flat initial bias) before the first kernel."""
        if self.kde.num_kernels == 0:
            return -self.barrier
        u = self._uniqueNodes()
        p = np.maximum(self.kde.grid_sum[u], 0.0).ravel()
        keep = p > 0
        # V only where the estimate is non-zero (the same values as on the whole grid)
        v = self._biasFromSums(p[keep], self._normalization()) / self._kt
        logp = np.log(p[keep]) - np.log(p[keep].sum())
        if self.explore:
            return float(self._kt * np.logaddexp.reduce(logp + v))
        return float(-self._kt * np.logaddexp.reduce(logp - v))

    def _deposit(self, simulation: Any) -> None:
        from openmm import unit

        context = simulation.context
        z = self.backend.latent_values(context)
        acting = self.backend.energy(context)  # scale * V(z) + walls
        wall = self.backend.wall_energy(z)
        scale = self.backend.scale
        bias = (acting - wall) / scale if scale > 0 else float(self.biasAt(z[None])[0])
        ct = self.ct()
        state = context.getState(getPositions=self._trajectory is not None)
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        self._record(simulation.currentStep, time_ps, z, bias, wall, ct, self.rct())
        if self._trajectory is not None:
            self._trajectory.write(simulation, state, self.pace)
        if not self.depositionEnabled:
            return
        if not self._sigma0Set:  # first deposit with adaptive σ: the samples so far were unbiased
            self._avM2 = self._avM2 * self._sigmaFactor
            self._sigma0 = np.sqrt(self._avM2 / self._adaptiveCounter / self._sigmaFactor)
            self._sigma0Set = True
            if not np.all(self._sigma0 > 0):
                raise RuntimeError(f"adaptive sigma is zero ({self._sigma0}); the CV did not move, give a fixed sigma")
        w = math.exp(bias / self._kt)
        self._sumW += w
        self._sumW2 += w * w
        self._count += 1
        sigma = self.getSigma()  # N_eff counts the new sample, as in PLUMED
        self._warnIfGridTooCoarse(sigma)
        self.kde.add(z, sigma, 1.0 if self.explore else w)
        self._nDeposits += 1
        self._refreshBias()
        self.updateContext(context)

    def _warnIfGridTooCoarse(self, sigma: np.ndarray) -> None:
        """Warn once when the shrinking kernels become narrower than the grid spacing: from then on the acting bias
        (the spline through the grid values) smooths single kernels away. Reweighting stays exact — frames are
        weighted by the bias that acted — but the bias no longer follows the OPES estimate at the σ scale."""
        if self._coarseGridWarned:
            return
        axes = self.grid.axes
        spacing = np.array([a[1] - a[0] for a in axes])
        if np.any(sigma < spacing):
            self._coarseGridWarned = True
            needed = [int(np.ceil((a[-1] - a[0]) / sk)) + 1 for a, sk in zip(axes, sigma)]
            logger.warning("OPES kernel width %s is now below the grid spacing %s after %d deposits: the acting bias "
                           "(a spline through the grid values) no longer resolves single kernels, so it follows the "
                           "OPES estimate only coarsely (reweighting is unaffected). Use more grid points (about %s "
                           "per variable for the current width; kernels keep shrinking as N_eff grows).",
                           np.array2string(sigma, precision=3), np.array2string(spacing, precision=3),
                           self._nDeposits, needed)
