r"""c(t) of a well-tempered metadynamics bias, kept up to date on the window each deposit changes.

:func:`~latentbias.analysis.reweight.well_tempered_ct` evaluates

.. math:: c_s(t) = kT \ln \frac{\sum_g e^{a\beta V_g}}{\sum_g e^{(a - s)\beta V_g}}, \qquad a = \frac{\gamma}{\gamma - 1},

over the whole grid: two log-sum-exps, ~2 × (grid size) exponentials. A deposit changes V only where its
Gaussian is non-negligible, so :class:`RunningCt` stores the terms :math:`e^{a\beta V_g - M_a}` and
:math:`e^{(a-s)\beta V_g - M_b}` per grid node and recomputes them only on that window (the same per-axis cut as
``LatentBiasForce.addGridGaussian``: nodes where every axis factor is below 1e-17 of its peak change by less than
the rounding of V and are left as they are), then sums the two arrays. The offsets M are the maxima at the last
full evaluation; V only grows between full evaluations (heights are positive), and a full evaluation is redone
when an exponent exceeds its offset by more than :data:`RESCALE_MARGIN`, every :data:`FULL_INTERVAL` updates
(to drop the neglected sub-rounding changes), and whenever the caller cannot name the window (other walkers'
bias, a restored state, a changed scale). The result equals the full log-sum-exp to rounding (~1e-15 relative;
tested).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..analysis.constants import kt_kjmol

__all__ = ["RunningCt", "gaussian_window", "FULL_INTERVAL", "RESCALE_MARGIN"]

#: Updates between full evaluations of the two sums.
FULL_INTERVAL = 100
#: Largest exponent above the stored offset before the sums are re-evaluated (e^200 is far from overflow).
RESCALE_MARGIN = 200.0


def gaussian_window(factors: Sequence[np.ndarray], cut: float = 1e-17) -> tuple[slice, ...]:
    """Per-axis slices [lo, hi] covering every node where a Gaussian's axis factor exceeds ``cut`` × its peak.

    Parameters
    ----------
    factors : sequence of numpy.ndarray, each shape=(n_k,)
        The per-axis factors of a separable Gaussian on the grid (:meth:`BiasGrid.gaussian_factors`).
    cut : float
        Relative threshold (1e-17: below double rounding of the Gaussian's height).

    Returns
    -------
    tuple of slice
        One slice per axis; an empty slice where a factor is zero everywhere.
    """
    window = []
    for g in factors:
        idx = np.flatnonzero(g > cut * g.max())
        window.append(slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0))
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

    def _full(self, bias: np.ndarray, scale: float) -> None:
        bv = bias / self._kt
        xa, xb = bv * self._a, bv * (self._a - scale)
        self._ma, self._mb = float(xa.max()), float(xb.max())
        self._ea, self._eb = np.exp(xa - self._ma), np.exp(xb - self._mb)
        self._scale = scale
        self._updates = 0

    def update(self, bias: np.ndarray, window: tuple[slice, ...]) -> None:
        """The bias changed (grew) only on ``window`` (slices per axis): recompute the terms there.

        Parameters
        ----------
        bias : numpy.ndarray, shape=grid shape
            The total bias V after the change, kJ/mol.
        window : tuple of slice
            Region outside which V did not change by more than its rounding.
        """
        if self._ea is None:
            return
        self._updates += 1
        if self._updates >= FULL_INTERVAL:
            self._ea = self._eb = None
            return
        bv = bias[window] / self._kt
        xa, xb = bv * self._a, bv * (self._a - self._scale)
        if xa.size and (float(xa.max()) - self._ma > RESCALE_MARGIN or float(xb.max()) - self._mb > RESCALE_MARGIN):
            self._ea = self._eb = None
            return
        xa -= self._ma
        xb -= self._mb
        self._ea[window] = np.exp(xa, out=xa)
        self._eb[window] = np.exp(xb, out=xb)

    def value(self, bias: np.ndarray, scale: float = 1.0) -> float:
        """c_s(t) (kJ/mol) of ``bias`` (the same array the updates described) for the acting scale s.

        Parameters
        ----------
        bias : numpy.ndarray, shape=grid shape
            Total bias V, kJ/mol (used for a full evaluation when the stored terms are missing or stale).
        scale : float
            s ≥ 0 of the acting bias s·V (1 normally, 0 gives c = 0).
        """
        if self._ea is None or scale != self._scale:
            self._full(bias, float(scale))
        log_ratio = (math.log(float(self._ea.sum())) + self._ma) - (math.log(float(self._eb.sum())) + self._mb)
        return float(self._kt * log_ratio)
