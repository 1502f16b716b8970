"""OpenMM forces built from an exported latent model (openmm-torch ``TorchForce``).

* :func:`latent_component_force` — a TorchForce whose energy (kJ/mol) is the numerical value of one latent
  component ``z_i``. Use it as a collective variable of a ``CustomCVForce`` or of ``openmm.app.BiasVariable``.
* :func:`latent_cv_forces` — one such force per latent dimension.
* :func:`latent_vector_module` — the scripted positions -> z module (all components in one pass), for forces that
  use the whole vector at once.

Every builder refuses a model whose atom count differs from the System's before any Context is made.

Every module handed to a ``TorchForce`` is frozen here first (:func:`frozen_for_torchforce`): openmm-torch's
kernels call ``torch::jit::freeze`` on it, which inlines method calls and then deletes the inlined methods while the
inlined call stacks keep raw pointers to them; when the model then fails inside the inlined code (e.g.
``linalg.svd`` of NaN) the TorchScript interpreter reads the deleted functions while formatting the error — a
use-after-free that segfaulted the process. A module frozen and reloaded here has no method calls left, so the
error is raised instead.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ._environment import import_openmmtorch
from .export import LatentModelFile, load_model, script_module
from .nonfinite import (all_finite, check_finite_evaluation, check_latent_limit, forces_of, gradient_report,
                        nonfinite_forces_message)

__all__ = ["as_model_file", "frozen_for_torchforce", "latent_component_force", "latent_cv_forces",
           "latent_vector_module", "make_torch_force"]

logger = logging.getLogger(__name__)


def as_model_file(model: str | os.PathLike | LatentModelFile) -> LatentModelFile:
    """Accept a path or an already loaded :class:`LatentModelFile`."""
    if isinstance(model, LatentModelFile):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise TypeError(f"expected a model file path or LatentModelFile, got {type(model).__name__}")


class _Component(torch.nn.Module):
    """positions [+ box] -> (z[index], -dz[index]/dx): a scalar 'energy' and its forces for a TorchForce with
    ``setOutputsForces(True)``; non-finite forces raise in the same evaluation (:mod:`latentbias.nonfinite`)."""

    def __init__(self, model: torch.nn.Module, index: int, limit: float = float("inf")):
        super().__init__()
        self.model = model
        self.index = index
        self.limit = float(limit)
        self.register_buffer("component", torch.tensor([index], dtype=torch.long))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        z = self.model(positions, box)
        # names the atoms / the component instead of passing NaN on (latentbias.nonfinite)
        check_finite_evaluation(positions, z.narrow(0, self.index, 1), self.component)
        check_latent_limit(positions, z.narrow(0, self.index, 1), self.component, self.limit)
        energy = z[self.index]
        forces = forces_of(positions, energy)
        if not all_finite(forces):  # a finite z with a NaN/inf gradient: raise now, never apply the forces
            x = positions.detach().requires_grad_(True)
            report = gradient_report(x, self.model(x, box).narrow(0, self.index, 1), self.component)
            raise RuntimeError(nonfinite_forces_message("latent component z[" + str(self.index) + "]", forces, report))
        return energy, forces


def _reloaded(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def frozen_for_torchforce(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """A frozen, reloaded copy of ``module`` whose ``forward`` calls no methods (everything inlined).

    openmm-torch (1.5, all platforms) runs ``torch::jit::freeze`` on a TorchForce's module. Freezing inlines every
    method call of ``forward`` (a helper method, a submodule's ``forward``) and then removes the inlined methods
    from their compilation unit, freeing them, while each inlined node's call stack still points at them. When an
    operation inside inlined code throws (``linalg.svd`` of non-finite input, a shape error), the interpreter
    formats the TorchScript traceback (``InterpreterStateImpl::callstack``) by calling ``name()`` on those freed
    functions: a use-after-free that crashes the process (SIGSEGV) or not, depending on the heap. Freezing here and
    reloading from bytes drops those call stacks (they are not serialized), and the module openmm-torch then freezes
    has no calls left to inline, so such failures surface as exceptions.

    Freezing folds attributes and buffers into constants and removes methods other than ``forward``: the module
    openmm-torch evaluates is the same computation (it freezes it anyway). Numerical passes are off
    (``optimize_numerics=False``). The argument is not modified (a serialized copy is frozen). A module that cannot
    be frozen is returned unchanged (with a warning): openmm-torch would then fail to freeze it as well.

    Parameters
    ----------
    module : torch.jit.ScriptModule

    Returns
    -------
    torch.jit.ScriptModule
    """
    copy = _reloaded(module)
    try:
        frozen = torch.jit.freeze(copy.eval(), optimize_numerics=False)
    except Exception as exc:  # noqa: BLE001 - TorchScript raises several types; fall back to the module as it is
        logger.warning("could not freeze the TorchForce module (%s: %s); openmm-torch will freeze it itself",
                       type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return module
    return _reloaded(frozen)


def make_torch_force(
    module: torch.jit.ScriptModule, system: Any, force_group: int | None = None, periodic: bool | None = None
):
    """Wrap a scripted module in a TorchForce.

    The module's ``forward(positions, box=None)`` receives the box vectors when the force is periodic: by
    default when the System already uses periodic boundary conditions (``periodic=None``). The TorchForce holds
    :func:`frozen_for_torchforce` of the module (a model failing inside it raises instead of crashing).
    """
    force = import_openmmtorch().TorchForce(frozen_for_torchforce(module))
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
    limit: float = float("inf"),
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
    limit : float, optional
        A finite ``|z| > limit`` raises naming the component and the farthest atom: the largest value for which the
        energy expression built on this variable stays finite (:func:`latentbias.nonfinite.overflow_limit`).
        Default: no limit.

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
    scripted = script_module(_Component(mf.module, int(component), limit), "latent-component wrapper")
    force = make_torch_force(scripted, system, force_group, periodic)
    force.setOutputsForces(True)  # the module returns its checked forces (latentbias.nonfinite)
    return force


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
