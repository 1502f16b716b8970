"""Hand-written collective-variable modules in the latentbias model format (no training needed).

They let known coordinates be biased with exactly the machinery used for learned ones — useful as references
(e.g. latent metadynamics on exact φ/ψ compared with ``openmm.app.Metadynamics``) and for mixed workflows.
Export them with :func:`save_dihedral_cv` or :func:`latentbias.export.save_cv_module`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from .export import save_cv_module
from .geometry import dihedral_sin_cos
from .validation import ensure_index_array

__all__ = ["DihedralAngles", "save_dihedral_cv"]


class DihedralAngles(torch.nn.Module):
    """positions (n_atoms, 3), nm [+ box] -> dihedral angles (n_dihedrals,) in radians, in (-π, π].

    Same convention as mdtraj and OpenMM's PeriodicTorsionForce.

    Parameters
    ----------
    quadruplets : array_like of int, shape=(n_dihedrals, 4)
    """

    def __init__(self, quadruplets: Any):
        super().__init__()
        quads = ensure_index_array(quadruplets, width=4, name="dihedral atoms")
        self.register_buffer("quads", torch.as_tensor(quads, dtype=torch.long))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.to(torch.float64)
        b: Optional[Tensor] = None
        if box is not None:
            b = box.to(torch.float64)
        sin, cos = dihedral_sin_cos(
            p.index_select(-2, self.quads[:, 0]),
            p.index_select(-2, self.quads[:, 1]),
            p.index_select(-2, self.quads[:, 2]),
            p.index_select(-2, self.quads[:, 3]),
            b,
        )
        return torch.atan2(sin, cos)


def save_dihedral_cv(
    quadruplets: Any, n_atoms: int, path: str | os.PathLike, description: str = "", overwrite: bool = False
) -> Path:
    """Export :class:`DihedralAngles` as a model file whose latent components are periodic angles on [-π, π]."""
    quads = ensure_index_array(quadruplets, width=4, name="dihedral atoms")
    return save_cv_module(
        DihedralAngles(quads),
        path,
        n_atoms=n_atoms,
        latent_dim=len(quads),
        atom_indices=np.unique(quads),
        periodic=[[-math.pi, math.pi]] * len(quads),
        description=description or f"dihedral angles (rad) of atoms {quads.tolist()}",
        overwrite=overwrite,
    )
