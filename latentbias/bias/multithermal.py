r"""OPES multithermal: an expanded ensemble in temperature, biasing the potential energy.

The target of OPES_EXPANDED with multithermal collective variables (Invernizzi, Piaggi & Parrinello, Phys. Rev. X
10, 041034 (2020); PLUMED's ``OPES_EXPANDED`` + ``ECV_MULTITHERMAL``) is the mixture of the Boltzmann
distributions at N temperatures T_0 = T < T_1 < … < T_{N−1} = ``maxTemperature`` (geometric, equal steps of
ln T), each with the same weight:

.. math:: p^{tg}(x) = \frac{1}{N}\sum_i \frac{e^{-\beta_i U(x)}}{Z_i},\qquad
          V(U) = -\frac{1}{\beta}\ln\frac{1}{N}\sum_i e^{(\beta-\beta_i)(U-U_0) + \beta\Delta F_i},

where U is the potential energy of the force field (the forces in the System when the bias is built) and
``βΔF_i = −ln⟨e^{(β−β_i)(U−U_0)}⟩_β`` (so that each temperature carries 1/N of the target). A simulation at T
under V samples p^tg: it visits the energies, and therefore the structures, typical of every T_i, while every
frame can be reweighted back to T with ``e^{βV}``. No collective variable is needed: this is the part of the
converge phase that enhances what the latent coordinates do not resolve (e.g. ψ of alanine dipeptide inside a
latent basin). The force of V is ``−V'(U)∇U``: the force field's forces scaled by ``β_eff/β`` ∈ [T/T_max, 1]
(``β_eff`` the target's current mixture of β_i), so the bias only softens the force field and never needs a
shorter time step.

ΔF_i are estimated on the fly, as OPES_EXPANDED does: every ``pace`` steps the energy U_t of the current
configuration is observed with the weight ``w_t = e^{β(V_t(U_t) + V^{extra}_t)}`` of the bias acting on it
(``V^{extra}``: any other bias acting at the same time — PLUMED's ``EXTRA_BIAS``; beside a latent OPES
(:class:`~latentbias.bias.opes.LatentOPES` ``coupledBias``) its acting bias less its c(t), the same normalisation
the frames' weights use), and ``βΔF_i = −ln(Σ_t w_t e^{(β−β_i)(U_t−U_0)} / Σ_t w_t)``. The latent OPES does not
put this bias in its own kernel weights: it flattens the latent distribution of the multithermal ensemble. U_0 is the first observed energy
(keeps the exponentials in range; it cancels in V). Because the target is normalised, ``⟨e^{−βV}⟩_β = 1`` once
the ΔF_i are right: V needs no c(t) of its own.

Number of temperatures (default): the energy of N_dof harmonic degrees of freedom fluctuates by
``σ_U ≈ kT √(N_dof/2)``, so neighbouring temperatures overlap when ``Δln T · √(N_dof/2) ≲ 1``:
``N = ⌈ln(T_max/T) √(N_dof/2)⌉ + 1``, N_dof = 3 × (massive particles) − constraints − 3 (the centre-of-mass
motion, when a CMMotionRemover is present).

The potential energy is evaluated by a CustomCVForce holding copies of the System's forces (every Force at
construction except CMMotionRemover, barostats and thermostats), so the force field is evaluated twice per step;
for small systems (alanine dipeptide: 22 atoms, ~10 µs/step on Reference) that is negligible, for large solvated
systems it doubles the cost of the force field (ala2 on Reference, this machine: 24 → 51 µs/step).

What it costs in statistics: reweighted to T, the frames sampled near the higher temperatures carry little weight,
so the effective sample size falls roughly N-fold when the energy distributions of T and T_max barely overlap.
The gain is in what the CV bias does not reach: on a 2-D three-well potential with the latent bias on x only,
300-900 K left 5-9 % of the region below 12 kJ/mol unsampled against 12-16 % without (tests/test_multithermal.py).
On alanine dipeptide (N_dof = 51, 300-600 K, 5 temperatures) the loss won: the converge phase's effective sample
size fell from 843 to 180 and the reweighted φ/ψ FES error doubled (benchmarks/RESULTS.md), so the demo does not
use it. ``forceGroup`` defaults to the group of the first copied force:
the bias only scales those forces, so it belongs with them (and the time-step stiffness check of
:mod:`latentbias.bias.stiffness`, which looks at the groups added on top of the force field, leaves it out).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from ..analysis.constants import kt_kjmol
from ..validation import strip_unit

logger = logging.getLogger(__name__)

__all__ = ["MultithermalOPES", "default_num_temperatures", "degrees_of_freedom"]

#: Force classes that carry no potential energy of the force field (not copied into the energy CV)
_NOT_ENERGY = ("CMMotionRemover", "MonteCarloBarostat", "MonteCarloAnisotropicBarostat",
               "MonteCarloMembraneBarostat", "MonteCarloFlexibleBarostat", "AndersenThermostat", "RMSDForce")


def degrees_of_freedom(system: Any) -> int:
    """3 × massive particles − constraints − 3 if the System removes centre-of-mass motion."""
    from openmm import unit

    n = sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(unit.dalton) > 0)
    dof = 3 * n - system.getNumConstraints()
    if any(type(system.getForce(i)).__name__ == "CMMotionRemover" for i in range(system.getNumForces())):
        dof -= 3
    return max(int(dof), 1)


def default_num_temperatures(temperature: float, max_temperature: float, dof: int) -> int:
    """⌈ln(T_max/T) √(N_dof/2)⌉ + 1 temperatures: neighbours one energy fluctuation σ_U ≈ kT √(N_dof/2) apart."""
    return int(math.ceil(math.log(max_temperature / temperature) * math.sqrt(dof / 2.0))) + 1


class MultithermalOPES:
    """OPES multithermal bias on the potential energy of ``system`` (see the module docstring).

    Parameters
    ----------
    system : openmm.System
        The unbiased System: its forces are copied into the energy CV, and the bias force is added to it. Build
        this before adding any other bias to the System (or name the force-field forces with ``forces``).
    temperature : float (K) or Quantity
        The simulation's (thermostat's) temperature T = T_0.
    maxTemperature : float (K) or Quantity
        Highest temperature of the expanded ensemble (> T).
    pace : int
        Steps between observations (ΔF_i updates).
    numTemperatures : int, optional
        N ≥ 2 (default :func:`default_num_temperatures`).
    forces : sequence of int, optional
        Indices of the force-field forces whose energy is U (default every Force except CMMotionRemover, barostats,
        thermostats).
    forceGroup : int, optional
        Force group of the bias (default that of the first copied force).
    prefix : str
        Prefix of the Context global parameters (``<prefix>u0``, ``<prefix>f<i>``).
    """

    def __init__(self, system: Any, temperature: Any, maxTemperature: Any, pace: int,
                 numTemperatures: int | None = None, forces: Sequence[int] | None = None,
                 forceGroup: int | None = None, prefix: str = "lb_mt_"):
        import openmm
        from openmm import unit

        self.temperature = float(strip_unit(temperature, unit.kelvin))
        self.maxTemperature = float(strip_unit(maxTemperature, unit.kelvin))
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be positive (K), got {temperature}")
        if not (self.maxTemperature > self.temperature and math.isfinite(self.maxTemperature)):
            raise ValueError(f"maxTemperature must be finite and above the temperature {self.temperature} K, got "
                             f"{maxTemperature}")
        self.pace = int(pace)
        if self.pace <= 0:
            raise ValueError(f"pace must be a positive number of steps, got {pace}")
        if forces is None:
            forces = [i for i in range(system.getNumForces())
                      if type(system.getForce(i)).__name__ not in _NOT_ENERGY]
        forces = [int(i) for i in forces]
        if not forces or any(not 0 <= i < system.getNumForces() for i in forces):
            raise ValueError(f"forces must name force-field forces of the System (0..{system.getNumForces() - 1}), "
                             f"got {forces}")
        n_default = default_num_temperatures(self.temperature, self.maxTemperature, degrees_of_freedom(system))
        self.numTemperatures = n_default if numTemperatures is None else int(numTemperatures)
        if self.numTemperatures < 2:
            raise ValueError(f"numTemperatures must be at least 2, got {numTemperatures}")
        #: the N temperatures (K), T first
        self.temperatures = np.geomspace(self.temperature, self.maxTemperature, self.numTemperatures)
        self._kt = kt_kjmol(self.temperature)
        beta = 1.0 / self._kt
        #: β − β_i (mol/kJ), ≥ 0
        self._a = beta - 1.0 / np.array([kt_kjmol(t) for t in self.temperatures])
        self._a[0] = 0.0
        self.prefix = str(prefix)
        self._u0Name = f"{self.prefix}u0"
        self._fNames = [f"{self.prefix}f{i}" for i in range(1, self.numTemperatures)]

        cv = openmm.CustomCVForce(self._expression(len(forces)))
        for k, i in enumerate(forces):
            cv.addCollectiveVariable(f"{self.prefix}e{k}",
                                     openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system.getForce(i))))
        cv.addGlobalParameter(self._u0Name, 0.0)
        for name in self._fNames:
            cv.addGlobalParameter(name, 0.0)
        cv.setName("MultithermalOPES")
        cv.setForceGroup(system.getForce(forces[0]).getForceGroup() if forceGroup is None else int(forceGroup))
        self.force = cv
        self.forceIndex = system.addForce(cv)
        self.forces = forces

        # estimator state: U_0, ln Σ w, ln Σ w e^{a_i (U − U_0)}, observations
        self._u0: float | None = None
        self._logSumW = -math.inf
        self._logSum = np.full(self.numTemperatures, -math.inf)
        self._count = 0
        self._f = np.zeros(self.numTemperatures)  # βΔF_i, f_0 = 0
        self._contextStale = True
        self._lastUpdateStep = -1
        self._lastBias = 0.0
        #: one entry per :meth:`observe` call: step, U (kJ/mol), the bias acting before the update, the extra bias
        self.records: dict[str, list] = {"step": [], "energy_kjmol": [], "bias_kjmol": [], "extra_kjmol": []}
        logger.info("OPES multithermal: %d temperatures %s K on the energy of %d forces",
                    self.numTemperatures, np.array2string(self.temperatures, precision=1), len(forces))

    def _expression(self, n_forces: int) -> str:
        terms = ["1"] + [f"exp({float(a)!r}*(U-{self._u0Name})+{name})" for a, name in zip(self._a[1:], self._fNames)]
        energy = "+".join(f"{self.prefix}e{k}" for k in range(n_forces))
        return f"-{self._kt!r}*log(({'+'.join(terms)})/{self.numTemperatures}); U={energy}"

    # ------------------------------------------------------------------------------------------------ values

    def getPotentialEnergy(self, context: Any) -> float:
        """U (kJ/mol): the force field's energy, as the bias sees it."""
        return float(sum(self.force.getCollectiveVariableValues(context)))

    def biasAt(self, energy: Any) -> np.ndarray:
        """V(U) (kJ/mol) for potential energies U (kJ/mol, any shape), with the current ΔF_i."""
        u = np.asarray(energy, dtype=float)
        u0 = 0.0 if self._u0 is None else self._u0
        x = self._a * (u[..., None] - u0) + self._f
        top = x.max(axis=-1, keepdims=True)
        lse = top[..., 0] + np.log(np.exp(x - top).sum(axis=-1))
        return -self._kt * (lse - math.log(self.numTemperatures))

    def getBiasEnergy(self, context: Any) -> float:
        """Bias acting in ``context`` now (kJ/mol)."""
        return float(self.biasAt(self.getPotentialEnergy(context)))

    def getFreeEnergies(self) -> np.ndarray:
        """−kT ln(Z_i/Z_0) = −kT ln⟨e^{(β−β_i)U}⟩_β (kJ/mol) with Z_i = ∫ e^{−β_i U} dx, shape=(N,): the
        current estimates (0 for T_0).
        """
        u0 = 0.0 if self._u0 is None else self._u0
        return self._kt * (self._f - self._a * u0)

    def getLogDeltaF(self) -> np.ndarray:
        """βΔF_i as used in V (relative to U_0), shape=(N,)."""
        return self._f.copy()

    def getTargetWeights(self, energy: Any) -> np.ndarray:
        """Share of each temperature in the target at energy U: p_i(U), shape=(..., N), rows sum to 1."""
        u = np.asarray(energy, dtype=float)
        u0 = 0.0 if self._u0 is None else self._u0
        x = self._a * (u[..., None] - u0) + self._f
        x = x - x.max(axis=-1, keepdims=True)
        p = np.exp(x)
        return p / p.sum(axis=-1, keepdims=True)

    @property
    def numObservations(self) -> int:
        return self._count

    # ------------------------------------------------------------------------------------------------ run

    def initialize(self, context: Any) -> None:
        """Take U_0 from the configuration in ``context`` (the first time only) and push the parameters."""
        if self._u0 is None:
            self._u0 = self.getPotentialEnergy(context)
            if not math.isfinite(self._u0):
                raise ValueError(f"the potential energy is {self._u0} kJ/mol: minimise or fix the starting structure "
                                 "before building a multithermal bias on it")
            self._contextStale = True
        if self._contextStale:
            self.updateContext(context)

    def updateContext(self, context: Any) -> None:
        """Push U_0 and βΔF_i to the Context's global parameters."""
        context.setParameter(self._u0Name, 0.0 if self._u0 is None else self._u0)
        for name, f in zip(self._fNames, self._f[1:]):
            context.setParameter(name, float(f))
        self._contextStale = False

    def observe(self, context: Any, step: int, extraBias: float = 0.0, update: bool = True) -> float:
        """Observe the configuration in ``context`` at MD step ``step``: record it and (``update``) fold it into
        the ΔF_i estimates with the weight ``e^{β(V + extraBias)}``; push the new parameters.

        Returns
        -------
        float
            The bias that acted on this configuration before the update (kJ/mol).
        """
        self.initialize(context)
        u = self.getPotentialEnergy(context)
        bias = float(self.biasAt(u))
        for name, value in zip(self.records, (int(step), u, bias, float(extraBias))):
            self.records[name].append(value)
        self._lastUpdateStep, self._lastBias = int(step), bias
        if update:
            logw = (bias + float(extraBias)) / self._kt
            self._logSumW = float(np.logaddexp(self._logSumW, logw))
            self._logSum = np.logaddexp(self._logSum, logw + self._a * (u - self._u0))
            self._count += 1
            self._f = -(self._logSum - self._logSumW)
            self._f[0] = 0.0
            self.updateContext(context)
        return bias

    def actingBias(self, context: Any, step: int) -> float:
        """The bias that acted on the configuration in ``context`` at ``step``: the value before the update when
        :meth:`observe` updated at this step (the configuration was sampled under the previous bias), else now."""
        if step == self._lastUpdateStep:
            return self._lastBias
        return self.getBiasEnergy(context)

    def step(self, simulation: Any, steps: int, extraBias: Any = None) -> None:
        """Advance ``simulation`` by ``steps`` steps, observing every ``pace`` steps (alone: no other adaptive
        bias; ``extraBias(context)`` gives the energy of other, static biases)."""
        self.initialize(simulation.context)
        to_go = int(steps)
        while to_go > 0:
            n = min(to_go, self.pace - simulation.currentStep % self.pace)
            simulation.step(n)
            to_go -= n
            if simulation.currentStep % self.pace == 0:
                extra = 0.0 if extraBias is None else float(extraBias(simulation.context))
                self.observe(simulation.context, simulation.currentStep, extra)

    def getRecords(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.int64 if k == "step" else float) for k, v in self.records.items()}

    def getLogWeights(self) -> np.ndarray:
        """Reweighting log-weights to T of the observed configurations, ``β(V_t + extra_t)``, normalised, shape=(n,)
        (valid for the whole run once the ΔF_i have settled; drop a burn-in)."""
        r = self.getRecords()
        logw = (r["bias_kjmol"] + r["extra_kjmol"]) / self._kt
        return logw - np.logaddexp.reduce(logw) if len(logw) else logw

    # ------------------------------------------------------------------------------------------------ state

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "maxTemperature": self.maxTemperature, "pace": self.pace,
                "numTemperatures": self.numTemperatures, "forces": list(self.forces)}

    def stateArrays(self) -> dict[str, np.ndarray]:
        """The estimator's state and records as arrays (saved beside the latent OPES's state)."""
        rec = self.getRecords()
        return {"sums": np.array([math.nan if self._u0 is None else self._u0, self._logSumW, float(self._count),
                                  float(self._lastUpdateStep), self._lastBias]),
                "logsum": self._logSum.copy(), **{f"record_{k}": v for k, v in rec.items()}}

    def restoreStateArrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`stateArrays`; the Context is updated at the next :meth:`initialize`/:meth:`observe`."""
        s = arrays["sums"]
        self._u0 = None if math.isnan(float(s[0])) else float(s[0])
        self._logSumW, self._count = float(s[1]), int(s[2])
        self._lastUpdateStep, self._lastBias = int(s[3]), float(s[4])
        self._logSum = np.asarray(arrays["logsum"], dtype=float).copy()
        if self._logSum.shape != (self.numTemperatures,):
            raise ValueError(f"saved multithermal state has {self._logSum.shape} temperatures, not "
                             f"{self.numTemperatures}")
        if self._count:
            self._f = -(self._logSum - self._logSumW)
            self._f[0] = 0.0
        else:
            self._f = np.zeros(self.numTemperatures)
        self.records = {k: list(np.asarray(arrays[f"record_{k}"]).tolist()) for k in self.records}
        self._contextStale = True
