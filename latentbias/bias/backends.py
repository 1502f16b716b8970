"""How a grid bias on latent coordinates becomes OpenMM forces: one interface, swappable implementations.

:class:`GridBiasBackend` is what :class:`~latentbias.bias.metadynamics.LatentMetadynamics` talks to. The current
implementation, :class:`CustomCVBackend`, uses only released packages: a ``CustomCVForce`` whose collective
variables are one openmm-torch ``TorchForce`` per biased latent dimension (d encoder evaluations per step) and
whose energy is a tabulated function of them plus restoring walls. A fused native force (one encoder pass for all
dimensions) implements the same interface.

Behaviour at the grid edges (OpenMM issue 3805: a tabulated bias has zero force outside its grid): for each
non-periodic variable the table is evaluated at the latent value clamped into ``[minValue, maxValue]`` and a
harmonic wall ``½ k_wall (z − maxValue)²`` (or ``(minValue − z)²``) pushes the system back. The bias is thus
continuous everywhere and never silently zero beyond the grid.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np

from ..export import LatentModelFile
from ..forces import latent_component_force
from ..nonfinite import overflow_limit
from ..validation import renamed_keywords
from .grid import BiasGrid

__all__ = ["GridBiasBackend", "CustomCVBackend", "free_force_group"]


def free_force_group(system: Any, preferred: int = 31) -> int:
    """Highest force group no force of ``system`` uses (OpenMM's Metadynamics does the same).

    Parameters
    ----------
    system : openmm.System
    preferred : int, default 31
        Returned when no force uses it; otherwise the highest free group.
    """
    used = {system.getForce(i).getForceGroup() for i in range(system.getNumForces())}
    if preferred not in used:
        return preferred
    free = sorted(set(range(32)) - used)
    if not free:
        raise RuntimeError("all 32 force groups are in use; free one for the latent bias force")
    return free[-1]


class GridBiasBackend(abc.ABC):
    """A tabulated bias V(z) (+ edge walls) on 1-3 latent dimensions inside an OpenMM System."""

    grid: BiasGrid
    wall_force_constant: float
    force_group: int

    @abc.abstractmethod
    def set_grid(self, values: np.ndarray, context: Any | None) -> None:
        """Replace the tabulated values (shape=grid.shape, kJ/mol); update ``context`` in place if given."""

    def add_gaussian(self, center: np.ndarray, height: float, values: Callable[[], np.ndarray],
                     context: Any | None) -> None:
        """The tabulated values became ``values()`` by adding ``height * grid.gaussian(center)``: bring the force
        (and ``context``, if given) up to date. This default replaces the whole table (:meth:`set_grid`, a full
        refit); a backend that can add the Gaussian locally overrides it.

        Parameters
        ----------
        center : numpy.ndarray, shape=(d,)
            Gaussian centre (z units).
        height : float
            Height (kJ/mol).
        values : callable returning numpy.ndarray, shape=grid.shape
            The new total table (kJ/mol), computed only if needed.
        context : openmm.Context or None
        """
        self.set_grid(values(), context)

    @abc.abstractmethod
    def latent_values(self, context: Any) -> np.ndarray:
        """Current values of the biased latent components, shape=(d,)."""

    scale: float = 1.0
    #: the OpenMM force implementing the bias, and the global parameter scaling its tabulated part
    force: Any
    scale_parameter: str

    def forces(self) -> list:
        """OpenMM Force objects that implement the bias (already added to the System)."""
        return [self.force]

    def set_scale(self, scale: float, context: Any) -> None:
        """Multiply the tabulated part of the bias by ``scale`` (walls unaffected); 0 switches the bias off."""
        self.scale = float(scale)
        context.setParameter(self.scale_parameter, self.scale)

    def wall_energy(self, z: np.ndarray) -> float:
        """Energy of the edge walls at latent point z (shape=(d,)), kJ/mol."""
        e = 0.0
        for x, v in zip(np.asarray(z, dtype=float).tolist(), self.grid.variables):  # Python floats: same values
            if not v.periodic:
                over = max(0.0, x - v.maxValue) + max(0.0, v.minValue - x)
                e += 0.5 * self.wall_force_constant * over * over
        return e

    def latent_values_and_energy(self, context: Any) -> tuple[np.ndarray, float]:
        """:meth:`latent_values` and :meth:`energy` at the current positions, as a deposit reads them (a backend
        may get both from one evaluation).

        Returns
        -------
        z : numpy.ndarray, shape=(d,)
            Biased latent components.
        energy : float
            Acting bias energy, scale · table + walls, kJ/mol.
        """
        return self.latent_values(context), self.energy(context)

    def energy(self, context: Any) -> float:
        """Total bias energy (scale · table + walls) in ``context``, kJ/mol."""
        from openmm import unit

        state = context.getState(getEnergy=True, groups={self.force_group})
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


class CustomCVBackend(GridBiasBackend):
    """CustomCVForce over one TorchForce per biased latent dimension + tabulated function + edge walls.

    Parameters
    ----------
    model : LatentModelFile
    system : openmm.System
        The force is added to it.
    grid : BiasGrid
    wallForceConstant : float, default 1000.0
        kJ/mol per (unit of z)² beyond the grid edges (non-periodic variables).
    forceGroup : int, optional
        Default: the highest free force group.

    The constructor's keywords are camelCase like :class:`~latentbias.bias.fused.FusedBackend`'s (the snake_case
    names of earlier releases warn).
    """

    @renamed_keywords(wall_force_constant="wallForceConstant", force_group="forceGroup")
    def __init__(
        self,
        model: LatentModelFile,
        system: Any,
        grid: BiasGrid,
        wallForceConstant: float = 1000.0,
        forceGroup: int | None = None,
    ):
        import openmm

        self.grid = grid
        self.wall_force_constant = float(wallForceConstant)
        grid.periodic  # raises for mixed periodicity
        names = [f"z{v.index}" for v in grid.variables]
        args, walls = [], []
        for name, v in zip(names, grid.variables):
            if v.periodic:
                args.append(name)
            else:
                # clamp to the last grid point exactly as OpenMM computes it (min + (n-1)*step can round below
                # max, and a table argument beyond it aborts the process)
                last = v.minValue + (v.gridWidth - 1) * ((v.maxValue - v.minValue) / (v.gridWidth - 1))
                args.append(f"min(max({name}, {v.minValue!r}), {min(last, v.maxValue)!r})")
                walls.append(f"max(0, {name} - ({v.maxValue!r}))^2 + max(0, ({v.minValue!r}) - {name})^2")
        self.force_group = free_force_group(system) if forceGroup is None else int(forceGroup)
        self.scale_parameter = f"latent_bias_scale_{self.force_group}"
        expression = f"{self.scale_parameter}*table({', '.join(args)})"
        if walls:
            expression += f" + 0.5*{self.wall_force_constant!r}*(" + " + ".join(walls) + ")"
        self.expression = expression
        self.force = openmm.CustomCVForce(expression)
        self.force.addGlobalParameter(self.scale_parameter, 1.0)
        for name, v in zip(names, grid.variables):
            self.force.addCollectiveVariable(name, self.collective_variable_force(model, system, v.index))
        self.table = grid.make_function()
        self.force.addTabulatedFunction("table", self.table)
        self.force.setForceGroup(self.force_group)
        system.addForce(self.force)

    def collective_variable_force(self, model: LatentModelFile, system: Any, index: int) -> Any:
        """The OpenMM Force whose energy is latent component ``index`` (a TorchForce of the model). A subclass
        may return another Force computing the same quantity (e.g. a ``CustomTorsionForce`` for a dihedral CV
        module, as ``benchmarks/opes_vs_peer.py`` does to compare the OPES algorithm at the peer's CV cost)."""
        v = next(v for v in self.grid.variables if v.index == index)
        # the wall energy 0.5 k (z - edge)^2 of every dimension must stay finite: a larger z raises, naming it
        limit = float("inf") if v.periodic else overflow_limit(self.wall_force_constant, len(self.grid.variables))
        return latent_component_force(model, system, index, limit=limit)

    def set_grid(self, values: np.ndarray, context: Any | None) -> None:
        self.grid.set_function_parameters(self.table, values)
        if context is not None:
            self.force.updateParametersInContext(context)

    def latent_values(self, context: Any) -> np.ndarray:
        return np.asarray(self.force.getCollectiveVariableValues(context), dtype=float)
