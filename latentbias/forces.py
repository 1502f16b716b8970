"""OpenMM forces built from an exported latent model (openmm-torch ``TorchForce``).

* :func:`latent_component_force` — a TorchForce whose energy (kJ/mol) is the numerical value of one latent
  component ``z_i``. Use it as a collective variable of a ``CustomCVForce`` or of ``openmm.app.BiasVariable``.
* :func:`latent_cv_forces` — one such force per latent dimension.
* :func:`latent_vector_module` — the scripted positions -> z module (all components in one pass), for forces that
  use the whole vector at once.

Every builder refuses a model whose atom count differs from the System's before any Context is made.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch import Tensor

from ._environment import import_openmmtorch
from .export import LatentModelFile, load_model, script_module

__all__ = ["as_model_file", "latent_component_force", "latent_cv_forces", "latent_vector_module", "make_torch_force"]


def as_model_file(model: str | os.PathLike | LatentModelFile) -> LatentModelFile:
    """Accept a path or an already loaded :class:`LatentModelFile`."""
    if isinstance(model, LatentModelFile):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise TypeError(f"expected a model file path or LatentModelFile, got {type(model).__name__}")


class _Component(torch.nn.Module):
    """positions [+ box] -> z[index] (a scalar 'energy' for TorchForce)."""

    def __init__(self, model: torch.nn.Module, index: int):
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.model(positions, box)[self.index]


def make_torch_force(
    module: torch.jit.ScriptModule, system: Any, force_group: int | None = None, periodic: bool | None = None
):
    """Wrap a scripted module in a TorchForce.

    The module's ``forward(positions, box=None)`` receives the box vectors when the force is periodic: by
    default when the System already uses periodic boundary conditions (``periodic=None``).
    """
    force = import_openmmtorch().TorchForce(module)
    if periodic is None:
        periodic = bool(system.usesPeriodicBoundaryConditions())
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if force_group is not None:
        force.setForceGroup(int(force_group))
    return force


def latent_component_force(
    model: str | os.PathLike | LatentModelFile,
    system: Any,
    component: int,
    force_group: int | None = None,
    periodic: bool | None = None,
):
    """TorchForce whose energy equals latent component ``z[component]``.

    Parameters
    ----------
    model : path or LatentModelFile
        Exported latent model.
    system : openmm.System
        The system the force is meant for (used for the atom-count check and periodicity; the force is *not*
        added to it — add it yourself, or use it as a CustomCVForce variable).
    component : int
        Latent dimension, ``0 <= component < latent_dim``.
    force_group : int, optional
    periodic : bool, optional
        Pass the periodic box to the model (minimum-image features). Default: whether ``system`` already uses
        periodic boundary conditions.

    Returns
    -------
    openmmtorch.TorchForce
        "Energy" in kJ/mol numerically equal to ``z[component]``; its forces are ``-dz/dx``.

    Raises
    ------
    ValueError
        Atom-count mismatch or component out of range.
    """
    mf = as_model_file(model)
    mf.check_system(system)
    if not 0 <= int(component) < mf.latent_dim:
        raise ValueError(f"component must be in [0, {mf.latent_dim}), got {component}")
    scripted = script_module(_Component(mf.module, int(component)), "latent-component wrapper")
    return make_torch_force(scripted, system, force_group, periodic)


def latent_cv_forces(
    model: str | os.PathLike | LatentModelFile, system: Any, periodic: bool | None = None
) -> list:
    """One :func:`latent_component_force` per latent dimension (list of length latent_dim)."""
    mf = as_model_file(model)
    return [latent_component_force(mf, system, i, periodic=periodic) for i in range(mf.latent_dim)]


def latent_vector_module(model: str | os.PathLike | LatentModelFile, system: Any | None = None):
    """The scripted module positions (n_atoms, 3) [+ box], nm -> z (latent_dim,), all components in one pass.

    Parameters
    ----------
    model : path or LatentModelFile
    system : openmm.System, optional
        When given, the atom count is checked.
    """
    mf = as_model_file(model)
    if system is not None:
        mf.check_system(system)
    return mf.module
