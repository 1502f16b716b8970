"""Refuse force/platform combinations that cannot run, before a Context is made.

Some routes do not fail with an exception when the Context is created but kill the process: openmm-torch 1.5's
OpenCL plugin is ABI-broken against openmm 8.5 (``symbol lookup error: libOpenMMTorchOpenCL.so: undefined symbol
...ContextImpl12getPositions...``), so a ``TorchForce`` (alone or inside a ``CustomCVForce``) on the OpenCL platform
ends the Python interpreter. Others fail late with OpenMM's generic "does not support all required kernels".
:func:`check_platform` inspects a System's forces and raises a ``ValueError`` naming the force, the platform and
what to use instead.

latentbias calls it wherever it creates a Simulation (the campaign loop, the examples, the benchmarks). A Context
that user code creates directly (``openmm.Context(system, integrator, platform)``) bypasses it: call
``check_platform(system, platform)`` first.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["NATIVE_ONLY_PLATFORMS", "NATIVE_PATH_PLATFORMS", "TORCHFORCE_BROKEN_PLATFORMS", "check_platform"]

#: Platforms on which LatentBiasForce evaluates models from their native description (no libtorch): C++ kernels on
#: Reference/CPU, OpenMM common-compute kernels on OpenCL and CUDA (CUDA: built with LATENTBIAS_BUILD_CUDA, untested).
NATIVE_PATH_PLATFORMS = ("Reference", "CPU", "OpenCL", "CUDA")
#: Platforms whose LatentBiasForce kernel has only the native path (no libtorch/TorchScript evaluation).
NATIVE_ONLY_PLATFORMS = ("OpenCL",)
#: Platforms on which an openmm-torch TorchForce must never be used (the process dies; see the module docstring).
TORCHFORCE_BROKEN_PLATFORMS = ("OpenCL",)


def _platform(platform: Any):
    import openmm

    if isinstance(platform, str):
        try:
            return openmm.Platform.getPlatformByName(platform)
        except Exception as exc:
            names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
            raise ValueError(f"unknown OpenMM platform {platform!r}; available: {sorted(set(names))}") from exc
    if not hasattr(platform, "getName") or not hasattr(platform, "supportsKernels"):
        raise TypeError(f"platform must be an openmm.Platform or its name, got {type(platform).__name__}")
    return platform


def _is_torch_force(force: Any) -> bool:
    try:
        import openmmtorch
    except ImportError:  # without openmm-torch no TorchForce can exist
        return False
    return bool(openmmtorch.TorchForce.isinstance(force))


def _latent_bias_force(force: Any) -> Any | None:
    from . import native

    if not native.is_available():
        return None
    module = native.load()
    return module.LatentBiasForce.cast(force) if module.LatentBiasForce.isinstance(force) else None


def _check_force(force: Any, platform: Any, where: str) -> None:
    import openmm

    name = platform.getName()
    if _is_torch_force(force):
        if name in TORCHFORCE_BROKEN_PLATFORMS:
            raise ValueError(
                f"{where} is an openmm-torch TorchForce, which kills the process on the {name} platform "
                "(openmm-torch 1.5's OpenCL plugin does not link against openmm 8.5). Use the CPU or Reference "
                "platform (or CUDA), or latentbias' native LatentBiasForce (FusedBackend, LatentRestraint(..., "
                "backend='native')) instead of TorchForce/CustomCVBackend"
            )
        if not platform.supportsKernels(["CalcTorchForce"]):
            raise ValueError(f"{where} is an openmm-torch TorchForce but the {name} platform has no TorchForce "
                             "kernel; use the CPU or Reference platform (or CUDA with openmmtorch[cuda12])")
        if name == "CPU":
            import torch

            if torch.get_num_threads() > 1:
                logger.warning(
                    "%s is an openmm-torch TorchForce on the CPU platform and libtorch uses %d threads: they compete "
                    "with OpenMM's threads for the same cores (villin in water: +12-20 ms/step against < 1 ms with "
                    "one thread); call torch.set_num_threads(1) before running. (LatentBiasForce does this itself.)",
                    where, torch.get_num_threads())
        return
    lbf = _latent_bias_force(force)
    if lbf is not None:
        from .native import KERNEL_NAME

        if not platform.supportsKernels([KERNEL_NAME]):
            raise ValueError(
                f"{where} is a LatentBiasForce but the {name} platform has no LatentBiasForce kernel (kernels: "
                "Reference, CPU; OpenCL when the plugin was built with an OpenCL library; CUDA when built with "
                "LATENTBIAS_BUILD_CUDA); use the CPU or Reference platform"
            )
        if name in NATIVE_ONLY_PLATFORMS and lbf.getResolvedEvaluationPath() != "native":
            reason = ("forced onto the TorchScript path (evaluationPath='torch')" if lbf.hasNativeDescription()
                      else "a TorchScript-only model (no native description)")
            raise ValueError(
                f"{where} is a LatentBiasForce with {reason}, but the {name} platform evaluates only native model "
                "descriptions (no libtorch there); use evaluationPath='auto' or 'native' with a model saved by "
                "latentbias.save_model, or the CPU/Reference platform for TorchScript models"
            )
        if lbf.getEvaluationPath() == "native" and name not in NATIVE_PATH_PLATFORMS:
            raise ValueError(
                f"{where} is a LatentBiasForce forced onto the native evaluation path, which the {name} platform does "
                f"not have yet (native path: {', '.join(NATIVE_PATH_PLATFORMS)}); use evaluationPath='auto' or "
                "'torch' there, or the CPU/Reference platform"
            )
        return
    if isinstance(force, openmm.CustomCVForce):
        for j in range(force.getNumCollectiveVariables()):
            _check_force(force.getCollectiveVariable(j), platform,
                         f"collective variable {force.getCollectiveVariableName(j)!r} of {where}")


def check_platform(system: Any, platform: Any) -> None:
    """Raise before a Context is made if a force of ``system`` cannot run on ``platform``.

    Parameters
    ----------
    system : openmm.System
    platform : openmm.Platform or str
        The platform (or its name) the Context will use.

    Raises
    ------
    ValueError
        Naming the force, the platform and what to use instead: an openmm-torch ``TorchForce`` (directly or inside
        a ``CustomCVForce``) on OpenCL (the process would die) or on a platform without its kernel; a
        ``LatentBiasForce`` on a platform without its kernel, or forced onto the native path where there is none.
    TypeError
        ``platform`` is not a platform or a name.
    """
    plat = _platform(platform)
    for i in range(system.getNumForces()):
        force = system.getForce(i)
        _check_force(force, plat, f"force {i} ({force.getName()})")
    logger.debug("every force of the System can run on the %s platform", plat.getName())
