"""The native OpenMM plugin: :class:`LatentBiasForce` (one encoder pass for a grid bias + restraints on z).

The plugin is C++ (``plugin/`` in the source tree) and optional. Build and install it into ``latentbias/_native/``
with::

    cmake -S plugin -B build/plugin -DPython3_EXECUTABLE=$PWD/.venv/bin/python
    cmake --build build/plugin -j2 && cmake --install build/plugin

Loading (done once, on first use): ``torch`` is imported first (the plugin links libtorch), OpenMM's own plugins are
already loaded by ``import openmm`` (so the CPU platform exists), then
``openmm.Platform.loadPluginsFromDirectory(latentbias/_native/plugins)`` registers the Reference kernels for the
Reference and CPU platforms (and the CUDA kernels when they were built), and the SWIG module
``latentbias._native.latentbiasplugin`` is imported. The libraries carry RPATHs to OpenMM's and torch's library
folders, so no ``LD_LIBRARY_PATH`` is needed.

>>> from latentbias import native
>>> if native.is_available():
...     force = native.LatentBiasForce("model.pt")      # doctest: +SKIP

Without the build, :func:`is_available` returns False and :func:`unavailable_reason` says why (also logged once).
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any

import torch  # noqa: F401  (libtorch must be loaded before the plugin)

logger = logging.getLogger(__name__)

__all__ = [
    "BUILD_COMMAND",
    "KERNEL_NAME",
    "NATIVE_DIR",
    "PLUGIN_DIR",
    "as_latent_bias_force",
    "is_available",
    "load",
    "unavailable_reason",
]

#: Folder the build installs into.
NATIVE_DIR = Path(__file__).resolve().parent / "_native"
#: OpenMM platform plugins of LatentBiasForce.
PLUGIN_DIR = NATIVE_DIR / "plugins"
#: Name of the OpenMM kernel the plugins provide.
KERNEL_NAME = "CalcLatentBiasForce"
#: How to build the plugin (from the repository root).
BUILD_COMMAND = (
    "cmake -S plugin -B build/plugin -DPython3_EXECUTABLE=$PWD/.venv/bin/python && cmake --build build/plugin -j2 "
    "&& cmake --install build/plugin"
)

_lock = threading.Lock()
_module: Any = None
_reason: str | None = None
_tried = False


def _try_load() -> None:
    global _module, _reason, _tried
    with _lock:
        if _tried:
            return
        _tried = True
        try:
            _module = _load_plugin()
        except Exception as exc:  # never let a broken build break `import latentbias`
            _reason = str(exc)
            logger.warning("latentbias native plugin unavailable: %s", _reason)


def _load_plugin() -> Any:
    import openmm

    if not (NATIVE_DIR / "latentbiasplugin.py").is_file() or not PLUGIN_DIR.is_dir():
        raise ImportError(f"the native plugin is not built (no {NATIVE_DIR}); build it with: {BUILD_COMMAND}")
    try:
        module = importlib.import_module("latentbias._native.latentbiasplugin")
    except ImportError as exc:
        raise ImportError(f"cannot import the plugin's Python module ({exc}); rebuild it with: {BUILD_COMMAND}") from exc
    openmm.Platform.loadPluginsFromDirectory(str(PLUGIN_DIR))
    ours = [f for f in openmm.Platform.getPluginLoadFailures() if str(PLUGIN_DIR) in f]
    reference = openmm.Platform.getPlatformByName("Reference")
    if not reference.supportsKernels([KERNEL_NAME]):
        detail = "; ".join(ours) if ours else "no load failure was reported"
        raise ImportError(f"the LatentBiasForce Reference plugin did not register ({detail})")
    for failure in ours:  # e.g. the CUDA plugin on a machine without a GPU driver
        logger.info("a LatentBiasForce platform plugin did not load: %s", failure)
    logger.debug("loaded LatentBiasForce plugins from %s", PLUGIN_DIR)
    return module


def is_available() -> bool:
    """Whether the native plugin is built and loaded (loads it on the first call)."""
    _try_load()
    return _module is not None


def unavailable_reason() -> str | None:
    """Why the plugin cannot be used, or None when it can."""
    _try_load()
    return _reason


def load() -> Any:
    """The plugin's SWIG module (``LatentBiasForce`` lives there).

    Raises
    ------
    ImportError
        The plugin is not built or cannot be loaded; the message says how to build it.
    """
    _try_load()
    if _module is None:
        raise ImportError(f"latentbias native plugin unavailable: {_reason}")
    return _module


def as_latent_bias_force(force: Any) -> Any:
    """The LatentBiasForce behind an ``openmm.Force`` (e.g. from ``System.getForce`` after deserialization)."""
    module = load()
    if not module.LatentBiasForce.isinstance(force):
        raise TypeError(f"{type(force).__name__} is not a LatentBiasForce")
    return module.LatentBiasForce.cast(force)


def __getattr__(name: str) -> Any:
    if name == "LatentBiasForce":
        return load().LatentBiasForce
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

