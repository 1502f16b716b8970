"""Latent restraints: one TorchForce, one encoder pass, all latent dimensions.

Energy (kJ/mol)::

    V(z) = Σ_i ½ k_i (z_i − z0_i)²  +  Σ_i ½ kw_i [max(0, z_i − upper_i)² + max(0, lower_i − z_i)²]

The centres ``z0_i`` and force constants ``k_i`` are TorchForce global parameters (names
``{prefix}z0_{i}`` and ``{prefix}k_{i}``), so ``Context.setParameter`` moves an umbrella window or steers without
rebuilding the Context. The flat-bottom walls are fixed when the force is built (``kw_i = 0`` disables them).
For periodic latent dimensions (angles) the deviation ``z_i − z0_i`` is wrapped into half a period.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..export import LatentModelFile, script_module
from ..forces import as_model_file, make_torch_force
from ..validation import deprecated_alias, deprecated_attribute, renamed_keywords
from ..nonfinite import (all_finite, check_finite_energy, check_finite_evaluation, check_restraint_parameters,
                         forces_of, gradient_report, nonfinite_forces_message)
from .fused import native_restraint_force

logger = logging.getLogger(__name__)

__all__ = ["LatentRestraint", "SteeringResult", "steer", "restraint_energy", "fused_restraint_force", "MAX_RESTRAINED_DIMS"]

#: TorchScript needs a fixed argument list: restraints cover up to this many latent dimensions.
MAX_RESTRAINED_DIMS = 8


def _collect(values: List[Optional[Tensor]]) -> List[Tensor]:
    out: List[Tensor] = []
    for v in values:
        if v is not None:
            out.append(v)
    return out


class _RestraintEnergy(torch.nn.Module):
    """z -> restraint energy given centres and force constants (shared by the two TorchForce signatures)."""

    def __init__(self, model: torch.nn.Module, dims: Sequence[int], lower: np.ndarray, upper: np.ndarray,
                 wall_k: np.ndarray, period: np.ndarray, has_walls: bool, parameter_names: Sequence[str] = ()):
        super().__init__()
        self.model = model
        self.n = len(dims)
        # the global parameters' names (centres, then force constants), for errors naming a bad Context value
        self.parameter_names: List[str] = list(parameter_names) or [f"p{i}" for i in range(2 * len(dims))]
        self.register_buffer("dims", torch.as_tensor(list(dims), dtype=torch.long))
        self.register_buffer("lower", torch.as_tensor(lower, dtype=torch.float64))
        self.register_buffer("upper", torch.as_tensor(upper, dtype=torch.float64))
        self.register_buffer("wall_k", torch.as_tensor(wall_k, dtype=torch.float64))
        self.register_buffer("period", torch.as_tensor(period, dtype=torch.float64))
        self.any_periodic = bool(np.any(np.asarray(period) > 0))
        self.any_walls = bool(has_walls)

    def energy(self, positions: Tensor, box: Optional[Tensor], params: List[Tensor]) -> Tensor:
        # few tensor ops: each costs microseconds in the TorchScript interpreter, forward and backward
        z = self.model(positions, box).index_select(0, self.dims).to(torch.float64)
        check_finite_evaluation(positions, z, self.dims)  # names the atoms / the component instead of NaN forces
        centre = torch.stack(params[: self.n]).to(torch.float64).reshape(-1)
        k = torch.stack(params[self.n : 2 * self.n]).to(torch.float64).reshape(-1)
        check_restraint_parameters(centre, k, self.parameter_names)
        dev = z - centre
        if self.any_periodic:
            safe_period = torch.where(self.period > 0, self.period, torch.ones_like(self.period))
            dev = dev - (self.period > 0).to(dev.dtype) * safe_period * torch.round(dev / safe_period)
        energy = 0.5 * (k * dev * dev).sum()
        if self.any_walls:
            above = torch.clamp(z - self.upper, min=0.0)
            below = torch.clamp(self.lower - z, min=0.0)
            energy = energy + 0.5 * (self.wall_k * (above * above + below * below)).sum()
        check_finite_energy(positions, z, energy, self.dims)  # a finite z too large for the energy: named, not inf
        return energy

    def energy_and_forces(self, positions: Tensor, box: Optional[Tensor], params: List[Tensor]
                          ) -> Tuple[Tensor, Tensor]:
        """The energy and its forces -dE/dx (the TorchForce outputs forces itself); forces that are not finite
        raise in this evaluation, naming the atoms and the components whose dz/dx is not finite."""
        energy = self.energy(positions, box, params)
        forces = forces_of(positions, energy)
        if not all_finite(forces):
            x = positions.detach().requires_grad_(True)
            report = gradient_report(x, self.model(x, box).index_select(0, self.dims), self.dims)
            names: List[int] = self.dims.tolist()
            raise RuntimeError(nonfinite_forces_message("the latent restraint on z" + str(names), forces, report))
        return energy, forces


class _Restraint(_RestraintEnergy):
    """TorchForce signature without a box: forward(positions, z0_0.., k_0..) -> (energy, forces)."""

    def forward(
        self,
        positions: Tensor,
        p0: Optional[Tensor] = None, p1: Optional[Tensor] = None, p2: Optional[Tensor] = None,
        p3: Optional[Tensor] = None, p4: Optional[Tensor] = None, p5: Optional[Tensor] = None,
        p6: Optional[Tensor] = None, p7: Optional[Tensor] = None, p8: Optional[Tensor] = None,
        p9: Optional[Tensor] = None, p10: Optional[Tensor] = None, p11: Optional[Tensor] = None,
        p12: Optional[Tensor] = None, p13: Optional[Tensor] = None, p14: Optional[Tensor] = None,
        p15: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        params = _collect([p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15])
        return self.energy_and_forces(positions, None, params)


class _PeriodicRestraint(_RestraintEnergy):
    """TorchForce signature with a box: forward(positions, box, z0_0.., k_0..) -> (energy, forces)."""

    def forward(
        self,
        positions: Tensor,
        box: Tensor,
        p0: Optional[Tensor] = None, p1: Optional[Tensor] = None, p2: Optional[Tensor] = None,
        p3: Optional[Tensor] = None, p4: Optional[Tensor] = None, p5: Optional[Tensor] = None,
        p6: Optional[Tensor] = None, p7: Optional[Tensor] = None, p8: Optional[Tensor] = None,
        p9: Optional[Tensor] = None, p10: Optional[Tensor] = None, p11: Optional[Tensor] = None,
        p12: Optional[Tensor] = None, p13: Optional[Tensor] = None, p14: Optional[Tensor] = None,
        p15: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        params = _collect([p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15])
        return self.energy_and_forces(positions, box, params)


def _per_dim(value: Any, n: int, name: str, default: float | None = None, finite: bool = False) -> np.ndarray:
    if value is None:
        if default is None:
            raise ValueError(f"{name} is required")
        value = default
    arr = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy() if np.ndim(value) == 0 else np.asarray(
        value, dtype=float
    )
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a number or {n} numbers (one per restrained dimension), got {np.shape(value)}")
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


#: keywords of LatentRestraint and fused_restraint_force renamed to OpenMM's camelCase (the old ones warn)
_RENAMED = dict(force_constants="forceConstants", lower_walls="lowerWalls", upper_walls="upperWalls",
                wall_force_constant="wallForceConstant", force_group="forceGroup", add_to_system="addToSystem",
                evaluation_path="evaluationPath")


class LatentRestraint:
    """Harmonic restraint (+ flat-bottom walls) on latent coordinates, as ONE TorchForce.

    Parameters
    ----------
    model : path or LatentModelFile
        Exported latent model.
    system : openmm.System
        Used for the atom-count check and periodicity. The force is added to it when ``add_to_system`` is True.
    centers : array_like, shape=(d,)
        Initial restraint centres z0 (units of z).
    forceConstants : float or array_like, shape=(d,)
        k_i in kJ/mol per (unit of z)²; 0 switches a dimension's restraint off.
    dims : sequence of int, optional
        Restrained latent components (default: all, in order).
    lowerWalls, upperWalls : float or array_like, optional
        Flat-bottom wall positions per dimension (default: none, i.e. -inf / +inf).
    wallForceConstant : float or array_like, default 1000.0
        kJ/mol per (unit of z)² beyond the walls.
    prefix : str
        Global-parameter name prefix (use different prefixes for several restraints in one System).
    forceGroup : int, optional, default 30
        Force group of the TorchForce (default 30); the work of steering is measured on it.
    addToSystem : bool
        Add the force to ``system`` now.
    backend : {"auto", "native", "torchforce"}
        ``"native"``: the fused ``LatentBiasForce`` plugin; ``"torchforce"``: an openmm-torch TorchForce;
        ``"auto"`` (default): native when the plugin is built. Both evaluate the encoder once per step and give
        the same energies, forces and global parameters.
    evaluationPath : {"auto", "native", "torch"}, optional
        With the native backend: how the LatentBiasForce evaluates the model
        (:data:`latentbias.bias.fused.EVALUATION_PATHS`).

    Notes
    -----
    The class is OpenMM-facing and uses OpenMM's camelCase, like ``openmm.app.Metadynamics``. The snake_case
    keywords and attributes of earlier releases (``force_constants=``, ``lower_walls=``, ``upper_walls=``,
    ``wall_force_constant=``, ``force_group=``, ``add_to_system=``, ``evaluation_path=``) still work and warn
    (DeprecationWarning).
    """

    @renamed_keywords(**_RENAMED)
    def __init__(
        self,
        model: str | os.PathLike | LatentModelFile,
        system: Any,
        centers: Any,
        forceConstants: Any,
        *,
        dims: Sequence[int] | None = None,
        lowerWalls: Any | None = None,
        upperWalls: Any | None = None,
        wallForceConstant: Any = 1000.0,
        prefix: str = "latent_",
        forceGroup: int | None = 30,
        addToSystem: bool = True,
        backend: str = "auto",
        evaluationPath: str | None = None,
    ):
        from .. import native

        if backend not in ("auto", "native", "torchforce"):
            raise ValueError(f"backend must be 'auto', 'native' or 'torchforce', got {backend!r}")
        if backend == "native" and not native.is_available():
            raise ValueError(f"the native LatentBiasForce plugin is not available: {native.unavailable_reason()}")
        self.backend = "native" if backend == "native" or (backend == "auto" and native.is_available()) else "torchforce"
        self.model = as_model_file(model)
        self.model.check_system(system)
        d_model = self.model.latent_dim
        self.dims = list(range(d_model)) if dims is None else [int(i) for i in dims]
        if not self.dims or any(not 0 <= i < d_model for i in self.dims) or len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims must be distinct latent components in [0, {d_model}), got {dims}")
        n = len(self.dims)
        if n > MAX_RESTRAINED_DIMS:
            raise ValueError(f"at most {MAX_RESTRAINED_DIMS} latent dimensions can be restrained, got {n}")
        self.centers = _per_dim(centers, n, "centers", finite=True)
        self.forceConstants = _per_dim(forceConstants, n, "forceConstants", finite=True)
        if np.any(self.forceConstants < 0):
            raise ValueError(f"forceConstants must be >= 0, got {self.forceConstants.tolist()}")
        self.lowerWalls = _per_dim(lowerWalls, n, "lowerWalls", default=-np.inf)
        self.upperWalls = _per_dim(upperWalls, n, "upperWalls", default=np.inf)
        self.wallForceConstant = _per_dim(wallForceConstant, n, "wallForceConstant")
        if np.any(self.lowerWalls >= self.upperWalls):
            raise ValueError("each lower wall must lie below its upper wall")
        periods = self.model.periodic
        self.period = np.array([0.0 if periods[i] is None else float(periods[i][1] - periods[i][0]) for i in self.dims])
        self.prefix = prefix
        if self.backend == "native":
            self.force = native_restraint_force(self, system, forceGroup, evaluationPath)
        else:
            self.force = self._torch_force(system, forceGroup)
        if addToSystem:
            system.addForce(self.force)

    def _torch_force(self, system: Any, forceGroup: int | None):
        periodic_box = bool(system.usesPeriodicBoundaryConditions())
        cls = _PeriodicRestraint if periodic_box else _Restraint
        # infinite walls never act; store a huge finite number so TorchScript arithmetic stays finite
        big = np.finfo(np.float64).max ** 0.25
        module = cls(self.model.module, self.dims, np.maximum(self.lowerWalls, -big),
                     np.minimum(self.upperWalls, big), self.wallForceConstant, self.period,
                     has_walls=bool(np.any(self.wallForceConstant > 0)
                                    and np.any(np.isfinite(np.r_[self.lowerWalls, self.upperWalls]))),
                     parameter_names=[self.centerName(i) for i in range(self.ndim)]
                     + [self.forceConstantName(i) for i in range(self.ndim)])
        force = make_torch_force(script_module(module, "latent restraint"), system, forceGroup, periodic_box)
        force.setOutputsForces(True)  # the module returns its checked forces (latentbias.nonfinite)
        for i in range(self.ndim):
            force.addGlobalParameter(self.centerName(i), float(self.centers[i]))
        for i in range(self.ndim):
            force.addGlobalParameter(self.forceConstantName(i), float(self.forceConstants[i]))
        return force

    @property
    def ndim(self) -> int:
        return len(self.dims)

    def centerName(self, i: int) -> str:
        """Global parameter holding the centre of restrained dimension i."""
        return f"{self.prefix}z0_{i}"

    def forceConstantName(self, i: int) -> str:
        """Global parameter holding the force constant of restrained dimension i."""
        return f"{self.prefix}k_{i}"

    def setCenters(self, context: Any, centers: Any) -> None:
        """Move the restraint centres in a live Context (no reinitialisation)."""
        values = _per_dim(centers, self.ndim, "centers", finite=True)
        for i, v in enumerate(values):
            context.setParameter(self.centerName(i), float(v))
        self.centers = values

    @renamed_keywords(force_constants="forceConstants")
    def setForceConstants(self, context: Any, forceConstants: Any) -> None:
        """Change the force constants in a live Context (kJ/mol per z²)."""
        values = _per_dim(forceConstants, self.ndim, "forceConstants", finite=True)
        if np.any(values < 0):
            raise ValueError(f"forceConstants must be >= 0, got {values.tolist()}")
        for i, v in enumerate(values):
            context.setParameter(self.forceConstantName(i), float(v))
        self.forceConstants = values

    # snake_case names of earlier releases (the class is OpenMM-facing: camelCase, like openmm.app.Metadynamics)
    center_name = deprecated_alias("centerName", "center_name")
    force_constant_name = deprecated_alias("forceConstantName", "force_constant_name")
    set_centers = deprecated_alias("setCenters", "set_centers")
    set_force_constants = deprecated_alias("setForceConstants", "set_force_constants")
    force_constants = deprecated_attribute("forceConstants", "force_constants")
    lower_walls = deprecated_attribute("lowerWalls", "lower_walls")
    upper_walls = deprecated_attribute("upperWalls", "upper_walls")
    wall_force_constant = deprecated_attribute("wallForceConstant", "wall_force_constant")

    @renamed_keywords(force_constants="forceConstants")
    def energy(self, z: Any, centers: Any | None = None, forceConstants: Any | None = None) -> np.ndarray:
        """Restraint energy (kJ/mol) of latent points without a Context.

        Parameters
        ----------
        z : array_like, shape=(n, latent_dim) or (latent_dim,)
            Full latent vectors (all model dimensions).
        centers, forceConstants : array_like, shape=(d,), optional
            Override the current values (e.g. another umbrella window).

        Returns
        -------
        numpy.ndarray, shape=(n,) (or a float for a single point)
        """
        zz = np.atleast_2d(np.asarray(z, dtype=float))[:, self.dims]
        c = self.centers if centers is None else _per_dim(centers, self.ndim, "centers")
        k = self.forceConstants if forceConstants is None else _per_dim(forceConstants, self.ndim, "forceConstants")
        e = restraint_energy(zz, c, k, self.lowerWalls, self.upperWalls, self.wallForceConstant, self.period)
        return e if np.ndim(z) > 1 else float(e[0])

    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable description (dims, centres, constants, walls, periods).

        The keys are a file format (``umbrella.json``) and stay snake_case like every run-directory record."""
        return {
            "dims": self.dims,
            "centers": self.centers.tolist(),
            "force_constants": self.forceConstants.tolist(),
            "lower_walls": self.lowerWalls.tolist(),
            "upper_walls": self.upperWalls.tolist(),
            "wall_force_constant": self.wallForceConstant.tolist(),
            "period": self.period.tolist(),
        }


def restraint_energy(
    z: np.ndarray,
    centers: np.ndarray,
    force_constants: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    wall_k: np.ndarray,
    period: np.ndarray,
) -> np.ndarray:
    """The restraint energy of :class:`LatentRestraint` in numpy (kJ/mol).

    Parameters
    ----------
    z : numpy.ndarray, shape=(n, d)
        Restrained latent components.
    centers, force_constants, lower, upper, wall_k, period : numpy.ndarray, shape=(d,)
        As ``centers``, ``forceConstants``, ``lowerWalls``, ``upperWalls``, ``wallForceConstant`` and ``period`` of
        :class:`LatentRestraint` (period 0 = not periodic; walls may be ±inf).

    Returns
    -------
    numpy.ndarray, shape=(n,)
    """
    dev = z - centers
    periodic = period > 0
    dev[:, periodic] -= period[periodic] * np.round(dev[:, periodic] / period[periodic])
    above = np.clip(z - upper, 0, None)
    below = np.clip(lower - z, 0, None)
    return 0.5 * (force_constants * dev**2).sum(1) + 0.5 * (wall_k * (above**2 + below**2)).sum(1)


@dataclass
class SteeringResult:
    """Record of a steered run.

    Attributes
    ----------
    step : numpy.ndarray, shape=(n,)
        Simulation step of each record.
    time_ps : numpy.ndarray, shape=(n,)
    centers : numpy.ndarray, shape=(n, d)
        Restraint centres at each record.
    z : numpy.ndarray, shape=(n, latent_dim)
        Latent coordinates at each record.
    work_kjmol : numpy.ndarray, shape=(n,)
        Accumulated work ``W = Σ [V(x; z0_new) − V(x; z0_old)]`` done by moving the centres, kJ/mol.
    """

    step: np.ndarray
    time_ps: np.ndarray
    centers: np.ndarray
    z: np.ndarray
    work_kjmol: np.ndarray

    def to_csv(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the record as CSV (header states units); atomic, never overwrites unless asked."""
        from ..io import write_csv

        d, dz = self.centers.shape[1], self.z.shape[1]
        header = ["step", "time_ps"] + [f"z0_{i}" for i in range(d)] + [f"z{i}" for i in range(dz)] + ["work_kjmol"]
        rows = np.column_stack([self.step, self.time_ps, self.centers, self.z, self.work_kjmol])
        write_csv(path, header, rows, comment="steered latent restraint; z in model units, work in kJ/mol",
                  overwrite=overwrite)


def steer(
    simulation: Any,
    restraint: LatentRestraint,
    target: Any,
    steps: int,
    update_interval: int = 10,
) -> SteeringResult:
    """Move the restraint centres linearly from their current values to ``target`` over ``steps`` steps.

    Every ``update_interval`` steps the centres advance by one increment; the work of each increment is the
    change of the restraint energy at fixed positions (exact for this discrete protocol; Jarzynski-ready).

    Parameters
    ----------
    simulation : openmm.app.Simulation
        Its System must contain ``restraint.force``.
    restraint : LatentRestraint
    target : array_like, shape=(d,)
        Final centres.
    steps : int
        Total number of MD steps.
    update_interval : int, default 10
        Steps between centre updates.

    Returns
    -------
    SteeringResult
    """
    from openmm import unit

    steps = int(steps)
    update_interval = int(update_interval)
    if steps <= 0 or update_interval <= 0:
        raise ValueError("steps and update_interval must be positive integers")
    start = restraint.centers.copy()
    end = _per_dim(target, restraint.ndim, "target", finite=True)
    n_updates = max(1, steps // update_interval)
    context = simulation.context
    group = restraint.force.getForceGroup()

    def restraint_energy() -> float:
        st = context.getState(getEnergy=True, groups={group})
        return st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    def record(work: float) -> None:
        st = context.getState(getPositions=True)
        box = None
        if simulation.system.usesPeriodicBoundaryConditions():
            box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        rows["step"].append(simulation.currentStep)
        rows["time_ps"].append(st.getTime().value_in_unit(unit.picosecond))
        rows["centers"].append(restraint.centers.copy())
        rows["z"].append(restraint.model.encode(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer), box))
        rows["work"].append(work)

    rows: dict[str, list] = {"step": [], "time_ps": [], "centers": [], "z": [], "work": []}
    work = 0.0
    record(work)
    done = 0
    for k in range(1, n_updates + 1):
        chunk = steps * k // n_updates - done
        simulation.step(chunk)
        done += chunk
        before = restraint_energy()
        restraint.setCenters(context, start + (end - start) * k / n_updates)
        work += restraint_energy() - before
        record(work)
    logger.info("steered %d steps to %s: work %.3f kJ/mol", steps, np.array2string(end, precision=3), work)
    return SteeringResult(
        step=np.asarray(rows["step"]),
        time_ps=np.asarray(rows["time_ps"]),
        centers=np.asarray(rows["centers"]),
        z=np.asarray(rows["z"]),
        work_kjmol=np.asarray(rows["work"]),
    )


@renamed_keywords(**_RENAMED)
def fused_restraint_force(
    model: LatentModelFile | str | os.PathLike,
    system: Any,
    centers: Any,
    forceConstants: Any,
    *,
    dims: Sequence[int] | None = None,
    lowerWalls: Any | None = None,
    upperWalls: Any | None = None,
    wallForceConstant: Any = 1000.0,
    prefix: str = "latent_",
    forceGroup: int | None = 30,
    addToSystem: bool = True,
    evaluationPath: str | None = None,
):
    """Restraint-only ``LatentBiasForce`` with the parameters and energy of :class:`LatentRestraint`.

    Energy (kJ/mol): ``Σ_i ½ k_i (z_i − z0_i)² + ½ kw_i [max(0, z_i − upper_i)² + max(0, lower_i − z_i)²]`` with the
    deviation wrapped into half a period for periodic latent dimensions (model metadata). ``z0_i`` and ``k_i`` are
    global parameters ``{prefix}z0_{i}`` and ``{prefix}k_{i}`` (i = position in ``dims``): ``Context.setParameter``
    moves umbrella windows or steers without reinitialising.

    Parameters
    ----------
    model : LatentModelFile or path
    system : openmm.System
    centers : array_like, shape=(d,)
    forceConstants : float or array_like, shape=(d,)
        kJ/mol per (unit of z)², >= 0.
    dims : sequence of int, optional
        Restrained latent components (default: all).
    lowerWalls, upperWalls : float or array_like, optional
        Flat-bottom wall positions (default: none).
    wallForceConstant : float or array_like, default 1000.0
    prefix : str
    forceGroup : int, optional, default 30
    addToSystem : bool
    evaluationPath : {"auto", "native", "torch"}, optional
        See :class:`FusedBackend`. The keywords are those of :class:`LatentRestraint` (camelCase; the snake_case
        names of earlier releases warn).

    Returns
    -------
    LatentBiasForce
    """
    return LatentRestraint(model, system, centers, forceConstants, dims=dims, lowerWalls=lowerWalls,
                           upperWalls=upperWalls, wallForceConstant=wallForceConstant, prefix=prefix,
                           forceGroup=forceGroup, addToSystem=addToSystem, backend="native",
                           evaluationPath=evaluationPath).force
