"""Aligning the latent spaces of consecutive rounds (similarity Procrustes) and folding the map into the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models import FeatureAutoencoder

__all__ = ["LatentAlignment", "fit_alignment", "apply_alignment"]


@dataclass
class LatentAlignment:
    """z_aligned = scale * z @ rotation.T + shift, fitted so that z_aligned ≈ z_reference.

    Attributes
    ----------
    rotation : numpy.ndarray, shape=(d, d)
        Orthogonal (reflections allowed: latent signs are arbitrary).
    scale : float
    shift : numpy.ndarray, shape=(d,)
    r2 : float
        Fraction of the reference variance explained after alignment (1 = identical spaces).
    rmsd : float
        Root-mean-square residual in reference units.
    """

    rotation: np.ndarray
    scale: float
    shift: np.ndarray
    r2: float
    rmsd: float

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(z) @ self.rotation.T + self.shift


def fit_alignment(z_new: np.ndarray, z_ref: np.ndarray) -> LatentAlignment:
    """Least-squares similarity transform mapping z_new onto z_ref (same frames, shape=(n, d) each)."""
    a = np.asarray(z_new, dtype=float)
    b = np.asarray(z_ref, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or len(a) < a.shape[1] + 1:
        raise ValueError(f"need matching (n > d, d) arrays, got {a.shape} and {b.shape}")
    ma, mb = a.mean(0), b.mean(0)
    ac, bc = a - ma, b - mb
    u, s, vt = np.linalg.svd(ac.T @ bc)
    rotation = (u @ vt).T  # maps new -> ref: ac @ rotation.T ≈ bc / scale
    scale = float(s.sum() / max((ac**2).sum(), 1e-300))
    shift = mb - scale * ma @ rotation.T
    resid = b - (scale * a @ rotation.T + shift)
    r2 = float(1.0 - (resid**2).sum() / max((bc**2).sum(), 1e-300))
    return LatentAlignment(rotation, scale, shift, r2, float(np.sqrt((resid**2).sum(1).mean())))


def apply_alignment(model: FeatureAutoencoder, alignment: LatentAlignment) -> None:
    """Fold the alignment into the encoder's last layer and the decoder's first layer (in place, exact)."""
    m = torch.as_tensor(alignment.scale * alignment.rotation, dtype=torch.float64)
    t = torch.as_tensor(alignment.shift, dtype=torch.float64)
    last = [layer for layer in model.encoder if isinstance(layer, torch.nn.Linear)][-1]
    with torch.no_grad():
        w, b = last.weight.double().clone(), last.bias.double().clone()
        last.weight.copy_((m @ w).to(last.weight.dtype))
        last.bias.copy_((m @ b + t).to(last.bias.dtype))
        if model.decoder is not None:
            first = [layer for layer in model.decoder if isinstance(layer, torch.nn.Linear)][0]
            m_inv = torch.linalg.inv(m)
            wd, bd = first.weight.double().clone(), first.bias.double().clone()
            first.weight.copy_((wd @ m_inv).to(first.weight.dtype))
            first.bias.copy_((bd - wd @ m_inv @ t).to(first.bias.dtype))
