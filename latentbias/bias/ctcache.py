r"""c(t) of a well-tempered metadynamics bias, kept up to date on the window each deposit changes.

:func:`~latentbias.analysis.reweight.well_tempered_ct` evaluates

.. math:: c_s(t) = kT \ln \frac{\sum_g e^{a\beta V_g}}{\sum_g e^{(a - s)\beta V_g}}, \qquad a = \frac{\gamma}{\gamma - 1},

over the whole grid: two log-sum-exps, ~2 × (grid size) exponentials per deposit. A deposit of height h changes V
only where its Gaussian is non-negligible, so :class:`RunningCt` stores the terms :math:`e^{a\beta V_g - M_a}` and
:math:`e^{(a-s)\beta V_g - M_b}` per grid node and their two sums, and after a deposit recomputes the terms only
on the deposit's window (:meth:`RunningCt.window`): the nodes where every axis factor of the Gaussian is at least
τ = 1e-14 / (aβh). A node left out changes by less than aβh·τ = 1e-14 in relative terms, so the sums — and
ln Σ, i.e. c/kT — are off by less than 1e-14 per deposit; a full evaluation every :data:`FULL_INTERVAL`
deposits bounds the drift by 1e-12 kT. When the window is most of the grid (a Gaussian wide compared with the
grid, e.g. σ = 1.5 spacings on a 32³ grid, where the 1e-14 cut spans ~29 of 32 nodes per axis) the terms are
recomputed on the whole grid instead, with the same offsets (contiguous passes are cheaper than strided ones). The offsets M are the maxima at the last full evaluation; V only grows
between full evaluations (heights are positive) and a full evaluation is redone when the summed heights since the
last one could have moved an exponent by :data:`RESCALE_MARGIN`, and whenever the caller cannot name the window (other
walkers' bias, a restored state, a changed scale: :meth:`RunningCt.invalidate`). Tested against the full
log-sum-exp (``tests/test_deposit_records.py``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..analysis.constants import kt_kjmol

__all__ = ["RunningCt", "gaussian_window", "FULL_INTERVAL", "RESCALE_MARGIN", "WINDOW_ERROR"]

#: Updates between full evaluations of the two sums.
FULL_INTERVAL = 100
#: Largest exponent above the stored offset before the sums are re-evaluated (e^200 is far from overflow).
RESCALE_MARGIN = 200.0
#: Bound on the relative change of the sums that one deposit's window leaves out.
WINDOW_ERROR = 1e-14
#: Above this fraction of the grid, a window is updated as the whole grid (contiguous passes).
WINDOW_FRACTION = 0.4


def gaussian_window(grid, center: Sequence[float], cut: float) -> tuple[slice, ...]:
    """Per-axis slices of the grid nodes where a Gaussian's axis factor ``exp(-0.5 (Δz/biasWidth)^2)`` can reach
    ``cut`` (a superset: the nodes within biasWidth·sqrt(2 ln(1/cut)) of the centre plus one node of margin on
    each side; the whole axis when that interval wraps a periodic axis).

    Parameters
    ----------
    grid : BiasGrid
    center : sequence of float, shape=(d,)
        Gaussian centre (z units).
    cut : float
        0 < cut < 1.

    Returns
    -------
    tuple of slice
        One slice per axis (possibly empty, for a centre far beyond a non-periodic edge).
    """
    if not 0.0 < cut < 1.0:
        raise ValueError(f"cut must lie in (0, 1), got {cut}")
    reach = math.sqrt(2.0 * math.log(1.0 / cut))
    window = []
    for c, v in zip(center, grid.variables):
        n = v.gridWidth
        spacing = (v.maxValue - v.minValue) / (n - 1)
        lo_z, hi_z = float(c) - reach * v.biasWidth, float(c) + reach * v.biasWidth
        if v.periodic:
            period = v.maxValue - v.minValue
            shift = period * math.floor((float(c) - v.minValue) / period)
            lo_z, hi_z = lo_z - shift, hi_z - shift  # centre brought into [min, max)
            if lo_z <= v.minValue or hi_z >= v.maxValue:
                window.append(slice(0, n))
                continue
        lo = max(0, math.floor((lo_z - v.minValue) / spacing) - 1)
        hi = min(n, math.ceil((hi_z - v.minValue) / spacing) + 2)
        window.append(slice(lo, max(lo, hi)))
    return tuple(window)


class RunningCt:
    """c_s(t) of a well-tempered metadynamics bias on a grid, updated locally after each deposit.

    Parameters
    ----------
    temperature : float
        Simulation temperature T, K.
    biasFactor : float
        γ > 1.
    """

    def __init__(self, temperature: float, biasFactor: float):
        self._kt = kt_kjmol(temperature)
        gamma = float(biasFactor)
        self._a = gamma / (gamma - 1.0)
        self._scale: float | None = None
        self._ea: np.ndarray | None = None
        self._eb: np.ndarray | None = None
        self._updates = 0

    def invalidate(self) -> None:
        """Forget the stored terms (the bias changed in a way the caller does not describe by a window)."""
        self._ea = self._eb = None

    def window(self, grid, center: Sequence[float], height: float) -> tuple[slice, ...]:
        """The nodes a deposit of ``height`` (kJ/mol) at ``center`` must update: for a grid of truncated kernels
        (``grid.kernelCutoff`` set) exactly the kernel's support (``BiasGrid.support``; nothing changes beyond it),
        otherwise :func:`gaussian_window` with cut τ = WINDOW_ERROR / (aβ·height)."""
        if getattr(grid, "kernelCutoff", None) is not None:
            return grid.support(grid.gaussian_factors(center))
        kappa = self._a * abs(float(height)) / self._kt
        cut = min(0.5, WINDOW_ERROR / kappa) if kappa > 0 else 0.5
        return gaussian_window(grid, center, cut)

    def _full(self, bias: np.ndarray, scale: float) -> None:
        bv = bias / self._kt
        xa, xb = bv * self._a, bv * (self._a - scale)
        self._ma, self._mb = float(xa.max()), float(xb.max())
        # both terms in one array, [0] = e^{aβV − M_a}, [1] = e^{(a−s)βV − M_b}, so that a window update is one
        # numpy call per step for both
        self._terms = np.empty((2,) + bias.shape)
        np.exp(xa - self._ma, out=self._terms[0])
        np.exp(xb - self._mb, out=self._terms[1])
        self._ea, self._eb = self._terms[0], self._terms[1]
        self._sa, self._sb = float(self._ea.sum()), float(self._eb.sum())
        self._coef = np.array([self._a / self._kt, (self._a - scale) / self._kt])
        self._offset = np.array([self._ma, self._mb]).reshape((2,) + (1,) * bias.ndim)
        self._sumAxes = tuple(range(1, bias.ndim + 1))
        self._growth = 0.0
        self._scale = scale
        self._updates = 0

    def update(self, bias: np.ndarray, window: tuple[slice, ...], height: float) -> None:
        """The bias grew by at most ``height`` and only on ``window`` (beyond it by less than the window's cut):
        recompute the terms there.

        Parameters
        ----------
        bias : numpy.ndarray, shape=grid shape
            The total bias V after the change, kJ/mol.
        window : tuple of slice
            :meth:`window` of the deposit.
        height : float
            The deposit's height (kJ/mol, > 0), bounding the growth of max V.
        """
        if self._ea is None:
            return
        self._updates += 1
        self._growth += abs(float(height))
        ca, cb = self._a / self._kt, (self._a - self._scale) / self._kt
        # V grew by at most _growth since the offsets were set: every exponent moved by at most |c|·_growth
        # (up: overflow; down, for a scale s > a: underflow of the whole sum)
        if self._updates >= FULL_INTERVAL or max(abs(ca), abs(cb)) * self._growth > RESCALE_MARGIN:
            self._ea = self._eb = None
            return
        size = 1
        for w, n in zip(window, bias.shape):
            size *= len(range(*w.indices(n)))
        if size > WINDOW_FRACTION * bias.size:
            # the window is most of the grid (a wide Gaussian on a small grid): contiguous whole-grid passes with
            # the same offsets are cheaper than strided ones, and exact
            for terms, c, m in ((self._ea, ca, self._ma), (self._eb, cb, self._mb)):
                np.multiply(bias, c, out=terms)
                terms -= m
                np.exp(terms, out=terms)
            self._sa, self._sb = float(self._ea.sum()), float(self._eb.sum())
            return
        if size == 0:
            return
        # both terms on the window at once: x[0] = aβV − M_a, x[1] = (a−s)βV − M_b (the same products and
        # differences, node by node, as term by term), then the sums' changes
        x = np.multiply.outer(self._coef, bias[window])
        x -= self._offset
        np.exp(x, out=x)
        where = (slice(None),) + tuple(window)
        change = (x.sum(axis=self._sumAxes) - self._terms[where].sum(axis=self._sumAxes)).tolist()
        self._terms[where] = x
        self._sa += change[0]
        self._sb += change[1]

    def value(self, bias: np.ndarray, scale: float = 1.0) -> float:
        """c_s(t) (kJ/mol) of ``bias`` (the same array the updates described) for the acting scale s.

        Parameters
        ----------
        bias : numpy.ndarray, shape=grid shape
            Total bias V, kJ/mol (used for a full evaluation when the stored terms are missing or stale).
        scale : float, default 1.0
            s ≥ 0 of the acting bias s·V (1 normally, 0 gives c = 0).
        """
        if self._ea is None or scale != self._scale:
            self._full(bias, float(scale))
        log_ratio = (math.log(self._sa) + self._ma) - (math.log(self._sb) + self._mb)
        return float(self._kt * log_ratio)
