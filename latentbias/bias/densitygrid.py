r"""The OPES estimate as the Context's table: local kernel deposits, the logarithm taken in the force (issue 10 item 6).

The OPES bias :math:`V = (\alpha/\beta) \ln(P/Z + \epsilon)` is not additive: every deposit changes Z, which rescales
P/Z everywhere, so a table of V must be refitted on the whole grid after every deposit (``setGridValues``; ~4 ms on a
32³ grid). :class:`DensityGridLink` instead keeps the native ``LatentBiasForce``'s table equal to the kernel sum
:math:`S = \sum_k w_k N_c(\cdot; c_k, \sigma_k)` of a :class:`~latentbias.bias.kernels.KernelDensity` (additive), and
the force evaluates

.. math:: G(z) = s\,\frac{\alpha}{\beta} \ln\!\left(\frac{\max(S(z), 0)}{N} + \epsilon\right),\qquad
          \frac{\partial G}{\partial z} = s\,\frac{\alpha}{\beta}\,\frac{S'(z)}{S(z) + \epsilon N}\;(S(z) > 0)

(``LatentBiasForce.setGridLogTransform``; s = the grid scale parameter, N = a global parameter of the Context holding
Z·Σw = the mean of S over the kernel centres, the normalisation :class:`~latentbias.bias.opes.LatentOPES` uses; the
Σw of P = S/Σw cancels in P/Z). A deposit is then the kernels a :class:`KernelDensity` added and removed (compression)
— ``addGridKernel``, the exact truncated and shifted kernels of :mod:`latentbias.bias.kernels`, applied to the
Context's interpolant on their support only — and one ``Context.setParameter``. A recomputation of the sums from
scratch (:meth:`KernelDensity.rebuild`: every ``rebuild_interval`` updates, other walkers' kernels, a restart)
replaces the table as a whole (one full refit, amortised).

The interpolant differs from a table of V: the force interpolates S and takes the logarithm of the interpolated
value, where the table route interpolates ln(S/N + ε) itself. Both agree at the grid nodes; between nodes they differ
by the interpolation errors of the two functions (``benchmarks/RESULTS.md``, section "OPES deposits in the Context's
table", measures both against the exact kernel sum). How S is interpolated is ``interpolation``:

* ``"spline"``: OpenMM's cubic spline through the node values of S. Its node derivatives come from a global fit, so
  each kernel changes them along whole axes, and a spline of a kernel about one grid spacing wide rings.
* ``"hermite"`` (``LatentBiasForce.setGridInterpolation("hermite")``): the table holds S and its EXACT node
  derivatives (∂S/∂z_k, ∂²S/∂z_j∂z_k, ∂³S/∂z_0∂z_1∂z_2, those of the kernels' smooth part inside their cutoff, zero
  outside), so a kernel touches only its support (no fit, no tails). The force then interpolates V itself: at the
  2^d corners of the cell it turns S and its derivatives into V = (α/β) ln(max(S, 0)/N + ε) and V's derivatives
  (chain rule, N the Context's parameter) and evaluates V's cubic Hermite patch — Hermite interpolation of the exact
  V with its exact node derivatives, which follows V (≈ a parabola near each kernel) rather than a Gaussian whose
  relative error the logarithm magnifies. A whole-table push (after a :meth:`KernelDensity.rebuild`, other walkers'
  kernels, a restart) is the table zeroed and every kernel added again (cost ∝ number of kernels × support, no
  fit). The truncated kernel's first derivative jumps at its cutoff (by ≤ c e^{−c²/2}/σ of its peak scale); the
  table holds the inner derivative on the last node inside and zero outside, and the C1 patch spreads the jump over
  that cell.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backends import GridBiasBackend
from .kernels import KernelDensity

__all__ = ["DensityGridLink", "supports_density_grid", "supports_hermite_grid"]


def supports_density_grid(backend: GridBiasBackend) -> bool:
    """Whether ``backend`` is a native ``LatentBiasForce`` built with the log transform and kernel deposits."""
    force = getattr(backend, "force", None)
    return hasattr(force, "setGridLogTransform") and hasattr(force, "addGridKernel")


def supports_hermite_grid(backend: GridBiasBackend) -> bool:
    """Whether ``backend``'s ``LatentBiasForce`` can hold a Hermite table with exact node derivatives
    (``setGridInterpolation``) besides the log transform."""
    return supports_density_grid(backend) and hasattr(backend.force, "setGridInterpolation")


class DensityGridLink:
    """Keeps a native backend's table equal to a :class:`KernelDensity`'s grid sum, the force taking the logarithm.

    Parameters
    ----------
    backend : GridBiasBackend
        A native backend (:func:`supports_density_grid`); its force must not be in a Context yet (the transform is
        fixed when a Context is created).
    kde : KernelDensity
        Its ``journal`` is switched on (see :meth:`attach`).
    prefactor : float
        α/β of the bias (kJ/mol), > 0.
    epsilon : float
        ε of the bias, > 0.
    interpolation : {"spline", "hermite"}, default "spline"
        How the force interpolates the kernel sum between grid nodes (module docstring); "hermite" needs a plugin
        with ``setGridInterpolation`` (:func:`supports_hermite_grid`).

    Attributes
    ----------
    parameter : str
        Name of the Context's global parameter holding the normalisation N (``latent_bias_norm_<forceGroup>``).
    """

    def __init__(self, backend: GridBiasBackend, kde: KernelDensity, prefactor: float, epsilon: float,
                 interpolation: str = "spline"):
        if not supports_density_grid(backend):
            raise ValueError("the bias backend has no native LatentBiasForce with setGridLogTransform/addGridKernel; "
                             "use contextUpdate='refit' or rebuild the plugin")
        if not (prefactor > 0 and math.isfinite(prefactor) and epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"prefactor and epsilon must be finite and > 0, got {prefactor}, {epsilon}")
        self.backend = backend
        self.force = backend.force
        self.prefactor = float(prefactor)
        self.epsilon = float(epsilon)
        self.parameter = f"latent_bias_norm_{backend.force_group}"
        self.normalization = 1.0
        if interpolation not in ("spline", "hermite"):
            raise ValueError(f"interpolation must be 'spline' or 'hermite', got {interpolation!r}")
        if interpolation == "hermite" and not supports_hermite_grid(backend):
            raise ValueError("interpolation='hermite' needs a LatentBiasForce with setGridInterpolation (rebuild the "
                             "plugin of this version); use 'spline'")
        self.interpolation = interpolation
        if interpolation == "hermite":
            self.force.setGridInterpolation("hermite")
        self.force.setGridLogTransform(self.parameter, self.normalization, self.prefactor, self.epsilon)
        self.kde = kde
        self._generation: int | None = None  # the KernelDensity generation the force's table holds (None: none)
        self.attach(kde)

    def attach(self, kde: KernelDensity) -> None:
        """Follow ``kde`` (e.g. a new one after a restart): its whole grid sum is pushed at the next :meth:`push`."""
        self.kde = kde
        kde.journal = []
        self._generation = None

    def resync(self) -> None:
        """Replace the table as a whole at the next :meth:`push` (a full refit). Local updates leave the Context's
        interpolant equal to a refit of the same table up to rounding only; after a resync it is bit for bit the
        refit, which a run restored from a saved state (whose first push is a whole table) reproduces exactly."""
        self._generation = None

    def push(self, normalization: float, context: Any | None) -> None:
        """Bring the force's table up to the :class:`KernelDensity` (the journal of kernel changes, or the whole sum
        after a rebuild) and the normalisation N to ``normalization``; update ``context`` (if given): its interpolant
        locally (``updateParametersInContext``) and its parameter N (``setParameter``). N is also made the force's
        default, which Contexts created later start from."""
        norm = float(normalization)
        if not (norm > 0 and math.isfinite(norm)):
            raise ValueError(f"grid values must be finite: the OPES kernel sum is not (its normalisation Z = "
                             f"{normalization}; kernels narrower than the floating-point range allows?)")
        kde = self.kde
        if self._generation != kde.generation and self.interpolation == "hermite":
            # the whole table: zeros, then every kernel with its exact values and node derivatives (no fit)
            self.force.setGridValues([], [])
            self._addKernels(zip(kde.all_centers, kde.all_sigmas, kde.all_weights))
            self._generation = kde.generation
        elif self._generation != kde.generation:
            self.backend.set_grid(kde.grid_sum, None)
            self._generation = kde.generation
        else:
            self._addKernels(kde.journal)
        kde.journal.clear()
        if norm != self.normalization:
            self.normalization = norm
            self.force.setGridLogTransform(self.parameter, norm, self.prefactor, self.epsilon)
        if context is not None:
            context.setParameter(self.parameter, norm)
            self.force.updateParametersInContext(context)

    def _addKernels(self, kernels) -> None:
        """``addGridKernel`` for each (centre, σ, weight) of ``kernels`` (a negative weight removes one)."""
        cutoff = 0.0 if self.kde.cutoff is None else float(self.kde.cutoff)
        for center, sigma, weight in kernels:
            peak = abs(float(weight)) / float(np.prod(np.sqrt(2.0 * np.pi) * np.asarray(sigma, dtype=float)))
            if not math.isfinite(peak):
                raise ValueError(f"grid values must be finite: a kernel of weight {weight} and widths {sigma} "
                                 "has a peak beyond the floating-point range")
            self.force.addGridKernel([float(c) for c in center], [float(s) for s in sigma], float(weight), cutoff)
