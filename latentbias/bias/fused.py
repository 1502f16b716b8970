"""Grid biases and restraints on latent coordinates as ONE native force (one encoder pass per step, any d).

:class:`FusedBackend` implements :class:`~latentbias.bias.backends.GridBiasBackend` with the native
``LatentBiasForce`` (see :mod:`latentbias.native`): the encoder runs once forward and once backward per step
whatever the number of biased dimensions, V(z) and dV/dz are computed in C++ in double precision with OpenMM's
own tabulated-function splines, and the edge walls are those of
:class:`~latentbias.bias.backends.CustomCVBackend` (same expression), so both backends give the same energies and
forces. Unlike the CustomCVForce route, periodicity may differ between grid dimensions.

:func:`fused_restraint_force` builds the restraint-only counterpart of
:class:`~latentbias.bias.restraint.LatentRestraint` (same energy, same global-parameter names).

Latent values and energies are read from the force's last evaluation when it used the current positions,
parameters and grid. An integrator step evaluates forces *before* moving the atoms, so right after
``simulation.step(n)`` the last z belong to the previous positions; :meth:`FusedBackend.latent_values` then runs
one energy-only (forward) evaluation of the force group and reuses it for :meth:`FusedBackend.energy`.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Sequence

import numpy as np

from ..export import LatentModelFile, archive_bytes
from ..forces import as_model_file
from .backends import CustomCVBackend, GridBiasBackend, free_force_group
from ..validation import renamed_keywords
from .grid import BiasGrid

__all__ = [
    "EVALUATION_PATHS",
    "EVALUATION_PATH_ENV",
    "FusedBackend",
    "default_grid_backend",
    "model_bytes",
    "native_restraint_force",
    "resolve_evaluation_path",
]

logger = logging.getLogger(__name__)

#: How a LatentBiasForce evaluates its model: ``"native"`` (the plugin's C++ evaluator of the model's native
#: description, no libtorch on the per-step path), ``"torch"`` (the TorchScript code through libtorch) or ``"auto"``
#: (native for models that carry a description, i.e. those exported by :func:`latentbias.save_model`; torch for
#: any other TorchScript model, and on platforms without a native kernel).
EVALUATION_PATHS = ("auto", "native", "torch")
#: Environment variable giving the default evaluation path (e.g. ``LATENTBIAS_EVALUATION_PATH=torch`` to compare).
EVALUATION_PATH_ENV = "LATENTBIAS_EVALUATION_PATH"


def resolve_evaluation_path(evaluation_path: str | None) -> str:
    """The requested path: ``evaluation_path``, else ``$LATENTBIAS_EVALUATION_PATH``, else ``"auto"`` (validated)."""
    path = evaluation_path if evaluation_path is not None else os.environ.get(EVALUATION_PATH_ENV, "auto")
    if path not in EVALUATION_PATHS:
        source = "evaluationPath" if evaluation_path is not None else f"${EVALUATION_PATH_ENV}"
        raise ValueError(f"{source} must be one of {EVALUATION_PATHS}, got {path!r}")
    return path


def model_bytes(model: LatentModelFile) -> bytes:
    """The TorchScript archive of a loaded model, metadata included (the file itself when it is on disk)."""
    if model.path is not None and os.path.isfile(model.path):
        return model.path.read_bytes()
    return archive_bytes(model)


def _new_force(model: LatentModelFile, system: Any, evaluation_path: str | None = None):
    from .. import native

    path = resolve_evaluation_path(evaluation_path)
    module = native.load()
    force = module.LatentBiasForce.fromModelData(model_bytes(model))
    force.setUsesPeriodicBoundaryConditions(bool(system.usesPeriodicBoundaryConditions()))
    where = str(model.path) if model.path is not None else "the model"
    if path == "native" and not force.hasNativeDescription():
        raise ValueError(
            f"evaluationPath='native' but {where} has no native description (only models exported by "
            "latentbias.save_model with latentbias featurizers, Standardizer and an MLP carry one); use 'auto' or "
            "'torch'"
        )
    force.setEvaluationPath(path)
    resolved = force.getResolvedEvaluationPath()
    logger.info(
        "LatentBiasForce for %s: %s evaluation path (%s)", where, resolved,
        "C++ forward/backward of the native description, float64" if resolved == "native"
        else "TorchScript through libtorch; single-threaded on the CPU platform" + (
            "" if path == "torch" else ", the model has no native description"),
    )
    return force


@functools.lru_cache(maxsize=None)
def _accepts_cutoff(force_class: type) -> bool:
    """Whether the built plugin's ``addGridGaussian`` takes a cutoff (plugins built before it did not)."""
    import inspect

    try:
        return "cutoff" in inspect.signature(force_class.addGridGaussian).parameters
    except (TypeError, ValueError):  # no introspectable signature: assume the current plugin
        return True


def _grid_table(grid: BiasGrid, values: Any) -> np.ndarray:
    """Grid values (shape=grid.shape) flattened first-axis-fastest as a contiguous float64 array."""
    v = np.asarray(values, dtype=float)
    if v.shape != grid.shape:
        raise ValueError(f"grid values must have shape {grid.shape}, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("grid values must be finite")
    return np.ascontiguousarray(v.ravel(order="F"))


class FusedBackend(GridBiasBackend):
    """Tabulated bias V(z) + edge walls on 1-3 latent dimensions as one native ``LatentBiasForce``.

    Parameters
    ----------
    model : LatentModelFile or path
    system : openmm.System
        The force is added to it.
    grid : BiasGrid
        Periodicity may differ between variables.
    wallForceConstant : float, default 1000.0
        kJ/mol per (unit of z)² beyond the grid edges (non-periodic variables).
    forceGroup : int, optional
        Default: the highest free force group.
    evaluationPath : {"auto", "native", "torch"}, optional
        How the force evaluates the model (see :data:`EVALUATION_PATHS`); default ``$LATENTBIAS_EVALUATION_PATH``
        or ``"auto"``. ``force.getEvaluationPathInContext(context)`` tells which one a Context uses.

    The constructor's keywords are OpenMM's camelCase, as those of :class:`LatentMetadynamics` that pass through
    it (``wall_force_constant=``, ``force_group=``, ``evaluation_path=`` still work and warn). The methods and
    attributes are the snake_case :class:`GridBiasBackend` interface that the bias classes call.

    Raises
    ------
    ImportError
        The native plugin is not built (see :mod:`latentbias.native`).
    ValueError
        Atom-count mismatch or a variable index beyond the model's latent dimension.
    """

    @renamed_keywords(wall_force_constant="wallForceConstant", force_group="forceGroup",
                      evaluation_path="evaluationPath")
    def __init__(
        self,
        model: LatentModelFile | str | os.PathLike,
        system: Any,
        grid: BiasGrid,
        wallForceConstant: float = 1000.0,
        forceGroup: int | None = None,
        evaluationPath: str | None = None,
    ):
        mf = as_model_file(model)
        mf.check_system(system)
        for v in grid.variables:
            if not 0 <= v.index < mf.latent_dim:
                raise ValueError(f"latent variable index {v.index} is out of range for a model with "
                                 f"latent_dim={mf.latent_dim}")
        self.model = mf
        self.grid = grid
        self.wall_force_constant = float(wallForceConstant)
        self.force = _new_force(mf, system, evaluationPath)
        for v in grid.variables:
            self.force.addGridDimension(int(v.index), float(v.minValue), float(v.maxValue), int(v.gridWidth),
                                        bool(v.periodic))
        self.force.setGridValues(np.zeros(int(np.prod(grid.shape))))
        self.force.setWallForceConstant(self.wall_force_constant)
        self.force_group = free_force_group(system) if forceGroup is None else int(forceGroup)
        self.force.setForceGroup(self.force_group)
        # same global parameter as CustomCVBackend: acting bias = scale * table + walls
        self.scale = 1.0
        self.scale_parameter = f"latent_bias_scale_{self.force_group}"
        self.force.setGridScaleParameter(self.scale_parameter, 1.0)
        system.addForce(self.force)
        self._indices = [int(v.index) for v in grid.variables]
        self._widths = [float(v.biasWidth) for v in grid.variables]

    def set_grid(self, values: np.ndarray, context: Any | None) -> None:
        self.force.setGridValues(_grid_table(self.grid, values))
        if context is not None:
            self.force.updateParametersInContext(context)

    def add_gaussian(self, center: np.ndarray, height: float, values: Callable[[], np.ndarray],
                     context: Any | None) -> None:
        """Add ``height * grid.gaussian(center)`` inside the force (``LatentBiasForce.addGridGaussian``, truncated
        at ``grid.kernelCutoff`` widths when set): ``updateParametersInContext`` then updates only the Gaussian's
        support of the Context's interpolant, with the same result as a full refit up to rounding (issue 10 item
        6); ``values`` is not needed. A plugin built before truncated deposits existed gets the whole table
        (``values()``, a full refit) for a truncated Gaussian."""
        cutoff = self.grid.kernelCutoff
        if cutoff is not None and not _accepts_cutoff(type(self.force)):
            self.set_grid(values(), context)
            return
        widths = self._widths
        centre = np.asarray(center, dtype=float).tolist()  # the same doubles as float(c) per coordinate
        if cutoff is None:
            self.force.addGridGaussian(centre, widths, float(height))
        else:
            self.force.addGridGaussian(centre, widths, float(height), float(cutoff))
        if context is not None:
            self.force.updateParametersInContext(context)

    def _ensure_current(self, context: Any) -> None:
        if not self.force.isLastEvaluationCurrent(context):
            # one energy-only evaluation (forward pass, no backward) of this force's group
            context.getState(getEnergy=True, groups={self.force_group})

    def latent_values(self, context: Any, fresh: bool = True) -> np.ndarray:
        """Biased latent components at the current positions, shape=(d,).

        The force's last z are used when they belong to the current positions; otherwise (e.g. right after an
        integrator step, whose forces were computed before the atoms moved) the force group is evaluated once
        (energy only). With ``fresh=False`` the last evaluated z are returned as they are, without any evaluation.
        """
        if fresh:
            self._ensure_current(context)
        z = self.force.getLastLatentValues(context)
        if not z:
            raise RuntimeError("the LatentBiasForce has not been evaluated in this Context yet")
        return np.asarray([z[i] for i in self._indices], dtype=float)

    def latent_values_and_energy(self, context: Any) -> tuple[np.ndarray, float]:
        """:meth:`latent_values` and :meth:`energy` from the same (last or one new energy-only) evaluation."""
        self._ensure_current(context)
        z = self.force.getLastLatentValues(context)
        if not z:
            raise RuntimeError("the LatentBiasForce has not been evaluated in this Context yet")
        return np.asarray([z[i] for i in self._indices], dtype=float), float(self.force.getLastEnergies(context)[0])

    def all_latent_values(self, context: Any) -> np.ndarray:
        """All model outputs z at the current positions, shape=(latent_dim,)."""
        self._ensure_current(context)
        return np.asarray(self.force.getLastLatentValues(context), dtype=float)

    def energy(self, context: Any) -> float:
        """Acting bias energy, scale · table + walls (kJ/mol), at the current positions (reuses the last evaluation
        when it is current)."""
        self._ensure_current(context)
        return float(self.force.getLastEnergies(context)[0])


def native_restraint_force(restraint: Any, system: Any, force_group: int | None, evaluation_path: str | None = None):
    """The LatentBiasForce of a validated :class:`LatentRestraint` (its dims, centres, constants, walls, periods)."""
    force = _new_force(restraint.model, system, evaluation_path)
    for i, comp in enumerate(restraint.dims):
        index = force.addRestraint(comp, restraint.centerName(i), float(restraint.centers[i]),
                                   restraint.forceConstantName(i), float(restraint.forceConstants[i]))
        if restraint.period[i] > 0:
            force.setRestraintPeriod(index, float(restraint.period[i]))
        if np.isfinite(restraint.lowerWalls[i]) or np.isfinite(restraint.upperWalls[i]):
            force.setRestraintWalls(index, float(restraint.lowerWalls[i]), float(restraint.upperWalls[i]),
                                    float(restraint.wallForceConstant[i]))
    if force_group is not None:
        force.setForceGroup(int(force_group))
    return force


def default_grid_backend() -> type[GridBiasBackend]:
    """The native :class:`FusedBackend` when the plugin is built, else
    :class:`~latentbias.bias.backends.CustomCVBackend` (openmm-torch)."""
    from .. import native

    return FusedBackend if native.is_available() else CustomCVBackend
