r"""Truncated kernels: the cutoff that makes a metadynamics or OPES deposit change only the grid near its centre.

An untruncated Gaussian changes every node of the bias grid, so every deposit costs as much as the grid is large
(the Python grid, c(t), the Context's interpolant). PLUMED truncates its kernels; this module holds the two
truncations used here and their error bounds.

**Metadynamics** (:class:`~latentbias.bias.metadynamics.LatentMetadynamics`, ``kernelCutoff``). PLUMED's METAD
drops a hill where ½ Σ_k u_k² ≥ DP2CUTOFF = 6.25 (u_k = Δz_k/σ_k), i.e. beyond a Mahalanobis distance
c = √12.5 ≈ 3.54 σ, and since PLUMED 2.8 "stretches" the hill so that it falls to zero there continuously while its
peak stays h. That cut is spherical, hence not a product of per-axis factors, and the Context's interpolant can only
be updated locally for a separable kernel (:meth:`LatentBiasForce.addGridGaussian` applies outer products of
per-axis vectors to the spline's node derivatives). Here each axis factor is cut and stretched the same way:

.. math:: g_c(u) = \frac{e^{-u^2/2} - e^{-c^2/2}}{1 - e^{-c^2/2}}\;(|u| < c), \qquad 0\;(|u| \ge c),

and the kernel is h Π_k g_c(u_k): continuous, peak h, zero outside the box |u_k| < c (which contains PLUMED's
sphere). Truncation error against the untruncated h Π_k e^{−u_k²/2}: per axis |g_c − e^{−u²/2}| ≤ e^{−c²/2}
(= e^{−6.25} = 0.19 % at the default c = √12.5, as PLUMED's value at its cutoff), so at most
d · e^{−c²/2}/(1 − e^{−c²/2}) · h for the product (0.58 % of one height at d = 3; :func:`product_error_bound`);
the kernel's volume is smaller by the factor Π_k (1 − ε_c) with ε_c = 1 − ∫g_c/√(2π) (0.39 % per axis at the
default; :func:`volume_deficit`). A well-tempered bias converges to −(1 − 1/γ)F whatever the kernel's volume (the
heights adapt), so the cutoff changes the bias by a fraction of one (decaying) height near every kernel's edge;
its measured effect on c(t) and on a reweighted ΔF is in ``benchmarks/RESULTS.md``.

**OPES** (:class:`~latentbias.bias.opes.LatentOPES`, ``kernelCutoff``): PLUMED's OPES_METAD truncates each
(normalised) kernel at a Mahalanobis distance c and shifts it, G(s) − G at the cutoff (no stretch), with the
default c = √(2 βΔE/α) (α = 1 − 1/γ; OPES-explore: √(2 βΔE)), where the shifted-away value e^{−c²/2} equals ε of
the bias V = (α/β) ln(P/Z + ε): tails below it are below the regularisation of the logarithm. OPES evaluates its
kernels in Python on the grid, so the spherical cut is kept exactly as PLUMED's (:func:`opes_default_cutoff`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "METAD_DEFAULT_CUTOFF",
    "truncated_gaussian",
    "product_error_bound",
    "volume_deficit",
    "opes_default_cutoff",
]

#: PLUMED's METAD cutoff, ½u² < DP2CUTOFF = 6.25, as a distance in widths: √12.5 ≈ 3.536.
METAD_DEFAULT_CUTOFF = math.sqrt(2.0 * 6.25)


def check_cutoff(cutoff: float | None, name: str = "kernelCutoff") -> float | None:
    """``cutoff`` validated: None (untruncated) or a finite number of widths > 1."""
    if cutoff is None:
        return None
    value = float(cutoff)
    if not (math.isfinite(value) and value > 1.0):
        raise ValueError(f"{name} must be None (untruncated kernels) or a finite number of widths > 1, got {cutoff!r}")
    return value


def truncated_gaussian(u: np.ndarray, cutoff: float | None) -> np.ndarray:
    """Axis factor g_c(u) of a deposited kernel (u = Δz/σ): e^{−u²/2} when ``cutoff`` is None, else the cut and
    stretched factor of the module docstring (exactly 0 for |u| ≥ c). Same arithmetic as the plugin's
    ``LatentBiasGrid::gaussianFactor``."""
    u = np.asarray(u, dtype=float)
    g = np.exp(-0.5 * u**2)
    if cutoff is None:
        return g
    at_cutoff = math.exp(-0.5 * cutoff * cutoff)
    return np.where(np.abs(u) < cutoff, (g - at_cutoff) / (1.0 - at_cutoff), 0.0)


def product_error_bound(cutoff: float, ndim: int) -> float:
    """Upper bound on |h Π g_c(u_k) − h Π e^{−u_k²/2}| / h over all z: d · e^{−c²/2} / (1 − e^{−c²/2})."""
    at_cutoff = math.exp(-0.5 * cutoff * cutoff)
    return ndim * at_cutoff / (1.0 - at_cutoff)


def volume_deficit(cutoff: float) -> float:
    """1 − ∫g_c du / √(2π): the fraction of one axis factor's integral the cut removes."""
    at_cutoff = math.exp(-0.5 * cutoff * cutoff)
    inside = math.sqrt(2.0 * math.pi) * math.erf(cutoff / math.sqrt(2.0)) - 2.0 * cutoff * at_cutoff
    return 1.0 - inside / (1.0 - at_cutoff) / math.sqrt(2.0 * math.pi)


def opes_default_cutoff(barrier_over_kt: float, alpha: float, explore: bool) -> float:
    """PLUMED's default OPES ``KERNEL_CUTOFF`` (in widths): √(2 βΔE/α) for OPES-METAD, √(2 βΔE) for explore."""
    return math.sqrt(2.0 * barrier_over_kt) if explore else math.sqrt(2.0 * barrier_over_kt / alpha)
