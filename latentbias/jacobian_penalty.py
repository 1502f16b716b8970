"""A smoothness (Jacobian) penalty for encoders, and the fold measure it acts on.

Why: a tanh encoder can *fold* — a few degrees of a torsion map onto a wide range of a latent coordinate. Bias
kernels have a fixed width in latent units (a fraction of the latent range), so at a fold they become ridges in
configuration space that are stiffer than the force field, and a 2 fs time step then samples a wrong biased
ensemble (benchmarks/RESULTS.md, "time step under a stiff latent bias"; :mod:`latentbias.bias.stiffness`).

What is penalised. With x the *standardised* features (zero mean, unit variance per feature: every feature is
measured in its own spread, so features in nm and dimensionless ones weigh the same) and z_k the k-th latent
coordinate, the per-frame, per-dimension fold measure is

    g_k(x) = |d z_k / d x|^2 / Var_w(z_k)                                                        (dimensionless)

— the squared slope of z_k in units of z_k's own (weighted) spread per feature spread. The penalty is a squared
hinge at ``FOLD_CAP`` = 1, averaged over the batch: ``lambda * E_w[sum_k max(g_k - 1, 0)^2]``. Choices, and why:

* **Normalised by Var(z_k)**: bias kernel widths are fractions of the latent range, so a fold does harm in
  proportion to the slope *relative to the spread* of z (the bias's curvature scales as g_k / sigma_rel^2). An
  un-normalised contractive penalty E|J|^2 (Rifai et al. 2011) can be met by shrinking z while the decoder's
  first layer grows, without removing a fold; g_k is invariant to rescaling z_k.
* **Cap 1**: a linear projection of the standardised features onto a principal direction with eigenvalue c has
  g_k = 1/c at every frame, so g_k <= 1 for every direction of above-average variance; slopes above it are
  nonlinear steepening, and a fold of the kind that made the biases stiff (a latent coordinate crossing its range
  within a few degrees of a torsion) has g_k of 10-100 or more (measured: benchmarks/RESULTS.md).
* **Hinge on the large values, not the mean**: the mean, E_w[g] (a contractive penalty normalised by the spread;
  the Rayleigh quotient of the Dirichlet form that spectral methods minimise), was tried first and made folds
  *worse relative to the rest*: its minimisers are flat inside the sampled basins and steep where frames are
  sparse (on ala/gly campaign data the median g fell 10-40x, the maximum not at all). The hinge leaves the
  encoder free below the cap and pushes only the steep frames down (maximum g 18-24 -> 2.9 at lambda = 0.1 on the
  same data).

Cost: one extra backward pass per latent dimension with ``create_graph=True`` (double backward) per training
step: 1.8x the CPU time per epoch for the 2-D, 32x32 encoder of examples/ala_gly_compare.toml
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FOLD_CAP", "latent_gradient_sq", "fold_measure", "jacobian_penalty"]

#: Slope cap of the hinge, in latent spreads per feature spread, squared (see the module docstring).
FOLD_CAP = 1.0


def latent_gradient_sq(encoder: torch.nn.Module, x: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """Latent coordinates and the squared norm of each one's gradient with respect to the input, per frame.

    Parameters
    ----------
    encoder : torch.nn.Module
        Maps x, shape=(batch, F), to z, shape=(batch, d), frame by frame (no coupling between frames, e.g. no
        batch normalisation: the batch sum's gradient is then the per-frame gradient).
    x : Tensor, shape=(batch, F)
        Encoder inputs (standardised features); need not require grad.
    create_graph : bool, default True
        Keep the graph so the result can be differentiated again (training); False for diagnostics.

    Returns
    -------
    z : Tensor, shape=(batch, d)
    grad_sq : Tensor, shape=(batch, d)
        |d z_k / d x|^2 per frame and latent dimension, (latent units per standardised feature unit)^2.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        z = encoder(x)
        cols = []
        for k in range(z.shape[1]):
            (g,) = torch.autograd.grad(z[:, k].sum(), x, create_graph=create_graph, retain_graph=True)
            cols.append((g * g).sum(-1))
        grad_sq = torch.stack(cols, dim=-1)
    if not create_graph:
        z, grad_sq = z.detach(), grad_sq.detach()
    return z, grad_sq


def _weighted_var(z: Tensor, weights: Tensor | None) -> Tensor:
    """Weighted variance of each column of z, shape=(d,)."""
    w = torch.ones(len(z), dtype=z.dtype, device=z.device) if weights is None else weights
    w = w / w.sum()
    mean = (w[:, None] * z).sum(0)
    return (w[:, None] * (z - mean) ** 2).sum(0)


def fold_measure(z: Tensor, grad_sq: Tensor, weights: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Per-frame, per-dimension fold measure g_k = |grad z_k|^2 / Var_w(z_k) (dimensionless), shape=(batch, d).

    Parameters
    ----------
    z, grad_sq : Tensor, shape=(batch, d)
        From :func:`latent_gradient_sq`.
    weights : Tensor, shape=(batch,), optional
        Frame weights of the variance (uniform if None).
    eps : float, default 1e-12
        Added to each variance (a constant latent coordinate gives a finite, large value instead of inf).
    """
    return grad_sq / (_weighted_var(z, weights) + eps)


def jacobian_penalty(z: Tensor, grad_sq: Tensor, weights: Tensor | None = None, cap: float = FOLD_CAP) -> Tensor:
    """Weighted batch mean of sum_k max(g_k - cap, 0)^2 (scalar, dimensionless); multiply by lambda in the loss.

    Parameters
    ----------
    z, grad_sq : Tensor, shape=(batch, d)
        From :func:`latent_gradient_sq` (with ``create_graph=True`` to train on it).
    weights : Tensor, shape=(batch,), optional
        Frame weights (uniform if None); also weigh the variances of :func:`fold_measure`.
    cap : float, default 1.0
        Hinge position :data:`FOLD_CAP`.
    """
    excess = torch.relu(fold_measure(z, grad_sq, weights) - cap)
    per_frame = (excess * excess).sum(-1)
    if weights is None:
        return per_frame.mean()
    return (per_frame * weights).sum() / weights.sum()
