"""Differentiable, TorchScript-compatible geometry kernels shared by the featurizers and losses.

All functions accept arbitrary leading batch dimensions. Lengths are in **nm**.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def minimum_image(delta: Tensor, box: Optional[Tensor]) -> Tensor:
    """Apply the minimum-image convention to displacement vectors.

    Parameters
    ----------
    delta : Tensor, shape=(..., m, 3)
        Displacements, **nm**.
    box : Tensor or None, shape=(3, 3) or (..., 3, 3)
        Periodic box vectors as rows in OpenMM's reduced form (``a = (ax, 0, 0)``, ``b = (bx, by, 0)``,
        ``c = (cx, cy, cz)``), **nm**. ``None`` returns ``delta`` unchanged.

    Returns
    -------
    Tensor, shape=(..., m, 3)
        Displacements reduced into the box the way OpenMM does (triclinic-aware).
    """
    if box is None:
        return delta
    box = box.to(delta.dtype)
    for axis in [2, 1, 0]:
        vec = box[..., axis : axis + 1, :]
        length = box[..., axis : axis + 1, axis : axis + 1]
        delta = delta - vec * torch.round(delta[..., axis : axis + 1] / length)
    return delta


def dihedral_sin_cos(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor, box: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Sine and cosine of the dihedral angle p0-p1-p2-p3 (IUPAC sign convention, as mdtraj/OpenMM).

    Parameters
    ----------
    p0, p1, p2, p3 : Tensor, shape=(..., m, 3)
        Atom positions, **nm**.
    box : Tensor or None
        Periodic box vectors (see :func:`minimum_image`).

    Returns
    -------
    sin, cos : Tensor, shape=(..., m)
    """
    b1 = minimum_image(p1 - p0, box)
    b2 = minimum_image(p2 - p1, box)
    b3 = minimum_image(p3 - p2, box)
    n12 = torch.linalg.cross(b1, b2)
    n23 = torch.linalg.cross(b2, b3)
    # phi = atan2(|b2| b1.(b2 x b3), (b1 x b2).(b2 x b3)); same convention as mdtraj.compute_dihedrals
    y = torch.linalg.norm(b2, dim=-1) * (b1 * n23).sum(-1)
    x = (n12 * n23).sum(-1)
    norm = torch.sqrt(x * x + y * y)
    return y / norm, x / norm


def kabsch_align(mobile: Tensor, reference: Tensor) -> Tensor:
    """Optimally superpose ``mobile`` onto a centred ``reference`` (differentiable Kabsch fit).

    Parameters
    ----------
    mobile : Tensor, shape=(..., n, 3)
        Coordinates to align, **nm**.
    reference : Tensor, shape=(n, 3)
        Reference coordinates, already centred at the origin, **nm**.

    Returns
    -------
    Tensor, shape=(..., n, 3)
        ``mobile`` translated to the origin and rotated (proper rotation, det = +1) to minimise the RMSD to
        ``reference``. Invariant to rigid motions of ``mobile``. Derivatives are well defined while the
        covariance matrix has distinct singular values (always, for a non-degenerate structure).
    """
    centred = mobile - mobile.mean(dim=-2, keepdim=True)
    cov = centred.transpose(-1, -2) @ reference.to(mobile.dtype)
    u, _, vh = torch.linalg.svd(cov)
    with torch.no_grad():
        sign = torch.sign(torch.linalg.det(u @ vh))
    ones = torch.ones_like(sign)
    diag = torch.stack([ones, ones, sign], dim=-1)
    rotation = (u * diag.unsqueeze(-2)) @ vh
    return centred @ rotation


def rigid_frames(n: Tensor, ca: Tensor, c: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Local orthonormal frames from backbone N, CA, C positions (Gram-Schmidt, AlphaFold convention).

    Parameters
    ----------
    n, ca, c : Tensor, shape=(..., r, 3)
        Backbone atom positions, **nm**.
    eps : float, default 1e-8
        Added to squared norms (nm²) before the square root, so that coincident atoms give finite frames and
        gradients.

    Returns
    -------
    rotation : Tensor, shape=(..., r, 3, 3)
        Columns are the frame axes (e1 along CA->C, e2 in the N-CA-C plane, e3 = e1 x e2).
    origin : Tensor, shape=(..., r, 3)
        Frame origins (the CA positions).
    """
    v1 = c - ca
    v2 = n - ca
    e1 = v1 / torch.sqrt((v1 * v1).sum(-1, keepdim=True) + eps)
    u2 = v2 - e1 * (e1 * v2).sum(-1, keepdim=True)
    e2 = u2 / torch.sqrt((u2 * u2).sum(-1, keepdim=True) + eps)
    e3 = torch.linalg.cross(e1, e2)
    return torch.stack([e1, e2, e3], dim=-1), ca
