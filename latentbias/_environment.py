"""Import-order and version safety for the torch / OpenMM / openmm-torch stack.

Two traps are handled here (see the project's DESIGN notes):

* openmm-torch's Reference plugin resolves ``libnvrtc`` through the libraries that ``import torch`` loads.
  If ``openmm`` was imported before ``torch``, OpenMM records a plugin load failure for
  ``libOpenMMTorchReference.so`` and every Context with a ``TorchForce`` fails with "does not support all
  required kernels". After torch is imported we reload the plugin directory, which then succeeds.
* openmm >= 8.6 together with openmmtorch 1.5 segfaults when a ``TorchForce`` is deserialized (XmlSerializer,
  and therefore inside ``CustomCVForce``). That pair is refused at import time with a clear message.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata

logger = logging.getLogger(__name__)

_plugins_checked = False


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_stack_versions(openmm_version: str, openmmtorch_version: str | None) -> None:
    """Refuse known-bad openmm / openmmtorch pairs.

    Parameters
    ----------
    openmm_version : str
        Version string of the installed ``openmm`` package.
    openmmtorch_version : str or None
        Version string of the installed ``openmmtorch`` distribution, ``None`` when it is not installed.

    Raises
    ------
    ImportError
        If the pair is known to crash (openmm >= 8.6 with openmmtorch 1.5).
    """
    if openmmtorch_version is None:
        return
    omm = _version_tuple(openmm_version)
    ot = _version_tuple(openmmtorch_version)
    if omm >= (8, 6) and ot[:2] == (1, 5):
        raise ImportError(
            f"openmm {openmm_version} with openmmtorch {openmmtorch_version} is a known-bad pair: deserializing a "
            "TorchForce (XmlSerializer, CustomCVForce) segfaults. Install a compatible OpenMM with "
            "`pip install 'openmm>=8.5,<8.6'`."
        )


def installed_version(distribution: str) -> str | None:
    """Installed version of a distribution, or ``None`` if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _torch_plugin_failures(failures: tuple[str, ...] | list[str]) -> list[str]:
    """openmm-torch plugin failures that a reload can fix (not those of a missing GPU driver/runtime)."""
    hardware = ("libOpenCL", "libcuda.so")
    return [f for f in failures if "OpenMMTorch" in f and not any(h in f for h in hardware)]


def ensure_torch_plugins() -> None:
    """Make sure OpenMM has loaded openmm-torch's platform plugins.

    Must be called after ``import torch``. Idempotent and cheap after the first call.

    Raises
    ------
    ImportError
        If the openmm / openmmtorch versions are a known-bad pair.
    """
    global _plugins_checked
    if _plugins_checked:
        return
    import openmm  # noqa: F401  (imported after torch on purpose)

    check_stack_versions(openmm.version.version, installed_version("openmmtorch"))
    failures = _torch_plugin_failures(openmm.Platform.getPluginLoadFailures())
    if failures:
        plugin_dir = os.path.join(openmm.version.openmm_library_path, "plugins")
        logger.debug("reloading OpenMM plugins from %s after: %s", plugin_dir, failures)
        openmm.Platform.loadPluginsFromDirectory(plugin_dir)
        # getPluginLoadFailures() reports the latest load call only
        still = _torch_plugin_failures(openmm.Platform.getPluginLoadFailures())
        if still:
            logger.warning("openmm-torch plugins still fail to load; TorchForce will not work: %s", still)
    _plugins_checked = True


def import_openmmtorch():
    """Import ``openmmtorch`` without its "importing 'simtk.openmm' is deprecated" root-logger warning.

    openmmtorch 1.5's SWIG module imports the ``simtk.openmm`` compatibility shim, which logs that warning on the
    root logger; it is noise for our users (nothing of theirs imports simtk).
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import openmmtorch
    finally:
        logging.disable(previous)
    return openmmtorch
