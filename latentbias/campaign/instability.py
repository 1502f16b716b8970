"""A segment whose simulation blows up is run again from its last committed state with a shorter time step.

Why
---
A learned collective variable can have rare places where its gradient is very large or where it is not even
continuous. The Kabsch-aligned coordinates of :class:`~latentbias.features.AlignedCoordinates` are one: the
optimal proper rotation stops being unique when the covariance of the mobile and reference structures has
``det < 0`` and its two smallest singular values meet (a set of co-dimension 2 in configuration space); near it the
rotation, hence ``z``, swings by a large angle within one step and the bias force grows like the inverse of the
singular-value gap. Measured on the ala2 demo (seed 2028, exploration round 3): singular values (0.380, 0.0392,
0.0385), ``det < 0``, ``|dz/dx|`` 650 → 3600 nm⁻¹ over two steps, the bias force 124 000 kJ/mol/nm for one step,
then the system exploded (potential energy 3.6e10 kJ/mol 27 steps later). Such a crossing is a matter of chance:
a trajectory passes within δ of a co-dimension-2 set with a probability ∝ δ², so another trajectory (and a shorter
step, which resolves a fast swing the long one jumped over) almost always passes.

What
----
:func:`check_kinetic_temperature` flags a frame whose instantaneous kinetic temperature is far above the
thermostat's (an exploded system reaches 10⁶–10¹⁰ K while its positions are still finite, and a model evaluated on
such positions fails with an unrelated message); :class:`SimulationBlowUpError` says so. Together with
:class:`~latentbias.nonfinite.NonFiniteBiasError` (positions NaN/inf) these are the *instabilities*
(:data:`INSTABILITIES`). :func:`run_with_retries` runs a segment and, on an instability, runs it again from the last
committed state (checkpoint and bias state, exactly as a resume after a kill) with the time step multiplied by
each of :data:`RETRY_TIMESTEP_FACTORS` in turn; the next segment goes back to the configured step. The retried
segment's frames are samples of the same biased ensemble (a shorter step only integrates it more accurately), so
the estimators use them as any other; each retry is logged as a warning naming the round, segment, the error and
the step used. Everything is deterministic: a run killed during or after a retry and resumed repeats the same
failure and the same retry, so its frames are identical to an uninterrupted run's. When every retry fails the
first error is raised, with the retries named.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

import numpy as np

from ..nonfinite import NonFiniteBiasError

logger = logging.getLogger(__name__)

__all__ = ["SimulationBlowUpError", "INSTABILITIES", "RETRY_TIMESTEP_FACTORS", "kinetic_temperature_limit",
           "check_kinetic_temperature", "run_with_retries"]

#: time-step factors of the successive retries of a segment that blew up (2 fs -> 1 fs -> 0.5 fs)
RETRY_TIMESTEP_FACTORS: tuple[float, ...] = (0.5, 0.25)

#: the kinetic temperature that flags a blow-up is at least this multiple of the thermostat's
MIN_TEMPERATURE_FACTOR = 5.0

#: per-frame probability that an equilibrium frame exceeds the limit (chi-square tail), see kinetic_temperature_limit
FALSE_ALARM_PROBABILITY = 1e-12

_BOLTZ = 0.00831446261815324  # kJ/mol/K

T = TypeVar("T")


class SimulationBlowUpError(FloatingPointError):
    """The simulation exploded: the kinetic temperature of a frame is far above the thermostat's."""


#: errors that mean "this trajectory became unstable" (a retry with a shorter step may pass)
INSTABILITIES: tuple[type[BaseException], ...] = (NonFiniteBiasError, SimulationBlowUpError)


def kinetic_temperature_limit(temperature: float, dof: int) -> float:
    """The kinetic temperature (K) above which a frame is taken as exploded.

    Parameters
    ----------
    temperature : float
        The thermostat's temperature, K.
    dof : int
        Degrees of freedom of the kinetic energy (3 × massive particles − constraints).

    Returns
    -------
    float
        ``temperature`` × max(:data:`MIN_TEMPERATURE_FACTOR`, q/dof) with q the chi-square (``dof`` degrees) quantile
        exceeded with probability :data:`FALSE_ALARM_PROBABILITY`: in equilibrium 2K/(kT) is chi-square
        distributed, so a healthy frame is flagged with probability ≤ 1e-12 whatever the system's size (for 45
        degrees of freedom the limit is 5 T; for 3 it is 19.6 T).
    """
    from scipy.stats import chi2

    dof = max(int(dof), 1)
    return float(temperature) * max(MIN_TEMPERATURE_FACTOR, float(chi2.isf(FALSE_ALARM_PROBABILITY, dof)) / dof)


class KineticTemperatureCheck:
    """The blow-up check of one system: masses and degrees of freedom are read once.

    Parameters
    ----------
    system : openmm.System
    temperature : float
        The thermostat's temperature, K.
    """

    def __init__(self, system: Any, temperature: float):
        from openmm import unit

        masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton)
                           for i in range(system.getNumParticles())])
        self.masses = masses
        self.dof = max(3 * int(np.count_nonzero(masses > 0)) - system.getNumConstraints(), 1)
        self.temperature = float(temperature)
        self.limit = kinetic_temperature_limit(temperature, self.dof)

    def kinetic_temperature(self, velocities: np.ndarray) -> float:
        """Instantaneous kinetic temperature (K) of ``velocities`` (nm/ps, shape=(n_atoms, 3))."""
        v = np.asarray(velocities, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):  # an exploded frame: inf is the answer
            kinetic = 0.5 * float(np.sum(self.masses[:, None] * v * v))
        return 2.0 * kinetic / (self.dof * _BOLTZ)

    def __call__(self, velocities: np.ndarray, step: int) -> None:
        """Raise :class:`SimulationBlowUpError` when the frame's kinetic temperature is above the limit (or not
        finite)."""
        t = self.kinetic_temperature(velocities)
        if not np.isfinite(t) or t > self.limit:
            raise SimulationBlowUpError(
                f"the simulation blew up by step {step}: kinetic temperature {t:.3g} K, thermostat "
                f"{self.temperature:g} K (limit {self.limit:.0f} K for {self.dof} degrees of freedom). A force became "
                "far too large for the time step (a stiff or discontinuous bias, e.g. an aligned-coordinate "
                "featurizer near a degenerate superposition, or a clash in the system)")


def check_kinetic_temperature(system: Any, temperature: float) -> KineticTemperatureCheck:
    """The blow-up check of ``system`` at thermostat ``temperature`` (K): call it with a frame's velocities (nm/ps)
    and step; see :class:`KineticTemperatureCheck`."""
    return KineticTemperatureCheck(system, temperature)


def run_with_retries(attempt: Callable[[float], T], where: str,
                     factors: tuple[float, ...] = RETRY_TIMESTEP_FACTORS, notes: list[str] | None = None) -> T:
    """Run ``attempt(1.0)``; on an instability run ``attempt(f)`` for each time-step factor f in ``factors``.

    Parameters
    ----------
    attempt : callable
        ``attempt(factor)`` restores the last committed state, runs the segment with the configured time step ×
        ``factor`` and returns its result. It must start from the same state on every call.
    where : str
        Names the segment in messages, e.g. ``"round 3 segment 5"``.
    factors : tuple of float, default RETRY_TIMESTEP_FACTORS
        Time-step factors of the retries, in order.
    notes : list of str, optional
        Each warning logged is also appended here (a Dask worker's log does not reach the campaign's log: the
        walkers' driver logs these).

    Returns
    -------
    The result of the first attempt that did not blow up.

    Raises
    ------
    NonFiniteBiasError or SimulationBlowUpError
        The first attempt's error, its message extended by the retries' outcomes, when every retry failed too.
    """
    try:
        return attempt(1.0)
    except INSTABILITIES as exc:
        first = exc
    tried = []

    def warn(message: str) -> None:
        logger.warning(message)
        if notes is not None:
            notes.append(message)

    for factor in factors:
        warn(f"{where} became unstable ({str(first).split('. ')[0]}); running it again from the last committed state "
             f"with the time step x {factor:g}")
        try:
            result = attempt(factor)
        except INSTABILITIES as exc:
            tried.append(f"x {factor:g}: {str(exc).split('. ')[0]}")
            continue
        warn(f"{where} passed with the time step x {factor:g}; the next segment uses the configured step again")
        return result
    raise type(first)(f"{first} [{where} was run again from its last committed state with the time step "
                      + "; ".join(tried) + ": it became unstable every time. Shorten [md] timestep, make the bias "
                      "smoother (wider kernels, a smoother encoder: [model] jacobian_penalty) or check the "
                      "system]") from first
