"""Training objectives for latent models.

All losses take per-frame weights ``w`` (shape=(batch,)) normalised inside, so frames from biased simulations can
be reweighted. Shapes: ``batch`` frames, ``F`` features, ``d`` latent dimensions.

* :func:`reconstruction_loss` — (time-lagged) autoencoder: weighted MSE between decoded and target standardised
  features. For the time-lagged autoencoder the target is the features at ``t + tau``.
* :func:`cv_alignment_loss` — reinforced-MD style anchoring (Kolossváry & Coffey): chosen latent dimensions are
  pulled onto user-given CVs, measured in units of each CV's standard deviation.
* :func:`fape_loss` — frame-aligned point error (AlphaFold-style, clamped) between decoded and true coordinates,
  using backbone N-CA-C frames.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .geometry import rigid_frames

__all__ = ["reconstruction_loss", "cv_alignment_loss", "fape_loss", "weighted_mean"]


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """Weighted mean over the first dimension of per-frame values (shape=(batch,))."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum()


def reconstruction_loss(predicted: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted mean squared error per feature.

    Parameters
    ----------
    predicted, target : Tensor, shape=(batch, F)
        Decoded and target standardised features.
    weights : Tensor, shape=(batch,), optional
    """
    return weighted_mean(((predicted - target) ** 2).mean(-1), weights)


def cv_alignment_loss(
    z: Tensor, cvs: Tensor, dims: list[int], cv_scale: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Mean squared deviation of chosen latent dimensions from given CVs, in units of the CVs' spread.

    Parameters
    ----------
    z : Tensor, shape=(batch, d)
    cvs : Tensor, shape=(batch, n_cv)
        Target CV values (their own units, e.g. nm for a pocket distance).
    dims : list of int, length n_cv
        Latent dimension trained to reproduce each CV.
    cv_scale : Tensor, shape=(n_cv,)
        Standard deviation of each CV on the training data (makes the loss dimensionless).
    weights : Tensor, shape=(batch,), optional

    Notes
    -----
    At the optimum ``z[:, dims[k]] == cvs[:, k]``: the anchored latent coordinates are in the CVs' units.
    """
    dev = (z[:, dims] - cvs) / cv_scale
    return weighted_mean((dev**2).mean(-1), weights)


def fape_loss(
    predicted: Tensor,
    target: Tensor,
    frame_atoms: Tensor,
    clamp: float = 1.0,
    length_scale: float = 0.1,
    weights: Tensor | None = None,
    eps: float = 1e-10,
) -> Tensor:
    """Frame-aligned point error between predicted and true coordinates.

    For every backbone frame k (built from N, CA, C) and every atom j, both structures are expressed in their own
    frame k and the distance between the two local positions is taken, clamped at ``clamp``, averaged and divided
    by ``length_scale``. Invariant to rigid motions of either structure; sensitive to chirality (unlike RMSD after
    a reflection-allowing fit).

    Parameters
    ----------
    predicted, target : Tensor, shape=(batch, n, 3)
        Coordinates, **nm**.
    frame_atoms : Tensor of int, shape=(n_frames, 3)
        Indices (into the n atoms) of N, CA and C for each backbone frame.
    clamp : float
        Distance clamp, **nm** (AlphaFold: 10 Å = 1.0 nm).
    length_scale : float
        Normalisation, **nm** (AlphaFold: 10 Å; we use 1 Å = 0.1 nm so the value reads in Å).
    weights : Tensor, shape=(batch,), optional

    Returns
    -------
    Tensor, scalar
    """

    def local(xyz: Tensor) -> Tensor:
        rot, origin = rigid_frames(
            xyz[:, frame_atoms[:, 0]], xyz[:, frame_atoms[:, 1]], xyz[:, frame_atoms[:, 2]], eps
        )  # (b, r, 3, 3), (b, r, 3)
        rel = xyz[:, None, :, :] - origin[:, :, None, :]  # (b, r, n, 3)
        return torch.einsum("brij,brni->brnj", rot, rel)

    err = torch.sqrt(((local(predicted) - local(target)) ** 2).sum(-1) + eps)  # (b, r, n)
    per_frame = torch.clamp(err, max=clamp).mean(dim=(1, 2)) / length_scale
    return weighted_mean(per_frame, weights)
